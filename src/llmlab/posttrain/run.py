"""Runners behind `llmlab train sft|lora|reward|dpo|ppo|grpo`: config → model (+ LoRA) → data → Trainer → outputs.

    llmlab train lora --config recipes/sft-lora-smollm2.yaml --set train.steps=20
    llmlab train dpo  --config recipes/dpo-tiny.yaml
    llmlab train grpo --config recipes/grpo-arith.yaml

`sft` and `lora` are the same run (`lora` switches `lora.enabled` on). A run folder gets config.yaml,
metrics.jsonl and the result: `adapter/` (a PEFT folder) when LoRA is on, else `model/` (a Hugging
Face folder); `train reward` also writes `model/score_head.safetensors`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from llmlab.nn.lora import DEFAULT_TARGETS
from llmlab.train.config import ConfigError, TrainerConfig


@dataclass
class ModelSection:
    name: str = "smollm2-135m-instruct"  # packaged name, HF folder or .gguf
    adapter: str = ""  # start from this PEFT adapter (e.g. the SFT run's) instead of a fresh one
    threads: int = 0  # torch threads (0: torch's default)
    # "" (the tokenizer's own template) | gemma | chatml | qa: the chat format to train in (e.g. gemma
    # for the Gemma 3 270M base); an adapter saves it, so chat/serve/eval load it with the adapter
    chat_format: str = ""


@dataclass
class LoraSection:
    enabled: bool = False
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list | str = field(default_factory=lambda: list(DEFAULT_TARGETS))
    use_rslora: bool = False
    base_dtype: str = ""  # "" (as loaded) | bf16 | int8: how the frozen base weights are held


@dataclass
class PostDataSection:
    train: str = (
        ""  # jsonl: messages (sft), prompt/chosen/rejected (reward, dpo), prompt/answer (ppo, grpo)
    )
    eval: str = ""  # held-out jsonl; "" → the last eval_fraction of train
    eval_fraction: float = 0.1
    # rows whose `split` field is this (e.g. "train" in the notes-instruct output); "": every row
    split: str = ""
    # held-out rows: those of data.eval (or else of data.train) whose `split` is this (e.g. "dev")
    eval_split: str = ""
    system: str = ""  # system prompt added to every conversation / prompt
    seq_len: int = 256
    packing: bool = False


@dataclass
class PreferenceSection:
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid | ipo
    precompute_ref_log_probs: bool = (
        False  # reference log-probs once before training, not every step
    )


@dataclass
class RLSection:
    reward: str = "exact_answer"  # rule spec (see posttrain/rewards.py) ...
    reward_model: str = ""  # ... or a `train reward` run folder's model/ (overrides `reward`)
    group_size: int = 4  # completions per prompt (GRPO's G)
    prompts_per_step: int = 2
    max_new_tokens: int = 32
    temperature: float = 1.0
    rollout_engine: bool = True  # sample through the serving engine (false: the reference sampler)
    reuse: int = 1  # optimizer steps per rollout batch
    clip: float = 0.2
    kl_beta: float = 0.0  # GRPO: weight of the k3 KL term (0: off)
    kl_coef: float = 0.05  # PPO: per-token KL penalty in the reward
    kl_estimator: str = "k1"  # PPO: k1 | k3
    gamma: float = 1.0
    lam: float = 0.95
    vf_coef: float = 0.5
    value_clip: float = 0.2


@dataclass
class PostTrainConfig(TrainerConfig):
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    data: PostDataSection = field(default_factory=PostDataSection)
    dpo: PreferenceSection = field(default_factory=PreferenceSection)
    rl: RLSection = field(default_factory=RLSection)


def load_policy(config: PostTrainConfig):
    """(model, tokenizer) to train: `llmlab.load` in float32 on the CPU, then a fresh LoRA adapter
    or the configured one (kept trainable, on the base dtype `lora.base_dtype` asks for)."""
    import torch

    import llmlab
    from llmlab.adapters import load_adapter
    from llmlab.nn.lora import add_lora

    if config.model.threads:
        torch.set_num_threads(config.model.threads)
    model, tokenizer = llmlab.load(config.model.name, device="cpu", dtype="float32")
    if config.model.chat_format:
        from llmlab.tokenize.tokenizer import use_chat_format

        use_chat_format(tokenizer, config.model.chat_format)
    lora = config.lora
    if config.model.adapter:
        # Not llmlab.load(adapters=...): that one freezes the adapter for inference; here it trains on.
        load_adapter(model, config.model.adapter, base_dtype=lora.base_dtype or None)
    elif lora.enabled:
        add_lora(
            model,
            r=lora.r,
            alpha=lora.alpha,
            dropout=lora.dropout,
            target_modules=lora.target_modules,
            use_rslora=lora.use_rslora,
            base_dtype=lora.base_dtype or None,
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def split(items: list, config: PostTrainConfig, read_eval) -> tuple[list, list]:
    if config.data.eval:
        return items, read_eval(config.data.eval)
    items = list(items)
    random.Random(config.train.seed).shuffle(items)
    n_eval = int(len(items) * config.data.eval_fraction) if len(items) > 4 else 0
    return items[n_eval:], items[:n_eval]


def save_result(model, tokenizer, config: PostTrainConfig, summary: dict) -> dict:
    from llmlab.adapters import save_adapter
    from llmlab.formats.hf import save_hf_folder
    from llmlab.nn.lora import lora_layers

    run = Path(config.run_dir)
    if lora_layers(model):
        template = tokenizer.chat_template if config.model.chat_format else None
        summary["adapter_dir"] = str(
            save_adapter(
                model,
                run / "adapter",
                base_model_name_or_path=config.model.name,
                chat_template=template,
            )
        )
    else:
        summary["model_dir"] = str(save_hf_folder(model, run / "model", tokenizer=tokenizer))
    return summary


def run_sft(config: PostTrainConfig) -> dict:
    from llmlab.train.objectives.sft import SFTObjective
    from llmlab.train.sft_data import read_conversations, render_all, sft_batches
    from llmlab.train.trainer import Trainer

    model, tokenizer = load_policy(config)
    d = config.data
    train_rows = read_conversations(_required(d.train, "data.train"), d.split or None)
    if d.eval_split:
        held_out = read_conversations(d.eval or d.train, d.eval_split)
        train = train_rows
    else:
        train, held_out = split(
            train_rows, config, lambda name: read_conversations(name, d.split or None)
        )
    render = lambda convs: render_all(tokenizer, convs, d.system or None, d.seq_len + 1)  # noqa: E731

    def batches(rows, seed):
        return sft_batches(
            rows,
            config.train.batch_size,
            d.seq_len,
            tokenizer.pad_token_id,
            tokenizer.eos_token_id,
            d.packing,
            seed,
        )

    eval_data = batches(render(held_out), 0) if held_out else None
    trainer = Trainer(
        model,
        SFTObjective(),
        batches(render(train), config.train.seed),
        config,
        eval_data=eval_data,
    )
    summary = trainer.fit()
    trainer.close()
    return save_result(model, tokenizer, config, summary)


def _pairs(config: PostTrainConfig, tokenizer, collate):
    from llmlab.posttrain.data import read_pairs
    from llmlab.train.sft_data import ShuffledBatches

    d = config.data
    read = lambda name: read_pairs(tokenizer, name, d.system or None, d.seq_len)  # noqa: E731
    train, held_out = split(read(_required(d.train, "data.train")), config, read)
    pad = tokenizer.pad_token_id
    train_batches = ShuffledBatches(
        train, config.train.batch_size, lambda rows: collate(rows, pad), config.train.seed
    )
    eval_batches = (
        ShuffledBatches(held_out, config.train.batch_size, lambda rows: collate(rows, pad), 0)
        if held_out
        else None
    )
    return train_batches, eval_batches


def run_dpo(config: PostTrainConfig) -> dict:
    from llmlab.posttrain.data import dpo_collate, precompute_reference_logps
    from llmlab.train.objectives.dpo import DPOObjective
    from llmlab.train.objectives.reference import Reference
    from llmlab.train.trainer import Trainer

    if config.dpo.loss_type not in ("sigmoid", "ipo"):
        raise ConfigError(f"dpo.loss_type '{config.dpo.loss_type}' (choose sigmoid, ipo)")
    model, tokenizer = load_policy(config)
    train, held_out = _pairs(config, tokenizer, dpo_collate)
    reference = Reference(model)
    if config.dpo.precompute_ref_log_probs:
        for source in (train, held_out):
            if source is not None:
                precompute_reference_logps(
                    reference, source.items, tokenizer.pad_token_id, config.train.batch_size
                )
        reference = (
            None  # every batch carries its ref_logps now; a frozen copy (full fine-tuning) is freed
        )
    objective = DPOObjective(reference, config.dpo.beta, config.dpo.loss_type)
    trainer = Trainer(model, objective, train, config, eval_data=held_out)
    summary = trainer.fit()
    trainer.close()
    return save_result(model, tokenizer, config, summary)


def run_reward(config: PostTrainConfig) -> dict:
    from llmlab.formats.hf import save_hf_folder
    from llmlab.nn.lora import merge_and_unload
    from llmlab.posttrain.data import reward_collate
    from llmlab.posttrain.heads import RewardModel
    from llmlab.train.objectives.reward import RewardObjective
    from llmlab.train.trainer import Trainer

    backbone, tokenizer = load_policy(config)
    model = RewardModel(backbone)
    train, held_out = _pairs(config, tokenizer, reward_collate)
    trainer = Trainer(model, RewardObjective(), train, config, eval_data=held_out)
    summary = trainer.fit()
    trainer.close()
    if any(".lora_" in n for n, _ in backbone.named_parameters()):
        merge_and_unload(backbone)  # a reward model is used whole: fold the adapter in
    folder = save_hf_folder(backbone, Path(config.run_dir) / "model", tokenizer=tokenizer)
    model.save_head(folder)
    summary["model_dir"] = str(folder)
    return summary


def load_reward_model(folder: str):
    """A `train reward` run's model/ folder: the backbone through `llmlab.load`, then its score head."""
    import llmlab
    from llmlab.posttrain.heads import RewardModel

    backbone, _ = llmlab.load(folder, device="cpu", dtype="float32", tokenizer=False)
    model = RewardModel(backbone)
    model.load_head(folder)
    return model.eval()


def _reward_fn(config: PostTrainConfig):
    from llmlab.posttrain.rewards import make_reward, reward_model_scorer

    if config.rl.reward_model:
        return reward_model_scorer(load_reward_model(config.rl.reward_model))
    return make_reward(config.rl.reward)


def run_rl(config: PostTrainConfig, method: str) -> dict:
    from llmlab.posttrain.data import read_prompts
    from llmlab.posttrain.heads import PolicyWithValue
    from llmlab.posttrain.rollout import RolloutSource
    from llmlab.train.objectives.grpo import GRPOObjective, prepare_grpo
    from llmlab.train.objectives.ppo import PPOObjective, prepare_ppo
    from llmlab.train.objectives.reference import Reference
    from llmlab.train.trainer import Trainer

    rl = config.rl
    if rl.kl_estimator not in ("k1", "k3"):
        raise ConfigError(f"rl.kl_estimator '{rl.kl_estimator}' (choose k1, k3)")
    policy, tokenizer = load_policy(config)
    prompts = read_prompts(
        tokenizer, _required(config.data.train, "data.train"), config.data.system or None
    )
    reference = Reference(policy)
    if method == "grpo":
        model, sampler = policy, policy
        prepare = prepare_grpo(policy, reference, rl.group_size, rl.kl_beta)
        objective = GRPOObjective(rl.clip, rl.kl_beta)
    else:
        model = PolicyWithValue(policy)
        sampler = policy
        prepare = prepare_ppo(model, reference, rl.kl_coef, rl.kl_estimator, rl.gamma, rl.lam)
        objective = PPOObjective(rl.clip, rl.value_clip, rl.vf_coef)
    source = RolloutSource(
        model,
        prompts,
        _reward_fn(config),
        prepare,
        rl.prompts_per_step,
        rl.group_size,
        rl.max_new_tokens,
        rl.temperature,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer=tokenizer,
        reuse=rl.reuse,
        seed=config.train.seed,
        sampler_model=sampler,
        use_engine=rl.rollout_engine,
    )
    trainer = Trainer(model, objective, source, config)
    summary = trainer.fit()
    trainer.close()
    key = "reward" if method == "grpo" else "objective/scores"
    rewards = [r[key] for r in trainer.history if key in r]
    if rewards:
        k = max(1, len(rewards) // 4)
        summary["reward_first_quarter"] = sum(rewards[:k]) / k
        summary["reward_last_quarter"] = sum(rewards[-k:]) / k
    return save_result(policy, tokenizer, config, summary)


def _required(value: str, key: str) -> str:
    if not value:
        raise ConfigError(f"{key} is not set (a jsonl file or bundled:NAME)")
    return value


RUNNERS = {
    "sft": run_sft,
    "lora": run_sft,
    "reward": run_reward,
    "dpo": run_dpo,
    "ppo": lambda c: run_rl(c, "ppo"),
    "grpo": lambda c: run_rl(c, "grpo"),
}


def run(method: str, config: PostTrainConfig) -> dict:
    from llmlab.tokenize.tokenizer import CHAT_FORMATS

    if config.model.chat_format and config.model.chat_format not in CHAT_FORMATS:
        raise ConfigError(
            f"model.chat_format '{config.model.chat_format}' (choose {', '.join(CHAT_FORMATS)})"
        )
    if method == "lora":
        config.lora.enabled = True
    return RUNNERS[method](config)

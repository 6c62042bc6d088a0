"""Causal-LM pretraining from scratch: config → tokens → llmlab Llama → Trainer → HF folder.

    llmlab train pretrain --config recipes/pretrain-tiny.yaml [--set train.steps=100 ...]
    torchrun --nproc_per_node 2 -m llmlab.train pretrain --config recipes/pretrain-tiny.yaml

Everything that can be wrong with the input (no tokenizer, an empty corpus, a sequence length
beyond the model's context, unknown config keys) fails here, before the first step.
The run folder gets config.yaml, metrics.jsonl, checkpoints/ and the final model in model/
(a Hugging Face folder that transformers loads).
"""

from __future__ import annotations

from pathlib import Path

from llmlab.train.config import ConfigError, PretrainConfig, validate


def build_llama(model_keys: dict, vocab_size: int, eos_id: int, pad_id: int | None):
    from llmlab.models.llama import LlamaConfig, LlamaForCausalLM

    keys = {
        "vocab_size": vocab_size,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        **model_keys,
    }
    known = set(LlamaConfig.__dataclass_fields__) - {"extra"}
    unknown = sorted(set(model_keys) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key 'model.{unknown[0]}' (Llama config keys: {', '.join(sorted(known))})"
        )
    if keys["vocab_size"] < vocab_size:
        raise ConfigError(
            f"model.vocab_size {keys['vocab_size']} is smaller than the tokenizer's {vocab_size}"
        )
    return LlamaForCausalLM(LlamaConfig.from_hf(keys))


def prepare_data(config, ctx):
    """Tokenize (rank 0 first, others reuse the cached file) and build batch sources."""
    from llmlab.train.data import (
        PackedBatches,
        SequentialBatches,
        TokenFile,
        load_tokenizer,
        split_sequences,
        tokenize_corpus,
    )
    from llmlab.train.distributed import barrier

    data = config.data
    tokenizer = load_tokenizer(data.tokenizer)
    cache = Path(data.cache_dir or Path(config.run_dir) / "data")
    if ctx.is_main:
        token_path = tokenize_corpus(data.corpus, data.tokenizer, cache, data.text_field)
    barrier(ctx)
    if not ctx.is_main:
        token_path = tokenize_corpus(
            data.corpus, data.tokenizer, cache, data.text_field
        )  # cached: just the path
    tokens = TokenFile(token_path)
    train_ids, val_ids = split_sequences(tokens, data.seq_len, data.val_fraction)
    loop = config.train
    train = PackedBatches(
        tokens, train_ids, data.seq_len, loop.batch_size, loop.seed, ctx.rank, ctx.world_size
    )
    val = SequentialBatches(
        tokens, val_ids, data.seq_len, max(1, loop.batch_size // ctx.world_size)
    )
    return tokenizer, tokens, train, val


def run_pretrain(config: PretrainConfig, callbacks=()) -> dict:
    """Run the whole pipeline; callbacks(trainer, record) run after every step."""
    from transformers import PreTrainedTokenizerFast

    from llmlab.formats.hf import save_hf_folder
    from llmlab.train.distributed import init_distributed, shutdown
    from llmlab.train.objectives.clm import CausalLMObjective
    from llmlab.train.trainer import Trainer, resolve_device

    validate(config)
    ctx = init_distributed(
        config.distributed.strategy, config.distributed.backend, resolve_device(config.train.device)
    )
    try:
        tokenizer, tokens, train, val = prepare_data(config, ctx)
        import torch

        torch.manual_seed(config.train.seed)  # the same initial weights on every rank and every run
        model = build_llama(
            config.model,
            tokenizer.get_vocab_size(),
            tokens.meta["eos_id"],
            tokenizer.token_to_id("<|pad|>"),
        )
        if config.data.seq_len > model.max_context:
            raise ConfigError(
                f"data.seq_len {config.data.seq_len} is beyond the model's context "
                f"(max_position_embeddings {model.max_context})"
            )
        trainer = Trainer(
            model, CausalLMObjective(), train, config, eval_data=val, ctx=ctx, callbacks=callbacks
        )
        summary = trainer.fit()
        state = trainer.full_model_state()
        if ctx.is_main:
            final = type(model)(model.config)
            final.load_state_dict(state)
            hf_tokenizer = PreTrainedTokenizerFast.from_pretrained(config.data.tokenizer)
            out = save_hf_folder(final, Path(config.run_dir) / "model", tokenizer=hf_tokenizer)
            summary["unigram_entropy"] = tokens.unigram_entropy()
            summary["model_dir"] = str(out)
            trainer.log.write({"kind": "final", **summary})
        trainer.close()
        return summary
    finally:
        shutdown(ctx)

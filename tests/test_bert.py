"""BERT family parity with `transformers` (the reference), loading rules and sentence embeddings.

Run: .venv/bin/python -m pytest tests/test_bert.py -q
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from llmlab.errors import ContextLengthError, LlmlabError, UnsupportedArchitectureError
from llmlab.models.bert import (
    BertConfig,
    BertForPreTraining,
    BertModel,
    embed,
    hf_state_dict,
    mean_pooled_embeddings,
    model_from_hf,
)

TOL = 1e-4


def tiny_hf_config(**overrides) -> transformers.BertConfig:
    values = dict(
        vocab_size=101,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        type_vocab_size=2,
        attn_implementation="eager",
        initializer_range=0.3,
    )  # large weights, so e.g. gelu vs gelu_new differ visibly
    values.update(overrides)
    return transformers.BertConfig(**values)


def config_dict(hf_cfg: transformers.BertConfig, architecture: str) -> dict:
    d = hf_cfg.to_dict()
    d["architectures"] = [architecture]
    return d


def padded_batch(vocab: int = 101, seed: int = 0):
    """Three rows of different real lengths (padding on the right) and two segments each."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    for row, length in enumerate([12, 7, 3]):
        mask[row, length:] = 0
        ids[row, length:] = 0
    token_types = torch.zeros_like(ids)
    token_types[:, 5:] = 1
    return ids, mask, token_types


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_bert_model_matches_transformers(act):
    torch.manual_seed(0)
    reference = transformers.BertModel(tiny_hf_config(hidden_act=act)).eval()
    ours = model_from_hf(config_dict(reference.config, "BertModel"), reference.state_dict())
    assert type(ours) is BertModel and not ours.training
    ids, mask, types = padded_batch()
    with torch.no_grad():
        want = reference(
            input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True
        )
        got = ours.encode(ids, mask, types, output_hidden_states=True)
        plain = ours(ids, attention_mask=mask, token_type_ids=types)
    assert max_diff(got.last_hidden_state, want.last_hidden_state) <= TOL
    assert max_diff(got.pooled_output, want.pooler_output) <= TOL
    assert len(got.hidden_states) == len(want.hidden_states) == 3
    for a, b in zip(got.hidden_states, want.hidden_states):
        assert max_diff(a, b) <= TOL
    assert torch.equal(plain, got.last_hidden_state)


def test_pretraining_heads_match_transformers_and_decoder_is_tied():
    torch.manual_seed(1)
    reference = transformers.BertForPreTraining(tiny_hf_config()).eval()
    ours = model_from_hf(
        config_dict(reference.config, "BertForPreTraining"), reference.state_dict()
    )
    assert type(ours) is BertForPreTraining
    ids, mask, types = padded_batch()
    with torch.no_grad():
        want = reference(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = ours(ids, mask, types)
    assert got.mlm_logits.shape == (3, 12, 101) and got.nsp_logits.shape == (3, 2)
    assert max_diff(got.mlm_logits, want.prediction_logits) <= TOL
    assert max_diff(got.nsp_logits, want.seq_relationship_logits) <= TOL
    head = ours.cls["predictions"]
    assert head.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    assert head.decoder.bias is head.bias


@pytest.mark.parametrize("architecture", ["BertForMaskedLM", "BertForSequenceClassification"])
def test_other_heads_match_transformers(architecture):
    torch.manual_seed(2)
    reference = getattr(transformers, architecture)(tiny_hf_config(num_labels=3)).eval()
    ours = model_from_hf(config_dict(reference.config, architecture), reference.state_dict())
    ids, mask, types = padded_batch()
    with torch.no_grad():
        want = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(ids, mask, types)
    assert got.shape == want.shape
    assert max_diff(got, want) <= TOL


@pytest.mark.parametrize("model_class", ["BertModel", "BertForPreTraining"])
def test_saved_state_dict_loads_in_transformers(tmp_path, model_class):
    torch.manual_seed(3)
    cfg = BertConfig.from_hf(config_dict(tiny_hf_config(), model_class))
    ours = model_from_hf(cfg.to_hf() | {"architectures": [model_class]}, None)
    assert ours.config.architectures == [model_class]
    save_file(hf_state_dict(ours), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(ours.config.to_hf()))
    reference, info = getattr(transformers, model_class).from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask, types = padded_batch()
    with torch.no_grad():
        got = ours(ids, mask, types)
        want = reference.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types)
    if model_class == "BertModel":
        assert max_diff(got, want.last_hidden_state) <= TOL
    else:
        assert max_diff(got.mlm_logits, want.prediction_logits) <= TOL
        assert max_diff(got.nsp_logits, want.seq_relationship_logits) <= TOL
    # and our own loader reads our file back to the same outputs
    again = model_from_hf(ours.config.to_hf(), load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        assert torch.equal(torch.as_tensor(again(ids, mask, types)[0]), torch.as_tensor(got[0]))


def test_save_hf_folder_writes_a_pretraining_folder_transformers_loads(tmp_path):
    from llmlab.formats.hf import read_hf_folder, save_hf_folder

    torch.manual_seed(6)
    ours = model_from_hf(config_dict(tiny_hf_config(), "BertForPreTraining"), None)
    save_hf_folder(ours, tmp_path)
    reference = transformers.BertForPreTraining.from_pretrained(
        tmp_path, attn_implementation="eager"
    ).eval()
    again = model_from_hf(*read_hf_folder(tmp_path))
    ids, mask, types = padded_batch()
    with torch.no_grad():
        got = ours(ids, mask, types)
        want = reference(input_ids=ids, attention_mask=mask, token_type_ids=types)
        assert torch.equal(again(ids, mask, types).mlm_logits, got.mlm_logits)
    assert max_diff(got.mlm_logits, want.prediction_logits) <= TOL
    assert max_diff(got.nsp_logits, want.seq_relationship_logits) <= TOL


def test_training_mode_uses_dropout_and_every_parameter_gets_a_gradient():
    torch.manual_seed(7)
    model = model_from_hf(config_dict(tiny_hf_config(), "BertForPreTraining"), None).train()
    ids, mask, types = padded_batch()
    first, second = model(ids, mask, types), model(ids, mask, types)
    assert not torch.allclose(first.mlm_logits, second.mlm_logits)  # dropout is on
    loss = torch.nn.functional.cross_entropy(
        first.mlm_logits.flatten(0, 1), ids.flatten()
    ) + torch.nn.functional.cross_entropy(first.nsp_logits, torch.tensor([0, 1, 0]))
    loss.backward()
    no_grad = [
        name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert no_grad == []


def test_config_round_trip_through_transformers():
    cfg = BertConfig(
        vocab_size=77,
        hidden_size=24,
        num_hidden_layers=3,
        num_attention_heads=6,
        intermediate_size=50,
        hidden_act="gelu_new",
        layer_norm_eps=1e-7,
        num_labels=4,
    )
    assert BertConfig.from_hf(cfg.to_hf()) == cfg
    hf = transformers.BertConfig.from_dict(cfg.to_hf())
    assert (hf.hidden_size, hf.num_attention_heads, hf.hidden_act, hf.num_labels) == (
        24,
        6,
        "gelu_new",
        4,
    )
    assert BertConfig.from_hf(hf.to_dict()) == cfg


def test_checkpoint_without_heads_or_prefix_loads_with_a_warning():
    # A BertModel checkpoint (no `bert.` prefix, like MiniLM's) loaded as BertForPreTraining: the
    # encoder must load exactly; the heads are reported as missing.
    torch.manual_seed(4)
    reference = transformers.BertModel(tiny_hf_config()).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("pooler.")}
    with pytest.warns(UserWarning, match="pooler"):
        ours = model_from_hf(config_dict(reference.config, "BertForPreTraining"), state)
    assert any(k.startswith("cls.") for k in ours.missing_weights)
    ids, mask, types = padded_batch()
    with torch.no_grad():
        assert (
            max_diff(
                ours.bert(ids, mask, types),
                reference(
                    input_ids=ids, attention_mask=mask, token_type_ids=types
                ).last_hidden_state,
            )
            <= TOL
        )
    # the reverse: a prefixed pre-training checkpoint into a plain BertModel drops the heads
    pretrain = transformers.BertForPreTraining(tiny_hf_config()).state_dict()
    with pytest.warns(UserWarning, match="ignored"):
        encoder = model_from_hf(config_dict(reference.config, "BertModel"), pretrain)
    assert torch.equal(
        encoder.embeddings.word_embeddings.weight,
        pretrain["bert.embeddings.word_embeddings.weight"],
    )


def test_bad_inputs_raise_one_clear_error():
    hf_cfg = tiny_hf_config()
    state = transformers.BertModel(hf_cfg).state_dict()
    good = config_dict(hf_cfg, "BertModel")
    with pytest.raises(UnsupportedArchitectureError, match="relative_key"):
        model_from_hf(good | {"position_embedding_type": "relative_key"}, None)
    with pytest.raises(UnsupportedArchitectureError, match="BertForQuestionAnswering"):
        model_from_hf(good | {"architectures": ["BertForQuestionAnswering"]}, None)
    with pytest.raises(UnsupportedArchitectureError, match="activation 'xielu2'"):
        model_from_hf(good | {"hidden_act": "xielu2"}, None)
    with pytest.raises(LlmlabError, match="divisible"):
        model_from_hf(good | {"num_attention_heads": 5}, None)
    with pytest.raises(
        LlmlabError, match="missing 1 encoder weights.*encoder.layer.1.output.dense.weight"
    ):
        model_from_hf(
            good, {k: v for k, v in state.items() if k != "encoder.layer.1.output.dense.weight"}
        )
    with pytest.raises(LlmlabError, match="does not use"):
        model_from_hf(good, state | {"encoder.layer.7.output.dense.weight": torch.zeros(1)})
    with pytest.raises(LlmlabError, match=r"shape \(101, 16\)"):
        model_from_hf(good, state | {"embeddings.word_embeddings.weight": torch.zeros(101, 16)})
    model = model_from_hf(good, state)
    with pytest.raises(ContextLengthError, match="41 tokens"):
        model(torch.ones(1, 41, dtype=torch.long))


def test_mean_pooling_ignores_padding():
    # A sentence's embedding must not depend on the padding added for longer batch neighbours.
    torch.manual_seed(5)
    model = model_from_hf(config_dict(tiny_hf_config(), "BertModel"), None)
    ids, mask, types = padded_batch()
    with torch.no_grad():
        batched = mean_pooled_embeddings(model, ids, mask)
        alone = mean_pooled_embeddings(model, ids[2:, :3], mask[2:, :3])
        raw = mean_pooled_embeddings(model, ids, mask, normalize=False)
        hidden = model(ids, mask)
    assert max_diff(batched[2], alone[0]) <= 1e-5
    assert torch.allclose(batched.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert max_diff(raw[1], hidden[1, :7].mean(dim=0)) <= 1e-5


@pytest.mark.slow
def test_minilm_sentence_embeddings_match_transformers():
    from llmlab.registry import resolve

    folder = resolve("minilm-l6-v2")
    ours = model_from_hf(
        json.loads((folder / "config.json").read_text()), load_file(folder / "model.safetensors")
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    reference = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    sentences = [
        "Dropout randomly zeroes activations during training.",
        "A cat.",
        "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.",
        "Mean pooling averages token vectors over the attention mask.",
        "Hi",
    ]
    got = embed(sentences, tokenizer, ours, batch_size=2)  # small batches: exercises reordering
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    cosine = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    assert got.shape == (5, 384)
    assert cosine.min().item() >= 0.9999
    # and the embeddings mean something: the two ML sentences are closer to each other than to "A cat."
    assert got[0] @ got[3] > got[0] @ got[1]


@pytest.mark.slow
def test_llmlab_load_returns_our_minilm_and_a_hf_tokenizer():
    import llmlab
    from llmlab.registry import resolve

    model, tokenizer = llmlab.load("minilm-l6-v2", device="cpu")
    assert type(model) is BertModel and not model.training
    assert isinstance(tokenizer, transformers.PreTrainedTokenizerBase)
    folder = resolve("minilm-l6-v2")
    direct = model_from_hf(
        json.loads((folder / "config.json").read_text()), load_file(folder / "model.safetensors")
    )
    texts = ["What is dropout?", "Sentence embeddings with mean pooling."]
    assert max_diff(embed(texts, tokenizer, model), embed(texts, tokenizer, direct)) <= 1e-6

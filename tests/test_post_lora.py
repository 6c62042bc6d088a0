"""LoRA: injection, init, merge/unmerge, multiple adapters, and PEFT-format round trips with `peft`."""

import math

import peft
import pytest
import torch
import transformers
from tiny import tiny_llama_config

from llmlab.adapters import load_adapter, save_adapter
from llmlab.errors import LlmlabError
from llmlab.models.llama import model_from_hf
from llmlab.nn.lora import (
    LoraLinear,
    adapters_disabled,
    add_lora,
    lora_parameters,
    merge_and_unload,
    merge_lora,
    set_adapter,
    unmerge_lora,
)


def tiny_pair(seed=0):
    torch.manual_seed(seed)
    config = tiny_llama_config()
    reference = transformers.LlamaForCausalLM(config).eval()
    ours = model_from_hf(
        config.to_dict(), {k: v.clone() for k, v in reference.state_dict().items()}
    )
    return reference, ours


def randomize_b(model, std=0.05):
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, LoraLinear):
                for b in layer.lora_B.values():
                    b.weight.normal_(std=std)


IDS = torch.randint(3, 320, (2, 12), generator=torch.Generator().manual_seed(1))


def test_injection_targets_freezing_and_init():
    _, model = tiny_pair()
    base_logits = model(IDS)
    add_lora(model, r=4, alpha=8)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    assert len(wrapped) == 2 * 4 and all(
        n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj") for n in wrapped
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(lora_parameters(model)) == len(trainable)
    layer = model.model.layers[0].self_attn.q_proj
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    bound = 1 / math.sqrt(layer.in_features)  # kaiming_uniform(a=√5) on [r, in] → U(-1/√in, 1/√in)
    a = layer.lora_A["default"].weight
    assert a.abs().max() <= bound and a.std() > bound / 3
    assert layer.scaling["default"] == 2.0
    torch.testing.assert_close(model(IDS), base_logits)  # B = 0: training starts at the base model
    assert "model.layers.0.self_attn.q_proj.weight" in model.state_dict()  # base keys unchanged


def test_rslora_all_linear_and_bad_targets():
    _, model = tiny_pair()
    add_lora(model, r=4, alpha=8, use_rslora=True, target_modules="all-linear")
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert len(layers) == 2 * 7 and layers[0].scaling["default"] == 8 / 2
    with pytest.raises(LlmlabError, match="no Linear module matches"):
        add_lora(tiny_pair()[1], target_modules=["nope"])


def test_merge_unmerge_restores_weights_and_logits():
    _, model = tiny_pair()
    add_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    randomize_b(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    unmerged = model(IDS)
    merge_lora(model)
    changed = model.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(changed, before["model.layers.0.self_attn.q_proj.weight"])
    torch.testing.assert_close(model(IDS), unmerged, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    for name, p in model.named_parameters():
        if name in before:
            assert (p - before[name]).abs().max() < 1e-6, name
    torch.testing.assert_close(model(IDS), unmerged, atol=1e-5, rtol=1e-5)


def test_multi_adapter_set_adapter_and_disable():
    _, model = tiny_pair()
    base = model(IDS)
    add_lora(model, r=4, alpha=8, adapter_name="a")
    randomize_b(model)
    only_a = model(IDS)
    add_lora(model, r=2, alpha=2, adapter_name="b", target_modules=["q_proj"])
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.lora_B["b"].weight.normal_(std=0.2)
    torch.testing.assert_close(model(IDS), only_a)  # "a" is still the active one
    set_adapter(model, "b")
    only_b = model(IDS)
    assert not torch.allclose(only_b, only_a)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".b." in n for n in trainable)
    set_adapter(model, ["a", "b"])
    both = model(IDS)
    assert not torch.allclose(both, only_a) and not torch.allclose(both, only_b)
    with adapters_disabled(model):
        torch.testing.assert_close(model(IDS), base)
    merge_lora(model)
    with adapters_disabled(model):  # merged updates come back out while disabled
        torch.testing.assert_close(model(IDS), base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(IDS), both, atol=1e-5, rtol=1e-5)
    with pytest.raises(LlmlabError, match="unknown adapter"):
        set_adapter(model, "c")


def test_only_adapters_change_when_training():
    _, model = tiny_pair()
    add_lora(model, r=4, alpha=8, dropout=0.1)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    model.train()
    for _ in range(3):
        logits = model(IDS[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 320), IDS[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert torch.count_nonzero(model.model.layers[0].self_attn.q_proj.lora_B["default"].weight) > 0


def test_base_held_in_bf16_and_int8_stays_close():
    _, model = tiny_pair()
    base = model(IDS)
    for dtype, tol in (("bf16", 0.05), ("int8", 0.05)):
        _, m = tiny_pair()
        add_lora(m, r=4, base_dtype=dtype)
        assert m.model.layers[0].self_attn.q_proj.weight.dtype == (
            torch.bfloat16 if dtype == "bf16" else torch.int8
        )
        assert (m(IDS) - base).abs().max() < tol


def test_bf16_base_holds_the_whole_frozen_model_and_trains_fp32_adapters():
    _, fp32 = tiny_pair()
    add_lora(fp32, r=4)
    randomize_b(fp32)
    _, model = tiny_pair()
    add_lora(model, r=4, base_dtype="bf16")
    model.load_state_dict(fp32.state_dict())  # same adapters (load_state_dict keeps each dtype)
    adapters = {id(p) for p in lora_parameters(model)}
    assert all(
        p.dtype == (torch.float32 if id(p) in adapters else torch.bfloat16)
        for p in model.parameters()
    )
    logits = model(IDS)
    assert logits.dtype == torch.float32 and (logits - fp32(IDS)).abs().max() < 0.05
    logits.logsumexp(-1).mean().backward()
    grads = [p.grad for p in lora_parameters(model)]
    assert all(g is not None and g.dtype == torch.float32 for g in grads) and any(
        g.abs().sum() > 0 for g in grads
    )
    assert all(p.grad is None for p in model.parameters() if id(p) not in adapters)


def test_our_adapter_loads_in_peft_with_same_logits(tmp_path):
    reference, model = tiny_pair()
    add_lora(
        model,
        r=4,
        alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
        use_rslora=True,
    )
    randomize_b(model)
    ours = model(IDS)
    save_adapter(model, tmp_path / "adapter")
    theirs = peft.PeftModel.from_pretrained(reference, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(IDS).logits, ours, atol=1e-4, rtol=1e-4)
    merge_and_unload(model)
    assert not any(isinstance(m, LoraLinear) for m in model.modules())
    torch.testing.assert_close(model(IDS), ours, atol=1e-4, rtol=1e-4)


def test_peft_adapter_loads_in_llmlab_with_same_logits(tmp_path):
    reference, model = tiny_pair(seed=3)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "gate_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )  # random B, so the adapter matters
    theirs = peft.get_peft_model(reference, config).eval()
    theirs.save_pretrained(str(tmp_path / "peft"))
    with torch.no_grad():
        expected = theirs(IDS).logits
    load_adapter(model, tmp_path / "peft")
    assert len([m for m in model.modules() if isinstance(m, LoraLinear)]) == 2 * 3
    torch.testing.assert_close(model(IDS), expected, atol=1e-4, rtol=1e-4)

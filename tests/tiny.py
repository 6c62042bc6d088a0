"""Tiny models and tokenizers built inside tests: nothing is downloaded.

from tiny import tiny_tokenizer, tiny_llama_config, save_tiny_llama
"""

from __future__ import annotations

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Dropout randomly zeroes activations during training to reduce overfitting.",
    "Residual connections let gradients flow through deep networks.",
    "梯度消失和梯度爆炸是深度网络训练中的常见问题。",
    "Attention is all you need. Multi-head attention looks at several subspaces.",
] * 4


def tiny_tokenizer(vocab_size: int = 320) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in milliseconds, with ChatML specials and template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    return fast


def tiny_llama_config(**overrides) -> transformers.LlamaConfig:
    """A 2-layer GQA Llama config for parity tests (vocab fits tiny_tokenizer)."""
    values = dict(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    values.update(overrides)
    return transformers.LlamaConfig(**values)


def save_tiny_llama(folder, seed: int = 0, **overrides):
    """Write a random tiny Llama (our writer) + tokenizer to `folder`; return (hf_model, tokenizer)."""
    import torch

    from llmlab.formats.hf import save_hf_folder
    from llmlab.models.llama import model_from_hf

    torch.manual_seed(seed)
    config = tiny_llama_config(**overrides)
    reference = transformers.LlamaForCausalLM(config).eval()
    ours = model_from_hf(config.to_dict(), reference.state_dict())
    tokenizer = tiny_tokenizer()
    save_hf_folder(ours, folder, tokenizer=tokenizer)
    return reference, tokenizer

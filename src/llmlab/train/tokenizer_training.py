"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) on txt / jsonl / parquet corpora.

    llmlab train tokenizer --corpus bundled:stories-en.txt bundled:notes-zh.txt --vocab-size 4096 --out tok/

Byte-level means every string, Chinese included, encodes without unknown tokens: text is split GPT-2
style, mapped to bytes, and merges are learned over those bytes. The folder written is a regular
Hugging Face tokenizer folder (tokenizer.json, tokenizer_config.json with a ChatML chat template),
so `transformers.AutoTokenizer.from_pretrained(folder)` loads it.

Special tokens: `<|endoftext|>` (document separator / EOS), `<|pad|>`, and the chat markers
`<|im_start|>`, `<|im_end|>`; `--bert` adds `[CLS] [SEP] [MASK]` for encoder pretraining.
"""

from __future__ import annotations

from pathlib import Path

from llmlab.train.data import EOS_TOKEN, DataError, iter_documents

CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
PAD_TOKEN = "<|pad|>"
BERT_TOKENS = ["[CLS]", "[SEP]", "[MASK]"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def special_tokens(bert: bool = False) -> list[str]:
    return [EOS_TOKEN, PAD_TOKEN, *CHAT_TOKENS, *(BERT_TOKENS if bert else [])]


def train_tokenizer(
    corpus: list[str],
    out_dir: str | Path,
    vocab_size: int = 4096,
    min_frequency: int = 2,
    text_field: str = "text",
    bert: bool = False,
):
    """Train, save as an HF tokenizer folder, and return the `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens(bert)
    if vocab_size < 256 + len(specials):
        raise DataError(
            f"vocab size {vocab_size} is too small: byte-level BPE needs at least {256 + len(specials)}"
        )
    documents = iter_documents(corpus, text_field)
    try:
        first = next(documents)
    except StopIteration:
        raise DataError(f"the corpus is empty: no text in {', '.join(corpus)}") from None

    def all_documents():
        yield first
        yield from documents

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(all_documents(), trainer=trainer)
    extra = {"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"} if bert else {}
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=CHAT_TOKENS,
        **extra,
    )
    wrapped.chat_template = CHATML_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(out_dir))
    return wrapped

"""Sentence embeddings from a causal language model: the prompt's last state at an inner layer.

    from llmlab.rag.dense import load_embedder
    embedder = load_embedder("gemma3-270m")        # any causal LM llmlab.load takes
    vectors = embedder.encode(["为什么要做归一化"])   # float32 [1, hidden], raw states

PromptEOL (Jiang et al., 2023): the text goes into a prompt that asks for its meaning in one
word, `这段话："…"的意思用一个词概括是："`, so the model's state at the last position, about to
write that word, has to hold what the text is about (a mean over a plain text's positions holds
mostly what each token looks like: docs/rag.md measures both). The state is taken after decoder layer `layer` (0-based), not after the last layer: the last layers
turn the state towards predicting the next token's surface form. The default depth, 85 % of the
layers (layer 15 of Gemma 3 270M's 18), was chosen on the RAG eval's dev split (docs/rag.md).

Raw LM states share a large common direction, so cosine similarity between them says little;
the index subtracts the mean of its passages' vectors (`center`) from passages and queries alike
before normalizing (rag/index.py stores that mean with the vectors).
"""

from __future__ import annotations

import numpy as np
import torch

PROMPT = '这段话："{text}"的意思用一个词概括是："'
DEPTH = 0.85  # the layer whose output is taken, as a fraction of the decoder layers
MAX_TEXT_TOKENS = 384
# Part of the default index's cache key (rag/store.py): a change builds a new index.
SETTINGS = {"prompt": PROMPT, "depth": DEPTH, "max_text_tokens": MAX_TEXT_TOKENS}


class LMEmbedder:
    """A causal LM (loaded by llmlab.load) as a PromptEOL embedder."""

    centered = True  # the index centres these vectors on its passages' mean (module docstring)

    def __init__(
        self,
        name: str,
        model,
        tokenizer,
        layer: int | None = None,
        batch_size: int = 8,
        prompt: str = PROMPT,
    ):
        self.name, self.model, self.tokenizer = name, model.eval(), tokenizer
        self.prompt = prompt  # "{text}" marks where the text goes
        layers = model.model.layers
        self.layer = int(DEPTH * len(layers)) if layer is None else layer
        if not 0 <= self.layer < len(layers):
            raise ValueError(f"layer {self.layer} outside the model's {len(layers)} layers")
        self.batch_size = batch_size
        self._block = layers[self.layer]

    def prompt_ids(self, text: str) -> list[int]:
        """BOS (when the tokenizer has one) + the prompt around `text`, cut to MAX_TEXT_TOKENS."""
        tokens = self.tokenizer.encode(text, add_special_tokens=False)[:MAX_TEXT_TOKENS]
        ids = self.tokenizer.encode(
            self.prompt.format(text=self.tokenizer.decode(tokens)), add_special_tokens=False
        )
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return ids if bos is None else [bos, *ids]  # Gemma's states are garbage without BOS

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        """Raw float32 states, one row per text: the index centres and normalizes them."""
        rows = [self.prompt_ids(t) for t in texts]
        device = next(self.model.parameters()).device
        out = np.zeros((len(rows), self.model.config.hidden_size), dtype=np.float32)
        captured = {}
        hook = self._block.register_forward_hook(
            lambda _module, _inputs, output: captured.update(h=output)
        )
        try:
            # Length order: less padding. Right padding leaves a causal model's earlier states as
            # they are, so each text's last real position is read exactly.
            order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
            for start in range(0, len(order), self.batch_size):
                index = order[start : start + self.batch_size]
                width = max(len(rows[i]) for i in index)
                ids = torch.zeros(len(index), width, dtype=torch.long, device=device)
                for r, i in enumerate(index):
                    ids[r, : len(rows[i])] = torch.tensor(rows[i])
                self.model.model(ids)
                hidden = captured["h"]
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                for r, i in enumerate(index):
                    out[i] = hidden[r, len(rows[i]) - 1].float().cpu().numpy()
        finally:
            hook.remove()
        return out

"""Rerank passages with a language model: how likely is the question, given the passage?

    from llmlab.rag.rerank import LMReranker
    reranker = LMReranker.load("smollm2-135m-instruct")    # any model llmlab.load takes
    reranker.score("为什么要做归一化", [passage_1, passage_2])   # one number per passage

The score is the mean log-probability of the question's tokens after a prompt holding the passage
("query likelihood", Nogueira-style reranking without training): a passage that explains the
question makes its words predictable. Passages are cut to `max_passage_tokens`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PROMPT = "资料：{passage}\n根据以上资料可以回答的问题："


class LMReranker:
    def __init__(self, model, tokenizer, max_passage_tokens: int = 256, batch_size: int = 2):
        self.model, self.tokenizer = model, tokenizer
        self.max_passage_tokens = max_passage_tokens
        self.batch_size = batch_size

    @classmethod
    def load(cls, name: str, **options) -> LMReranker:
        import llmlab

        model, tokenizer = llmlab.load(name)
        return cls(model, tokenizer, **options)

    def _pair(self, question: str, passage: str) -> tuple[list[int], int]:
        ids = self.tokenizer.encode(passage, add_special_tokens=False)[: self.max_passage_tokens]
        prefix = self.tokenizer.encode(
            PROMPT.format(passage=self.tokenizer.decode(ids)), add_special_tokens=False
        )
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None:  # Gemma's states are garbage without its BOS; harmless elsewhere
            prefix = [bos, *prefix]
        target = self.tokenizer.encode(question, add_special_tokens=False)
        return prefix + target, len(prefix)

    @torch.inference_mode()
    def score(self, question: str, passages: list[str]) -> list[float]:
        """Mean log p(question tokens | passage prompt) for each passage."""
        pairs = [self._pair(question, p) for p in passages]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            width = max(len(ids) for ids, _ in batch)
            # Right padding: a causal model's positions before the padding are unaffected by it.
            input_ids = torch.zeros(len(batch), width, dtype=torch.long, device=device)
            for row, (ids, _) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
            logits = self.model(input_ids)
            for row, (ids, prefix_len) in enumerate(batch):
                targets = torch.tensor(ids[prefix_len:], device=device)
                # Softmax over the question's positions only: a 262k vocabulary (Gemma) over
                # every position of a batch would take gigabytes.
                predicted = F.log_softmax(logits[row, prefix_len - 1 : len(ids) - 1].float(), -1)
                picked = predicted.gather(-1, targets[:, None]).squeeze(-1)
                scores.append(float(picked.mean()))
            del logits
        return scores

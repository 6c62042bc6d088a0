"""One prompt's sampled completions, as both rollout paths return them.

    group.input_ids        # [n, P + max_new_tokens]: prompt, then completion (pad after EOS)
    group.completion_mask  # [n, P + max_new_tokens]: 1 on completion tokens up to and including EOS
    group.texts(tokenizer)

Its own module so the reference sampler (rollout.py) and the engine sampler (engine_rollout.py)
both depend on it and rollout.py may use engine_rollout.py without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Group:
    input_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompt_length: int

    def completion_ids(self, row: int) -> list[int]:
        return self.input_ids[row][self.completion_mask[row].bool()].tolist()

    def texts(self, tokenizer) -> list[str]:
        return [
            tokenizer.decode(self.completion_ids(i), skip_special_tokens=True)
            for i in range(len(self.input_ids))
        ]

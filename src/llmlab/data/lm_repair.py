"""Mojibake repair where a neural language model has the last word: the character n-gram beam
(`mojibake.py`) repairs, then for each damaged character in turn proposes its best few fillings
(n-gram score with the neighbours as they stand), and a causal language model — llmlab's own
Gemma 3 forward, `gemma3-270m` — picks among them in context.

    from llmlab.data.lm_repair import repair_with_lm, GemmaScorer
    repair_with_lm(text, GemmaScorer.packaged("gemma3-270m"))

or in a recipe `repair_mojibake: {lm: gemma3-270m}`. Only characters where the n-gram model is
unsure (its best and second-best fillings within `MARGIN` nats) go to the language model; they are
decided left to right, so each one sees the language model's choices before it.

Scoring reuses the shared prefix: the candidate texts of one character (left context + a filling +
right context) are tokenized whole; the tokens all of them share are run once into a KV cache,
which is then copied for each candidate and only the differing tails are run, in one batch.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

TOP = 6  # fillings per damaged character the language model chooses among
MARGIN = 6.0  # n-gram score gap (nats, with the dictionary bonus) above which the n-gram decides
LEFT = 24  # characters of left context the language model sees
RIGHT = 6  # characters after the damaged one that are scored too
JOINT = 6  # best joint fillings of a group's unsure characters (by the n-gram) also scored
GAP = 2  # damaged characters at most this far apart form one group ...
GROUP_SIZE = 3  # ... of at most this many (the combinations grow as TOP ** GROUP_SIZE)


class GemmaScorer:
    """log-probabilities of texts under a causal LM with llmlab's KVCache (Gemma 3, Llama).

    `score(texts)` returns, per text, the total log-probability of its tokens after the tokens
    that all texts share (those contribute the same amount to every text, so the ranking is that
    of total log-probabilities; they are run once, into the cache, and not scored)."""

    def __init__(self, model, tokenizer, bos: int | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.bos = tokenizer.bos_token_id if bos is None else bos

    @staticmethod
    @functools.lru_cache(maxsize=2)
    def packaged(name: str = "gemma3-270m", dtype: str = "bfloat16") -> GemmaScorer:
        """The packaged model, loaded once per process. bfloat16: matrix units make it ~3× faster
        than float32 on CPUs that have them, and it picks the same fillings (docs/data.md)."""
        import llmlab

        model, tokenizer = llmlab.load(name, device="cpu", dtype=dtype)
        return GemmaScorer(model, tokenizer)

    def encode(self, text: str) -> list[int]:
        return [self.bos, *self.tokenizer.encode(text, add_special_tokens=False)]

    @torch.inference_mode()
    def score(self, texts: list[str]) -> np.ndarray:
        from llmlab.models.llama import KVCache

        ids = [self.encode(t) for t in texts]
        shared = 0
        shortest = min(len(x) for x in ids)
        while shared < shortest - 1 and all(x[shared] == ids[0][shared] for x in ids):
            shared += 1  # at least the BOS is shared; at least one token of each text is scored
        tails = [x[shared:] for x in ids]
        longest = max(len(t) for t in tails)
        inner = self.model.model
        cache = KVCache.for_model(self.model, 1, shared + longest)
        hidden = inner(torch.tensor([ids[0][:shared]]), cache)
        first = torch.log_softmax(self.model.logits(hidden[:, -1]).float(), -1)[0]
        out = np.array([float(first[t[0]]) for t in tails])
        if longest == 1:
            return out
        batch = KVCache.for_model(self.model, len(texts), shared + longest)
        for layer in range(len(batch.keys)):  # every candidate continues from the shared prefix
            batch.keys[layer][:, :, :shared] = cache.keys[layer][:, :, :shared]
            batch.values[layer][:, :, :shared] = cache.values[layer][:, :, :shared]
        batch.length = shared
        tokens = torch.zeros(len(texts), longest, dtype=torch.long)  # right-padded: causal, so
        for i, t in enumerate(tails):  # padding after a text never changes its own scores
            tokens[i, : len(t)] = torch.tensor(t)
        logp = torch.log_softmax(self.model.logits(inner(tokens[:, :-1], batch)).float(), -1)
        picked = logp.gather(2, tokens[:, 1:, None])[..., 0]
        lengths = torch.tensor([len(t) for t in tails])
        mask = torch.arange(1, longest)[None, :] < lengths[:, None]
        return out + (picked * mask).sum(1).numpy()


def repair_with_lm(
    text: str,
    scorer,
    top: int = TOP,
    margin: float = MARGIN,
    left: int = LEFT,
    right: int = RIGHT,
    ngram=None,
    progress: bool = False,
    passes: int = 1,
    joint: int = JOINT,
) -> str:
    """Repaired text (see the module docstring); `scorer` has `score(texts) -> log-probs`,
    `ngram` is a `charlm.CharNgramModel` (default: the bundled one). A second pass lets each
    choice see the language model's choices to its right too (twice the time). `joint`: how many
    of the n-gram's best fillings of a whole group of nearby unsure characters the language model
    also sees (0: one character at a time only)."""
    from llmlab.data.charlm import model
    from llmlab.data.mojibake import BEAM, LM_ORDER, _Decoder, expand

    chars, damaged = expand(text)
    if not damaged:
        return "".join(chars)
    ngram = ngram or model(LM_ORDER)
    _Decoder(chars, damaged, BEAM, ngram).run()  # chars now hold the n-gram's best fillings
    groups = _groups(sorted(damaged)) * passes
    bar = _bar(progress, sum(len(g) for g in groups))
    with bar:
        for group in groups:  # left to right: each choice is context for the next
            _decide(chars, group, damaged, scorer, ngram, top, margin, left, right, joint)
            bar.advance(len(group))
    return "".join(chars)


def _groups(positions: list[int]) -> list[list[int]]:
    """Damaged positions cut into groups of at most GROUP_SIZE whose neighbours are at most GAP
    apart: the characters of such a group are read together (连乘后: 连 and 后 around an intact
    乘), so they are also chosen together."""
    groups: list[list[int]] = []
    for i in positions:
        if groups and i - groups[-1][-1] <= GAP and len(groups[-1]) < GROUP_SIZE:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _decide(chars, group, damaged, scorer, ngram, top, margin, left, right, joint):
    """Let the language model choose the fillings of the unsure characters of `group`.

    First one character at a time, left to right: its `top` n-gram fillings with its neighbours as
    they stand, the beam's own choice always among them (the per-character top list can miss it:
    反向传播's 反 came 7th). Then, when several characters of the group were unsure, once more
    for all of them together: the fillings so far against the `joint` best fillings of the unsure
    characters together by the n-gram — one at a time, 连乘坐 can become 运乘坐 or 连乘坐 but never
    连乘后, whose two changes only pay off together."""
    unsure, options = [], {}
    for i in group:
        opts, local = _proposals(chars, i, damaged[i], ngram, top)
        # What stands comes first, so a tie keeps it (argmax takes the first best)
        ordered = [chars[i], *(c for c in opts if c != chars[i])]
        if len(ordered) < 2 or (opts[0] == chars[i] and local[0] - local[1] >= margin):
            continue  # nothing to choose, or the n-gram is sure and the beam agrees
        opts = ordered
        unsure.append(i)
        options[i] = opts
        scores = scorer.score([_window(chars, [i], (c,), left, right) for c in opts])
        chars[i] = opts[int(np.argmax(scores))]
    if joint and len(unsure) > 1:
        current = tuple(chars[i] for i in unsure)
        fillings = [current] + [f for f in _joint_best(chars, unsure, options, ngram, joint)
                                if f != current]  # fmt: skip
        if len(fillings) > 1:
            scores = scorer.score([_window(chars, unsure, f, left, right) for f in fillings])
            for i, c in zip(unsure, fillings[int(np.argmax(scores))]):
                chars[i] = c


def _window(chars, positions, filling, left, right) -> str:
    """The text from `left` characters before the first position to `right` after the last, with
    `filling` put in at `positions`."""
    start, end = max(0, positions[0] - left), min(len(chars), positions[-1] + 1 + right)
    window = chars[start:end]
    for i, c in zip(positions, filling):
        window[i - start] = c
    return "".join(window)


def _joint_best(chars, unsure, options, ngram, k):
    """The k best fillings of the `unsure` positions together by the n-gram (log-probability of
    the characters from the first to order-1 past the last), over every combination of their
    options."""
    import itertools

    n = ngram.order - 1
    lo, hi = unsure[0] - n, unsure[-1] + n + 1
    base = [ord(chars[j]) if 0 <= j < len(chars) else 10 for j in range(lo, hi)]
    combos = list(itertools.product(*(options[i] for i in unsure)))
    seqs = np.tile(np.array(base, dtype=np.int64), (len(combos), 1))
    for col, i in enumerate(unsure):
        seqs[:, i - lo] = [ord(combo[col]) for combo in combos]
    steps = seqs.shape[1] - n
    hist = np.stack([seqs[:, j - n : j] for j in range(n, seqs.shape[1])], axis=1)
    logp = ngram.logp(hist.reshape(-1, n), seqs[:, n:].reshape(-1)).reshape(len(combos), steps)
    best = np.argsort(-logp.sum(1), kind="stable")[:k]
    return [combos[b] for b in best]


def _proposals(chars: list[str], i: int, options: list[str], ngram, top: int):
    """The `top` fillings of damaged position i by the n-gram model with its neighbours as they
    stand (log-probability of the characters from i to order-1 past it), best first.

    Per position, not per group of neighbouring damaged characters: the beam's best few fillings
    of a whole group differ only in its last characters, so they would hide the alternatives for
    the first ones (连续坐/连续后 … never 后 at an earlier position)."""
    n = ngram.order - 1
    window = [ord(chars[j]) if 0 <= j < len(chars) else 10 for j in range(i - n, i + n + 1)]
    total = np.zeros(len(options))
    for k, c in enumerate(options):
        seq = window[:n] + [ord(c)] + window[n + 1 :]
        hist = np.array([seq[j - n : j] for j in range(n, len(seq))], dtype=np.int64)
        total[k] = ngram.logp(hist, np.array(seq[n:], dtype=np.int64)).sum()
    order = np.argsort(-total, kind="stable")[:top]
    return [options[k] for k in order], total[order]


def _bar(progress: bool, total: int):
    if progress:
        from llmlab.progress import progress_bar

        return progress_bar("repair_mojibake (language model)", total=total, unit="damaged chars")

    class _Quiet:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def advance(self, n: int = 1) -> None:
            pass

    return _Quiet()


@functools.lru_cache(maxsize=4)  # one load attempt (and one warning) per process
def scorer_or_none(name: str):
    """The packaged model's scorer, or None with a warning when it is not installed (the n-gram
    repair is then the fallback)."""
    from llmlab.errors import LlmlabError

    try:
        return GemmaScorer.packaged(name)
    except (LlmlabError, FileNotFoundError, ImportError) as exc:
        warnings.warn(
            f"repair_mojibake: language model {name!r} is not available ({exc}); "
            "falling back to the character n-gram repair",
            stacklevel=2,
        )
        return None

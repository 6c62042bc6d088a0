"""rnn-vs-transformer-parallel: forward+backward time against sequence length, equal parameters.

    llmlab exp run rnn-vs-transformer-parallel [--fast]

An LSTM layer (torch.nn.LSTM's fused loop, and llmlab's own from gate equations) against a
Transformer encoder layer with the same number of parameters (d_model 64, 4 heads, d_ff 128 ≈ a
64→64 LSTM). The RNN's step t needs h_{t−1}: T dependent steps, each a small matrix product. The
encoder layer computes all T positions with a handful of large matrix products. Times are wall
clock (median of repeats, one thread), so they vary between runs; they are kept under "timings".
"""

from __future__ import annotations

import statistics
import time

import torch

from llmlab.exp.common import Check, Claim, Outcome, fmt, new_figure, parameter_count
from llmlab.models.seq2seq import EncoderLayer
from llmlab.nn.recurrent import LSTM

NAME = "rnn-vs-transformer-parallel"
TITLE = "forward+backward time vs sequence length: LSTM vs Transformer layer"
CLAIM = Claim(
    section="Transformer为什么可以并行",
    zh="RNN/LSTM 必须按时间步一个一个处理序列，下一个位置依赖前一个位置的隐藏状态，无法并行。"
       "Transformer 完全去除了这种时间步依赖，所有位置可以同时进行计算。",
    en="An RNN/LSTM must process a sequence one time step at a time — each position depends on the previous "
       "hidden state — so it cannot parallelize. The Transformer removes that dependency: all positions are "
       "computed at once.",
)


def time_fwd_bwd(model, x, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = model(x)
        (out[0] if isinstance(out, tuple) else out).sum().backward()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(fast: bool) -> Outcome:
    lengths = (8, 32, 128) if fast else (16, 32, 64, 128, 256, 512)
    repeats = 3 if fast else 5
    torch.manual_seed(0)
    models = {"torch.nn.LSTM": torch.nn.LSTM(64, 64, batch_first=True), "llmlab LSTM": LSTM(64, 64),
              "Transformer layer": EncoderLayer(64, 4, 128)}
    params = {k: parameter_count(m) for k, m in models.items()}
    times = {k: [] for k in models}
    for length in lengths:
        x = torch.randn(8, length, 64)
        for name, model in models.items():
            times[name].append(time_fwd_bwd(model, x, repeats))
    ratio = {k: [a / b for a, b in zip(times[k], times["Transformer layer"])] for k in ("torch.nn.LSTM", "llmlab LSTM")}
    rel_params = abs(params["torch.nn.LSTM"] - params["Transformer layer"]) / params["torch.nn.LSTM"]
    checks = [
        Check(f"equal parameters: LSTM {params['torch.nn.LSTM']}, Transformer layer {params['Transformer layer']} "
              f"({fmt(100 * rel_params)}% apart)", rel_params < 0.02),
        Check(f"the LSTM's sequential steps cost more as sequences grow: LSTM/Transformer time "
              f"{fmt(ratio['torch.nn.LSTM'][0])}× at T={lengths[0]} → {fmt(ratio['torch.nn.LSTM'][-1])}× at T={lengths[-1]}",
              ratio["torch.nn.LSTM"][-1] > ratio["torch.nn.LSTM"][0]),
        Check(f"at T={lengths[-1]} the Transformer layer is faster than both LSTMs "
              f"({fmt(ratio['torch.nn.LSTM'][-1])}× and {fmt(ratio['llmlab LSTM'][-1])})",
              min(ratio["torch.nn.LSTM"][-1], ratio["llmlab LSTM"][-1]) > 1),
    ]
    discussion = (
        "Sequential dependency: the LSTM runs T dependent steps (critical path ∝ T), each an [8×64]·[64×256] "
        "product too small to keep the hardware busy; the encoder layer's critical path is a fixed number of "
        "[8T×64]-sized products regardless of T (attention's cost grows as T², but in parallel work, not in "
        "dependent steps). Measured on one CPU thread, where 'parallel' means vectorized large matrix "
        "products; on a GPU the gap is far larger. Times (ms): "
        + "; ".join(f"{k}: " + ", ".join(f"T={t} {fmt(1000 * s)}" for t, s in zip(lengths, v)) for k, v in times.items())
    )
    if ratio["torch.nn.LSTM"][-1] < 1:
        discussion += (
            ". Here torch.nn.LSTM beat the Transformer layer: its time loop runs in C++ with fused gates, and "
            "one CPU thread has no parallel units for the Transformer's independent positions to fill — the "
            "claim is about parallel hardware, and on this setup the wall-clock advantage did not show. Our "
            "Python-loop LSTM, with the same per-step structure but interpreter overhead per step, shows "
            "the sequential cost directly"
        )
    fig, axes = new_figure(2, width=5)
    for name, v in times.items():
        axes[0].loglog(lengths, [1000 * s for s in v], marker="o", base=2, label=name)
    axes[0].set(title="forward + backward time (batch 8)", xlabel="sequence length", ylabel="ms")
    axes[0].legend()
    for name, v in ratio.items():
        axes[1].semilogx(lengths, v, marker="o", base=2, label=f"{name} / Transformer")
    axes[1].axhline(1, color="grey", lw=0.5)
    axes[1].set(title="time ratio", xlabel="sequence length")
    axes[1].legend()
    numbers = {"lengths": list(lengths), "parameters": params, "sequential_steps": {"LSTM": list(lengths),
               "Transformer layer": [1] * len(lengths)}}
    return Outcome(numbers, checks, fig, discussion, timings={"seconds": times, "lstm_over_transformer": ratio})

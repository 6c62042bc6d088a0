"""Quantization: size, memory, quality and speed of every method on SmolLM2 or Gemma 3, one run.

    .venv/bin/python bench/quant.py                          # every row, 2 threads, table + JSON
    .venv/bin/python bench/quant.py --model gemma3-270m --rows bf16,int8,int4-rtn,int4-gptq
    .venv/bin/python bench/quant.py --rows fp32,w8a8-dynamic --ppl-tokens 512 --tokens 32
    .venv/bin/python bench/quant.py --rows "" --qat runs/pretrain-tiny256/model --qat-bits 2 --qat-group-size 64
    .venv/bin/python bench/quant.py --rows w8a8-dynamic-gptq --json a.json   # rows in parallel processes,
    .venv/bin/python bench/quant.py --merge a.json b.json                    # then one table
    .venv/bin/python bench/quant.py --kernels --model gemma3-270m            # the kernel table only
    .venv/bin/python bench/quant.py --activation-grids --model gemma3-270m   # symmetric vs asymmetric

Rows: fp32, bf16, int8 weight-only, W8A8 static, W8A8 dynamic (RTN int8 weights; -gptq: GPTQ
int8 weights; -mixed: that plus --keep-float groups in float; -head: GPTQ weights with the LM head
float; -asym: GPTQ weights, activations per token over their own [min, max]; -asym-outliers:
that plus --outliers input channels of every linear in float, LLM.int8()-style — mixed, not pure;
-asym-groups: a grid per --activation-group-size inputs of each token, not smoothed; -rtn: with
RTN weights), all W8A8 rows with SmoothQuant α searched per layer group (but -nosmooth and
-groups), int4 RTN and int4 GPTQ (both at --group-size, falling back to 64 on SmolLM2's 576-wide
inputs), int4 from the GGUF's own Q4_1 blocks (the engine's existing int4 path, for reference), and llama.cpp on the same GGUF when
`llama_cpp` imports. Each quantized variant is made once with `llmlab quantize`'s code and written
as a folder (cached under --work); each row then runs in its own process (so peak RSS is that
row's): load the folder, perplexity on the held-out English (stories-en.txt lines 5401–5999) and
Chinese (notes-zh.txt lines 896–994) text, first --ppl-tokens tokens each, disjoint 512-token
windows; single-stream and --batch-concurrent greedy decode of --tokens new tokens through the
engine (chat prompts, EOS ignored, prefix cache off, best of --repeats). Folders are cached
under --work/MODEL/ROW. Tokens/s are given by
wall clock and by the process's CPU time (on a busy shared machine the CPU-time rate is the one
that depends less on the other jobs). The load average is printed at the start and the end.

The source weights are the packaged Q4_1 GGUF's, dequantized: "fp32" is that model in float32.

--qat DIR: a tiny pretrained model (recipes/pretrain-tiny.yaml) in float, RTN (PTQ) and after
QAT fine-tuning (--qat-steps), at --qat-bits (4, or 3 / 2 on the int4 layout) and
--qat-group-size, plus the control: the float model fine-tuned the same way, and its RTN;
perplexity on the held-out English and Chinese text; "recovered" = (PTQ − QAT) / (PTQ − float)
of the perplexity loss, and the same against the control.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

MODEL = "smollm2-135m-instruct"  # default --model
EN, ZH = "bundled:stories-en.txt", "bundled:notes-zh.txt"
# row → how its folder is made: (method, bits[, options for `quantize_model_with`]), or a float
# dtype. W8A8 rows use SmoothQuant with α searched per layer group on the calibration split;
# "-gptq" chooses the int8 weight codes with GPTQ; "-mixed" also keeps the --keep-float groups
# with the largest calibration error in float, "-head" keeps the LM head float instead.
ROWS = {
    "fp32": ("float", "float32"),
    "bf16": ("float", "bfloat16"),
    "int8": ("rtn", 8),
    "w8a8-static": ("static", 8),
    "w8a8-dynamic": ("dynamic", 8),
    "w8a8-dynamic-gptq": ("dynamic", 8, {"weights": "gptq"}),
    "w8a8-dynamic-mixed": ("dynamic", 8, {"weights": "gptq", "keep_float": "KEEP_FLOAT"}),
    "w8a8-dynamic-head": ("dynamic", 8, {"weights": "gptq", "float_layers": ["lm_head"]}),
    "w8a8-dynamic-asym": ("dynamic", 8, {"weights": "gptq", "activations": "asymmetric"}),
    "w8a8-dynamic-asym-head": (
        "dynamic",
        8,
        {"weights": "gptq", "activations": "asymmetric", "float_layers": ["lm_head"]},
    ),
    # mixed, LLM.int8()-style: --outliers input channels of every linear kept float
    "w8a8-dynamic-asym-outliers": (
        "dynamic",
        8,
        {"weights": "gptq", "activations": "asymmetric", "outliers": "OUTLIERS"},
    ),
    "w8a8-dynamic-asym-outliers-nosmooth": (
        "dynamic",
        8,
        {"weights": "gptq", "activations": "asymmetric", "outliers": "OUTLIERS", "smooth": None},
    ),
    # pure W8A8, finer activation grids: one per --activation-group-size inputs of a token
    "w8a8-dynamic-asym-groups": (
        "dynamic",
        8,
        {
            "weights": "gptq",
            "activations": "asymmetric",
            "activation_group_size": "GROUP",
            "smooth": None,
        },
    ),
    "w8a8-dynamic-asym-groups-rtn": (
        "dynamic",
        8,
        {"activations": "asymmetric", "activation_group_size": "GROUP", "smooth": None},
    ),
    "int4-rtn": ("rtn", 4),
    "int4-gptq": ("gptq", 4),
    "int4-q4_1": ("gguf", 4),
    "llama.cpp": ("llama.cpp", 4),
}


PLACEHOLDERS = ("KEEP_FLOAT", "OUTLIERS", "GROUP")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM resets at exec, while ru_maxrss keeps the forking
    parent's high-water mark (Linux), which made an earlier run's column wrong."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(row: str, work: Path, args) -> Path | None:
    """The row's model folder (made once; None for rows that load the GGUF)."""
    import llmlab
    from llmlab.formats.hf import save_hf_folder
    from llmlab.quant import quantize_model_with
    from llmlab.quant.save import save_quantized

    kind, arg, *rest = ROWS[row]
    options = (rest or [{}])[0]
    # a count given on the command line (--keep-float, --outliers) names the folder too
    counted = [k for k, v in options.items() if v in PLACEHOLDERS]
    options = {k: getattr(args, k) if k in counted else v for k, v in options.items()}
    if kind in ("gguf", "llama.cpp"):
        return None
    folder = work / args.model / "-".join([row, *(str(options[k]) for k in counted)])
    if (folder / "config.json").exists():
        return folder
    start = time.perf_counter()
    model, tokenizer = llmlab.load(args.model, device="cpu", dtype="float32")
    if kind == "float":
        save_hf_folder(model.to(getattr(torch, arg)), folder, tokenizer=tokenizer)
    else:
        model, info = quantize_model_with(
            model, tokenizer, kind, arg, group_size=args.group_size, samples=args.samples, **options
        )
        save_quantized(model, folder, tokenizer, info)
    print(f"  made {row} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return folder


def measure_row(args) -> dict:
    """Runs in the row's own process: load, perplexity, decode speed, peak RSS."""
    from engine import Rate, chat_prompts, engine_run

    import llmlab
    from llmlab.engine import LLM
    from llmlab.quant.perplexity import perplexity
    from llmlab.quant.save import folder_bytes
    from llmlab.quant.text_data import split_text
    from llmlab.registry import resolve

    torch.set_num_threads(args.threads)
    row, result = args.row, {"row": args.row}
    kind, arg, *_ = ROWS[row]
    gguf = resolve(args.model)
    if kind == "llama.cpp":
        return measure_llama_cpp(args, gguf, result)
    source = str(gguf) if kind == "gguf" else args.folder
    result["disk_mb"] = folder_bytes(source) / 1e6
    load = dict(quant="int4") if kind == "gguf" else {}
    dtype = "bfloat16" if arg == "bfloat16" else "float32"
    model, tokenizer = llmlab.load(source, device="cpu", dtype=dtype, **load)
    for name, text in (("en", EN), ("zh", ZH)):
        r = perplexity(
            model, tokenizer, split_text(text, "heldout"), 512, 512, max_tokens=args.ppl_tokens
        )
        result[f"ppl_{name}"], result[f"ppl_{name}_tok_s"] = r.perplexity, r.tokens_per_s
    llm = LLM(model, tokenizer=tokenizer, enable_prefix_caching=False)
    prompts = chat_prompts(tokenizer, args.batch)
    for label, batch in (("single", prompts[:1]), ("batch", prompts)):
        engine_run(llm, batch, 2)  # warm-up
        rate = Rate()
        for _ in range(args.repeats):
            rate.measure(lambda batch=batch: engine_run(llm, batch, args.tokens))
        result[f"{label}_tok_s"], result[f"{label}_tok_s_cpu"] = rate.wall, rate.cpu
    result["tokens"] = rate.tokens[:8]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def measure_llama_cpp(args, gguf, result) -> dict:
    """Native llama.cpp (C API, bench/_llamacpp.py) on the packaged GGUF: single stream and
    --batch sequences decoded together, same threads, same prompts, prefill included as ours."""
    from _llamacpp import LlamaCpp, available
    from engine import Rate, chat_prompts

    if not available():
        result["missing"] = "llama_cpp not importable (make bench-peers builds it)"
        return result
    import llmlab

    _, tokenizer = llmlab.load(args.model, device="cpu")
    prompts = chat_prompts(tokenizer, args.batch)
    per_seq = -(-(max(len(p) for p in prompts) + args.tokens + 8) // 256) * 256
    peer = LlamaCpp(gguf, args.threads, n_seq=args.batch, n_ctx_per_seq=per_seq)
    for label, batch in (("single", prompts[:1]), ("batch", prompts)):
        peer.generate(batch, 2)  # warm-up
        rate = Rate()
        for _ in range(args.repeats):
            rate.measure(lambda batch=batch: peer.generate(batch, args.tokens))
        result[f"{label}_tok_s"], result[f"{label}_tok_s_cpu"] = rate.wall, rate.cpu
    result["tokens"] = rate.tokens[:8]
    peer.close()
    result["disk_mb"] = gguf.stat().st_size / 1e6
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def qat_section(args) -> dict:
    """Float vs int4 RTN (PTQ) vs int4 QAT on a tiny pretrained model, same group size; plus the
    control that separates QAT's training from its quantization awareness: the float model
    fine-tuned for the same steps on the same windows (no fake quantization), and that model
    after RTN. "recovered" = (PTQ − QAT) / (PTQ − float) of the perplexity; "vs control" uses the
    fine-tuned float model and its RTN in place of the original ones."""
    import copy

    import llmlab
    from llmlab.quant.perplexity import perplexity
    from llmlab.quant.qat import convert_qat, prepare_qat, train_qat
    from llmlab.quant.rtn import quantize_rtn
    from llmlab.quant.text_data import calibration_batch, split_text

    torch.set_num_threads(args.threads)
    g, steps, lr, bits = args.qat_group_size, args.qat_steps, args.qat_lr, args.qat_bits
    out = {"model": args.qat, "bits": bits, "group_size": g, "steps": steps, "lr": lr}
    base, tokenizer = llmlab.load(args.qat, device="cpu", dtype="float32")
    windows = calibration_batch(tokenizer, [EN, ZH], args.qat_samples, 129)
    out["train_windows"] = list(windows.shape)
    texts = {name: split_text(text, "heldout") for name, text in (("en", EN), ("zh", ZH))}

    def score(label, model):
        for name, text in texts.items():
            out[f"{label}_{name}"] = perplexity(model, tokenizer, text, 128, 128).perplexity
        print(f"  qat section: {label} done", file=sys.stderr, flush=True)

    score("float", base)
    score("ptq_rtn", quantize_rtn(copy.deepcopy(base), bits, g))
    qat = prepare_qat(copy.deepcopy(base), g, bits)
    out["qat_loss"] = train_qat(qat, windows, steps=steps, lr=lr).get("loss")
    score("qat", convert_qat(qat))
    tuned = copy.deepcopy(base)
    out["finetune_loss"] = train_qat(tuned, windows, steps=steps, lr=lr).get("loss")
    score("finetuned", tuned)
    score("finetuned_rtn", quantize_rtn(tuned, bits, g))
    for name in ("en", "zh"):
        for label, ref, ptq in (
            ("recovered", "float", "ptq_rtn"),
            ("recovered_vs_control", "finetuned", "finetuned_rtn"),
        ):
            loss = out[f"{ptq}_{name}"] - out[f"{ref}_{name}"]
            gain = out[f"{ptq}_{name}"] - out[f"qat_{name}"]
            out[f"{label}_{name}"] = gain / loss if loss > 0 else None
    return out


# (out, in) of the fused q/k/v, fused gate/up, down and LM head, per model
KERNEL_SHAPES = {
    "smollm2-135m-instruct": ((960, 576), (3072, 576), (576, 1536), (49152, 576)),
    "gemma3-270m": ((1536, 640), (4096, 640), (640, 2048), (262144, 640)),
}


def kernels(model: str, threads: int, rows_list=(1, 16), repeats: int = 30) -> list[dict]:
    """µs per call (best of `repeats`) of each int8/int4 kernel torch has here, at the model's
    shapes, for one token and for 16: llmlab's int4 kernel (nn/native.py) and PyTorch's packed
    int4 and int8 weight-only kernels (bf16 activations), torch._int_mm (int8 × int8 → int32),
    oneDNN's prepacked u8 × s8 GEMM with the weight scales applied (W8A8Linear above 32 rows),
    llmlab's fused u8 × s8 kernel with both scales applied (csrc/w8a8_matmul.cpp: up to 32 rows),
    the whole W8A8Linear (per-token quantization, GEMM, rescale), torch.ao's fbgemm dynamic
    quantized linear (per-tensor activations), and
    float32 / bfloat16 dense matmuls."""
    import warnings

    from llmlab.nn.quantized_linear import Int4Linear, Int8Linear, W8A8Linear

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    out = []
    for n, k in KERNEL_SHAPES[model]:
        w = torch.randn(n, k) * 0.02
        linear = torch.nn.Linear(k, n, bias=False)
        linear.weight.data = w
        int4 = Int4Linear.from_weight(w, 64, use_kernel="native")
        int4_torch = Int4Linear.from_weight(w, 64, use_kernel="torch")
        int8 = Int8Linear.from_linear(linear)
        w8a8 = W8A8Linear.from_weight(w)
        fbgemm = torch.ao.nn.quantized.dynamic.Linear(k, n)
        scale = w.abs().amax(1) / 127
        fbgemm.set_weight_bias(
            torch.quantize_per_channel(w, scale, torch.zeros(n, dtype=torch.long), 0, torch.qint8),
            None,
        )
        w_t, w_bf16 = w.t().contiguous(), w.bfloat16()
        for m in rows_list:
            x = torch.randn(m, k)
            calls = _kernel_calls(int4, int4_torch, int8, w8a8, fbgemm, x, w_t, w_bf16)
            row = {"shape": f"{n}×{k}", "tokens": m}
            for name, fn in calls.items():
                fn()
                best = min(_seconds(fn) for _ in range(repeats))
                row[name] = best * 1e6
            out.append(row)
    return out


def _kernel_calls(int4, int4_torch, int8, w8a8, fbgemm, x, w_t, w_bf16) -> dict:
    xb = x.bfloat16()
    xq = torch.randint(-127, 128, x.shape, dtype=torch.int8)
    xq_padded = torch.cat([xq, xq.new_zeros(max(0, 17 - len(xq)), xq.shape[1])])  # _int_mm: M > 16
    xu = (xq.to(torch.int16) + 128).to(torch.uint8)  # the codes as W8A8Linear hands them over
    from llmlab.nn import native

    fused = native.pack_w8a8(w8a8.qweight) if native.w8a8_fits(*w8a8.qweight.shape) else None
    token_scale = torch.full((len(x),), 0.01)
    return {
        "int4 g64 llmlab (bf16 act)": lambda: int4._kernel_matmul(xb),
        "int4 g64 PyTorch packed (bf16 act)": lambda: int4_torch._kernel_matmul(xb),
        "int8 weight-only (bf16 act)": lambda: int8._kernel_matmul(xb),
        "_int_mm int8×int8": lambda: torch._int_mm(xq_padded, w8a8.qweight.t()),
        "oneDNN u8×s8 prepacked": lambda: w8a8._onednn_matmul(xu),
        "llmlab fused u8×s8 (VNNI, scales in)": lambda: native.w8a8_matmul(
            xu, *fused, w8a8.weight_scale, token_scale
        ),
        "W8A8Linear (dynamic, whole)": lambda: w8a8(x),
        "fbgemm dynamic linear": lambda: fbgemm(x),
        "fp32 dense": lambda: x @ w_t,
        "bf16 dense": lambda: xb @ w_bf16.t(),
    }


@torch.no_grad()
def activation_grids(model_name: str, samples: int) -> dict:
    """Calibration split only: per kind of layer group, the mean relative output error
    Σ‖Y_q − Y‖² / Σ‖Y‖² of dynamic W8A8 (RTN int8 weights) on collect_inputs' 256 rows per group,
    with symmetric and asymmetric per-token activations, without smoothing and with α = 0.5."""
    import llmlab
    from llmlab.quant.flows import DEFAULT_CALIB
    from llmlab.quant.rtn import linear_targets
    from llmlab.quant.smooth import PER_TOKEN_ASYMMETRIC, collect_inputs, fixed_factors, group_error
    from llmlab.quant.text_data import calibration_batch

    model, tokenizer = llmlab.load(model_name, device="cpu", dtype="float32")
    stats = collect_inputs(model, calibration_batch(tokenizer, DEFAULT_CALIB, samples, 256))
    targets = dict(linear_targets(model))
    errors: dict[str, list[float]] = {}
    for alpha in (None, 0.5):
        factors = fixed_factors(model, stats, alpha) if alpha else {}
        for group in stats.groups:
            linears, smooth = [targets[n] for n in group], factors.get(group[0])
            for grid in (None, PER_TOKEN_ASYMMETRIC):
                key = f"{group[0].split('.')[-1]} | {alpha or 'off'} | {grid or 'symmetric'}"
                errors.setdefault(key, []).append(
                    group_error(linears, stats.samples[group[0]], smooth, grid)
                )
    return {k: sum(v) / len(v) for k, v in sorted(errors.items())}


def print_kernels(rows: list[dict]):
    names = [k for k in rows[0] if k not in ("shape", "tokens")]
    print("| out × in | tokens | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in rows:
        cells = " | ".join(f"{r[k]:.0f}" for k in names)
        print(f"| {r['shape']} | {r['tokens']} | {cells} |")


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(rows: list[dict], qat: dict | None, header: str):
    print(header)
    bf16 = next((r for r in rows if r["row"] == "bf16"), None)
    print(
        "| row | disk MB | peak RSS MB | ppl en | ppl zh | vs bf16 (en / zh) | single tok/s (cpu) "
        "| 16 concurrent tok/s (cpu) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "missing" in r:
            print(f"| {r['row']} | — | — | — | — | — | not run: {r['missing']} | — |")
            continue
        rel = "—"
        if bf16 and "ppl_en" in r and "ppl_en" in bf16:
            rel = " / ".join(
                f"{100 * (r[f'ppl_{k}'] / bf16[f'ppl_{k}'] - 1):+.2f} %" for k in ("en", "zh")
            )
        ppl = [f"{r[k]:.3f}" if k in r else "—" for k in ("ppl_en", "ppl_zh")]
        batch = (
            f"{r['batch_tok_s']:.1f} ({r['batch_tok_s_cpu']:.1f})" if "batch_tok_s" in r else "—"
        )
        print(
            f"| {r['row']} | {r['disk_mb']:.1f} | {r['peak_rss_mb']:.0f} | {ppl[0]} | {ppl[1]} | {rel} "
            f"| {r['single_tok_s']:.1f} ({r['single_tok_s_cpu']:.1f}) | {batch} |"
        )
    if qat:
        print(
            f"\nQAT vs PTQ, {qat['bits']}-bit (group {qat['group_size']}, {qat['steps']} steps at lr "
            f"{qat['lr']}) on {qat['model']}:"
        )
        print(
            "| | float | RTN (PTQ) | QAT | recovered | float fine-tuned "
            "| its RTN | recovered vs control |"
        )
        print("|---|---|---|---|---|---|---|---|")

        def pct(v):
            return "—" if v is None else f"{100 * v:.0f} %"

        for name in ("en", "zh"):
            cells = [f"{qat[f'{k}_{name}']:.3f}" for k in ("float", "ptq_rtn", "qat")]
            control = [f"{qat[f'{k}_{name}']:.3f}" for k in ("finetuned", "finetuned_rtn")]
            print(
                f"| ppl {name} | {' | '.join(cells)} | {pct(qat[f'recovered_{name}'])} "
                f"| {' | '.join(control)} | {pct(qat[f'recovered_vs_control_{name}'])} |"
            )


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", default=MODEL, help="a packaged GGUF model: smollm2-135m-instruct, gemma3-270m"
    )
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows (default: all)")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--samples", type=int, default=16, help="calibration sequences (256 tokens)")
    p.add_argument("--ppl-tokens", type=int, default=2048, help="held-out tokens per language")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per decode run")
    p.add_argument("--batch", type=int, default=16, help="concurrent requests")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="runs/bench-quant", help="where the quantized folders go")
    p.add_argument("--qat", default=None, help="tiny pretrained model folder for the QAT section")
    p.add_argument("--qat-steps", type=int, default=100)
    p.add_argument("--qat-lr", type=float, default=3e-4)
    p.add_argument(
        "--qat-group-size", type=int, default=256, help="256: per channel on 256-wide inputs"
    )
    p.add_argument("--qat-samples", type=int, default=64, help="129-token training windows")
    p.add_argument("--qat-bits", type=int, default=4, help="4, or 3 / 2 (int4 layout, fewer codes)")
    p.add_argument(
        "--keep-float", type=int, default=2, help="float groups in the w8a8-dynamic-mixed row"
    )
    p.add_argument(
        "--outliers", type=int, default=8, help="float input channels in the -outliers rows"
    )
    p.add_argument(
        "--activation-group-size", type=int, default=64, help="inputs per grid in the -groups row"
    )
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="print one table from the --json files of runs made in parallel (rows in order)",
    )
    p.add_argument(
        "--kernels", action="store_true", help="only the kernel table at --model's shapes"
    )
    p.add_argument(
        "--activation-grids",
        action="store_true",
        help="only the calibration-split error of symmetric vs asymmetric per-token activations",
    )
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: measure one row
    p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.activation_grids:
        print("| first linear of the group | smoothing α | activation grid | mean relative error |")
        print("|---|---|---|---|")
        for key, value in activation_grids(args.model, args.samples).items():
            print(f"| {key} | {value:.2e} |")
        return
    if args.kernels:
        print(f"µs per call, best of 30, {args.threads} threads, load average {load_average()}")
        print_kernels(kernels(args.model, args.threads))
        return
    if args.row:
        print(json.dumps(measure_row(args)))
        return
    if args.merge:
        runs = [json.loads(Path(f).read_text()) for f in args.merge]
        header = "merged: " + " | ".join(r["header"] for r in runs)
        qat = next((r["qat"] for r in runs if r.get("qat")), None)
        report([row for r in runs for row in r["rows"]], qat, header)
        return
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"error: unknown rows {unknown} (known: {', '.join(ROWS)})")
    header = (
        f"bench/quant.py {' '.join(sys.argv[1:])} — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"load average at start {load_average()}, torch {torch.__version__}, {args.threads} threads"
    )
    print(header, file=sys.stderr, flush=True)
    work = Path(args.work)
    torch.set_num_threads(args.threads)
    results = []
    for row in rows:  # each variant made just before its row runs
        folder = prepare(row, work, args)
        command = [sys.executable, __file__, "--row", row, "--threads", str(args.threads)]
        command += ["--model", args.model]
        command += ["--ppl-tokens", str(args.ppl_tokens), "--tokens", str(args.tokens)]
        command += ["--batch", str(args.batch), "--repeats", str(args.repeats)]
        if folder:
            command += ["--folder", str(folder)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"error: row {row} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {row}: {results[-1]}", file=sys.stderr, flush=True)
    qat = qat_section(args) if args.qat else None
    header += f"; load average at the end {load_average()}"
    report(results, qat, header)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"header": header, "rows": results, "qat": qat}, indent=2)
        )


if __name__ == "__main__":
    main()

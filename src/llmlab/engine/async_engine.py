"""The engine for a server: a worker thread steps the engine while asyncio handlers await results.

    engine = AsyncEngine(LLMEngine(model, tokenizer), max_queue=256)
    engine.start()
    async for out in engine.generate("req-1", prompt_ids, SamplingParams(max_tokens=32)):
        ...                                  # a RequestOutput each step, `.finished` at the end
    engine.stop()                            # drains by default

Handlers never touch the LLMEngine: requests and aborts go through a thread-safe inbox that the
worker empties between steps, and outputs come back through each request's asyncio queue. An
async generator that is closed early (the client went away) aborts its request, which frees its
KV blocks. PyTorch releases the GIL inside its kernels, so the event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

from llmlab.engine.llm_engine import LLMEngine, RequestOutput
from llmlab.engine.sampling_params import SamplingParams
from llmlab.errors import LlmlabError

log = logging.getLogger("llmlab.engine")


class QueueFullError(LlmlabError):
    """More requests are in flight than the server accepts; the client should retry later."""


class AsyncEngine:
    def __init__(self, engine: LLMEngine, max_queue: int = 256):
        self.engine = engine
        self.max_in_flight = engine.scheduler.max_num_seqs + max_queue
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.step_seconds = 0.0

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    def start(self):
        if self._thread is None:
            # llguidance's view of the tokenizer takes ~2 s to build: do it before it is needed
            threading.Thread(target=self.engine.guide.warm_up, daemon=True).start()
            self._thread = threading.Thread(target=self._run, name="llmlab-engine", daemon=True)
            self._thread.start()

    def stop(self, drain: bool = True, timeout: float = 30.0):
        """Stop the worker; with drain, first let in-flight requests finish (up to timeout)."""
        deadline = time.monotonic() + timeout
        while drain and self._streams and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def submit(self, request_id: str, prompt_ids: list[int], params: SamplingParams):
        """Check and queue a request now (raising QueueFullError, ContextLengthError…); return an
        async iterator of RequestOutputs, one per step that changed it, the last `.finished`.
        Closing the iterator early aborts the request. Call from the event loop's thread."""
        if self._stopping:
            raise QueueFullError("the server is shutting down")
        if len(self._streams) >= self.max_in_flight:
            raise QueueFullError(f"too many requests in flight ({len(self._streams)}); retry later")
        self.engine.check_prompt(prompt_ids)
        self.engine.guide.check(params)  # a bad schema/grammar fails here, not in the worker
        outputs: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), outputs)
        self._send(("add", request_id, prompt_ids, params))
        return self._results(request_id, outputs)

    async def _results(self, request_id: str, outputs: asyncio.Queue):
        finished = False
        try:
            while not finished:
                out = await outputs.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                yield out
        finally:  # no awaits here: this also runs when the handler's task is being cancelled
            self._streams.pop(request_id, None)
            if not finished:
                self._send(("abort", request_id))

    def release(self, request_id: str):
        """Forget a submitted request whose iterator will never be read (aborts it)."""
        if self._streams.pop(request_id, None) is not None:
            self._send(("abort", request_id))

    async def generate(self, request_id: str, prompt_ids: list[int], params: SamplingParams):
        """Submit and iterate in one: `async for out in engine.generate(...)`."""
        async for out in self.submit(request_id, prompt_ids, params):
            yield out

    def abort(self, request_id: str):
        self._send(("abort", request_id))

    def _send(self, message):
        self._inbox.put(message)
        self._wake.set()

    def _deliver(self, request_id: str, item):
        target = self._streams.get(request_id)
        if target is not None:
            loop, outputs = target
            loop.call_soon_threadsafe(outputs.put_nowait, item)

    def _drain_inbox(self):
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return
            if message[0] == "add":
                _, request_id, prompt_ids, params = message
                if request_id not in self._streams:
                    continue  # the client left before the worker saw its request
                try:
                    self.engine.add_request(request_id, prompt_ids, params)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting handler
                    self._deliver(request_id, exc)
            else:
                self.engine.abort(message[1])

    def _run(self):
        while not self._stopping:
            self._drain_inbox()
            if not self.engine.has_unfinished():
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            try:
                started = time.perf_counter()
                outputs: list[RequestOutput] = self.engine.step()
                self.step_seconds += time.perf_counter() - started
            except Exception as exc:  # noqa: BLE001 - fail the requests in flight, keep serving
                log.exception("engine step failed")
                for request_id in list(self.engine.requests):
                    self.engine.abort(request_id)
                    self._deliver(request_id, LlmlabError(f"engine error: {exc}"))
                continue
            for out in outputs:
                self._deliver(out.request_id, out)

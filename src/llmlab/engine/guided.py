"""Constrained (guided) decoding: a grammar state per sequence, turned into a token mask each step.

    params = SamplingParams(json_schema={"type": "object", ...})   # or regex= / choice= / grammar=
    LLM("smollm2-135m-instruct").generate("Describe a cat as JSON:", params)

Built on llguidance (Earley parser + lexer over the tokenizer's token trie; tens of µs of CPU per
mask). The pieces, each used by the engine:

- `grammar_for(params)`: the llguidance grammar text for a request's JSON Schema, regex, choice
  list or Lark grammar (None for a free request).
- `Guide(tokenizer, vocab_size)`: one per engine. It bridges our Hugging Face tokenizer to
  llguidance once (~2 s for a 49k vocabulary, so lazily, on the first constrained request), compiles
  grammars into matchers (cached by grammar text, so a repeated schema costs a copy, not a
  compile), fills the bitmasks of the constrained rows of a step (in a worker thread, overlapped
  with the model's forward pass), and advances each matcher with its sampled token.

JSON Schemas compile strictly: an unsupported keyword or a bad `$ref` is an error naming it, never
a silently looser grammar; `required` and `additionalProperties: false` are enforced. JSON is
emitted with Python's separators (", " and ": ") and no other whitespace, so a small model at
temperature 1 cannot wander off into endless blank lines.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from llmlab.errors import LlmlabError

# Passed to llguidance's JSON compiler (a schema's own "x-guidance" may override them).
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_CACHE_SIZE = 64  # compiled grammars kept per engine


def _llguidance():
    try:
        import llguidance
        import llguidance.hf  # noqa: F401 - the tokenizer bridge
    except ImportError as error:  # pragma: no cover - it is a main dependency
        raise LlmlabError(
            f"constrained decoding needs the llguidance package (pip install llguidance): {error}"
        ) from error
    return llguidance


def json_schema_grammar(schema) -> str:
    """llguidance grammar text for a JSON Schema (a dict, a JSON string, or True for any object)."""
    llg = _llguidance()
    if schema is True:
        schema = {"type": "object"}
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as error:
            raise LlmlabError(f"json_schema is not valid JSON: {error}") from error
    if not isinstance(schema, dict):
        raise LlmlabError(f"json_schema must be a JSON object, got {type(schema).__name__}")
    try:
        return llg.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except ValueError as error:
        raise LlmlabError(f"invalid json_schema: {error}") from error


def lark_string(text: str) -> str:
    """A Lark string literal matching exactly `text` (JSON escapes are Lark's too)."""
    return json.dumps(text, ensure_ascii=False)


def grammar_for(params) -> str | None:
    """The grammar text for a request's constraint, or None when it has none."""
    llg = _llguidance() if params.guided else None
    if params.json_schema is not None:
        return json_schema_grammar(params.json_schema)
    if params.regex is not None:
        return llg.LLMatcher.grammar_from_regex(params.regex)
    if params.choice is not None:
        return llg.LLMatcher.grammar_from_lark(
            "start: " + " | ".join(lark_string(c) for c in params.choice)
        )
    if params.grammar is not None:
        return llg.LLMatcher.grammar_from_lark(params.grammar)
    return None


def check_grammar(grammar: str, what: str = "grammar") -> None:
    """Raise LlmlabError naming the problem if llguidance rejects the grammar."""
    llg = _llguidance()
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise LlmlabError(f"invalid {what}: {_first_line(messages[0])}")


def _first_line(message: str) -> str:
    """llguidance's error as one line: its first line, plus the regex engine's 'error:' line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "rejected"
    detail = next((line for line in lines[1:] if line.startswith("error:")), None)
    return f"{lines[0].rstrip(':')} ({detail})" if detail else lines[0]


def _kind(params) -> str:
    for name in ("json_schema", "regex", "choice", "grammar"):
        if getattr(params, name) is not None:
            return name
    return "grammar"


class Guide:
    """Grammar matchers for one engine's tokenizer and vocabulary, and the masks they produce."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self.words = (vocab_size + 31) // 32  # int32 words per bitmask row
        self._lltokenizer = None
        self._lock = threading.Lock()
        self._compiled: OrderedDict[str, object] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        self._executor = None
        self._bits = torch.arange(32, dtype=torch.int32)
        self.mask_seconds = 0.0  # CPU time spent filling masks (the worker thread's own)
        self.mask_rows = 0  # masks filled (one per constrained sampled token)

    # ---- compile ---------------------------------------------------------------------------
    def lltokenizer(self):
        """Our tokenizer as llguidance sees it (built once; ~2 s for a 49k vocabulary)."""
        with self._lock:
            if self._lltokenizer is None:
                llg = _llguidance()
                if self.tokenizer is None:
                    raise LlmlabError("constrained decoding needs the model's tokenizer")
                try:
                    self._lltokenizer = llg.hf.from_tokenizer(
                        self.tokenizer, n_vocab=self.vocab_size
                    )
                except ValueError as error:
                    raise LlmlabError(
                        f"constrained decoding cannot use this tokenizer: {error}"
                    ) from error
            return self._lltokenizer

    def warm_up(self):
        """Build the tokenizer bridge now (a server calls this in the background at start-up, so
        the first constrained request does not wait for it); errors surface on first use."""
        try:
            self.lltokenizer()
        except LlmlabError:
            pass

    def check(self, params) -> None:
        """Compile a request's constraint now (cached for the engine), raising LlmlabError naming
        the problem: the server calls this before queueing, so a bad schema is a 400."""
        if params.guided:
            self._template(params)

    def compile(self, params):
        """A fresh matcher for this request's constraint (None for a free request); raises
        LlmlabError naming the problem for an invalid schema, regex or grammar."""
        return self._template(params).deep_copy() if params.guided else None

    def _template(self, params):
        grammar = grammar_for(params)
        with self._lock:
            template = self._compiled.get(grammar)
            if template is not None:
                self._compiled.move_to_end(grammar)
        if template is None:
            llg = _llguidance()
            template = llg.LLMatcher(self.lltokenizer(), grammar, log_level=0)
            if template.is_error():
                raise LlmlabError(f"invalid {_kind(params)}: {_first_line(template.get_error())}")
            with self._lock:
                self._compiled[grammar] = template
                while len(self._compiled) > _CACHE_SIZE:
                    self._compiled.popitem(last=False)
        return template

    # ---- one step --------------------------------------------------------------------------
    def start_masks(self, matchers: list) -> Future:
        """Fill one bitmask row per matcher in a worker thread (llguidance drops the GIL), so it
        runs while the model computes the step's logits. `.result()` is [len(matchers), words]."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmlab-guided")
            self._executor = _llguidance().LLExecutor(num_threads=1)
        return self._pool.submit(self._fill, matchers)

    def _fill(self, matchers: list) -> torch.Tensor:
        started = time.thread_time()  # CPU time of this thread: a busy machine does not inflate it
        bitmask = torch.zeros((len(matchers), self.words), dtype=torch.int32)
        self._executor.unsafe_compute_mask_ptr(
            [(m, i) for i, m in enumerate(matchers)],
            bitmask.data_ptr(),
            self.words * 4,
            len(matchers),
        )
        self.mask_seconds += time.thread_time() - started
        self.mask_rows += len(matchers)
        return bitmask

    def allowed(self, bitmask: torch.Tensor) -> torch.Tensor:
        """Bitmask rows [n, words] → allowed tokens [n, vocab] (bool)."""
        bits = (bitmask.unsqueeze(-1) >> self._bits) & 1
        return bits.view(bitmask.shape[0], -1)[:, : self.vocab_size].bool()

    @staticmethod
    def advance(matcher, token: int) -> bool:
        """Feed the sampled token; False if the grammar is now complete (only EOS may follow)."""
        if not matcher.consume_token(token):
            raise LlmlabError(f"constrained decoding: {_first_line(matcher.get_error())}")
        return not matcher.is_stopped()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

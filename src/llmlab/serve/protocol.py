"""OpenAI API request schemas (pydantic) and response builders for the server.

Requests follow OpenAI's field names; `top_k`, `min_p` and `repetition_penalty` are accepted as
extensions, as vLLM does, and so are vLLM's guided-decoding fields `guided_json`, `guided_regex`,
`guided_choice` and `guided_grammar` (docs/structured-output.md). Chat takes `response_format`,
`tools`, `tool_choice` and `parallel_tool_calls` (serve/tools.py). Unknown fields are refused
(extra="forbid": a 400 naming the field), and known OpenAI fields this server does not implement
are refused when set to anything but their neutral value (`unsupported()`), so nothing a client
asks for is silently ignored. Sampling fields left unset (None) take the server's defaults
(serve/defaults.py: the model's own generation config, else a documented fallback).
`to_sampling_params` builds the engine's SamplingParams.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmlab.engine.sampling_params import SamplingParams
from llmlab.errors import LlmlabError

# extra="forbid": an unknown field is a 400 naming it; no NaN/inf (json.loads accepts "NaN")
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
# torch.Generator.manual_seed takes [-2**63, 2**64); the engine seeds sibling i with seed + i
_SEED_MIN, _SEED_MAX = -(2**63), 2**63 - 1
# Below this a temperature is greedy and a top_p keeps only the most likely token (as in vLLM):
# the engine divides float32 logits by them, and 1e-300 becomes 0 there (NaN probabilities that
# fail the whole engine step — found by tests/test_serve_fuzz.py).
SAMPLING_EPS = 1e-5


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class _SamplingFields(BaseModel):
    model_config = _STRICT

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    seed: int | None = Field(default=None, ge=_SEED_MIN, le=_SEED_MAX)
    user: str | None = None  # an end-user id for the operator's logs; changes no output
    # accepted only at their neutral value (see unsupported())
    logit_bias: dict[str, float] | None = None
    # extensions (vLLM spelling)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, ge=0.01, le=10)
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    guided_json: dict | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def guided(self) -> dict:
        """The SamplingParams constraint fields the vLLM-style extras ask for."""
        return {
            key: value
            for key, value in (
                ("json_schema", self.guided_json),
                ("regex", self.guided_regex),
                ("choice", self.guided_choice),
                ("grammar", self.guided_grammar),
            )
            if value is not None
        }

    def unsupported(self) -> tuple[str, str] | None:
        """(field, why) for the first field set to something this server does not do."""
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported by this server"
        return None

    def _sampling(
        self, max_tokens: int, logprobs: int | None, defaults, guided=None
    ) -> SamplingParams:
        """`defaults` (a SamplingDefaults) fills every sampling field the request left unset."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

        def pick(name):
            value = getattr(self, name)
            return getattr(defaults, name) if value is None else value

        temperature, top_p, top_k = pick("temperature"), pick("top_p"), pick("top_k")
        if temperature < SAMPLING_EPS:
            temperature = 0.0
        if top_p < SAMPLING_EPS:
            top_p, top_k = 1.0, 1
        return SamplingParams(
            n=self.n,
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=pick("min_p"),
            repetition_penalty=pick("repetition_penalty"),
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            stop=stop,
            stop_token_ids=list(self.stop_token_ids or []),
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
            **(self.guided() if guided is None else guided),
        )


class FunctionCall(BaseModel):
    model_config = _STRICT

    name: str
    arguments: str = "{}"  # a JSON string, as OpenAI sends it


class ToolCall(BaseModel):
    model_config = _STRICT

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = _STRICT

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant turns that called tools
    tool_call_id: str | None = None  # tool turns: the call this result answers


class FunctionDefinition(BaseModel):
    model_config = _STRICT

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema; the arguments are held to it
    strict: bool | None = None  # accepted; arguments always follow the schema exactly


class Tool(BaseModel):
    model_config = _STRICT

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = _STRICT

    name: str


class NamedToolChoice(BaseModel):
    model_config = _STRICT

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", allow_inf_nan=False)

    name: str
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None  # accepted; the output always follows the schema exactly


class ResponseFormat(BaseModel):
    model_config = _STRICT

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    # OpenAI's deprecated spelling of tools: named here only to be refused with a 400
    functions: list | None = None
    function_call: Any = None
    # llmlab extension: answer from passages retrieved from the notes (serve/routes/rag.py)
    rag: bool = False
    rag_k: int = Field(default=3, ge=1, le=20)

    @property
    def tool_mode(self) -> str | dict | None:
        """None (no tool calls possible), "auto", "required" or the named choice as a dict."""
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            return choice.model_dump()
        if choice is None:
            choice = "auto" if self.tools else "none"
        return None if choice == "none" else choice

    def response_schema(self):
        """The JSON Schema response_format asks for: a dict, True (any object) or None."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return True
        if fmt.json_schema is None:
            raise LlmlabError('response_format "json_schema" needs a json_schema object')
        return fmt.json_schema.schema_

    @property
    def requested_max_tokens(self) -> tuple[str, int | None]:
        """(the field the client used, its value or None when unset)."""
        if self.max_completion_tokens is not None:
            return "max_completion_tokens", self.max_completion_tokens
        return "max_tokens", self.max_tokens

    def unsupported(self) -> tuple[str, str] | None:
        for name in ("functions", "function_call"):
            if getattr(self, name) is not None:
                why = f"{name} (deprecated by OpenAI) is not supported; use tools and tool_choice"
                return name, why
        if self.top_logprobs is not None and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs: true"
        return super().unsupported()

    def to_sampling_params(self, max_tokens: int, defaults, guided=None) -> SamplingParams:
        return self._sampling(
            max_tokens, (self.top_logprobs or 0) if self.logprobs else None, defaults, guided
        )


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    # accepted only at their neutral value (see unsupported())
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=16)

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, prompt):
        empty = len(prompt) == 0 or (
            not isinstance(prompt, str)
            and any(isinstance(p, (str, list)) and len(p) == 0 for p in prompt)
        )
        if empty:
            raise ValueError("the prompt is empty")
        return prompt

    @property
    def requested_max_tokens(self) -> tuple[str, int | None]:
        return "max_tokens", self.max_tokens

    def unsupported(self) -> tuple[str, str] | None:
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported by this server"
        if self.best_of is not None and self.best_of != self.n:
            return "best_of", "best_of other than n is not supported by this server"
        if self.echo and self.logprobs is not None:
            return "echo", "echo together with logprobs is not supported (no prompt logprobs)"
        return super().unsupported()

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)

    def to_sampling_params(self, max_tokens: int, defaults, guided=None) -> SamplingParams:
        return self._sampling(max_tokens, self.logprobs, defaults, guided)


# ---- responses ----------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def chat_logprobs(entries: list[dict], tokenizer) -> dict | None:
    """OpenAI's chat logprobs object from the engine's per-token entries."""
    if not entries:
        return None

    def item(token_id, logprob):
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {
        "content": [
            dict(
                item(e["token_id"], e["logprob"]), top_logprobs=[item(t, lp) for t, lp in e["top"]]
            )
            for e in entries
        ]
    }


def completion_logprobs(entries: list[dict], tokenizer) -> dict | None:
    """The legacy completions logprobs object (tokens, token_logprobs, top_logprobs)."""
    if not entries:
        return None
    return {
        "tokens": [tokenizer.decode([e["token_id"]]) for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{tokenizer.decode([t]): lp for t, lp in e["top"]} for e in entries],
        "text_offset": [],
    }


def model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "llmlab"}

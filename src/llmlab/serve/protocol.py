"""OpenAI API request schemas (pydantic) and response builders for the server.

Requests follow OpenAI's field names and defaults (temperature 1.0, completions max_tokens 16);
`top_k`, `min_p` and `repetition_penalty` are accepted as extensions, as vLLM does, and so are
vLLM's guided-decoding fields `guided_json`, `guided_regex`, `guided_choice` and `guided_grammar`
(docs/structured-output.md). Chat takes `response_format`, `tools`, `tool_choice` and
`parallel_tool_calls` (serve/tools.py). Unknown
fields are ignored. `to_sampling_params` turns a request into the engine's SamplingParams.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmlab.engine.sampling_params import SamplingParams
from llmlab.errors import LlmlabError


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    seed: int | None = None
    user: str | None = None
    # extensions (vLLM spelling)
    top_k: int = Field(default=0, ge=0)
    min_p: float = Field(default=0.0, ge=0, le=1)
    repetition_penalty: float = Field(default=1.0, gt=0)
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

    def _sampling(self, max_tokens: int, logprobs: int | None, guided=None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            n=self.n,
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
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
    name: str
    arguments: str = "{}"  # a JSON string, as OpenAI sends it


class ToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant turns that called tools
    tool_call_id: str | None = None  # tool turns: the call this result answers


class FunctionDefinition(BaseModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema; the arguments are held to it
    strict: bool | None = None  # accepted; arguments always follow the schema exactly


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None  # accepted; the output always follows the schema exactly


class ResponseFormat(BaseModel):
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

    def to_sampling_params(self, default_max_tokens: int, guided=None) -> SamplingParams:
        max_tokens = self.max_completion_tokens or self.max_tokens or default_max_tokens
        return self._sampling(
            max_tokens, (self.top_logprobs or 0) if self.logprobs else None, guided
        )


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)

    def to_sampling_params(self, default_max_tokens: int = 16) -> SamplingParams:
        return self._sampling(self.max_tokens or default_max_tokens, self.logprobs)


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

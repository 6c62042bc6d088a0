"""Chat backends the agent and the reasoning methods talk to: one `complete(messages, ...)` call.

    EngineChat(LLM("smollm2-135m-instruct"))                  # our offline engine, in process
    OpenAIChat("http://127.0.0.1:8000/v1", model="smollm2")   # any OpenAI-compatible server (httpx)
    ScriptedChat(["Action: calculator\\nAction Input: 2+2", "Final Answer: 4"])   # tests

`native_tools=True` (OpenAIChat) sends the registry's schemas as OpenAI `tools` and reads
`tool_calls` back; otherwise the agent uses its plain-text action format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from llmlab.errors import LlmlabError


@dataclass
class Reply:
    text: str
    tool_calls: list[dict] = field(default_factory=list)  # {"id", "name", "arguments" (str)}
    prompt_tokens: int = 0
    completion_tokens: int = 0


class EngineChat:
    """Messages → the model's chat template → `LLM.generate` (greedy unless temperature > 0).

    `regex` constrains the reply (the engine's constrained decoding), e.g. to the action format."""

    native_tools = False
    constrainable = True

    def __init__(self, llm, max_tokens: int = 256, temperature: float = 0.0, seed: int = 0):
        self.llm, self.max_tokens, self.temperature, self.seed = llm, max_tokens, temperature, seed

    def complete(
        self,
        messages: list[dict],
        stop: list[str] | None = None,
        tools=None,
        prefill: str = "",
        regex: str | None = None,
    ) -> Reply:
        """`prefill` starts the assistant's reply (returned as part of the text)."""
        from llmlab.engine import SamplingParams
        from llmlab.tokenize.tokenizer import apply_chat

        ids = apply_chat(self.llm.tokenizer, messages)
        if prefill:
            ids += self.llm.tokenizer.encode(prefill, add_special_tokens=False)
        params = SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            stop=list(stop or []),
            regex=regex,
        )
        out = self.llm.generate([ids], params, progress=False)[0]
        return Reply(prefill + out.text, [], len(ids), len(out.token_ids))


class OpenAIChat:
    """POST /chat/completions on an OpenAI-compatible server; errors become one-line LlmlabErrors."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        native_tools: bool = False,
        timeout_s: float = 120.0,
        transport=None,
        guided: bool = False,
    ):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self.model, self.max_tokens, self.temperature = model, max_tokens, temperature
        self.native_tools = native_tools
        self.constrainable = guided  # the server takes vLLM's `guided_regex` (llmlab serve does)

    def complete(
        self,
        messages: list[dict],
        stop: list[str] | None = None,
        tools=None,
        prefill: str = "",
        regex: str | None = None,
    ) -> Reply:
        """`prefill` is not part of the OpenAI API: it is ignored (the model writes the format)."""
        import httpx

        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if stop:
            body["stop"] = stop
        if self.native_tools and tools:
            body["tools"] = tools
        if regex and self.constrainable:
            body["guided_regex"] = regex
        try:
            response = self.client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise LlmlabError(f"cannot reach {self.client.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise LlmlabError(f"server answered {response.status_code}: {message}")
        try:
            data = response.json()
            message = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LlmlabError("server reply is not an OpenAI chat completion") from None
        calls = [
            {
                "id": c.get("id", f"call_{i}"),
                "name": c["function"]["name"],
                "arguments": c["function"].get("arguments") or "{}",
            }
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        usage = data.get("usage") or {}
        return Reply(
            message.get("content") or "",
            calls,
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )


class ScriptedChat:
    """Replays fixed replies in order (strings or Reply objects); records what it was sent."""

    constrainable = True

    def __init__(self, replies: list, native_tools: bool = False):
        self.replies, self.native_tools, self.sent = list(replies), native_tools, []
        self.regexes = []

    def complete(
        self,
        messages: list[dict],
        stop: list[str] | None = None,
        tools=None,
        prefill: str = "",
        regex: str | None = None,
    ) -> Reply:
        self.sent.append(json.loads(json.dumps(messages)))
        self.regexes.append(regex)
        if not self.replies:
            raise LlmlabError("scripted model ran out of replies")
        reply = self.replies.pop(0)
        if isinstance(reply, str):
            for s in stop or []:  # what a real server does with stop strings
                reply = reply.split(s)[0]
            return Reply(prefill + reply, [], 0, len(reply.split()))
        return reply

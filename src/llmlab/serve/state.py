"""What every route shares: the engine, tokenizer, served names and metrics, and the checks and
submission logic around them. Routes get it with a `state: State` parameter (a FastAPI dependency).

    state = ServerState(async_engine, tokenizer, "smollm2-135m-instruct")
    app.state.server = state                   # create_app does this
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from llmlab.engine.async_engine import AsyncEngine, QueueFullError
from llmlab.errors import ContextLengthError, LlmlabError
from llmlab.serve.errors import APIError
from llmlab.serve.metrics import ServerMetrics
from llmlab.serve.protocol import new_id


@dataclass
class ServerState:
    engine: AsyncEngine
    tokenizer: object
    model_name: str
    aliases: tuple[str, ...] = ()
    metrics: ServerMetrics = field(default_factory=ServerMetrics)

    @property
    def served_names(self) -> set[str]:
        return {self.model_name, *self.aliases}

    def check_model(self, name: str) -> None:
        if name not in self.served_names:
            raise APIError(
                404,
                f"the model '{name}' does not exist; this server serves '{self.model_name}'",
                param="model",
                code="model_not_found",
            )

    def default_max_tokens(self, prompt_ids: list[int]) -> int:
        return max(1, self.engine.engine.max_seq_tokens - len(prompt_ids))

    def submit(self, prompt_ids: list[int], params_fn, prefix: str):
        """Queue one request; returns (request_id, async iterator of RequestOutputs). Engine
        refusals become OpenAI errors (429 queue full, 400 context length / bad parameters)."""
        self.metrics.requests_total += 1
        request_id = new_id(prefix)
        try:
            params = params_fn()
            return request_id, self.engine.submit(request_id, prompt_ids, params)
        except QueueFullError as exc:
            raise APIError(429, str(exc), "rate_limit_error", code="queue_full") from None
        except ContextLengthError as exc:
            raise APIError(
                400,
                str(exc),
                param="messages" if prefix == "chatcmpl" else "prompt",
                code="context_length_exceeded",
            ) from None
        except LlmlabError as exc:
            raise APIError(400, str(exc)) from None


def get_state(request: Request) -> ServerState:
    return request.app.state.server


State = Annotated[ServerState, Depends(get_state)]

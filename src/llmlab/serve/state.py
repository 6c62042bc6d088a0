"""What every route shares: the engine, tokenizer, served names, sampling defaults and metrics,
and the checks and submission logic around them. Routes get it with a `state: State` parameter
(a FastAPI dependency).

    state = ServerState(async_engine, tokenizer, "smollm2-135m-instruct")
    app.state.server = state                   # create_app does this
    request_id, results = state.submit(prompt_ids, body, "chatcmpl")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from llmlab.engine.async_engine import AsyncEngine, QueueFullError
from llmlab.errors import ContextLengthError, LlmlabError
from llmlab.serve.defaults import FALLBACK, SamplingDefaults
from llmlab.serve.errors import APIError
from llmlab.serve.metrics import ServerMetrics
from llmlab.serve.protocol import new_id

# an unset `max_tokens` on /v1/completions means this many, as in OpenAI's API (clamped to the
# context left); on chat it means "up to the end of the context"
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def vocab_size(model) -> int | None:
    """Token ids the model can embed (None if it does not say)."""
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    embeddings = getattr(model, "get_input_embeddings", None)
    if callable(embeddings):
        rows = getattr(embeddings(), "num_embeddings", None)
        if rows is not None:
            size = rows if size is None else min(size, rows)
    return size


@dataclass
class ServerState:
    engine: AsyncEngine
    tokenizer: object
    model_name: str
    aliases: tuple[str, ...] = ()
    defaults: SamplingDefaults = FALLBACK
    metrics: ServerMetrics = field(default_factory=ServerMetrics)

    def __post_init__(self):
        self.vocab_size = vocab_size(self.engine.engine.model)

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

    def check_supported(self, body) -> None:
        """A 400 naming the first field set to something this server does not implement."""
        refused = body.unsupported()
        if refused is not None:
            name, why = refused
            raise APIError(400, f"unsupported parameter {name}: {why}", param=name)

    def check_token_ids(self, ids, param: str) -> None:
        """Ids outside the vocabulary would fail inside the engine's batch step (and take the
        other requests of that step down with them): refuse them here, naming the first."""
        if self.vocab_size is None:
            return
        for token_id in ids:
            if not 0 <= token_id < self.vocab_size:
                raise APIError(
                    400,
                    f"token id {token_id} in {param} is outside the vocabulary "
                    f"(0..{self.vocab_size - 1})",
                    param=param,
                )

    def max_tokens(self, body, prompt_ids: list[int], unset_default: int | None) -> int:
        """The request's max_tokens, checked against the context left after the prompt. An
        explicit value that does not fit is a 400; an unset one is `unset_default` clamped to
        what is left (None: all of it)."""
        prompt_param = "messages" if hasattr(body, "messages") else "prompt"
        try:
            self.engine.engine.check_prompt(prompt_ids)
        except ContextLengthError as exc:
            raise APIError(
                400, str(exc), param=prompt_param, code="context_length_exceeded"
            ) from None
        except LlmlabError as exc:
            raise APIError(400, str(exc), param=prompt_param) from None
        left = max(1, self.engine.engine.max_seq_tokens - len(prompt_ids))
        name, requested = body.requested_max_tokens
        if requested is None:
            return left if unset_default is None else min(unset_default, left)
        if requested > left:
            context = self.engine.engine.max_seq_tokens
            raise APIError(
                400,
                f"{name} is {requested} but the prompt's {len(prompt_ids)} tokens leave only "
                f"{left} of the {context}-token context",
                param=name,
                code="context_length_exceeded",
            )
        return requested

    def submit(
        self,
        prompt_ids: list[int],
        body,
        prefix: str,
        unset_max_tokens=None,
        constraint=None,
        stop_extra=(),
    ):
        """Check and queue one request; returns (request_id, async iterator of RequestOutputs).
        `constraint`: SamplingParams constraint fields (structured output; None: the body's own
        guided_* fields); `stop_extra`: stop strings added to the request's own. Engine refusals
        become OpenAI errors (429 queue full, 400 context / bad parameters)."""
        if body.stop_token_ids:
            self.check_token_ids(body.stop_token_ids, "stop_token_ids")
        max_tokens = self.max_tokens(body, prompt_ids, unset_max_tokens)
        request_id = new_id(prefix)
        try:
            params = body.to_sampling_params(max_tokens, self.defaults, constraint)
            params.stop = params.stop + [s for s in stop_extra if s not in params.stop]
            return request_id, self.engine.submit(request_id, prompt_ids, params)
        except QueueFullError as exc:
            raise APIError(429, str(exc), "rate_limit_error", code="queue_full") from None
        except LlmlabError as exc:
            raise APIError(400, str(exc)) from None


def get_state(request: Request) -> ServerState:
    return request.app.state.server


State = Annotated[ServerState, Depends(get_state)]

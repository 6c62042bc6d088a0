"""Every bad request gets OpenAI's JSON error (issue 18.2, 21.3): empty prompts and messages, ids
outside the vocabulary, non-JSON bodies, max_tokens beyond the context, unsupported fields
(named, never silently ignored), and an unexpected exception (500, JSON, logged). Client errors
leave no traceback in the log; /metrics counts stay consistent; a non-streaming request whose
client leaves is aborted and its KV blocks freed."""

import json
import logging
import threading
import time

import httpx
import pytest
from engine_helpers import tiny_tokenizer
from serve_helpers import MODEL, all_blocks_free, start

from llmlab.generation import GenerationConfig, generate
from llmlab.tokenize.tokenizer import apply_chat

MESSAGES = [{"role": "user", "content": "The quick brown fox"}]


class BrokenTokenizer:
    """The tiny tokenizer, except that encoding "boom" raises: an unexpected server bug."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def encode(self, text, *args, **kwargs):
        if text == "boom":
            raise RuntimeError("tokenizer exploded")
        return self._inner.encode(text, *args, **kwargs)


class Captured(logging.Handler):
    """Everything logged at WARNING and above (uvicorn's error log, the engine, the server)."""

    LOGGERS = ("", "uvicorn", "uvicorn.error", "llmlab")

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def attach(self):
        """(Re)attach: each new uvicorn.Config re-runs logging.dictConfig, dropping handlers."""
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                logger.addHandler(self)

    def detach(self):
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)

    def emit(self, record):
        self.records.append(record)

    def tracebacks(self):
        return [r for r in self.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.fixture(scope="module")
def live():
    async_engine, server, model, tokenizer = start(
        context=4096, tokenizer=BrokenTokenizer(tiny_tokenizer())
    )
    captured = Captured()
    with server as url:
        yield url, async_engine, model, tokenizer, captured
    captured.detach()


def post(url, path, body=None, raw=None, content_type="application/json", timeout=30):
    if raw is not None:
        return httpx.post(
            url + path, content=raw, headers={"content-type": content_type}, timeout=timeout
        )
    return httpx.post(url + path, json=body, timeout=timeout)


def assert_error(response, status, param=None, says=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if says is not None:
        assert says in error["message"], error
    return error


def metric(url, name) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(text.split(f"\n{name} ")[1].split()[0])


CMPL, CHAT = "/v1/completions", "/v1/chat/completions"

CLIENT_ERRORS = [
    (CMPL, {"model": MODEL, "prompt": []}, "prompt", "empty"),
    (CMPL, {"model": MODEL, "prompt": [[]]}, "prompt", "empty"),
    (CMPL, {"model": MODEL, "prompt": ["ok", ""]}, "prompt", "empty"),
    (CHAT, {"model": MODEL, "messages": []}, "messages", None),
    (CMPL, {"model": MODEL, "prompt": [999999999]}, "prompt", "999999999"),
    (CMPL, {"model": MODEL, "prompt": [[5, 6], [7, -3]]}, "prompt", "-3"),
    (CMPL, {"model": MODEL, "prompt": "fox", "stop_token_ids": [77777]}, "stop_token_ids", "77777"),
    (CMPL, {"model": MODEL, "prompt": "fox", "max_tokens": 100000}, "max_tokens", "4096"),
    (CHAT, {"model": MODEL, "messages": MESSAGES, "max_tokens": 5000}, "max_tokens", None),
    (CHAT, {"model": MODEL, "messages": MESSAGES, "max_completion_tokens": 10**12}, None, None),
    (CMPL, {"model": MODEL, "prompt": "fox", "seed": 2**70}, "seed", None),
    (
        CMPL,
        {"model": MODEL, "prompt": "fox", "repetition_penalty": 1e30},
        "repetition_penalty",
        None,
    ),
]


@pytest.mark.parametrize("path, body, param, says", CLIENT_ERRORS)
def test_client_errors_are_openai_400s(live, path, body, param, says):
    url, *_ = live
    error = assert_error(post(url, path, body), 400, param, says)
    if "max" in str(param) or "max_completion_tokens" in body:
        assert error["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "raw, content_type, says",
    [
        (b"hello", "application/json", "request body is not valid JSON"),
        (b"hello", "text/plain", "request body is not valid JSON"),
        (b'{"model": "tiny-chat", "messages": [', "application/json", "not valid JSON"),
        (b'{"model": "tiny-chat", "prompt": "x", "temperature": NaN}', "application/json", None),
        (b"[1, 2]", "application/json", "must be a JSON object"),
    ],
)
def test_bodies_that_are_not_a_json_object(live, raw, content_type, says):
    url, *_ = live
    assert_error(post(url, CMPL, raw=raw, content_type=content_type), 400, says=says)


def test_unset_max_tokens_is_clamped_to_the_context_left():
    async_engine, server, _, tokenizer = start(context=256)  # short prompts fill it
    with server as url:
        context = async_engine.engine.max_seq_tokens
        prompt = (list(range(3, 300)))[: context - 10]  # 10 tokens left of the context
        left = context - len(prompt)
        short = {"model": MODEL, "prompt": prompt[100:], "ignore_eos": True}
        assert post(url, CMPL, short).json()["usage"]["completion_tokens"] == 16  # OpenAI's…
        full = {"model": MODEL, "prompt": prompt, "ignore_eos": True}
        assert post(url, CMPL, full).json()["usage"]["completion_tokens"] == left  # …clamped
        words, chat_left = 1, context
        while chat_left > 30:  # a chat prompt that leaves 1..30 tokens of the context
            words += max(1, (chat_left - 20) // 8)
            messages = [{"role": "user", "content": "fox " * words}]
            chat_left = context - len(apply_chat(tokenizer, messages))
        assert chat_left >= 1
        chat = post(url, CHAT, {"model": MODEL, "messages": messages, "ignore_eos": True}).json()
        assert chat["usage"]["completion_tokens"] + chat["usage"]["prompt_tokens"] == context
        exact = post(url, CMPL, {**full, "max_tokens": left})
        assert exact.status_code == 200, exact.text
        assert_error(post(url, CMPL, {**full, "max_tokens": left + 1}), 400, "max_tokens")


UNSUPPORTED = [
    (CMPL, {"logit_bias": {"5": 10}}, "logit_bias"),
    (CHAT, {"logit_bias": {"5": 10}}, "logit_bias"),
    (CMPL, {"suffix": " the end"}, "suffix"),
    (CMPL, {"best_of": 3}, "best_of"),
    (CMPL, {"echo": True, "logprobs": 2}, "echo"),
    (CHAT, {"top_logprobs": 3}, "top_logprobs"),
    (CHAT, {"functions": [{"name": "f"}]}, "functions"),
    (CHAT, {"function_call": "auto"}, "function_call"),
    (CHAT, {"service_tier": "auto"}, "service_tier"),
    (CHAT, {"messages": [{"role": "user", "content": "hi", "audio": {}}]}, "messages.0.audio"),
    (
        CHAT,
        {"tools": [{"type": "function", "function": {"name": "f"}, "cache": 1}]},
        "tools.0.cache",
    ),
    (CHAT, {"response_format": {"type": "json_object", "mode": "x"}}, "response_format.mode"),
    (CHAT, {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}, None),
]


@pytest.mark.parametrize("path, extra, field", UNSUPPORTED)
def test_unsupported_fields_are_400s_naming_the_field(live, path, extra, field):
    url, *_ = live
    base = {"model": MODEL, "max_tokens": 2}
    base.update({"messages": MESSAGES} if path == CHAT else {"prompt": "fox"})
    error = assert_error(post(url, path, {**base, **extra}), 400, param=field)
    named = field or "continuous_usage_stats"
    assert named.split(".")[-1] in error["message"]


def test_neutral_values_of_unsupported_fields_and_echo_work(live):
    url, _, model, tokenizer, _ = live
    base = {"model": MODEL, "prompt": "Residual connections", "max_tokens": 6, "temperature": 0}
    plain = post(url, CMPL, base).json()["choices"][0]["text"]
    assert plain == generate(model, tokenizer, base["prompt"], GenerationConfig(max_tokens=6)).text
    for neutral in ({"logit_bias": {}}, {"best_of": 1}, {"suffix": None}, {"user": "u1"}):
        reply = post(url, CMPL, {**base, **neutral})
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"] == plain, neutral
    echoed = post(url, CMPL, {**base, "echo": True}).json()["choices"][0]["text"]
    assert echoed == base["prompt"] + plain
    with httpx.stream("POST", url + CMPL, json={**base, "echo": True, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    streamed = "".join(json.loads(line[6:])["choices"][0]["text"] for line in lines)
    assert streamed == echoed


def test_vanishing_temperature_and_top_p_are_greedy_not_a_failed_engine_step(live):
    """1e-300 is 0 in the engine's float32 (NaN probabilities: the fuzz found it failing the whole
    step); below 1e-5 a temperature is greedy and a top_p keeps only the most likely token."""
    url, _, model, tokenizer, _ = live
    body = {"model": MODEL, "prompt": "Residual connections", "max_tokens": 6}
    greedy = generate(model, tokenizer, body["prompt"], GenerationConfig(max_tokens=6)).text
    for extra in ({"temperature": 1e-300}, {"temperature": 1.0, "top_p": 1e-300, "seed": 3}):
        reply = post(url, CMPL, {**body, **extra})
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["text"] == greedy, extra


def test_unexpected_exception_is_a_json_500_and_logged(live):
    url, *_, captured = live
    captured.attach()
    before = len(captured.tracebacks())
    error = assert_error(post(url, CMPL, {"model": MODEL, "prompt": "boom"}), 500)
    assert error["type"] == "server_error" and "tokenizer exploded" in error["message"]
    deadline = time.time() + 5
    while len(captured.tracebacks()) == before and time.time() < deadline:
        time.sleep(0.05)
    assert len(captured.tracebacks()) > before  # a server bug is logged with its traceback
    ok = post(url, CMPL, {"model": MODEL, "prompt": "fox", "max_tokens": 2})
    assert ok.status_code == 200  # and the server keeps serving


def test_client_errors_log_no_traceback_and_metrics_add_up(live):
    url, async_engine, *_, captured = live
    captured.attach()
    requests_before = metric(url, "llmlab_http_requests_total")
    errors_before = metric(url, "llmlab_http_request_errors_total")
    logged_before = len(captured.tracebacks())
    bad = [(path, body) for path, body, _, _ in CLIENT_ERRORS]
    for path, body in bad:
        assert post(url, path, body).status_code == 400
    assert post(url, CMPL, raw=b"hello").status_code == 400
    assert httpx.post(url + CMPL, json={"model": "nope", "prompt": "x"}).status_code == 404
    good = post(url, CHAT, {"model": MODEL, "messages": MESSAGES, "max_tokens": 3})
    assert good.status_code == 200
    time.sleep(0.3)  # let any engine-side failure reach the log
    assert captured.tracebacks()[logged_before:] == []
    assert all_blocks_free(async_engine)
    requests = metric(url, "llmlab_http_requests_total") - requests_before
    errors = metric(url, "llmlab_http_request_errors_total") - errors_before
    assert (requests, errors) == (len(bad) + 3, len(bad) + 2)
    assert metric(url, "llmlab_http_request_errors_total") <= metric(
        url, "llmlab_http_requests_total"
    )


@pytest.mark.parametrize("prompts", [["fox"], ["fox", "dog"]])
def test_non_streaming_disconnect_aborts_and_frees_blocks(live, prompts):
    url, async_engine, *_ = live
    engine = async_engine.engine
    body = {"model": MODEL, "prompt": prompts, "max_tokens": 4000, "ignore_eos": True}
    started = engine.generated_tokens

    def leave_early():
        try:  # the client gives up while the server is still generating: the socket closes
            post(url, CMPL, body, timeout=1.0)
        except httpx.ReadTimeout:
            pass

    worker = threading.Thread(target=leave_early)
    worker.start()
    worker.join(timeout=30)
    assert engine.generated_tokens > started  # it was generating when the client left
    assert all_blocks_free(async_engine, timeout=5)
    assert not engine.scheduler.running and not engine.requests
    left_at = engine.generated_tokens
    time.sleep(0.3)
    assert engine.generated_tokens == left_at  # nothing still generating
    assert left_at - started < 4000 * len(prompts)  # aborted, not run to max_tokens

"""The OpenAI-compatible server, live on 127.0.0.1 with a tiny model: the official `openai`
client for chat (plain and streamed), completions and models; every error case in OpenAI's error
format; disconnects abort and free blocks; 32 concurrent streaming clients all complete."""

import asyncio
import threading
import time

import httpx
import openai
import pytest
from serve_helpers import KEY, MODEL, all_blocks_free, start

from llmlab.generation import GenerationConfig, generate
from llmlab.tokenize.tokenizer import apply_chat


@pytest.fixture(scope="module")
def live():
    async_engine, server, model, tokenizer = start(api_key=KEY)
    with server as url:
        yield url, async_engine, model, tokenizer


def client(url, key=KEY):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "The quick brown fox"},
]


def test_chat_plain_and_streamed_match_reference(live):
    url, async_engine, model, tokenizer = live
    expected = generate(
        model, tokenizer, apply_chat(tokenizer, MESSAGES), GenerationConfig(max_tokens=12)
    )
    reply = client(url).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0
    )
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.prompt_tokens == len(apply_chat(tokenizer, MESSAGES))

    chunks = list(
        client(url).chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(
        expected.token_ids
    )
    assert all(c.usage is None for c in chunks[:-1])
    assert all_blocks_free(async_engine)


def test_sse_wire_format_ends_with_done(live):
    url, *_ = live
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 5, "stream": True},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_completions_and_models(live):
    url, _, model, tokenizer = live
    prompt = "Residual connections let"
    expected = generate(model, tokenizer, prompt, GenerationConfig(max_tokens=10))
    reply = client(url).completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
    assert reply.choices[0].text == expected.text and reply.usage.completion_tokens == len(
        expected.token_ids
    )
    two = client(url).completions.create(
        model=MODEL, prompt=[prompt, "Dropout"], max_tokens=4, temperature=0
    )
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].text == reply.choices[
        0
    ].text[: len(two.choices[0].text)]
    streamed = client(url).completions.create(
        model=MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == expected.text
    assert [m.id for m in client(url).models.list().data] == [MODEL]


def _post(url, body, key=KEY, raw=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        return httpx.post(
            f"{url}/v1/chat/completions",
            content=raw,
            headers={**headers, "content-type": "application/json"},
        )
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)


def _assert_error(response, status, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"model": "nope", "messages": MESSAGES}, 404, "model"),
        ({"model": MODEL, "messages": MESSAGES, "temperature": -1}, 400, "temperature"),
        ({"model": MODEL, "messages": MESSAGES, "top_p": 1.5}, 400, "top_p"),
        ({"model": MODEL, "messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens"),
        ({"model": MODEL, "messages": []}, 400, "messages"),
        ({"model": MODEL}, 400, "messages"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "fox " * 400}]},
            400,
            "messages",
        ),
    ],
)
def test_error_cases(live, body, status, param):
    url, async_engine, *_ = live
    _assert_error(_post(url, body), status, param)


def test_malformed_json_and_auth(live):
    url, *_ = live
    _assert_error(_post(url, None, raw=b'{"model": "tiny-chat", "messages": ['), 400)
    _assert_error(_post(url, {"model": MODEL, "messages": MESSAGES}, key=None), 401)
    _assert_error(_post(url, {"model": MODEL, "messages": MESSAGES}, key="wrong"), 401)
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").models.list()
    assert httpx.get(f"{url}/health").status_code == 200  # health and metrics need no key


def test_disconnect_aborts_and_frees_blocks(live):
    url, async_engine, *_ = live
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 200,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 3:
                break  # leave mid-stream: the connection closes
    assert all_blocks_free(async_engine)
    generated_before = async_engine.engine.generated_tokens
    time.sleep(0.3)
    assert async_engine.engine.generated_tokens == generated_before  # nothing still generating


def test_32_concurrent_streams_and_metrics(live):
    url, async_engine, *_ = live

    async def one(i, aclient):
        stream = await aclient.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"fox {i}"}],
            max_tokens=16,
            temperature=0.8,
            seed=i,
            stream=True,
        )
        pieces, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        return finish

    async def main():
        aclient = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        return await asyncio.gather(*[one(i, aclient) for i in range(32)])

    finishes = asyncio.run(main())
    assert all(f in ("stop", "length") for f in finishes)
    assert all_blocks_free(async_engine)
    text = httpx.get(f"{url}/metrics").text
    for name in (
        "llmlab_requests_running",
        "llmlab_requests_waiting",
        "llmlab_kv_blocks_used",
        "llmlab_kv_blocks_free",
        "llmlab_prefix_cache_hit_rate",
        "llmlab_generated_tokens_total",
        "llmlab_time_to_first_token_seconds_bucket",
        "llmlab_inter_token_latency_seconds_count",
    ):
        assert f"\n{name}" in text
    ttft_count = float(text.split("llmlab_time_to_first_token_seconds_count ")[1].split()[0])
    assert ttft_count >= 32


def test_queue_full_is_429():
    async_engine, server, *_ = start(max_num_seqs=1, max_queue=0, context=4096)
    with server as url:  # the first request runs for seconds (until we close it: an abort)
        body = {
            "model": MODEL,
            "messages": MESSAGES,
            "max_tokens": 4000,
            "stream": True,
            "ignore_eos": True,
        }
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as first:
            lines = first.iter_lines()  # kept: a dropped iterator would close the response
            next(lines)  # the first request is in flight
            _assert_error(_post(url, {"model": MODEL, "messages": MESSAGES}, key=None), 429)
        assert all_blocks_free(async_engine)


def test_shutdown_drains_in_flight_requests():
    async_engine, server, *_ = start()
    with server as url:
        result = {}

        def slow_request():
            r = httpx.post(
                f"{url}/v1/completions",
                json={"model": MODEL, "prompt": "fox", "max_tokens": 60, "ignore_eos": True},
                timeout=60,
            )
            result["response"] = r

        worker = threading.Thread(target=slow_request)
        worker.start()
        deadline = time.time() + 10
        while async_engine.engine.generated_tokens == 0 and time.time() < deadline:
            time.sleep(0.01)
    worker.join(timeout=30)  # the server exited above; the request still got its full answer
    assert result["response"].status_code == 200
    assert result["response"].json()["usage"]["completion_tokens"] == 60

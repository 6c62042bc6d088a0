"""The server's retrieval: POST /v1/rag/search and chat with `"rag": true` (passages in the prompt,
citations in the response), on a tiny model and a toy index; bad input is a 400 in OpenAI's format."""

from __future__ import annotations

import json

import pytest
from engine_helpers import tiny_model, tiny_tokenizer
from fastapi.testclient import TestClient

from llmlab.engine import LLMEngine
from llmlab.engine.async_engine import AsyncEngine
from llmlab.rag import Index, chunk_markdown
from llmlab.rag.answer import build_messages
from llmlab.rag.biencoder import train_biencoder
from llmlab.serve.app import create_app
from llmlab.tokenize.tokenizer import apply_chat

DOC = """# 基础
## 归一化的作用
归一化让均值为 0。
## dropout的作用是什么
随机丢弃神经元。
# 工具
### 1. 安装
先安装。
### 2. 连接数据源
连接数据库和文件。
"""


@pytest.fixture(scope="module")
def client():
    chunks = chunk_markdown(DOC, source="doc.md")
    index = Index.build(chunks, embedder=train_biencoder(chunks, steps=30))
    model, tokenizer = tiny_model(max_position_embeddings=1024), tiny_tokenizer()
    engine = AsyncEngine(LLMEngine(model, tokenizer, num_kv_blocks=256, max_num_seqs=4))
    app = create_app(engine, tokenizer, "tiny-chat")
    app.state.rag_index = index
    with TestClient(app) as c:
        yield c, index, tokenizer


def test_rag_search_returns_hits(client):
    c, index, _ = client
    r = c.post("/v1/rag/search", json={"query": "连接数据库", "k": 2})
    assert r.status_code == 200
    data = r.json()["data"]
    assert len(data) == 2 and {"id", "heading", "score", "text"} <= set(data[0])
    assert data == [h.to_dict() for h in index.search("连接数据库", k=2)]
    bad = c.post("/v1/rag/search", json={"query": "   "})
    assert bad.status_code == 400 and "empty" in bad.json()["error"]["message"]
    assert c.post("/v1/rag/search", json={"query": "x", "k": 0}).status_code == 400


def test_chat_with_rag_puts_passages_in_the_prompt_and_returns_citations(client):
    c, index, tokenizer = client
    question = "怎么连接数据库？"
    body = {
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 4,
        "rag": True,
        "rag_k": 2,
    }
    r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    hits = index.search(question, k=2)
    expected_prompt = apply_chat(tokenizer, build_messages(question, hits))
    assert out["usage"]["prompt_tokens"] == len(expected_prompt)  # exactly the numbered passages
    assert [(x["n"], x["id"], x["heading"]) for x in out["citations"]] == [
        (n, h.id, h.heading) for n, h in enumerate(hits, start=1)
    ]
    plain = c.post("/v1/chat/completions", json={**body, "rag": False}).json()
    assert "citations" not in plain and plain["usage"]["prompt_tokens"] < len(expected_prompt)

    with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
        lines = [x for x in s.iter_lines() if x.startswith("data: {")]
    first = json.loads(lines[0].removeprefix("data: "))
    assert [x["id"] for x in first["citations"]] == [h.id for h in hits]

    no_user = {**body, "messages": [{"role": "system", "content": "hi"}]}
    err = c.post("/v1/chat/completions", json=no_user)
    assert err.status_code == 400 and "rag" in err.json()["error"]["message"]

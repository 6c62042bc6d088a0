"""Shared by the server tests: a live uvicorn server on a free port, a tiny-model app, waits."""

import socket
import threading
import time

import uvicorn
from engine_helpers import tiny_model, tiny_tokenizer

from llmlab.engine import LLMEngine
from llmlab.engine.async_engine import AsyncEngine
from llmlab.serve.app import create_app

MODEL = "tiny-chat"
KEY = "sekret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start(api_key=None, max_num_seqs=64, max_queue=256, context=256, tokenizer=None, **app_options):
    """(async_engine, LiveServer, model, tokenizer) for the tiny model; enter the server to run."""
    model, tokenizer = tiny_model(max_position_embeddings=context), tokenizer or tiny_tokenizer()
    engine = LLMEngine(model, tokenizer, num_kv_blocks=256, max_num_seqs=max_num_seqs)
    async_engine = AsyncEngine(engine, max_queue=max_queue)
    app = create_app(async_engine, tokenizer, MODEL, api_key=api_key, **app_options)
    return async_engine, LiveServer(app), model, tokenizer


def all_blocks_free(async_engine, timeout=10.0) -> bool:
    bm, deadline = async_engine.engine.block_manager, time.time() + timeout
    while time.time() < deadline:
        if bm.num_free_blocks == bm.num_blocks and not async_engine.engine.has_unfinished():
            return True
        time.sleep(0.05)
    return False

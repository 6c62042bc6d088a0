"""`llmlab data serve`: submit recipe runs (YAML text, raw YAML body, path), poll status and
progress, fetch JSON/Markdown reports, bounded concurrency, error codes, restart, and a live server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from llmlab.data.api import create_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recipe_yaml(tmp_path, name="api", n=40, **extra):
    path = tmp_path / "in.jsonl"
    if not path.exists():
        rows = [
            {"id": i, "text": f"document {i % 30} about data pipelines and records"}
            for i in range(n)
        ]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n", encoding="utf-8")
    recipe = {"project": name, "batch_size": 10, "sources": [{"type": "jsonl", "path": str(path)}],
              "process": [{"whitespace_normalization": {}}, {"exact_dedup": {}}],
              "sinks": [{"type": "jsonl", "path": str(tmp_path / f"{name}.jsonl")}], **extra}  # fmt: skip
    return yaml.safe_dump(recipe)


def wait_for(client, run_id, statuses=("succeeded", "failed"), timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.get(f"/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still {run['status']}")


@pytest.fixture
def client(tmp_path):
    app = create_app(str(tmp_path / "state"), max_concurrent=1, root=str(tmp_path))
    with TestClient(app) as c:
        yield c
    app.state.manager.close()


def test_submit_poll_and_fetch_reports(client, tmp_path):
    created = client.post("/runs", json={"recipe": recipe_yaml(tmp_path)})
    assert created.status_code == 202 and created.json()["status"] in (
        "queued",
        "running",
        "succeeded",
    )
    run = wait_for(client, created.json()["id"])
    assert run["status"] == "succeeded" and run["error"] is None
    assert run["progress"] == {
        "records_read": 41,
        "records_written": 30,
        "quarantined": 1,
        "batches": 5,
    }
    report = client.get(run["links"]["report"]).json()
    assert report["records_written"] == 30 == len(open(tmp_path / "api.jsonl").readlines())
    assert [o["name"] for o in report["operators"]] == ["whitespace_normalization", "exact_dedup"]
    markdown = client.get(run["links"]["report_md"])
    assert (
        markdown.headers["content-type"].startswith("text/markdown")
        and "| `exact_dedup` |" in markdown.text
    )
    assert os.path.exists(tmp_path / "state" / "runs" / run["id"] / "recipe.yaml")
    raw = client.post(
        "/runs", content=recipe_yaml(tmp_path, "raw"), headers={"content-type": "application/yaml"}
    )
    (tmp_path / "r.yaml").write_text(recipe_yaml(tmp_path, "by-path"), encoding="utf-8")
    by_path = client.post("/runs", json={"path": str(tmp_path / "r.yaml")})
    assert raw.status_code == by_path.status_code == 202
    for r in (raw, by_path):
        assert wait_for(client, r.json()["id"])["status"] == "succeeded"
    listed = client.get("/runs").json()["runs"]
    assert [r["id"] for r in listed] == sorted(
        (run["id"], raw.json()["id"], by_path.json()["id"]), reverse=True
    )
    assert {r["project"] for r in listed} == {"api", "raw", "by-path"}
    assert client.get("/health").json()["succeeded"] == 3


def test_bad_requests_get_one_line_errors(client, tmp_path):
    cases = [
        ({"recipe": "sources: [unclosed"}, 400, "recipe is not valid YAML"),
        (
            {"recipe": recipe_yaml(tmp_path).replace("exact_dedup", "exact_dedupe")},
            400,
            "unknown operator 'exact_dedupe'",
        ),
        ({"recipe": "project: x\nsinks: []\n"}, 400, "`sources` must be a non-empty list"),
        ({"path": str(tmp_path / "nope.yaml")}, 400, "does not exist"),
        ({}, 422, "exactly one of"),
        ({"recipe": "a", "path": "b"}, 422, "exactly one of"),
        ({"recipe": recipe_yaml(tmp_path), "executor": "spark"}, 422, "executor must be"),
        ({"recipe": 3}, 422, "are strings"),
    ]
    for body, status, message in cases:
        response = client.post("/runs", json=body)
        assert response.status_code == status, (body, response.text)
        detail = response.json()["detail"]
        assert message in detail and "\n" not in detail
    assert (
        client.post(
            "/runs", content=b"{nope", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    outside = "/tmp/llmlab-outside-root"
    confined = [
        ({"path": "/etc/passwd"}, "recipe '/etc/passwd' is outside the server's root"),
        ({"path": "../x.yaml"}, "recipe '../x.yaml' is outside"),
        ({"recipe": recipe_yaml(tmp_path, sinks=[{"type": "jsonl", "path": f"{outside}/o.jsonl"}])}, "sink"),
        ({"recipe": recipe_yaml(tmp_path, sources=[{"type": "jsonl", "path": "/etc/hostname"}])}, "source"),
        ({"recipe": recipe_yaml(tmp_path, sinks=[{"type": "sql", "url": f"sqlite:///{outside}/d.db", "table": "t"}])}, "sql sink"),
        ({"recipe": recipe_yaml(tmp_path, sinks=[{"type": "sql", "url": "postgresql://u@db/x", "table": "t"}])}, "--allow-network"),
        ({"recipe": recipe_yaml(tmp_path, sources=[{"type": "http", "url": "http://127.0.0.1:1/x"}])}, "--allow-network"),
        ({"recipe": recipe_yaml(tmp_path, process=[{"repair_mojibake": {"extra_corpus": "/etc"}}])}, "repair_mojibake.extra_corpus"),
    ]  # fmt: skip
    for body, message in confined:
        response = client.post("/runs", json=body)
        assert response.status_code == 403, (body, response.text)
        assert message in response.json()["detail"]
    assert not os.path.exists(outside)
    for path in ("/runs/nope", "/runs/nope/report", "/runs/nope/report.md"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["detail"] == "no run 'nope'"
    assert client.get("/runs").json()["runs"] == []  # nothing was queued


def test_concurrency_is_bounded_and_failures_are_reported(client, tmp_path, monkeypatch):
    import llmlab.data.api as api

    release, real = threading.Event(), api.run_recipe

    def gated(recipe, **kwargs):
        assert release.wait(30)
        return real(recipe, **kwargs)

    monkeypatch.setattr(api, "run_recipe", gated)
    first = client.post("/runs", json={"recipe": recipe_yaml(tmp_path, "one")}).json()
    second = client.post("/runs", json={"recipe": recipe_yaml(tmp_path, "two")}).json()
    assert wait_for(client, first["id"], ("running",))["status"] == "running"
    assert client.get(f"/runs/{second['id']}").json()["status"] == "queued"  # max_concurrent=1
    early = client.get(f"/runs/{first['id']}/report")
    assert early.status_code == 409 and "is running" in early.json()["detail"]
    clash = client.post("/runs", json={"recipe": recipe_yaml(tmp_path, "one")})
    assert clash.status_code == 409 and "being written by run" in clash.json()["detail"]
    missing = recipe_yaml(tmp_path, "three").replace("in.jsonl", "gone.jsonl")
    third = client.post("/runs", json={"recipe": missing}).json()
    release.set()
    assert (
        wait_for(client, first["id"])["status"]
        == wait_for(client, second["id"])["status"]
        == "succeeded"
    )
    failed = wait_for(client, third["id"])
    assert (
        failed["status"] == "failed"
        and "gone.jsonl" in failed["error"]
        and "\n" not in failed["error"]
    )
    assert client.get(f"/runs/{third['id']}/report.md").status_code == 409


def test_runs_survive_a_restart_and_interrupted_runs_are_marked(tmp_path):
    state = str(tmp_path / "state")
    app = create_app(state, root=str(tmp_path))
    with TestClient(app) as c:
        done = wait_for(c, c.post("/runs", json={"recipe": recipe_yaml(tmp_path)}).json()["id"])
    app.state.manager.close()
    stuck = dict(
        done, id="20000101-000000-abcdef", status="running"
    )  # as a killed server leaves it
    os.makedirs(os.path.join(state, "runs", stuck["id"]))
    json.dump(stuck, open(os.path.join(state, "runs", stuck["id"], "status.json"), "w"))
    again = create_app(state, root=str(tmp_path))
    with TestClient(again) as c:
        runs = {r["id"]: r for r in c.get("/runs").json()["runs"]}
        assert (
            runs[done["id"]]["status"] == "succeeded"
            and c.get(f"/runs/{done['id']}/report").status_code == 200
        )
        assert runs[stuck["id"]]["status"] == "failed" and runs[stuck["id"]]["error"].startswith(
            "interrupted"
        )
    again.state.manager.close()


def test_live_server_from_the_cli(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "llmlab", "data", "serve", "--port", str(port), "--state-dir", str(tmp_path / "st"),
                               "--root", str(tmp_path), "--api-key", "sekret"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        body = {"recipe": recipe_yaml(tmp_path, "live")}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = httpx.post(f"{base}/runs", json=body, headers=headers)
            assert refused.status_code == 401 and "API key" in refused.json()["detail"]
        assert httpx.get(f"{base}/runs").status_code == 401
        auth = {"Authorization": "Bearer sekret"}
        run = httpx.post(f"{base}/runs", json=body, headers=auth).json()
        client = httpx.Client(base_url=base, headers=auth)
        assert wait_for(client, run["id"])["status"] == "succeeded"
        assert client.get(f"/runs/{run['id']}/report").json()["records_written"] == 30
    finally:
        server.terminate()
        server.wait(timeout=30)

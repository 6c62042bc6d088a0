"""`llmlab data serve`: a small REST API to submit recipe runs, poll their status and fetch reports.

    llmlab data serve --port 8100 [--state-dir runs/data-api] [--max-concurrent 2]
                      [--api-key KEY] [--root DIR] [--allow-network]

    curl -X POST localhost:8100/runs -H 'Content-Type: application/json' \\
         -d '{"path": "recipes/notes.yaml"}'                      # or {"recipe": "<YAML text>"}
    curl -X POST localhost:8100/runs -H 'Content-Type: application/yaml' --data-binary @recipe.yaml
    curl localhost:8100/runs/ID                                   # status + progress counts
    curl localhost:8100/runs/ID/report.md                         # or /report for JSON

Routes: POST /runs (202; a bad recipe is 400 with {"detail": "one line"}, a malformed request 422,
a sink another active run writes 409, a full queue 429), GET /runs (newest first), GET /runs/{id}
(status queued|running|succeeded|failed, progress: records read/written/quarantined, batches),
GET /runs/{id}/report (JSON) and /report.md (Markdown; 409 until the run has succeeded),
GET /health. Unknown run ids are 404.

Runs execute in a thread pool of `max_concurrent` workers; others wait as `queued`. Each run lives
in `<state_dir>/runs/<id>/` (recipe.yaml, status.json, and its work_dir `work/` with the report),
so the list survives a restart; runs a stopped server left queued or running are marked failed.
Confinement: a served recipe may only read and write files under the server's root (`--root`,
default the directory it was started in; the files shipped inside llmlab may also be read) —
the recipe file itself, file sources and sinks, SQLite databases, and operator files such as
`repair_mojibake`'s `extra_corpus`. Database servers and HTTP sources are refused unless the server
was started with `--allow-network`. With `--api-key KEY` every route but /health needs
`Authorization: Bearer KEY` (401 otherwise), as for `llmlab serve`.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from llmlab.data.executor import run_recipe
from llmlab.data.ops.base import RecipeError
from llmlab.data.recipe import Recipe, load_recipe, parse_recipe
from llmlab.data.schedule import one_line
from llmlab.errors import LlmlabError

ACTIVE = ("queued", "running")


class RunRejected(LlmlabError):
    """A submission the API refuses; `status` is the HTTP code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# Operator arguments that name files the operator reads.
_FILE_ARGS = ("extra_corpus",)


def confine(recipe: Recipe, root: str, allow_network: bool = False) -> None:
    """Refuse (403) a recipe that reads or writes outside `root`, or reaches a network service
    without `allow_network`. Files shipped inside the llmlab package may be read."""
    import llmlab

    readable = [root, os.path.dirname(os.path.abspath(llmlab.__file__))]

    def check(path: str, roots: list[str], what: str) -> None:
        real = os.path.realpath(path)
        if not any(
            os.path.commonpath([real, os.path.realpath(r)]) == os.path.realpath(r) for r in roots
        ):
            raise RunRejected(403, f"{what} {path!r} is outside the server's root {root}")

    def check_url(url: str, roots: list[str], what: str) -> None:
        if url.startswith("sqlite:///"):
            check(url[len("sqlite:///") :], roots, what)
        elif not allow_network:
            raise RunRejected(
                403,
                f"{what} {url.split('@')[-1]!r} is a network service; start the server with --allow-network",
            )

    for spec in recipe.sources:
        if spec.get("type") == "http" and not allow_network:
            raise RunRejected(403, "http sources need a server started with --allow-network")
        if spec.get("path") is not None:
            check(str(spec["path"]), readable, "source")
        if spec.get("url") and spec.get("type") == "sql":
            check_url(str(spec["url"]), readable, "sql source")
    for spec in recipe.sinks:
        if spec.get("path") is not None:
            check(str(spec["path"]), [root], "sink")
        if spec.get("url"):
            check_url(str(spec["url"]), [root], "sql sink")
    for name, args in recipe.process:
        for key in _FILE_ARGS:
            value = args.get(key)
            for path in [value] if isinstance(value, str) else value or []:
                check(str(path), readable, f"{name}.{key}")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class RunManager:
    """Owns the runs: validates submissions, queues them on a bounded pool, persists their status."""

    def __init__(
        self,
        state_dir: str,
        max_concurrent: int = 2,
        max_queued: int = 64,
        root: str | None = None,
        allow_network: bool = False,
    ):
        self.root = os.path.abspath(root or os.getcwd())
        self.allow_network = allow_network
        if max_concurrent < 1 or max_queued < 1:
            raise LlmlabError(
                f"max_concurrent and max_queued must be at least 1, got {max_concurrent} and {max_queued}"
            )
        self.state_dir = state_dir
        self.runs_dir = os.path.join(state_dir, "runs")
        os.makedirs(self.runs_dir, exist_ok=True)
        self.max_queued = max_queued
        self.lock = threading.Lock()
        self.runs: dict[str, dict] = {}
        self.sinks: dict[str, list[str]] = {}  # run id -> sink locations, to refuse clashing runs
        self.pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="data-run")
        self._load()

    def _load(self) -> None:
        for run_id in sorted(os.listdir(self.runs_dir)):
            path = os.path.join(self.runs_dir, run_id, "status.json")
            if not os.path.exists(path):
                continue
            with open(path, encoding="utf-8") as fh:
                run = json.load(fh)
            if run["status"] in ACTIVE:  # the server stopped before this run finished
                run.update(
                    status="failed",
                    error="interrupted: the server stopped during the run",
                    finished=_now(),
                )
                self._save(run)
            self.runs[run_id] = run

    def _save(self, run: dict) -> None:
        folder = os.path.join(self.runs_dir, run["id"])
        tmp = os.path.join(folder, "status.json.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(run, fh, indent=1, ensure_ascii=False)
        os.replace(tmp, os.path.join(folder, "status.json"))

    def _update(self, run_id: str, **changes) -> None:
        with self.lock:
            run = self.runs[run_id]
            run.update(changes)
            self._save(run)

    # -- submission ---------------------------------------------------------------------------
    def submit(
        self, recipe_text: str | None = None, path: str | None = None, executor: str | None = None
    ) -> dict:
        if (recipe_text is None) == (path is None):
            raise RunRejected(
                422,
                "give exactly one of `recipe` (YAML text) or `path` (a recipe file on the server)",
            )
        if executor not in (None, "local", "ray"):
            raise RunRejected(422, f"executor must be `local` or `ray`, got {executor!r}")
        if path is not None:
            confine_path = os.path.join(self.root, path)  # relative paths are relative to the root
            self._check_recipe_file(confine_path, path)
            path = confine_path
        recipe = self._parse(recipe_text, path)
        confine(recipe, self.root, self.allow_network)
        if executor:
            recipe.executor = executor
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        folder = os.path.join(self.runs_dir, run_id)
        recipe.work_dir = os.path.join(folder, "work")
        sinks = [
            os.path.abspath(s["path"]) if s.get("path") else f"{s.get('url')}#{s.get('table')}"
            for s in recipe.sinks
        ]
        with self.lock:
            active = [r for r in self.runs.values() if r["status"] in ACTIVE]
            if len(active) >= self.max_queued:
                raise RunRejected(429, f"{len(active)} runs are queued or running; try again later")
            for other in active:
                clash = set(sinks) & set(self.sinks.get(other["id"], []))
                if clash:
                    raise RunRejected(
                        409, f"sink {sorted(clash)[0]} is being written by run {other['id']}"
                    )
            os.makedirs(folder)
            with open(os.path.join(folder, "recipe.yaml"), "w", encoding="utf-8") as fh:
                yaml.safe_dump(recipe.raw, fh, allow_unicode=True, sort_keys=False)
            run = {"id": run_id, "project": recipe.project, "status": "queued", "executor": recipe.executor,
                   "source": path or "inline", "created": _now(), "started": None, "finished": None, "error": None,
                   "progress": {"records_read": 0, "records_written": 0, "quarantined": 0, "batches": 0},
                   "work_dir": recipe.work_dir}  # fmt: skip
            self.runs[run_id] = run
            self.sinks[run_id] = sinks
            self._save(run)
        self.pool.submit(self._execute, run_id, recipe)
        return dict(run)

    def _check_recipe_file(self, path: str, given: str) -> None:
        real, root = os.path.realpath(path), os.path.realpath(self.root)
        if os.path.commonpath([real, root]) != root:
            raise RunRejected(403, f"recipe {given!r} is outside the server's root {self.root}")

    @staticmethod
    def _parse(recipe_text: str | None, path: str | None) -> Recipe:
        if path is not None:
            return load_recipe(path)
        try:
            data = yaml.safe_load(recipe_text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"recipe is not valid YAML: {str(exc).splitlines()[0]}") from None
        return parse_recipe(data, "recipe")

    def _execute(self, run_id: str, recipe: Recipe) -> None:
        self._update(run_id, status="running", started=_now())
        try:
            report = run_recipe(
                recipe,
                progress=False,
                on_progress=lambda counts: self._update(run_id, progress=counts),
            )
        except Exception as exc:  # reported through the API; the server goes on
            self._update(run_id, status="failed", error=one_line(exc), finished=_now())
        else:
            progress = {
                k: report[k] for k in ("records_read", "records_written", "quarantined", "batches")
            }
            self._update(
                run_id,
                status="succeeded",
                finished=_now(),
                progress=progress,
                seconds=report["seconds"],
            )
        finally:
            with self.lock:
                self.sinks.pop(run_id, None)

    # -- queries ------------------------------------------------------------------------------
    def get(self, run_id: str) -> dict:
        with self.lock:
            if run_id not in self.runs:
                raise RunRejected(404, f"no run {run_id!r}")
            return json.loads(json.dumps(self.runs[run_id]))  # a copy the caller may keep

    def list(self) -> list[dict]:
        with self.lock:
            return [dict(self.runs[k]) for k in sorted(self.runs, reverse=True)]

    def report_path(self, run_id: str, suffix: str) -> str:
        run = self.get(run_id)
        if run["status"] != "succeeded":
            detail = f": {run['error']}" if run["error"] else ""
            raise RunRejected(
                409,
                f"run {run_id} is {run['status']}{detail}; its report exists once it has succeeded",
            )
        return os.path.join(run["work_dir"], f"report.{suffix}")

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def create_app(
    state_dir: str = "runs/data-api",
    max_concurrent: int = 2,
    max_queued: int = 64,
    api_key: str | None = None,
    root: str | None = None,
    allow_network: bool = False,
):
    manager = RunManager(state_dir, max_concurrent, max_queued, root, allow_network)
    app = FastAPI(
        title="llmlab data API",
        description="Submit data recipe runs, poll them, fetch their reports.",
    )
    app.state.manager = manager

    @app.exception_handler(LlmlabError)
    async def _rejected(request: Request, exc: LlmlabError):
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status", 400))

    @app.middleware("http")
    async def check_api_key(request: Request, call_next):
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse(
                    {"detail": "missing or wrong API key: send `Authorization: Bearer KEY`"},
                    status_code=401,
                )
        return await call_next(request)

    def with_links(run: dict) -> dict:
        base = f"/runs/{run['id']}"
        return {
            **run,
            "links": {"self": base, "report": f"{base}/report", "report_md": f"{base}/report.md"},
        }

    @app.post("/runs", status_code=202)
    async def submit(request: Request):
        body = await request.body()
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind in ("application/yaml", "application/x-yaml", "text/yaml", "text/plain"):
            run = manager.submit(
                recipe_text=body.decode("utf-8", errors="replace"),
                executor=request.query_params.get("executor"),
            )
            return with_links(run)
        try:
            data = json.loads(body or b"null")
        except json.JSONDecodeError as exc:
            raise RunRejected(
                422, f"request body is not JSON: {exc.msg} (send application/yaml for raw YAML)"
            ) from None
        if not isinstance(data, dict) or set(data) - {"recipe", "path", "executor"}:
            raise RunRejected(
                422,
                "the body is a JSON object with `recipe` (YAML text) or `path`, and optionally `executor`",
            )
        if any(data.get(k) is not None and not isinstance(data[k], str) for k in data):
            raise RunRejected(422, "`recipe`, `path` and `executor` are strings")
        return with_links(
            manager.submit(data.get("recipe"), data.get("path"), data.get("executor"))
        )

    @app.get("/runs")
    async def list_runs():
        return {"runs": [with_links(r) for r in manager.list()]}

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str):
        return with_links(manager.get(run_id))

    @app.get("/runs/{run_id}/report")
    async def report_json(run_id: str):
        with open(manager.report_path(run_id, "json"), encoding="utf-8") as fh:
            return json.load(fh)

    @app.get("/runs/{run_id}/report.md")
    async def report_markdown(run_id: str):
        with open(manager.report_path(run_id, "md"), encoding="utf-8") as fh:
            return PlainTextResponse(fh.read(), media_type="text/markdown; charset=utf-8")

    @app.get("/health")
    async def health():
        runs = manager.list()
        return {
            "status": "ok",
            **{
                s: sum(r["status"] == s for r in runs)
                for s in ("queued", "running", "succeeded", "failed")
            },
        }

    return app

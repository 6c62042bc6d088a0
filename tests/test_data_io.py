"""Sources and sinks: jsonl, json, csv/tsv, parquet, text folders, SQLite, PostgreSQL, HTTP."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from llmlab.data.io.sinks import open_sink
from llmlab.data.io.sources import BadRecord, open_source
from llmlab.data.ops.base import RecipeError

ROWS = [{"id": str(i), "text": f"record {i} 中文", "n": i} for i in range(5)]


def test_jsonl_source_quarantines_bad_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "ok"}\nnot json\n\xff\xfe bad bytes\n[1, 2]\n\n{"text": "fine"}\n')
    items = list(open_source({"type": "jsonl", "path": str(path)}))
    assert [i["text"] for i in items if not isinstance(i, BadRecord)] == ["ok", "fine"]
    reasons = [i.reason for i in items if isinstance(i, BadRecord)]
    assert (
        reasons[0].startswith("invalid JSON")
        and reasons[1].startswith("undecodable")
        and "not an object" in reasons[2]
    )


def test_json_csv_tsv_parquet_text_sources(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"rows": ROWS}), encoding="utf-8")
    assert (
        list(open_source({"type": "json", "path": str(tmp_path / "a.json"), "records_key": "rows"}))
        == ROWS
    )
    (tmp_path / "a.csv").write_text('id,text\n1,hello\n2,"a, b"\n', encoding="utf-8")
    assert [r["text"] for r in open_source({"type": "csv", "path": str(tmp_path / "a.csv")})] == [
        "hello",
        "a, b",
    ]
    (tmp_path / "a.tsv").write_text("id\ttext\n1\thi there\n", encoding="utf-8")
    assert list(open_source({"type": "tsv", "path": str(tmp_path / "a.tsv")})) == [
        {"id": "1", "text": "hi there"}
    ]
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    assert (
        list(open_source({"type": "parquet", "path": str(tmp_path / "a.parquet"), "batch_size": 2}))
        == ROWS
    )
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.md").write_text("# one", encoding="utf-8")
    (folder / "sub" / "two.txt").write_text("two", encoding="utf-8")
    (folder / "skip.bin").write_bytes(b"\x00")
    texts = sorted(r["text"] for r in open_source({"type": "text", "path": str(folder)}))
    assert texts == ["# one", "two"]
    with pytest.raises(RecipeError, match="matches no files"):
        list(open_source({"type": "jsonl", "path": str(tmp_path / "missing*.jsonl")}))
    with pytest.raises(RecipeError, match="unknown source type"):
        open_source({"type": "xml"})


def test_jsonl_and_parquet_sinks_truncate_to_checkpoint(tmp_path):
    sink = open_sink({"type": "jsonl", "path": str(tmp_path / "o.jsonl")})
    sink.write(ROWS[:2])
    pos = sink.position()
    sink.write(ROWS[2:])
    sink.truncate(pos)
    sink.write(ROWS[4:])
    assert not (tmp_path / "o.jsonl").exists()  # staged until the run commits
    sink.commit()
    sink.close()
    assert [json.loads(x)["id"] for x in open(tmp_path / "o.jsonl")] == ["0", "1", "4"]
    psink = open_sink({"type": "parquet", "path": str(tmp_path / "o.parquet")})
    psink.write(ROWS[:2])
    pos = psink.position()
    psink.write([{"id": "x", "text": "dropped"}])
    psink.truncate(pos)
    psink.write([{"id": "9", "text": "new field", "extra": 1.5}])
    psink.commit()
    psink.close()
    table = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert (
        [r["id"] for r in table] == ["0", "1", "9"]
        and table[2]["extra"] == 1.5
        and table[0]["extra"] is None
    )


def _sql_round_trip(url: str, table: str):
    sink = open_sink({"type": "sql", "url": url, "table": table, "id_field": "id"})
    sink.write([{**r, "tags": ["a", "b"]} for r in ROWS])
    sink.write([{"id": "1", "text": "updated", "n": 100, "tags": []}])  # upsert by id
    sink.commit()
    sink.close()
    rows = list(open_source({"type": "sql", "url": url, "table": table}))
    assert len(rows) == 5
    by_id = {r["id"]: r for r in rows}
    assert (
        by_id["1"]["text"] == "updated"
        and by_id["1"]["n"] == 100
        and json.loads(by_id["0"]["tags"]) == ["a", "b"]
    )
    queried = list(
        open_source(
            {
                "type": "sql",
                "url": url,
                "query": f"SELECT id, n FROM {table} WHERE n >= 3 ORDER BY n",
            }
        )
    )
    assert [r["n"] for r in queried] == [3, 4, 100]


def _sql_replaces_and_grows(url: str, table: str):
    """A fresh run replaces the table (stale rows go); a field first seen mid-run adds a column;
    a run that never commits leaves the published table as it was; it works twice in a row."""
    for run in range(2):
        sink = open_sink({"type": "sql", "url": url, "table": table})
        sink.truncate(None)
        sink.write([{"id": f"old{run}", "text": "stale"}])
        sink.commit()
        sink.close()
        sink = open_sink({"type": "sql", "url": url, "table": table})
        sink.truncate(None)
        sink.write(ROWS[:2])
        sink.write([{"id": "7", "text": "late field", "score": 0.5}])
        sink.commit()
        sink.close()
        rows = {r["id"]: r for r in open_source({"type": "sql", "url": url, "table": table})}
        assert sorted(rows) == ["0", "1", "7"]  # the stale row is gone
        assert rows["7"]["score"] == 0.5 and rows["0"]["score"] is None
    failed = open_sink({"type": "sql", "url": url, "table": table})
    failed.truncate(None)
    failed.write([{"id": "x", "text": "never published"}])
    failed.close()  # the run died before commit
    assert sorted(r["id"] for r in open_source({"type": "sql", "url": url, "table": table})) == [
        "0",
        "1",
        "7",
    ]


def test_sqlite_sink_upserts_and_source_reads(tmp_path):
    _sql_round_trip(f"sqlite:///{tmp_path / 'db.sqlite'}", "docs")
    _sql_replaces_and_grows(f"sqlite:///{tmp_path / 'db2.sqlite'}", "docs")


@pytest.fixture(scope="module")
def postgres_url():
    """LLMLAB_TEST_POSTGRES_URL if set (.ci/run starts a server), else a throwaway local cluster."""
    url = os.environ.get("LLMLAB_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.fail(
            "PostgreSQL is not installed: install postgresql (apt-get install postgresql) — .ci/run does this"
        )
    bindir = os.path.dirname(bins[-1])
    data = tempfile.mkdtemp(prefix="llmlab-pg-")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        as_user + [f"{bindir}/initdb", "-D", data, "-U", "llmlab", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(as_user + [f"{bindir}/pg_ctl", "-D", data, "-o", f"-p {port} -k {data} -h 127.0.0.1", "-w", "start", "-l", f"{data}/log"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg2://llmlab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            as_user + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def test_postgresql_sink_upserts_and_source_reads(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        for name in ("llmlab_docs", "llmlab_docs__staging", "llmlab_grow", "llmlab_grow__staging"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()
    _sql_round_trip(postgres_url, "llmlab_docs")
    _sql_replaces_and_grows(postgres_url, "llmlab_grow")


class _Pages(BaseHTTPRequestHandler):
    items = [{"id": i, "text": f"item {i}"} for i in range(7)]

    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        page, size = int(q["page"][0]), int(q["per_page"][0])
        body = json.dumps({"items": self.items[(page - 1) * size : page * size]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_http_paged_source_against_local_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/docs"
        items = list(open_source({"type": "http", "url": url, "page_size": 3}))
        assert [i["id"] for i in items] == list(range(7))
    finally:
        server.shutdown()
    with pytest.raises(RecipeError, match="http source"):
        list(open_source({"type": "http", "url": url, "timeout": 2}))

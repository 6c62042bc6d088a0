"""Sources: yield records one at a time, or `BadRecord` for input that cannot be parsed (the executor
quarantines it). Every source is deterministic, so resuming can skip the records already done.

Recipe form (`sources:` list):  `- {type: jsonl, path: data/*.jsonl}` · `json` · `csv`/`tsv` ·
`parquet` · `text` (a folder of .txt/.md; one record per file) · `sql` (url + query or table) ·
`http` (paged JSON API).
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmlab.data.ops.base import RecipeError


@dataclass
class BadRecord:
    """Input that could not become a record, with where it came from and why."""

    reason: str
    raw: str
    location: str


def _paths(pattern: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    if os.path.isdir(pattern):
        found = [
            os.path.join(d, f)
            for d, _, fs in os.walk(pattern)
            for f in fs
            if not suffixes or f.endswith(suffixes)
        ]
    else:
        found = glob.glob(pattern, recursive=True)
    if not found:
        raise RecipeError(f"source path {pattern!r} matches no files")
    return sorted(found)


def read_jsonl(path: str) -> Iterator[dict | BadRecord]:
    for file in _paths(path):
        with open(file, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                where = f"{file}:{lineno}"
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield BadRecord(
                        f"undecodable bytes: {exc.reason} at {exc.start}",
                        line.decode("utf-8", "replace"),
                        where,
                    )
                    continue
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield BadRecord(f"invalid JSON: {exc.msg}", text.rstrip("\n"), where)
                    continue
                yield (
                    value
                    if isinstance(value, dict)
                    else BadRecord("JSON line is not an object", text.rstrip("\n"), where)
                )


def read_json(path: str, records_key: str | None = None) -> Iterator[dict | BadRecord]:
    for file in _paths(path):
        try:
            with open(file, encoding="utf-8") as fh:
                value = json.load(fh)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            yield BadRecord(f"unreadable JSON file: {exc}", "", file)
            continue
        items = value.get(records_key, []) if records_key and isinstance(value, dict) else value
        for i, item in enumerate(items if isinstance(items, list) else [items]):
            yield (
                item
                if isinstance(item, dict)
                else BadRecord("item is not an object", json.dumps(item)[:200], f"{file}[{i}]")
            )


def read_csv(path: str, delimiter: str = ",") -> Iterator[dict | BadRecord]:
    for file in _paths(path):
        with open(file, encoding="utf-8", errors="strict", newline="") as fh:
            try:
                for row in csv.DictReader(fh, delimiter=delimiter):
                    yield dict(row)
            except UnicodeDecodeError as exc:
                yield BadRecord(f"undecodable bytes: {exc.reason}", "", file)


def read_parquet(path: str, batch_size: int = 1024) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for file in _paths(path):
        for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_size):
            yield from batch.to_pylist()


def read_text_folder(
    path: str, suffixes: list[str] | tuple[str, ...] = (".txt", ".md")
) -> Iterator[dict | BadRecord]:
    for file in _paths(path, tuple(suffixes)):
        with open(file, "rb") as fh:
            data = fh.read()
        try:
            yield {"text": data.decode("utf-8"), "source": file}
        except UnicodeDecodeError as exc:
            yield BadRecord(f"undecodable bytes: {exc.reason} at {exc.start}", "", file)


def read_sql(
    url: str, query: str | None = None, table: str | None = None, batch_size: int = 1000
) -> Iterator[dict]:
    """Rows of a query (or a whole table, ordered by its first column so resume is deterministic)."""
    import sqlalchemy as sa

    if not (query or table):
        raise RecipeError("sql source needs `query` or `table`")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if table:
                meta = sa.Table(table, sa.MetaData(), autoload_with=conn)
                stmt = sa.select(meta).order_by(*meta.primary_key.columns or list(meta.columns)[:1])
            else:
                stmt = sa.text(query)
            result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(stmt)
            for row in result:
                yield dict(row._mapping)
    except sa.exc.SQLAlchemyError as exc:
        raise RecipeError(
            f"sql source {sa.engine.make_url(url).render_as_string(hide_password=True)}: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()


def read_http(url: str, page_param: str = "page", size_param: str = "per_page", page_size: int = 100,
              items_key: str = "items", first_page: int = 1, max_pages: int = 100000, timeout: float = 30.0) -> Iterator[dict | BadRecord]:  # fmt: skip
    """Pages of a JSON API: GET url?page=N&per_page=M until a page returns no items."""
    import urllib.error
    import urllib.parse
    import urllib.request

    for page in range(first_page, first_page + max_pages):
        sep = "&" if urllib.parse.urlparse(url).query else "?"
        page_url = f"{url}{sep}{urllib.parse.urlencode({page_param: page, size_param: page_size})}"
        try:
            with urllib.request.urlopen(page_url, timeout=timeout) as response:
                body = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise RecipeError(f"http source {page_url}: {exc}") from None
        try:
            payload = json.loads(body)
        except json.JSONDecodeError as exc:
            yield BadRecord(
                f"invalid JSON page: {exc.msg}", body[:200].decode("utf-8", "replace"), page_url
            )
            return
        items = payload.get(items_key) if isinstance(payload, dict) else payload
        if not items:
            return
        for i, item in enumerate(items):
            yield (
                item
                if isinstance(item, dict)
                else BadRecord("item is not an object", json.dumps(item)[:200], f"{page_url}#{i}")
            )


def check_source(spec: dict[str, Any]) -> None:
    """Fail now, before any output is touched, when a file source's path matches nothing."""
    kind, path = spec.get("type"), spec.get("path")
    if path is None or kind in ("sql", "http"):
        return
    suffixes = tuple(spec.get("suffixes", (".txt", ".md"))) if kind == "text" else ()
    _paths(str(path), suffixes)


def open_source(spec: dict[str, Any]) -> Iterator[dict | BadRecord]:
    """The record stream a recipe's source entry describes."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    readers = {
        "jsonl": read_jsonl, "json": read_json, "csv": read_csv, "parquet": read_parquet,
        "text": read_text_folder, "sql": read_sql, "http": read_http,
        "tsv": lambda **kw: read_csv(delimiter="\t", **kw),
    }  # fmt: skip
    if kind not in readers:
        raise RecipeError(f"unknown source type {kind!r}; use one of: {', '.join(readers)}")
    try:
        return readers[kind](**spec)
    except TypeError as exc:
        raise RecipeError(f"{kind} source: {exc}") from None

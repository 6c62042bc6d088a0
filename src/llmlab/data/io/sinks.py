"""Sinks: write record batches, and say where they are (`position`) so a checkpoint can cut them
back to exactly what was committed (`truncate`) before a resumed run writes again.

Recipe form (`sinks:` list): `- {type: jsonl, path: out.jsonl}` · `parquet` · `sql` (url, table,
id_field; rows are upserted by id, so re-writing a batch after a crash changes nothing).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from typing import Any

from llmlab.data.ops.base import RecipeError


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


class JsonlSink:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.fh = open(path, "ab")

    def write(self, records: list[dict]) -> None:
        self.fh.write(
            b"".join(json.dumps(_jsonable(r), ensure_ascii=False).encode() + b"\n" for r in records)
        )

    def flush(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def position(self) -> int:
        return self.fh.tell()

    def truncate(self, position: int | None) -> None:
        self.fh.truncate(position or 0)
        self.fh.seek(position or 0)

    def close(self) -> None:
        self.fh.close()


class ParquetSink:
    """One part file per written batch under `<path>.parts/`, merged into `<path>` at close, so a
    crash leaves whole parts only and memory holds one batch at a time."""

    def __init__(self, path: str):
        self.path = path
        self.parts = path + ".parts"
        os.makedirs(self.parts, exist_ok=True)
        self.count = len(glob.glob(os.path.join(self.parts, "part-*.parquet")))

    def write(self, records: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not records:
            return
        table = pa.Table.from_pylist([_jsonable(r) for r in records])
        tmp = os.path.join(self.parts, f".tmp-{self.count:06d}")
        pq.write_table(table, tmp)
        os.replace(tmp, os.path.join(self.parts, f"part-{self.count:06d}.parquet"))
        self.count += 1

    def flush(self) -> None:
        pass

    def position(self) -> int:
        return self.count

    def truncate(self, position: int | None) -> None:
        for file in glob.glob(os.path.join(self.parts, "part-*.parquet")):
            if int(file.rsplit("-", 1)[1].split(".")[0]) >= (position or 0):
                os.remove(file)
        self.count = position or 0

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = sorted(glob.glob(os.path.join(self.parts, "part-*.parquet")))
        if files:
            schema = pa.unify_schemas(
                [pq.read_schema(f) for f in files], promote_options="permissive"
            )
            with pq.ParquetWriter(self.path + ".tmp", schema) as writer:
                for f in files:
                    table = pq.read_table(f)
                    for field in schema:
                        if field.name not in table.column_names:
                            table = table.append_column(field, pa.nulls(len(table), field.type))
                    writer.write_table(table.select(schema.names).cast(schema))
            os.replace(self.path + ".tmp", self.path)
        shutil.rmtree(self.parts, ignore_errors=True)


class SqlSink:
    """Rows upserted by `id_field` into `table` (created from the first batch's fields); lists and
    dicts are stored as JSON text. Records without an id get a hash of their content."""

    def __init__(self, url: str, table: str, id_field: str = "id"):
        import sqlalchemy as sa

        self.sa, self.url, self.table_name, self.id_field = sa, url, table, id_field
        self.engine = sa.create_engine(url)
        self.table = None

    def _ensure_table(self, records: list[dict]) -> None:
        sa = self.sa
        meta = sa.MetaData()
        inspector = sa.inspect(self.engine)
        if inspector.has_table(self.table_name):
            self.table = sa.Table(self.table_name, meta, autoload_with=self.engine)
            return
        columns = {self.id_field: sa.String(64)}
        for record in records:
            for key, value in record.items():
                if key in columns:
                    continue
                columns[key] = (sa.Boolean if isinstance(value, bool) else sa.BigInteger if isinstance(value, int)
                                else sa.Float if isinstance(value, float) else sa.Text)()  # fmt: skip
        cols = [
            sa.Column(name, typ, primary_key=name == self.id_field) for name, typ in columns.items()
        ]
        self.table = sa.Table(self.table_name, meta, *cols)
        meta.create_all(self.engine)

    def _row(self, record: dict) -> dict:
        row = {}
        for key, value in record.items():
            if key not in self.table.c:
                raise RecipeError(
                    f"sql sink: field {key!r} is not a column of table {self.table_name!r}"
                )
            row[key] = (
                json.dumps(_jsonable(value), ensure_ascii=False)
                if isinstance(value, (dict, list, tuple))
                else value
            )
        if row.get(self.id_field) is None:
            digest = hashlib.sha1(
                json.dumps(_jsonable(record), sort_keys=True, ensure_ascii=False).encode()
            ).hexdigest()
            row[self.id_field] = digest[:16]
        else:
            row[self.id_field] = str(row[self.id_field])
        return row

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        if self.table is None:
            self._ensure_table(records)
        rows = list(
            {r[self.id_field]: r for r in map(self._row, records)}.values()
        )  # last one wins
        dialect = self.engine.dialect.name
        if dialect in ("sqlite", "postgresql"):
            insert = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"]).insert
            for chunk in _chunks(rows, 500):
                stmt = insert(self.table)
                # Each row may carry a different set of keys; update the union of them.
                keys = {k for r in chunk for k in r if k != self.id_field}
                full = [{c: r.get(c) for c in [self.id_field, *keys]} for r in chunk]
                stmt = stmt.on_conflict_do_update(
                    index_elements=[self.id_field], set_={k: stmt.excluded[k] for k in keys}
                )
                with self.engine.begin() as conn:
                    conn.execute(stmt, full)
        else:  # portable fallback: delete then insert in one transaction
            with self.engine.begin() as conn:
                ids = [r[self.id_field] for r in rows]
                conn.execute(self.table.delete().where(self.table.c[self.id_field].in_(ids)))
                conn.execute(self.table.insert(), rows)

    def flush(self) -> None:
        pass

    def position(self) -> int:
        return 0

    def truncate(self, position: int | None) -> None:
        pass  # upserts are idempotent: rows re-written after a resume replace themselves

    def close(self) -> None:
        self.engine.dispose()


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def open_sink(spec: dict[str, Any]):
    spec = dict(spec)
    kind = spec.pop("type", None)
    sinks = {"jsonl": JsonlSink, "parquet": ParquetSink, "sql": SqlSink}
    if kind not in sinks:
        raise RecipeError(f"unknown sink type {kind!r}; use one of: {', '.join(sinks)}")
    try:
        return sinks[kind](**spec)
    except TypeError as exc:
        raise RecipeError(f"{kind} sink: {exc}") from None

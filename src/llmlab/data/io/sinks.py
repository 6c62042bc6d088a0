"""Sinks: write record batches to a staged target, say where they are (`position`) so a checkpoint
can cut them back to exactly what was committed (`truncate`), and publish the whole output at once
(`commit`) when the run succeeds.

A run that fails or is killed never touches the previous good output: files are written beside
their target (`.NAME.partial`, `NAME.parts/`) and renamed over it on success; SQL rows go to a
staging table (`TABLE__staging`) that replaces the table in one transaction. `--resume` continues
the staged output from the last checkpoint.

Recipe form (`sinks:` list): `- {type: jsonl, path: out.jsonl}` · `parquet` · `text` (alias
`markdown`: each record's `field`, default `text`, written as it is — a document in, the same
document out; records joined by `separator`, default a newline) · `sql` (url, table,
id_field; the table is replaced by the run's rows, upserted by id while staged, so re-writing a
batch after a crash changes nothing; a field that first appears mid-run adds a column).

Lifecycle: `truncate(None)` starts fresh, `truncate(position)` resumes; `write`/`flush` per batch;
`commit()` publishes; `close()` releases (publishing nothing by itself).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import uuid
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


def staged_path(path: str) -> str:
    """Where a file sink writes until the run succeeds: a hidden file beside the target."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.partial")


class JsonlSink:
    kind = "jsonl"

    def __init__(self, path: str):
        self.path = path
        self.staged = staged_path(path)
        os.makedirs(os.path.dirname(self.staged), exist_ok=True)
        self.fh = open(self.staged, "ab")

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
        self.fh.seek(0, os.SEEK_END)
        if position and self.fh.tell() < position:
            raise RecipeError(
                f"{self.kind} sink: staged output {self.staged} is shorter than the checkpoint; "
                "run again without --resume"
            )
        self.fh.truncate(position or 0)
        self.fh.seek(position or 0)

    def commit(self) -> None:
        self.flush()
        os.replace(self.staged, self.path)

    def close(self) -> None:
        self.fh.close()


class TextSink(JsonlSink):
    """Each record's `field` written verbatim, records joined by `separator` — for data whose
    result is a document (a repaired Markdown file), not a table. Staged like the jsonl sink."""

    kind = "text"

    def __init__(self, path: str, field: str = "text", separator: str = "\n"):
        super().__init__(path)
        self.field, self.separator = field, separator.encode()

    def write(self, records: list[dict]) -> None:
        for record in records:
            value = record.get(self.field)
            if not isinstance(value, str):
                # A silent empty line would lose data; the run fails and the old file stays.
                raise RecipeError(
                    f"text sink: record has no text field {self.field!r} "
                    f"(fields: {', '.join(sorted(record)) or 'none'})"
                )
            if self.fh.tell():
                self.fh.write(self.separator)
            self.fh.write(value.encode("utf-8"))


class ParquetSink:
    """One part file per written batch under `<path>.parts/`, merged into `<path>` on commit, so a
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

    def commit(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = sorted(glob.glob(os.path.join(self.parts, "part-*.parquet")))
        if not files:  # an empty result is still a result: a table with no rows
            pq.write_table(pa.table({}), self.path + ".tmp")
            os.replace(self.path + ".tmp", self.path)
        else:
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

    def close(self) -> None:
        pass  # parts stay until commit merges them (or a resumed run continues them)


class SqlSink:
    """Rows upserted by `id_field` into a staging table (`TABLE__staging`, created from the first
    batch's fields; a field first seen later adds a column); `commit` drops `table` and renames
    the staging table to it in one transaction. Lists and dicts are stored as JSON text; records
    without an id get a hash of their content."""

    def __init__(self, url: str, table: str, id_field: str = "id"):
        import sqlalchemy as sa

        self.sa, self.url, self.table_name, self.id_field = sa, url, table, id_field
        self.staging_name = f"{table}__staging"
        self.engine = sa.create_engine(url)
        self.table = None

    def _quote(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote(name)

    @staticmethod
    def _column_type(sa, value):
        if isinstance(value, bool):
            return sa.Boolean()
        if isinstance(value, int):
            return sa.BigInteger()
        if isinstance(value, float):
            return sa.Float()
        return sa.Text()

    def _ensure_table(self, records: list[dict]) -> None:
        sa = self.sa
        meta = sa.MetaData()
        if sa.inspect(self.engine).has_table(self.staging_name):  # a resumed run
            self.table = sa.Table(self.staging_name, meta, autoload_with=self.engine)
            return
        columns = {self.id_field: sa.String(64)}
        for record in records:
            for key, value in record.items():
                columns.setdefault(key, self._column_type(sa, value))
        # A constraint name of its own: the index keeps it after the rename, and the next run's
        # staging table must not collide with it (PostgreSQL names are schema-wide).
        key = sa.PrimaryKeyConstraint(
            self.id_field, name=f"pk_{self.table_name}_{uuid.uuid4().hex[:8]}"
        )
        cols = [sa.Column(name, typ) for name, typ in columns.items()]
        self.table = sa.Table(self.staging_name, meta, *cols, key)
        meta.create_all(self.engine)

    def _add_columns(self, records: list[dict]) -> None:
        """Fields that first appear mid-run become new (nullable) columns of the staging table."""
        sa = self.sa
        new = {}
        for record in records:
            for key, value in record.items():
                if key not in self.table.c and key not in new:
                    new[key] = self._column_type(sa, value)
        if not new:
            return
        with self.engine.begin() as conn:
            for name, typ in new.items():
                ddl = typ.compile(dialect=self.engine.dialect)
                conn.execute(
                    sa.text(
                        f"ALTER TABLE {self._quote(self.staging_name)} ADD COLUMN {self._quote(name)} {ddl}"
                    )
                )
        self.table = sa.Table(self.staging_name, sa.MetaData(), autoload_with=self.engine)

    def _row(self, record: dict) -> dict:
        row = {
            key: json.dumps(_jsonable(value), ensure_ascii=False)
            if isinstance(value, (dict, list, tuple))
            else value
            for key, value in record.items()
        }
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
        self._add_columns(records)
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
        """A fresh run (None) starts from an empty staging table; a resumed one keeps it: rows
        re-written after the checkpoint replace themselves (upserts by id)."""
        if position is None:
            with self.engine.begin() as conn:
                conn.execute(self.sa.text(f"DROP TABLE IF EXISTS {self._quote(self.staging_name)}"))
            self.table = None

    def commit(self) -> None:
        """Replace `table` with the staged rows in one transaction."""
        if self.table is None:  # nothing written: the result is an empty table
            self._ensure_table([])
        sa, target = self.sa, self._quote(self.table_name)
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {target}"))
            conn.execute(
                sa.text(f"ALTER TABLE {self._quote(self.staging_name)} RENAME TO {target}")
            )
        self.table = None

    def close(self) -> None:
        self.engine.dispose()


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def open_sink(spec: dict[str, Any]):
    spec = dict(spec)
    kind = spec.pop("type", None)
    sinks = {
        "jsonl": JsonlSink,
        "text": TextSink,
        "markdown": TextSink,
        "parquet": ParquetSink,
        "sql": SqlSink,
    }
    if kind not in sinks:
        raise RecipeError(f"unknown sink type {kind!r}; use one of: {', '.join(sinks)}")
    try:
        return sinks[kind](**spec)
    except TypeError as exc:
        raise RecipeError(f"{kind} sink: {exc}") from None

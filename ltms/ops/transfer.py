"""`ltmc export FILE` and `ltmc import FILE`: memories as JSON Lines, one memory per line.

Each line: {"id", "text", "namespace", "tags", "metadata", "created_at", "updated_at"} (timestamps are ISO 8601
UTC), plus "model" and "chunks" ([{"start", "end", "embedding"}], one per token window) with --with-embeddings.

Export reads the database read-only in one read transaction (a consistent copy, even while servers write, and
it works on a data directory this user cannot write) and writes the file atomically. With LTMC_BACKEND=postgres
it reads through the storage API instead (iter_stored on a read-only PostgresStorage; each batch is one snapshot),
in the same format. Import reads and validates
every line before it stores anything; a bad line is reported with its number and nothing is imported. The
memories are then stored in one transaction through the memory service, which re-embeds them with the
configured model (embeddings in the file are ignored) and skips texts already present in their namespace, so
importing the same file twice adds nothing. Ids are new; both timestamps are kept.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ltms import validation
from ltms.config import Settings
from ltms.embeddings import Embedder, make_embedder
from ltms.errors import InvalidInput, StorageError
from ltms.fsutil import atomic_writer
from ltms.ops.progress import ProgressBar
from ltms.ops.readonly import connect_readonly, refuse_writes, table_names
from ltms.ops.text import plural
from ltms.records import epoch_or_nan, iso_utc
from ltms.storage.db import CHUNK_BITS, stored_metadata, stored_tags, unreadable_rows
from ltms.vector_store import halfvec

if TYPE_CHECKING:
    from ltms.storage.postgres import PostgresStorage

FIELDS = ("id", "text", "namespace", "tags", "metadata", "created_at", "updated_at")
OPTIONAL_FIELDS = ("model", "chunks", "embedding", "content_hash")
MAX_REPORTED_ERRORS = 20
EMBED_CHUNK = 256


def iso_micro(stored: object) -> str | None:
    """A stored timestamp as ISO 8601 with microseconds; None (null: import stores "now") when no date can show it."""
    seconds = epoch_or_nan(stored)
    if math.isnan(seconds) or not validation.MIN_EPOCH <= seconds <= validation.MAX_EPOCH:
        return None
    return iso_utc(seconds, "microseconds")


# -- export ---------------------------------------------------------------------------------------------------


def run_export(settings: Settings, file: str, with_embeddings: bool = False, force: bool = False) -> int:
    db_path = settings.paths.db_path
    to_stdout = file == "-"
    target = None if to_stdout else Path(file).expanduser().absolute()
    if target is not None:
        _check_target(target, settings, force)
    remote = settings.backend == "postgres"
    try:
        with _exporting(target, overwrite=force) as out:
            if remote:
                count = _write_stored(settings, out, with_embeddings)
            else:
                count = _write_memories(db_path, out, with_embeddings)
    except BrokenPipeError:  # `ltmc export - | head`: the reader left; that is not an error worth a traceback
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    where = "stdout" if to_stdout else str(target)
    note = "" if remote or db_path.exists() else f" (there is no database at {db_path} yet)"
    # With '-', stdout carries the data: the summary goes to stderr.
    print(f"exported {plural(count, 'memory')} to {where}{note}", file=sys.stderr if to_stdout else sys.stdout)
    return 0


def _check_target(target: Path, settings: Settings, force: bool) -> None:
    """Refuse a target that would destroy the store, or (without --force) any existing file."""
    if target.is_dir():
        raise InvalidInput(f"cannot export to {target}: it is a directory")
    paths = settings.paths
    data_dir = paths.data_dir.resolve()
    if target.resolve().is_relative_to(data_dir):
        raise InvalidInput(
            f"cannot export to {target}: it is inside the data directory {data_dir}; write the export elsewhere"
        )
    store_files = [paths.db_path, paths.index_path, paths.manifest_path, paths.lock_path]
    store_files += [paths.db_path.with_name(paths.db_path.name + suffix) for suffix in ("-wal", "-shm")]
    for store_file in store_files:
        same = target.resolve() == store_file.resolve()
        with contextlib.suppress(OSError):  # a hard link to a store file is that file too
            same = same or os.path.samefile(target, store_file)
        if same:
            raise InvalidInput(f"cannot export to {target}: it is the store's own file {store_file}")
    if not force and os.path.lexists(target):
        raise InvalidInput(f"cannot export to {target}: the file exists (use --force to replace it)")


@contextlib.contextmanager
def _exporting(target: Path | None, overwrite: bool) -> Iterator[BinaryIO]:
    if target is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_writer(target, overwrite=overwrite) as handle:
        yield handle


def _write_memories(db_path: Path, out: BinaryIO, with_embeddings: bool) -> int:
    if not db_path.exists():
        return 0
    conn, _how = connect_readonly(db_path)
    count = 0
    try:
        tables = table_names(conn)
        if "memories" not in tables:
            return 0
        layout = _vector_layout(conn, tables)
        conn.execute("BEGIN")  # one consistent state, whatever other processes commit meanwhile
        total = int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
        unreadable = unreadable_rows(conn)
        with ProgressBar("exporting", total) as bar:
            last = 0
            while True:
                rows = conn.execute(
                    "SELECT id, text, namespace, tags, metadata, created_at, updated_at, model"
                    " FROM memories WHERE id > ? ORDER BY id LIMIT 1000",
                    (last,),
                ).fetchall()
                if not rows:
                    break
                vectors = _chunk_vectors(conn, [int(r[0]) for r in rows], layout) if with_embeddings else {}
                last = int(rows[-1][0])
                for row in rows:
                    line = _line(row, vectors.get(int(row[0])) if with_embeddings else None)
                    out.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
                count += len(rows)
                bar.update(count)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StorageError("read memories from", db_path, exc) from exc
    finally:
        conn.close()
    if unreadable:
        ids = ", ".join(str(memory_id) for memory_id, _ in unreadable[:10]) + (", ..." if len(unreadable) > 10 else "")
        print(
            f"ltmc: warning: {len(unreadable)} memories have values no date or JSON can show (ids {ids}); they were "
            "exported with null times and empty tags/metadata where unreadable. `ltmc doctor` lists them.",
            file=sys.stderr,
        )
    return count


def _write_stored(settings: Settings, out: BinaryIO, with_embeddings: bool) -> int:
    """Every memory of the PostgreSQL store, through a read-only PostgresStorage (no model is loaded)."""
    storage = open_remote_readonly(settings)
    count = 0
    try:
        with ProgressBar("exporting", storage.count()) as bar:
            for stored in storage.iter_stored():
                m = stored.memory
                line: dict[str, Any] = {
                    "id": m.id,
                    "text": m.text,
                    "namespace": m.namespace,
                    "tags": list(m.tags),
                    "metadata": m.metadata,
                    "created_at": iso_micro(m.created_at),
                    "updated_at": iso_micro(m.updated_at),
                }
                if with_embeddings:
                    line["model"] = stored.model
                    line["chunks"] = [
                        {"start": c.start, "end": c.end, "embedding": c.vector.tolist()} for c in stored.chunks
                    ]
                out.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
                count += 1
                bar.update(count)
    finally:
        storage.close()
    return count


def open_remote_readonly(settings: Settings) -> PostgresStorage:
    """The configured PostgreSQL store, read-only, at the dimension its memories have (whatever the model)."""
    from ltms.storage.pg_schema import DimensionMismatch
    from ltms.storage.postgres import PostgresStorage

    url, size = settings.database_url or "", settings.database_pool_size
    try:
        return PostgresStorage.open(url, make_embedder(settings.embedder).dimension, pool_size=size, read_only=True)
    except DimensionMismatch as exc:  # export copies what is stored; the configured model plays no part
        return PostgresStorage.open(url, int(exc.stored), pool_size=size, read_only=True)


def _vector_layout(conn: sqlite3.Connection, tables: set[str]) -> str:
    """How this store keeps its vectors: "half" (schema 3: float16 chunks keyed by chunk key), "chunks" (schema 2:
    float32 chunks), "memories" (schema 1, not yet upgraded: one float32 vector per memory)."""
    if "chunks" not in tables:
        return "memories"
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(chunks)")}
    return "half" if "key" in columns else "chunks"


def _chunk_vectors(conn: sqlite3.Connection, ids: list[int], layout: str) -> dict[int, list[dict[str, Any]]]:
    """memory id -> its chunks as {"start", "end", "embedding"}, in order. The file format is the same for every
    layout: float32 values (of float16 ones, exactly, since schema 3)."""
    marks = ",".join("?" * len(ids))
    params: list[int] = ids
    if layout == "half":  # `ids` ascend: their chunks lie in one key range
        sql = f"SELECT key >> {CHUNK_BITS}, start_char, end_char, embedding FROM chunks WHERE key >= ? AND key < ?"
        sql += " ORDER BY key"
        params = [min(ids) << CHUNK_BITS, (max(ids) + 1) << CHUNK_BITS]
    elif layout == "chunks":
        sql = f"SELECT memory_id, start_char, end_char, embedding FROM chunks WHERE memory_id IN ({marks})"
        sql += " ORDER BY memory_id, ordinal"
    else:
        sql = f"SELECT id, 0, length(text), embedding FROM memories WHERE id IN ({marks})"
    wanted = set(ids)
    found: dict[int, list[dict[str, Any]]] = {}
    for memory_id, start, end, blob in conn.execute(sql, params):
        if int(memory_id) not in wanted:  # a chunk left by a memory deleted without its trigger (by hand)
            continue
        values = np.frombuffer(blob, dtype=halfvec.STORED if layout == "half" else np.float32)
        vector = values.astype(np.float32).tolist()
        found.setdefault(int(memory_id), []).append({"start": int(start), "end": int(end), "embedding": vector})
    return found


def _line(row: Sequence[Any], chunks: list[dict[str, Any]] | None) -> dict[str, Any]:
    memory_id, text, namespace, tags, metadata, created, updated, model = row
    line = {
        "id": int(memory_id),
        "text": text,
        "namespace": namespace,
        "tags": stored_tags(tags) or [],
        "metadata": stored_metadata(metadata) or {},
        "created_at": iso_micro(created),
        "updated_at": iso_micro(updated),
    }
    if chunks is not None:
        line["model"] = model
        line["chunks"] = chunks
    return line


# -- import ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportItem:
    line: int
    text: str
    tags: list[str]
    metadata: dict[str, Any]
    namespace: str
    created_at: float | None
    updated_at: float | None


def run_import(settings: Settings, file: str, embedder: Embedder | None = None) -> int:
    from ltms.service import MemoryService

    refuse_writes(settings, "import")
    source = "stdin" if file == "-" else str(Path(file).expanduser().absolute())
    items, errors = parse_file(file, settings)
    if len(errors) == 1:
        raise InvalidInput(f"{source} {errors[0]}; nothing was imported")
    if errors:
        for error in errors[:MAX_REPORTED_ERRORS]:
            print(f"{source} {error}", file=sys.stderr)
        listed = f", the first {MAX_REPORTED_ERRORS} listed above" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise InvalidInput(
            f"{source}: {len(errors)} malformed lines{listed} (the first: {errors[0]}); nothing was imported"
        )
    embedder = embedder if embedder is not None else make_embedder(settings.embedder)
    with ProgressBar("embedding") as bar:
        tracked = _ProgressEmbedder(embedder, bar)
        with MemoryService(settings, tracked, background_saves=False) as service:
            results = service.store_many(
                [(i.text, i.tags, i.metadata, i.namespace) for i in items],
                timestamps=[(i.created_at, i.updated_at) for i in items],
            )
    created = sum(r.created for r in results)
    print(f"imported {created}, already present {len(results) - created} (from {source}, {plural(len(items), 'line')})")
    return 0


def parse_file(file: str, settings: Settings) -> tuple[list[ImportItem], list[str]]:
    """Every memory in the file, and a "line N: reason" for every line that is not one."""
    items: list[ImportItem] = []
    errors: list[str] = []
    try:
        handle = sys.stdin.buffer if file == "-" else Path(file).expanduser().open("rb")
    except OSError as exc:
        raise StorageError("read", Path(file).expanduser().absolute(), exc.strerror or exc) from exc
    with contextlib.ExitStack() as stack:
        if file != "-":
            stack.enter_context(handle)
        try:
            for number, raw in enumerate(handle, 1):
                try:
                    item = parse_line(number, raw, settings)
                except InvalidInput as exc:
                    errors.append(f"line {number}: {exc}")
                    continue
                if item is not None:
                    items.append(item)
        except OSError as exc:
            raise StorageError("read", file, exc.strerror or exc) from exc
    return items, errors


def parse_line(number: int, raw: bytes, settings: Settings) -> ImportItem | None:
    """One memory from one line (None for a blank line). Raises InvalidInput with the reason."""
    try:
        decoded = raw.decode("utf-8").rstrip("\r\n")  # so a JSON error's column is on this line
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"not valid UTF-8 (byte {exc.start})") from exc
    if not decoded.strip():
        return None
    try:
        record = json.loads(decoded)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise InvalidInput(f"expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(FIELDS)}")
    if "text" not in record:
        raise InvalidInput("the field 'text' is missing")
    text = validation.text(record["text"], "text", settings.max_text_bytes)
    namespace = validation.namespace(record.get("namespace"))
    assert namespace is not None
    tags = validation.tags(record.get("tags"))
    metadata = validation.metadata(record.get("metadata"), settings.max_metadata_bytes)
    created_at = validation.timestamp(record.get("created_at"), "created_at")
    updated_at = validation.timestamp(record.get("updated_at"), "updated_at")
    return ImportItem(number, text, tags, metadata, namespace, created_at, updated_at)


class _ProgressEmbedder:
    """Wraps the configured embedder to advance a progress bar while the service embeds the new memories."""

    def __init__(self, inner: Embedder, bar: ProgressBar) -> None:
        self.inner = inner
        self.bar = bar
        self.name = inner.name
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self.token_offsets = inner.token_offsets
        self.embed_query = inner.embed_query

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) <= EMBED_CHUNK:
            return self.inner.embed(texts)
        parts = []
        for start in range(0, len(texts), EMBED_CHUNK):
            parts.append(self.inner.embed(texts[start : start + EMBED_CHUNK]))
            self.bar.update(start + len(parts[-1]), len(texts))
        return np.concatenate(parts)

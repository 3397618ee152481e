"""Shared helpers for the benchmarks in bench/: embedders with precomputed vectors, fast data-directory
population, percentiles, markdown tables, RSS.

Nothing here is imported by ltms. Every script in bench/ prints the command line that produced it at the top
and markdown tables on stdout; progress goes to stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

DIM = 384
CACHE = Path(os.environ.get("LTMC_BENCH_CACHE", "/tmp/ltmc-bench"))
MINILM_NAME = "all-MiniLM-L6-v2"
HASH_NAME = "hash-384-v1"


# -- output -------------------------------------------------------------------------------------------------------


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def header(title: str) -> None:
    """The title and the exact command that produced the tables below it."""
    argv = [os.path.relpath(sys.argv[0], ROOT) if os.path.isabs(sys.argv[0]) else sys.argv[0], *sys.argv[1:]]
    print(f"## {title}\n")
    print(f"Command: `PYTHONPATH=. {shlex.join([Path(sys.executable).name, *argv])}`  ")
    print(
        f"Run at {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} cores, "
        f"{_mem_total_gib():.0f} GiB RAM, Python {sys.version.split()[0]}\n",
        flush=True,
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def emit(text: str = "") -> None:
    print(text, flush=True)


def ms(seconds: float) -> str:
    value = seconds * 1000
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def secs(seconds: float) -> str:
    return f"{seconds:.2f}"


def pct(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted samples."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, int(np.ceil(q / 100 * len(ordered))))
    return ordered[min(rank, len(ordered)) - 1]


def p50(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def human(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and n % (size // 10 if size > 1000 else 1) == 0:
            value = n / size
            return f"{value:g}{unit}"
    return str(n)


def parse_sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = 1
        if part.endswith("k"):
            mult, part = 1000, part[:-1]
        elif part.endswith("m"):
            mult, part = 1_000_000, part[:-1]
        out.append(int(float(part) * mult))
    return out


# -- machine ------------------------------------------------------------------------------------------------------


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.0f}"


def process_tree_pids(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


# -- vectors and embedders ---------------------------------------------------------------------------------------


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """n random unit vectors (float32), generated in chunks so 1M does not need a float64 temporary."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


class PrecomputedEmbedder:
    """Implements the Embedder protocol with precomputed random unit vectors, so a store or retrieve measured
    through MemoryService excludes the cost of a model. `name` is what the data directory was labelled with."""

    def __init__(self, name: str = MINILM_NAME, dimension: int = DIM, pool: int = 8192, seed: int = 12345) -> None:
        self.name = name
        self.dimension = dimension
        self._pool = unit_vectors(pool, seed, dimension)
        self._next = 0

    max_tokens = 256

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        rows = np.arange(self._next, self._next + n) % len(self._pool)
        self._next += n
        return self._pool[rows].copy()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """One token per word: the short bench texts stay one chunk each."""
        return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def bench_text(i: int) -> str:
    return f"benchmark memory {i}: the deploy of service {i % 97} moved to region {i % 13}, owner team {i % 7}"


# -- data directories ----------------------------------------------------------------------------------------------


def settings_for(data_dir: Path, **flags: object):
    from ltms.config import Settings

    return Settings.load(env={}, data_dir=data_dir, **flags)


def db_path(data_dir: Path) -> Path:
    from ltms.vector_store.faiss_config import DB_NAME

    return data_dir / DB_NAME


def populate(
    data_dir: Path, n: int, model: str, seed: int = 1, *, with_snapshot: bool = True, batch: int = 20_000
) -> None:
    """A data directory holding `n` memories with random unit vectors, labelled with `model`.

    The schema is created by opening a MemoryService once on the empty directory; rows then go straight into the
    `memories` and `changes` tables with sqlite3 executemany in big transactions (storing 1M memories one
    transaction each through the service would take far longer than the benchmark). With `with_snapshot`, the
    service is opened once more: it finds no snapshot, builds the index from SQLite and saves the snapshot, as
    a first start after an import would.
    """
    from ltms.service import MemoryService
    from ltms.storage.db import CHUNK_BITS
    from ltms.vector_store import halfvec

    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    settings = settings_for(data_dir)
    MemoryService(settings, embedder=PrecomputedEmbedder(model, pool=1), background_saves=False).close()
    paths = settings.paths
    for path in (paths.index_path, paths.manifest_path):
        path.unlink(missing_ok=True)
    conn = sqlite3.connect(str(paths.db_path), isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # setup only; the service reopens with its own settings
    rng = np.random.default_rng(seed)
    centres = unit_vectors(max(10, n // 100), seed + 1)  # clustered, like sentence embeddings (bench_index.py)
    now = time.time() - n  # one memory a second, ending now
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        count = min(batch, n - start)
        block = centres[rng.integers(0, len(centres), count)]
        block += rng.standard_normal((count, DIM), dtype=np.float32) / np.sqrt(DIM)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        rows = []
        chunks = []
        changes = []
        for j in range(count):
            i = start + j + 1
            text = bench_text(i)
            stamp = now + i
            rows.append(
                (i, "default", text, "[]", "{}", stamp, stamp, hashlib.sha256(text.encode()).hexdigest(), model)
            )
            chunks.append((i << CHUNK_BITS, 0, len(text), halfvec.encode(block[j])))  # one chunk per short memory
            changes.append((i, "add", stamp))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO memories(id, namespace, text, tags, metadata, created_at, updated_at,"
            " content_hash, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany("INSERT INTO chunks(key, start_char, end_char, embedding) VALUES (?, ?, ?, ?)", chunks)
        conn.executemany("INSERT INTO changes(memory_id, op, at) VALUES (?, ?, ?)", changes)
        conn.execute("COMMIT")
        if start and start % 200_000 == 0:
            log(f"  populate {data_dir.name}: {start}/{n} rows, {time.perf_counter() - t0:.0f} s")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    log(f"  populate {data_dir.name}: {n} rows in {time.perf_counter() - t0:.1f} s")
    if with_snapshot:
        t1 = time.perf_counter()
        service = MemoryService(settings, embedder=PrecomputedEmbedder(model, pool=1), background_saves=False)
        log(f"  first open (build the exact index + save the snapshot): {time.perf_counter() - t1:.1f} s")
        # What the background saver of a server would do next above the HNSW threshold; here with both cores.
        import faiss

        t1 = time.perf_counter()
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        service.save_snapshot(force=True)
        faiss.omp_set_num_threads(1)
        service.close()
        log(f"  index kind {service.storage.index.kind}, converted and saved in {time.perf_counter() - t1:.1f} s")


def cached_data_dir(n: int, model: str, *, fresh: bool = False) -> Path:
    """A populated data directory under the cache, built once and reused while its marker matches.

    Benchmarks that write to it must work on a copy (`scratch_copy`)."""
    data_dir = CACHE / f"data-{n}"
    marker = data_dir / "bench-populated.json"
    want = {"n": n, "version": 4}  # 3: schema 2 (chunks); 4: schema 3 (float16 chunks keyed by chunk key)
    current = None
    if marker.exists():
        try:
            current = json.loads(marker.read_text())
        except ValueError:
            current = None
    if not fresh and current is not None and (current.get("n"), current.get("version")) == (n, 3):
        relabel(data_dir, model)
        upgrade_in_place(data_dir, model)
        marker.write_text(json.dumps({**want, "model": model}))
        current = want
    if fresh or current is None or {k: current.get(k) for k in want} != want:
        log(f"building cached data directory {data_dir} ({n} memories)")
        populate(data_dir, n, model)
        marker.write_text(json.dumps({**want, "model": model}))
    else:
        relabel(data_dir, model)
        refresh_snapshot_format(data_dir, model)
    return data_dir


def upgrade_in_place(data_dir: Path, model: str) -> None:
    """Open a schema-2 directory once, as a user's upgrade would: the float16 migration (+ VACUUM), then the index
    rebuilt from SQLite and saved (the old snapshot is foreign). Timed; the moved-aside old snapshot is deleted so
    the disk measurements see what a fresh store holds."""
    from ltms.service import MemoryService

    paths = settings_for(data_dir).paths
    size = dir_size(data_dir)
    t0 = time.perf_counter()
    service = MemoryService(settings_for(data_dir), embedder=PrecomputedEmbedder(model, pool=1), background_saves=False)
    opened = time.perf_counter() - t0
    t1 = time.perf_counter()
    service.save_snapshot(force=True)  # in the kind the size calls for (HNSW above the threshold)
    service.close()
    log(
        f"  upgraded {data_dir} to float16 chunks: open (migration + VACUUM + exact index build + save) {opened:.1f} s,"
        f" HNSW build + save {time.perf_counter() - t1:.1f} s; {size / 1e6:.0f} MB before"
    )
    for moved in data_dir.glob(f"{paths.index_path.name}*.bad-*"):
        moved.unlink()
    log(f"  {dir_size(data_dir) / 1e6:.0f} MB after")


def refresh_snapshot_format(data_dir: Path, model: str) -> None:
    """If ltms now writes its snapshot in another format than the cached one, rebuild the snapshot with the current
    code, so loads are measured on what ltms writes today."""
    from ltms.service import MemoryService
    from ltms.vector_store.faiss_store import MANIFEST_FORMAT

    paths = settings_for(data_dir).paths
    try:
        have = json.loads(paths.manifest_path.read_text()).get("format")
    except (OSError, ValueError):
        have = None
    if have == MANIFEST_FORMAT:
        return
    log(f"  snapshot in {data_dir} has format {have!r}, ltms now writes {MANIFEST_FORMAT}: rebuilding it")
    for path in (paths.index_path, paths.manifest_path):
        path.unlink(missing_ok=True)
    service = MemoryService(settings_for(data_dir), embedder=PrecomputedEmbedder(model, pool=1), background_saves=False)
    service.save_snapshot(force=True)
    service.close()


def relabel(data_dir: Path, model: str) -> None:
    """Make a populated directory open with an embedder named `model` (the vectors are random anyway):
    the database's `meta.model` and the snapshot manifest's `model` field. The index bytes are untouched."""
    marker = data_dir / "bench-populated.json"
    info = json.loads(marker.read_text()) if marker.exists() else {}
    if info.get("model") == model:
        return
    conn = sqlite3.connect(str(db_path(data_dir)), isolation_level=None)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'model'", (model,))
    conn.close()
    settings = settings_for(data_dir)
    manifest = settings.paths.manifest_path
    if manifest.exists():
        raw = json.loads(manifest.read_text())
        raw["model"] = model
        manifest.write_text(json.dumps(raw, indent=1))
    if marker.exists():
        info["model"] = model
        marker.write_text(json.dumps(info))


def scratch_copy(source: Path, target: Path) -> Path:
    """A copy of a populated data directory that a benchmark may write to (reflink/sparse where possible)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

"""The PostgreSQL + pgvector backend: durable stores, filtered retrieval and its recall, cold start, two writers.

On a throwaway PostgreSQL 16 + pgvector 0.8.5 (tests/postgres_server.py, fsync on), or `--url` for a server of
your own (its database must be empty). Data: N memories of 384-dim unit vectors clustered around N/50 centres,
one chunk each; 1 % of them in namespace "rare", 30 % tagged "thirty". Queries: see `queries`.

- load: `PostgresStorage.copy_stored` (what `ltmc migrate` does) into the tables without the HNSW index, then
  the index build (a bulk load builds the graph once instead of growing it row by row).
- durable store: one memory per transaction through `PostgresStorage.transaction()`, synchronous_commit on,
  with the HNSW index in place; p50 / p99.
- retrieve: `vector_search(k=10)` unfiltered and at 1 % / 30 % filters, p50, and recall@10 against exact search
  (numpy over the same vectors). "auto" is the backend's own choice (exact search when the filter matches at most
  `exact_limit` memories, else the HNSW index with iterative scans); "hnsw" forces the index path.
- cold start: restart the server (pg_ctl start), open the store, answer one query.
- two writers: two processes storing memories at once vs one, memories/s in total.

    PYTHONPATH=. python bench/bench_postgres.py              # 10k (a few minutes on 2 cores)
    PYTHONPATH=. python bench/bench_postgres.py --100k       # also 100k (the HNSW build alone takes minutes)
    PYTHONPATH=. python bench/bench_postgres.py --quick      # 2k, a smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time

import numpy as np
from common import DIM, ROOT, emit, header, human, log, ms, p50, pct, secs, table

from ltms.storage import postgres
from ltms.storage.base import Chunk, Filter, NewMemory, StoredMemory
from ltms.storage.pg_schema import INDEXES
from ltms.storage.postgres import PostgresStorage
from tests.postgres_server import PostgresCluster  # PYTHONPATH=. (the checkout), as every bench command says

MODEL = "bench-384"
K = 10
QUERIES = 60
STORES = 200
WRITES_PER_WRITER = 150

WRITER = """
import hashlib, sys, time
import numpy as np
from ltms.storage.base import Chunk, NewMemory
from ltms.storage import postgres
from ltms.storage.postgres import PostgresStorage
url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
storage = PostgresStorage.open(url, 384, pool_size=1)
rng = np.random.default_rng(sum(map(ord, name)))
sys.stdin.readline()
started = time.perf_counter()
for i in range(count):
    v = rng.standard_normal(384).astype(np.float32)
    v /= np.linalg.norm(v)
    text = f"{name} writer memory {i}"
    now = time.time()
    with storage.transaction() as tx:
        tx.insert(NewMemory(text, "writers", (), {}, now, now, hashlib.sha256(text.encode()).hexdigest(), "bench-384",
                            (Chunk(0, len(text), v),)))
print(time.perf_counter() - started, flush=True)
storage.close()
"""


def dataset(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), DIM), dtype=np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def stored(i: int, vector: np.ndarray) -> StoredMemory:
    from ltms.records import Memory

    text = f"benchmark memory {i}: service {i % 97} moved to region {i % 13}"
    memory = Memory(
        id=i + 1,
        text=text,
        namespace="rare" if i % 100 == 0 else "common",
        tags=["thirty"] if i % 10 < 3 else [],
        metadata={"i": i},
        created_at=1_700_000_000.0 + i,
        updated_at=1_700_000_000.0 + i,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
    )
    return StoredMemory(memory, MODEL, (Chunk(0, len(text), vector),))


def load(url: str, vectors: np.ndarray) -> dict[str, float]:
    storage = PostgresStorage.open(url, DIM)
    storage.claim_model(MODEL, DIM)
    with storage.transaction() as tx:  # bulk load: build the graph once at the end
        tx.conn.execute("DROP INDEX chunks_embedding_hnsw")
    started = time.perf_counter()
    for start in range(0, len(vectors), 1000):
        storage.copy_stored([stored(i, vectors[i]) for i in range(start, min(len(vectors), start + 1000))])
        log(f"  loaded {start + 1000}/{len(vectors)}")
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    with storage.transaction() as tx:
        tx.conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        tx.conn.execute(INDEXES["chunks_embedding_hnsw"])
        tx.conn.execute("ANALYZE memories")
        tx.conn.execute("ANALYZE chunks")
    built = time.perf_counter() - started
    storage.close()
    return {"load": loaded, "build": built}


def durable_stores(storage: PostgresStorage, n: int) -> list[float]:
    rng = np.random.default_rng(11)
    samples = []
    for i in range(STORES):
        v = rng.standard_normal(DIM).astype(np.float32)
        text = f"durable store {n} {i}"
        memory = NewMemory(
            text,
            "fresh",
            (),
            {},
            time.time(),
            time.time(),
            hashlib.sha256(text.encode()).hexdigest(),
            MODEL,
            (Chunk(0, len(text), v / np.linalg.norm(v)),),
        )
        started = time.perf_counter()
        with storage.transaction() as tx:
            tx.insert(memory)
        samples.append(time.perf_counter() - started)
    return samples


def queries(vectors: np.ndarray, kind: str) -> np.ndarray:
    """ "near": a stored vector plus noise, cosine about 0.9 to it (a query that has a good answer, as text queries
    against text embeddings do); "random": uniform random directions (HNSW's worst case in 384 dimensions)."""
    rng = np.random.default_rng(5)
    noise = rng.standard_normal((QUERIES, DIM), dtype=np.float32)
    if kind == "random":
        return noise / np.linalg.norm(noise, axis=1, keepdims=True)
    picked = vectors[rng.integers(0, len(vectors), QUERIES)] + 0.5 * noise / np.sqrt(DIM)
    return picked / np.linalg.norm(picked, axis=1, keepdims=True)


def retrieval_rows(url: str, vectors: np.ndarray) -> list[list[object]]:
    n = len(vectors)
    subsets = {
        "none": (Filter(), np.arange(n)),
        "1 % (namespace)": (Filter(namespace="rare"), np.arange(0, n, 100)),
        "30 % (tag)": (Filter(tags=("thirty",)), np.array([i for i in range(n) if i % 10 < 3])),
    }
    rows: list[list[object]] = []
    for kind, path, exact_limit in (("near", "auto", None), ("near", "hnsw", 0), ("random", "auto", None)):
        qs = queries(vectors, kind)
        options = {} if exact_limit is None else {"exact_limit": exact_limit}
        storage = PostgresStorage.open(url, DIM, pool_size=1, **options)
        for label, (where, allowed) in subsets.items():
            sims = vectors[allowed] @ qs.T  # exact ground truth per query
            truth = [set((allowed[np.argsort(-sims[:, j])[:K]] + 1).tolist()) for j in range(QUERIES)]
            storage.vector_search(qs[0], K, where)  # warm the connection
            times, recalls, short = [], [], 0
            for j, q in enumerate(qs):
                started = time.perf_counter()
                hits = storage.vector_search(q, K, where)
                times.append(time.perf_counter() - started)
                short += len(hits) < K
                recalls.append(len({h.memory_id for h in hits} & truth[j]) / K)
            chosen = "exact" if len(allowed) <= storage.exact_limit else f"index: {plan(storage, where, qs[0])}"
            rows.append(
                [
                    human(n),
                    kind,
                    label,
                    f"{path} ({chosen})",
                    ms(p50(times)),
                    ms(pct(times, 99)),
                    f"{np.mean(recalls):.3f}",
                    short,
                ]
            )
        storage.close()
    return rows


def plan(storage: PostgresStorage, where: Filter, q: np.ndarray) -> str:
    """What the planner does with the index path's query: walk the HNSW index, or sort exactly (small tables)."""
    clause, params = postgres._where(where)
    with storage._read() as conn:
        rows = conn.execute(
            f"EXPLAIN SELECT c.memory_id FROM chunks c JOIN memories m ON m.id = c.memory_id{clause}"
            " ORDER BY c.embedding <=> %(q)s LIMIT 28",
            {**params, "q": postgres._vector(q)},
        ).fetchall()
    return "hnsw" if "chunks_embedding_hnsw" in str(rows) else "planner sorted exactly"


def cold_start(cluster: PostgresCluster, url: str, vectors: np.ndarray) -> dict[str, float]:
    cluster.stop()
    started = time.perf_counter()
    cluster.start()
    up = time.perf_counter() - started
    storage = PostgresStorage.open(url, DIM, pool_size=1)
    opened = time.perf_counter() - started
    storage.vector_search(queries(vectors, "near")[0], K, Filter())
    answered = time.perf_counter() - started
    storage.close()
    return {"server": up, "open": opened, "answer": answered}


def writers(url: str, count: int) -> float:
    """memories/s stored by `count` processes at once (each its own transactions)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"w{count}-{k}", str(WRITES_PER_WRITER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for k in range(count)
    ]
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        proc.communicate(timeout=600)
    return count * WRITES_PER_WRITER / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--100k", dest="big", action="store_true", help="also 100k memories (slow)")
    parser.add_argument("--quick", action="store_true", help="2k memories only: a smoke test")
    parser.add_argument("--url", help="an empty database on a server of your own instead of a throwaway one")
    args = parser.parse_args()
    sizes = [2_000] if args.quick else [10_000, 100_000] if args.big else [10_000]
    header("PostgreSQL + pgvector backend")
    cluster = None if args.url else PostgresCluster.create(durable=True)
    setup, stores, searches, starts, throughput = [], [], [], [], []
    try:
        for n in sizes:
            url = args.url or cluster.url(cluster.create_database(f"bench{n}"))  # type: ignore[union-attr]
            log(f"{human(n)}: generating and loading")
            vectors = dataset(n)
            times = load(url, vectors)
            setup.append([human(n), secs(times["load"]), f"{n / times['load']:.0f}", secs(times["build"])])
            log(f"{human(n)}: retrieval")
            searches += retrieval_rows(url, vectors)
            log(f"{human(n)}: durable stores")
            storage = PostgresStorage.open(url, DIM, pool_size=1)
            samples = durable_stores(storage, n)
            storage.close()
            stores.append([human(n), ms(p50(samples)), ms(pct(samples, 99))])
            if cluster is not None:
                log(f"{human(n)}: cold start")
                cold = cold_start(cluster, url, vectors)
                starts.append([human(n), secs(cold["server"]), secs(cold["open"]), secs(cold["answer"])])
            log(f"{human(n)}: writers")
            one, two = writers(url, 1), writers(url, 2)
            throughput.append([human(n), f"{one:.0f}", f"{two:.0f}", f"{two / one:.2f}"])
    finally:
        if cluster is not None:
            cluster.destroy()
    emit("### Load (copy_stored, as `ltmc migrate` does) and HNSW build (m=16, ef_construction=64)\n")
    emit(table(["memories", "load s", "memories/s", "HNSW build s"], setup))
    emit("\n### Durable store (one memory per transaction, HNSW in place)\n")
    emit(table(["memories", "p50 ms", "p99 ms"], stores))
    emit(f"\n### Retrieve, k={K}, {QUERIES} queries (recall@10 against exact search)\n")
    emit(
        table(
            ["memories", "queries", "filter", "path (taken)", "p50 ms", "p99 ms", "recall@10", "queries short of k"],
            searches,
        )
    )
    if starts:
        emit("\n### Cold start: server restart -> store open -> first answer (cumulative seconds)\n")
        emit(table(["memories", "server up", "store open", "first answer"], starts))
    emit(f"\n### Writers: {WRITES_PER_WRITER} durable stores per process\n")
    emit(table(["memories", "1 process /s", "2 processes /s (total)", "ratio"], throughput))


if __name__ == "__main__":
    main()

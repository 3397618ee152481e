"""Retrieve latency (index and service), index operation costs, approximate indexes, snapshot save/load and RSS.

- Exact search: `ltms.vector_store.faiss_store.FaissIndex.search`, one query, k=10, over random unit vectors.
- Service retrieve: `MemoryService.retrieve(query, k=10)` on a populated data directory, with precomputed query
  vectors (embedding excluded): validation + catch-up check + search + fetching the hits' rows from SQLite.
  Also with a namespace filter that matches every memory (the filter path's worst case).
- Index operations: add one vector, remove one present id (what an update or delete costs the index).
- Approximate indexes (bench only; ltms has none): faiss HNSW and IVF-Flat, recall@10 against exact search,
  on the same uniform random vectors (a worst case: no structure, every neighbour nearly equidistant) and on
  clustered synthetic vectors whose queries are near a stored vector (closer to real text embeddings).
- Snapshots: `SnapshotStore.save` / `SnapshotStore.load` as ltms does them, each load in a fresh process (time and
  peak RSS), with a breakdown of the load, and the proposed faster load for comparison.

    PYTHONPATH=. python bench/bench_index.py                       # 10k, 100k, 1M
    PYTHONPATH=. python bench/bench_index.py --quick               # < 1 minute
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import faiss
import numpy as np
from common import (
    CACHE,
    DIM,
    PrecomputedEmbedder,
    cached_data_dir,
    emit,
    header,
    human,
    log,
    mib,
    ms,
    p50,
    parse_sizes,
    pct,
    proc_status,
    secs,
    settings_for,
    table,
    unit_vectors,
)

LABEL = "bench-precomputed-384"
K = 10


DEFAULT_THREADS = faiss.omp_get_max_threads()


def timed_queries(search, queries: np.ndarray) -> list[float]:
    out = []
    for q in queries:
        t = time.perf_counter()
        search(q)
        out.append(time.perf_counter() - t)
    return out


def timed_both(search, queries) -> tuple[list[float], list[float]]:
    """Each query twice, alternating faiss's OpenMP threads: the default (all cores) and 1. Alternating per query
    puts both settings under the same machine noise."""
    default, single = [], []
    for q in queries:
        for threads, out in ((DEFAULT_THREADS, default), (1, single)):
            faiss.omp_set_num_threads(threads)
            t = time.perf_counter()
            search(q)
            out.append(time.perf_counter() - t)
    faiss.omp_set_num_threads(DEFAULT_THREADS)
    return default, single


# -- exact search and index operations ----------------------------------------------------------------------


def exact_section(sizes: list[int], queries_per_size: dict[int, int]) -> dict[int, dict]:
    from ltms.vector_store.faiss_store import FaissIndex

    out = {}
    for n in sizes:
        log(f"exact: {n} vectors")
        vectors = unit_vectors(n, seed=n)
        index = FaissIndex(DIM)
        t = time.perf_counter()
        index.add(np.arange(1, n + 1, dtype=np.int64), vectors)
        add_all = time.perf_counter() - t
        queries = unit_vectors(queries_per_size[n], seed=10**9 + n)
        index.search(queries[0], K)  # warm
        lat, lat1 = timed_both(lambda q, ix=index: ix.search(q, K), queries)
        # one add / one removal of a present id (an update or delete), a few times each
        adds, removes = [], []
        extra = unit_vectors(5, seed=7)
        for j in range(5):
            t = time.perf_counter()
            index.add(np.asarray([n + 10 + j], dtype=np.int64), extra[j])
            adds.append(time.perf_counter() - t)
        for j in range(3):
            victim = np.asarray([1 + j * (n // 3)], dtype=np.int64)
            t = time.perf_counter()
            index.remove(victim)
            removes.append(time.perf_counter() - t)
        out[n] = {"lat": lat, "lat1": lat1, "add_all": add_all, "add1": adds, "remove1": removes}
        del index, vectors
    return out


# -- service retrieve ---------------------------------------------------------------------------------------


def service_section(sizes: list[int], queries: int) -> dict[int, dict]:
    from ltms.service import MemoryService

    out = {}
    for n in sizes:
        data_dir = cached_data_dir(n, LABEL)
        log(f"service retrieve: {n} memories ({data_dir})")
        embedder = PrecomputedEmbedder(LABEL, seed=n + 3)
        t = time.perf_counter()
        service = MemoryService(settings_for(data_dir), embedder=embedder, background_saves=False)
        open_s = time.perf_counter() - t
        try:
            service.retrieve("warm up", k=K)
            query = "what failed in the deploy last week"
            lat, lat1 = timed_both(lambda q, sv=service, text=query: sv.retrieve(text, k=K), range(queries))
            nq = max(5, queries // 5)
            filt, filt1 = timed_both(
                lambda q, sv=service, text=query: sv.retrieve(text, k=K, namespace="default"), range(nq)
            )
        finally:
            service.close()
        out[n] = {
            "lat": lat,
            "lat1": lat1,
            "filtered": filt,
            "filtered1": filt1,
            "open_s": open_s,
            "state": service.index_state,
        }
    return out


# -- approximate indexes ------------------------------------------------------------------------------------


def clustered(n: int, seed: int, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in `clusters` groups (same-cluster cosine about 0.5) and 200 queries, each a noisy copy of a
    stored vector (cosine about 0.9 to it): a rough stand-in for sentence embeddings and paraphrased queries."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(clusters, seed + 1)
    x = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(0, clusters, m)] + rng.standard_normal((m, DIM), dtype=np.float32) / np.sqrt(DIM)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start : start + m] = block
    picks = rng.integers(0, n, 200)
    q = x[picks] + 0.5 * rng.standard_normal((200, DIM), dtype=np.float32) / np.sqrt(DIM)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q.astype(np.float32)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0]) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def approx_one(
    name: str, index, x: np.ndarray, q: np.ndarray, truth: np.ndarray, knobs: list[tuple[str, object]], train: bool
) -> list[list[object]]:
    t = time.perf_counter()
    if train:
        sample = x[np.random.default_rng(0).choice(len(x), min(len(x), 40 * index.nlist), replace=False)]
        index.train(sample)
    index.add(x)
    build = time.perf_counter() - t
    rows = []
    for label, setter in knobs:
        setter(index)
        found = np.vstack([index.search(qi.reshape(1, DIM), K)[1] for qi in q])
        lat = timed_queries(lambda qi: index.search(qi.reshape(1, DIM), K), q)
        rows.append([name, label, secs(build), ms(p50(lat)), ms(pct(lat, 99)), f"{recall_at_k(found, truth):.3f}"])
    return rows


def approx_section(hnsw_sizes: list[int], ivf_sizes: list[int], datasets: list[str]) -> list[list[object]]:
    faiss.omp_set_num_threads(1)  # one query at a time: see the threads comparison in the retrieve table
    rows = []
    for dataset in datasets:
        for n in sorted(set(hnsw_sizes) | set(ivf_sizes)):
            log(f"approximate: {dataset} {n}")
            if dataset == "uniform":
                x, q = unit_vectors(n, seed=n), unit_vectors(200, seed=10**9 + n)
            else:
                x, q = clustered(n, seed=n, clusters=max(10, n // 100))
            flat = faiss.IndexFlatIP(DIM)
            flat.add(x)
            truth = flat.search(q, K)[1]
            exact_lat = timed_queries(lambda qi, ix=flat: ix.search(qi.reshape(1, DIM), K), q[:50])
            rows.append(
                [
                    f"{dataset} {human(n)}",
                    "exact (IndexFlatIP)",
                    "-",
                    "-",
                    ms(p50(exact_lat)),
                    ms(pct(exact_lat, 99)),
                    "1.000",
                ]
            )
            del flat
            if n in hnsw_sizes:
                index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = 40
                knobs = [
                    (f"efSearch={ef}", (lambda e: lambda ix: setattr(ix.hnsw, "efSearch", e))(ef))
                    for ef in (32, 128, 512)
                ]
                for r in approx_one("HNSW M=16 efC=40", index, x, q, truth, knobs, train=False):
                    rows.append([f"{dataset} {human(n)}", *r])
                del index
            if n in ivf_sizes:
                nlist = int(4 * np.sqrt(n))
                nlist = 1 << (nlist.bit_length() - 1)  # a power of two near 4*sqrt(n)
                quantizer = faiss.IndexFlatIP(DIM)
                index = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
                knobs = [(f"nprobe={p}", (lambda p_: lambda ix: setattr(ix, "nprobe", p_))(p)) for p in (8, 32, 128)]
                for r in approx_one(f"IVF-Flat nlist={nlist}", index, x, q, truth, knobs, train=True):
                    rows.append([f"{dataset} {human(n)}", *r])
                del index, quantizer
            del x
    return rows


# -- snapshots ----------------------------------------------------------------------------------------------


def load_probe(data_dir: str, mode: str) -> None:
    """Run in a fresh process: load the snapshot of `data_dir` one way, print timings and RSS as JSON."""
    from ltms.vector_store.faiss_store import SnapshotStore

    paths = settings_for(Path(data_dir)).paths
    store = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path)
    manifest = store.read_manifest()
    result: dict[str, float] = {}
    t0 = time.perf_counter()
    if mode == "ltms":
        index, _ = store.load(manifest.dimension, manifest.model)
        ntotal = index.ntotal
    elif mode == "parts":  # the same steps as SnapshotStore.load, timed one by one
        t = time.perf_counter()
        data = np.fromfile(paths.index_path, dtype=np.uint8)
        result["read"] = time.perf_counter() - t
        t = time.perf_counter()
        digest = hashlib.sha256(memoryview(data)).hexdigest()
        result["sha256"] = time.perf_counter() - t
        assert digest == manifest.sha256
        t = time.perf_counter()
        index = faiss.deserialize_index(data)
        result["deserialize"] = time.perf_counter() - t
        ntotal = index.ntotal
        del data
    elif mode == "proposed":  # faiss reads the file itself (one copy), SHA-256 on a second thread meanwhile
        fd = os.open(paths.index_path, os.O_RDONLY)
        try:
            digest: dict[str, str] = {}

            def hash_file() -> None:
                h = hashlib.sha256()
                offset = 0
                while chunk := os.pread(fd, 1 << 24, offset):
                    h.update(chunk)
                    offset += len(chunk)
                digest["sha"] = h.hexdigest()

            thread = threading.Thread(target=hash_file)
            thread.start()
            index = faiss.read_index(f"/proc/self/fd/{fd}")  # the very file the hash reads, even if renamed
            thread.join()
        finally:
            os.close(fd)
        assert digest["sha"] == manifest.sha256
        ntotal = index.ntotal
    else:
        raise SystemExit(f"unknown mode {mode}")
    result["total"] = time.perf_counter() - t0
    status = proc_status()
    result.update(ntotal=ntotal, rss=status["VmRSS"], hwm=status["VmHWM"])
    print(json.dumps(result))


def proposed_save(index, path: Path) -> tuple[float, float]:
    """A save that holds the service lock only for a memory copy of the index (faiss.clone_index), then streams
    faiss.write_index into the temp file through a callback that also feeds SHA-256 (no serialized copy in
    memory), fsyncs, renames and fsyncs the directory. Returns (lock-held seconds, total seconds)."""
    t0 = time.perf_counter()
    clone = faiss.clone_index(index._index)  # the part that would run under the service lock
    locked = time.perf_counter() - t0
    digest = hashlib.sha256()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:

        def write(chunk: bytes) -> None:
            digest.update(chunk)
            handle.write(chunk)

        writer = faiss.PyCallbackIOWriter(write, 1 << 24)
        faiss.write_index(clone, writer)
        del writer
        handle.flush()
        os.fsync(handle.fileno())
    del clone
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    digest.hexdigest()
    return locked, time.perf_counter() - t0


def probe(data_dir: Path, mode: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]),
    }
    # Baseline RSS of a process that imported the same modules, so the index's share can be told apart.
    out = subprocess.run(
        [sys.executable, __file__, "--load-probe", str(data_dir), mode],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def snapshot_section(sizes: list[int], reps: dict[int, int], work: Path) -> tuple[list, list, list]:
    from ltms.vector_store.faiss_store import FaissIndex, SnapshotStore

    save_rows, load_rows, part_rows = [], [], []
    for n in sizes:
        data_dir = cached_data_dir(n, LABEL)
        log(f"snapshot: {n} vectors")
        size = settings_for(data_dir).paths.index_path.stat().st_size
        # save: serialize (under the service lock in ltms) + SHA-256 + atomic write with fsync
        vectors = unit_vectors(n, seed=n)
        index = FaissIndex(DIM)
        index.add(np.arange(1, n + 1, dtype=np.int64), vectors)
        del vectors
        target = work / f"snap-{n}"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        store = SnapshotStore(target / "faiss_index", target / "faiss_index.manifest.json", target / "faiss_index.lock")
        ser, saves, clones, streams = [], [], [], []
        for rep in range(reps[n]):
            t = time.perf_counter()
            data = index.serialize()
            ser.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.save(data, index.ntotal, DIM, LABEL, rep + 1)
            saves.append(time.perf_counter() - t)
            del data
            locked, total = proposed_save(index, target / "proposed_index")
            clones.append(locked)
            streams.append(total)
        del index
        shutil.rmtree(target, ignore_errors=True)
        save_rows.append(
            [
                human(n),
                f"{size / 1e6:.0f}",
                "ltms: serialize under the lock, then SnapshotStore.save",
                secs(p50(ser)),
                secs(p50(ser) + p50(saves)),
            ]
        )
        save_rows.append(
            [
                human(n),
                f"{size / 1e6:.0f}",
                "proposed: clone_index under the lock, then stream write_index + SHA-256 + fsync + rename",
                secs(p50(clones)),
                secs(p50(streams)),
            ]
        )
        # load, each in a fresh process
        runs = {mode: [probe(data_dir, mode) for _ in range(reps[n])] for mode in ("ltms", "proposed")}
        parts = probe(data_dir, "parts")
        for mode, label in (
            ("ltms", "ltms SnapshotStore.load"),
            ("proposed", "proposed: faiss.read_index + SHA-256 on a 2nd thread"),
        ):
            rs = runs[mode]
            load_rows.append(
                [
                    human(n),
                    label,
                    secs(p50([r["total"] for r in rs])),
                    mib(max(r["rss"] for r in rs)),
                    mib(max(r["hwm"] for r in rs)),
                ]
            )
        part_rows.append(
            [human(n), secs(parts["read"]), secs(parts["sha256"]), secs(parts["deserialize"]), secs(parts["total"])]
        )
    return save_rows, load_rows, part_rows


# -- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="exact search and service retrieve sizes")
    parser.add_argument("--big", default="1000000", help="the large size (exact search, service); '' for none")
    parser.add_argument("--snapshot-sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200, help="queries per size below 1M (1M: a quarter)")
    parser.add_argument("--hnsw-sizes", default="10000,100000")
    parser.add_argument("--ivf-sizes", default="100000,1000000")
    parser.add_argument("--approx-data", default="uniform,clustered", help="uniform, clustered, or both")
    parser.add_argument("--no-approx", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    parser.add_argument("--load-probe", nargs=2, metavar=("DATA_DIR", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_probe:
        load_probe(*args.load_probe)
        return
    if args.quick:
        args.sizes, args.big, args.snapshot_sizes, args.queries = "1000,10000", "", "10000", 50
        args.hnsw_sizes, args.ivf_sizes, args.approx_data = "10000", "10000", "clustered"
    sizes = parse_sizes(args.sizes) + parse_sizes(args.big)
    snap_sizes = parse_sizes(args.snapshot_sizes)
    work = CACHE / "work"
    work.mkdir(parents=True, exist_ok=True)

    header("Retrieve, index operations, approximate indexes, snapshots")
    queries = {n: (args.queries if n < 1_000_000 else max(20, args.queries // 4)) for n in sizes}

    exact = exact_section(sizes, queries)
    service = service_section(sizes, max(20, args.queries // 2))

    emit("### Retrieve latency (one query, k=10)\n")
    rows = []
    for n in sizes:
        e, s = exact[n], service[n]
        for threads, suffix in ((DEFAULT_THREADS, ""), (1, "1")):
            rows.append(
                [
                    human(n),
                    f"{threads}" + (" (default)" if threads == DEFAULT_THREADS else ""),
                    len(e["lat" + suffix]),
                    ms(p50(e["lat" + suffix])),
                    ms(pct(e["lat" + suffix], 99)),
                    ms(p50(s["lat" + suffix])),
                    ms(pct(s["lat" + suffix], 99)),
                    ms(p50(s["filtered" + suffix])),
                    ms(pct(s["filtered" + suffix], 99)),
                ]
            )
    emit(
        table(
            [
                "vectors",
                "faiss threads",
                "queries",
                "index exact p50 ms",
                "index exact p99 ms",
                "service retrieve p50 ms",
                "service retrieve p99 ms",
                "service + namespace filter p50 ms",
                "... p99 ms",
            ],
            rows,
        )
    )
    emit()
    emit(
        f"faiss threads: each query ran once with faiss's default OpenMP threads ({DEFAULT_THREADS}, all cores) and "
        "once with `faiss.omp_set_num_threads(1)`, alternating, so both rows saw the same machine noise."
    )
    emit()
    emit(
        "Index exact = `FaissIndex.search` (IndexIDMap(IndexFlatIP)) over random unit vectors. Service retrieve = "
        "`MemoryService.retrieve(query, k=10)` on a populated data directory, query vector precomputed (embedding "
        "excluded: add bench_embed.py's batch-1 time). The filtered column passes `namespace='default'`, which "
        "every memory matches: the filter's SQL query and id selector dominate."
    )
    emit()
    emit("### Index operations\n")
    rows = [
        [human(n), secs(exact[n]["add_all"]), ms(p50(exact[n]["add1"])), ms(p50(exact[n]["remove1"]))] for n in sizes
    ]
    emit(table(["vectors", "add all (build) s", "add 1 vector ms", "remove 1 present id ms (update/delete)"], rows))
    emit()
    if 100_000 in sizes:
        v = p50(service[100_000]["lat"]) * 1000
        v1 = p50(service[100_000]["lat1"]) * 1000
        emit(
            table(
                ["goal", "measured", "status"],
                [
                    [
                        "exact retrieve over 100k < 20 ms p50 (service, embedding excluded), faiss default threads",
                        f"{v:.1f} ms",
                        "met" if v < 20 else "MISSED",
                    ],
                    ["... with faiss.omp_set_num_threads(1)", f"{v1:.1f} ms", "met" if v1 < 20 else "MISSED"],
                ],
            )
        )
        emit()

    if snap_sizes:
        save_rows, load_rows, part_rows = snapshot_section(
            snap_sizes, {n: 3 if n < 1_000_000 else 2 for n in snap_sizes}, work
        )
        emit("### Snapshot save and load\n")
        emit(
            table(
                ["vectors", "file MB", "save", "service lock held s (stores and retrieves wait)", "total s"], save_rows
            )
        )
        emit()
        emit(table(["vectors", "load", "time s", "RSS after MiB", "peak RSS MiB"], load_rows))
        emit()
        emit(
            "Each load runs in a fresh process (numpy + faiss + ltms imported: about 60 MiB before the index). "
            "Breakdown of `SnapshotStore.load`:\n"
        )
        emit(table(["vectors", "np.fromfile s", "sha256 s", "faiss.deserialize_index s", "total s"], part_rows))
        emit()

    if not args.no_approx:
        approx_rows = approx_section(
            parse_sizes(args.hnsw_sizes),
            parse_sizes(args.ivf_sizes),
            [d.strip() for d in args.approx_data.split(",") if d.strip()],
        )
        emit("### Approximate indexes (bench only) vs exact: recall@10\n")
        emit(table(["data", "index", "setting", "build s", "p50 ms", "p99 ms", "recall@10"], approx_rows))
        emit()
        emit(
            "uniform = random unit vectors: no structure, the 10 nearest are barely nearer than the rest, the worst "
            "case for any approximate index. clustered = n/100 clusters, queries are noisy copies of stored vectors "
            "(closer to real embeddings and paraphrased queries). One query at a time, faiss threads = 1; builds "
            "single-threaded too."
        )
        emit()


if __name__ == "__main__":
    main()

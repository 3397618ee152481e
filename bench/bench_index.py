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
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
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
    clone = faiss.clone_index(index._base.index)  # the part that would run under the service lock
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


# -- scale: the ltms index at 100k and 1M (issue 13) ----------------------------------------------------------


def open_service(data_dir: Path, background: bool = False):
    """A MemoryService on `data_dir` whose deferred snapshot check (large snapshots) has finished."""
    from ltms.service import MemoryService

    service = MemoryService(
        settings_for(data_dir), embedder=PrecomputedEmbedder(LABEL, pool=1), background_saves=background
    )
    if service.storage._verifier is not None:
        service.storage._verifier.join()
    return service


def noisy_queries(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Noisy copies of stored vectors (cosine ~0.9 to them): paraphrased questions about stored memories."""
    rng = np.random.default_rng(seed)
    q = vectors[rng.integers(0, len(vectors), count)] + 0.5 * rng.standard_normal(
        (count, vectors.shape[1]), dtype=np.float32
    ) / np.sqrt(vectors.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def recall_rows(label: str, index, queries: np.ndarray, efs: tuple[int, ...], exact_queries: int) -> list[list]:
    """recall@10 of the index's HNSW search against its own exact scan, and both latencies (one thread)."""
    truth = [{key for key, _ in index.search(q, K, exact=True)} for q in queries]
    exact_lat = timed_queries(lambda q: index.search(q, K, exact=True), queries[:exact_queries])
    rows = [[label, "exact scan", ms(p50(exact_lat)), ms(pct(exact_lat, 99)), "1.000"]]
    for ef in efs:
        found = [{key for key, _ in index.search(q, K, ef_search=ef)} for q in queries]
        lat = timed_queries(lambda q, e=ef: index.search(q, K, ef_search=e), queries)
        recall = np.mean([len(f & t) / K for f, t in zip(found, truth, strict=True)])
        rows.append([label, f"HNSW efSearch={ef}", ms(p50(lat)), ms(pct(lat, 99)), f"{recall:.3f}"])
    return rows


def float16_rows(efs: tuple[int, ...], clustered_n: int, sentences: np.ndarray) -> list[list]:
    """recall@10 of ltms's index (float16 codes: exact scan and HNSW) against an exact float32 search of the original
    vectors: what keeping vectors at float16 costs, on clustered vectors and on MiniLM vectors of real sentences."""
    from ltms.storage.embedded import HNSW_PARAMS
    from ltms.vector_store.chunk_index import EXACT, HNSW, KEY_BITS, FaissIndex

    x, q = clustered(clustered_n, 11, max(10, clustered_n // 100))
    sets = [
        (f"clustered {human(clustered_n)}", x, q),
        (f"MiniLM {human(len(sentences) - 300)}", sentences[300:], sentences[:300]),
    ]
    rows = []
    for label, vectors, queries in sets:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        truth32 = faiss.IndexFlatIP(DIM)
        truth32.add(vectors)
        _, truth = truth32.search(np.ascontiguousarray(queries, dtype=np.float32), K)
        keys = np.arange(len(vectors), dtype=np.int64) << KEY_BITS
        index = FaissIndex(DIM)
        index.add(keys, vectors)
        exact = index.compacted(EXACT, HNSW_PARAMS)
        t = time.perf_counter()
        approx = index.compacted(HNSW, HNSW_PARAMS)
        log(f"  float16 {label}: HNSW built in {time.perf_counter() - t:.1f} s")
        runs = [("float16 exact scan", exact, None)] + [(f"float16 HNSW efSearch={ef}", approx, ef) for ef in efs]
        for name, ix, ef in runs:
            found = np.asarray([[key >> KEY_BITS for key, _ in ix.search(qi, K, ef_search=ef)] for qi in queries])
            cosine = np.max(
                np.abs(ix.gather(keys[:1000], keys[:1000] + 1)[1] @ queries[0] - vectors[:1000] @ queries[0])
            )
            rows.append([label, name, f"{recall_at_k(found, truth):.3f}", f"{cosine:.1e}"])
    return rows


def minilm_rows(efs: tuple[int, ...], vectors: np.ndarray) -> list[list]:
    """HNSW (ltms's parameters) over MiniLM vectors of real sentences; queries are held-out sentences."""
    from ltms.storage.embedded import HNSW_PARAMS
    from ltms.vector_store.chunk_index import HNSW, KEY_BITS, FaissIndex

    held_out = 300
    index = FaissIndex(DIM)
    index.add(np.arange(1, len(vectors) - held_out + 1, dtype=np.int64) << KEY_BITS, vectors[held_out:])
    t = time.perf_counter()
    index = index.compacted(HNSW, HNSW_PARAMS)
    log(f"  MiniLM corpus: {index.ntotal} vectors, HNSW built in {time.perf_counter() - t:.1f} s")
    return recall_rows(f"MiniLM, {human(index.ntotal)} real sentences", index, vectors[:held_out], efs, held_out)


def threshold_rows(data_dir: Path, sizes: tuple[int, ...]) -> list[list]:
    """Exact search p50 by size, to place the automatic switch to HNSW."""
    from ltms.vector_store.chunk_index import EXACT, KEY_BITS, FaissIndex

    service = open_service(data_dir)
    vectors = np.array(service.storage.index._base.vectors)
    service.close()
    rows = []
    for n in sizes:
        index = FaissIndex(DIM)
        index.add(np.arange(1, n + 1, dtype=np.int64) << KEY_BITS, vectors[:n])
        index = index.compacted(EXACT, None)  # type: ignore[arg-type]
        lat = timed_queries(lambda q, ix=index: ix.search(q, K), noisy_queries(vectors[:n], 100, n))
        rows.append([human(n), ms(p50(lat)), ms(pct(lat, 99))])
    return rows


def stamps_of(service, ids: list[int]) -> list[float]:
    return [service.get(i).created_at for i in ids]


def retrieve_rows(data_dir: Path, n: int, queries: int) -> list[list]:
    """MemoryService.retrieve (semantic, k=10, embedding excluded) unfiltered and with filters of every selectivity."""
    from ltms.storage.base import Filter

    service = open_service(data_dir)
    try:  # populate: ids 1..n, created one second apart
        one = stamps_of(service, [n // 2])
        pct01 = stamps_of(service, [n // 4, n // 4 + n // 1000 - 1])
        pct1 = stamps_of(service, [n // 3, n // 3 + n // 100 - 1])
        pct10 = stamps_of(service, [n // 5, n // 5 + n // 10 - 1])
        cases = [
            ("none", {}),
            ("created_at = one memory's (1 match)", {"since": one[0], "until": one[0]}),
            ("a time window with 0.1% of them", {"since": pct01[0], "until": pct01[1]}),
            ("a time window with 1% of them", {"since": pct1[0], "until": pct1[1]}),
            ("a time window with 10% of them", {"since": pct10[0], "until": pct10[1]}),
            ("namespace='default' (all match)", {"namespace": "default"}),
        ]
        rows = []
        service.retrieve("warm up", k=K, mode="semantic")
        for label, where in cases:
            count = service.storage.db.count_matching(Filter(**where), n) if where else n
            lat = []
            for i in range(queries):
                t = time.perf_counter()
                hits = service.retrieve(f"query {i}", k=K, mode="semantic", **where)
                lat.append(time.perf_counter() - t)
            rows.append([human(n), label, count, len(hits), ms(p50(lat)), ms(pct(lat, 99))])
        return rows
    finally:
        service.close()


def write_rows(data_dir: Path, n: int, work: Path) -> dict:
    """On a scratch copy: update/delete latency, then a forced save while stores and retrieves run, then N threads."""
    from common import scratch_copy

    copy = scratch_copy(data_dir, work / f"scale-{n}")
    out: dict = {}
    service = open_service(copy)
    try:
        rng = np.random.default_rng(n)
        targets = [int(x) for x in rng.choice(np.arange(1, n + 1), 100, replace=False)]
        upd, dele = [], []
        for i, memory_id in enumerate(targets[:50]):
            t = time.perf_counter()
            service.update(memory_id, text=f"updated memory {memory_id}: the runbook moved to page {i}")
            upd.append(time.perf_counter() - t)
        for memory_id in targets[50:]:
            t = time.perf_counter()
            service.delete(memory_id)
            dele.append(time.perf_counter() - t)
        out["update"], out["delete"] = upd, dele
        # health and stats as /health calls them
        health = timed_queries(lambda _: service.storage.health(), range(50))
        stats = timed_queries(lambda _: service.stats(), range(20))
        out["health"], out["stats"] = health, stats
        out["save"] = save_while_busy(service, n)
        per_thread = 200 if n < 1_000_000 else 100
        out["threads"] = {
            mode: parallel_searches(service, PARALLEL_COUNTS, per_thread_for(mode, per_thread), mode)
            for mode in PARALLEL_MODES
        }
    finally:
        service.close()
        shutil.rmtree(copy, ignore_errors=True)
    return out


class HoldTimer:
    """Wraps a lock (or one side of the readers-writer lock) and records how long each holder kept it."""

    def __init__(self, lock) -> None:
        self.lock = lock
        self.holds: list[float] = []
        self._local = threading.local()

    def __enter__(self):
        self.lock.__enter__()
        depth = getattr(self._local, "depth", 0)
        if not depth:
            self._local.start = time.perf_counter()
        self._local.depth = depth + 1
        return self

    def __exit__(self, *exc):
        self._local.depth -= 1
        if not self._local.depth:
            self.holds.append(time.perf_counter() - self._local.start)
        return self.lock.__exit__(*exc)


def busy_phase(service, n: int, done: threading.Event, tag: str) -> tuple[list[float], list[float]]:
    stores, searches = [], []
    i = 0
    while not done.is_set():
        t = time.perf_counter()
        service.store(f"stored {tag} at {n}: number {i}, the pager rotation of team {i % 11}")
        stores.append(time.perf_counter() - t)
        t = time.perf_counter()
        service.retrieve(f"{tag} {i}", k=K, mode="semantic")
        searches.append(time.perf_counter() - t)
        i += 1
    return stores, searches


def save_while_busy(service, n: int) -> dict:
    """A forced snapshot save on a thread while the main thread stores and retrieves back to back; a third thread
    samples RSS. The same load runs first for as long without a save: the machine's own noise. The index locks
    are timed while the save runs: how long the save itself kept stores and searches out."""
    storage = service.storage
    quiet = threading.Event()
    threading.Timer(5.0, quiet.set).start()
    base_stores, base_searches = busy_phase(service, n, quiet, "before the save")
    writes = HoldTimer(contextlib.nullcontext())
    applies = HoldTimer(storage._apply_lock)
    real_write = storage._rw.write
    storage._rw.write = lambda: _timed(real_write(), writes)
    storage._apply_lock = applies
    done = threading.Event()
    took: dict[str, float] = {}
    peak = [proc_status()["VmRSS"]]
    base_rss = peak[0]

    def save() -> None:
        t = time.perf_counter()
        service.save_snapshot(force=True)
        took["save"] = time.perf_counter() - t
        done.set()

    def sample() -> None:
        while not done.wait(0.02):
            peak.append(proc_status()["VmRSS"])

    threads = [threading.Thread(target=save), threading.Thread(target=sample)]
    for thread in threads:
        thread.start()
    stores, searches = busy_phase(service, n, done, "during the save")
    for thread in threads:
        thread.join()
    storage._rw.write = real_write
    storage._apply_lock = applies.lock
    return {
        "save": took["save"],
        "stores": stores,
        "searches": searches,
        "base_stores": base_stores,
        "base_searches": base_searches,
        "write_lock": max(writes.holds, default=0.0),
        "apply_lock": max(applies.holds, default=0.0),
        "rss_rise": max(peak) - base_rss,
        "index_bytes": service.storage.paths.index_path.stat().st_size,
    }


@contextlib.contextmanager
def _timed(inner, timer: HoldTimer):
    with inner, timer:
        yield


def parallel_query(seed: int, j: int) -> str:
    """A query per thread and step. Its words are in the stored texts (bench_text), so in hybrid mode the keyword
    leg ranks real matches (a rare number, a service, a region) rather than finding nothing."""
    return f"deploy of service {(seed * 31 + j) % 97} in region {j % 13}, memory {seed * 7919 + j * 13 + 1}"


def parallel_searches(
    service, counts: tuple[int, ...], per_thread: int, mode: str = "semantic"
) -> list[tuple[int, float, float]]:
    """(threads, retrieves per second, cores used) with N threads searching at once (each its own queries). Cores
    used = the process's CPU time over the wall time: how much of the machine the threads got, which on a shared
    machine tells a lock (about 1 core whatever N) from a busy machine (the rate stalls, not the cores)."""
    results = []
    for threads in counts:
        barrier = threading.Barrier(threads + 1)

        def worker(seed: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for j in range(per_thread):
                service.retrieve(parallel_query(seed, j), k=K, mode=mode)

        pool = [threading.Thread(target=worker, args=(s,)) for s in range(threads)]
        for thread in pool:
            thread.start()
        barrier.wait()
        t, cpu = time.perf_counter(), os.times()
        for thread in pool:
            thread.join()
        wall, used = time.perf_counter() - t, os.times()
        cores = (used.user - cpu.user + used.system - cpu.system) / wall
        results.append((threads, threads * per_thread / wall, cores))
    return results


PARALLEL_COUNTS = (1, 2, 4)
PARALLEL_MODES = ("semantic", "hybrid")
HYBRID_SHARE = 5  # a hybrid retrieve costs ~30x a semantic one here (its keyword leg): fewer of them per thread


def per_thread_for(mode: str, per_thread: int) -> int:
    return per_thread if mode == "semantic" else max(10, per_thread // HYBRID_SHARE)


def parallel_cells(rates: list[tuple[int, float, float]]) -> list[str]:
    single = rates[0][1]
    return [f"{rate:.0f} ({rate / single:.2f}x, {cores:.1f} cores)" for _, rate, cores in rates]


def parallel_rows(data_dir: Path, per_thread: int, rounds: int) -> list[list]:
    """The parallel-search table alone, on a populated data directory that nothing else writes to: for each mode,
    `rounds` rounds of 1, 2, 4 threads; the median rate and cores used of each count, the rate's ratio to one
    thread."""
    service = open_service(data_dir)
    try:
        n = service.storage.db.count()
        for mode in PARALLEL_MODES:  # warm the page cache and every thread's first use
            parallel_searches(service, PARALLEL_COUNTS, 10, mode)
        rows = []
        for mode in PARALLEL_MODES:
            runs = [
                parallel_searches(service, PARALLEL_COUNTS, per_thread_for(mode, per_thread), mode)
                for _ in range(rounds)
            ]
            medians = [
                (threads, p50([run[i][1] for run in runs]), p50([run[i][2] for run in runs]))
                for i, threads in enumerate(PARALLEL_COUNTS)
            ]
            rows.append([human(n), mode, *parallel_cells(medians)])
            log(f"  parallel {mode}: {rows[-1]}")
        return rows
    finally:
        service.close()


def parallel_section(data_dir: Path, per_thread: int, rounds: int) -> None:
    rows = parallel_rows(data_dir, per_thread, rounds)
    emit("### Parallel searches\n")
    emit(table(["memories", "mode", *[f"{t} thread(s) retrieves/s" for t in PARALLEL_COUNTS]], rows))
    emit()
    emit(
        f"`MemoryService.retrieve(k={K})`, embedding excluded, faiss 1 thread; N threads retrieving at once, "
        f"{per_thread} retrieves each ({per_thread_for('hybrid', per_thread)} in hybrid mode), in {rounds} rounds of "
        "1, 2, 4 threads: the median rate, its ratio to one thread, and the cores the process used (CPU time / wall "
        "time). Hybrid queries name words of the stored texts, so the keyword leg ranks real matches."
    )


def restart_probe(data_dir: str) -> None:
    """Run in a fresh process (timed by the parent from before the spawn): open the service, answer one retrieve,
    print; then wait for the deferred check and report RSS."""
    from ltms.service import MemoryService

    service = MemoryService(settings_for(Path(data_dir)), embedder=PrecomputedEmbedder(LABEL, pool=1))
    hits = service.retrieve("the first question after a restart", k=K, mode="semantic")
    print(json.dumps({"answered": time.time(), "hits": len(hits), "rss_first": proc_status()["VmRSS"]}), flush=True)
    if service.storage._verifier is not None:
        service.storage._verifier.join()
    service.retrieve("the second question", k=K, mode="semantic")
    status = proc_status()
    print(json.dumps({"rss": status["VmRSS"], "hwm": status["VmHWM"], "kind": service.storage.index.kind}))
    service.close()


def restart_rows(data_dir: Path, n: int, launches: int) -> list[list]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]),
    }
    took, rss, rss_first, hwm = [], [], [], []
    for _ in range(launches):
        t = time.time()
        out = subprocess.run(
            [sys.executable, __file__, "--restart-probe", str(data_dir)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        first, last = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
        took.append(first["answered"] - t)
        rss_first.append(first["rss_first"])
        rss.append(last["rss"])
        hwm.append(last["hwm"])
    raw = n * DIM * 4
    return [
        [
            human(n),
            launches,
            secs(sorted(took)[(len(took) - 1) // 2]),
            mib(max(rss_first)),
            mib(max(rss)),
            f"{max(rss) / raw:.2f}x",
            mib(max(hwm)),
        ]
    ]


def disk_rows(data_dir: Path, n: int) -> list[list]:
    from common import db_path

    conn = sqlite3.connect(str(db_path(data_dir)))
    text = int(conn.execute("SELECT coalesce(sum(length(CAST(text AS BLOB))), 0) FROM memories").fetchone()[0])
    conn.close()
    files = {p.name: p.stat().st_size for p in data_dir.iterdir() if p.is_file() and not p.name.startswith("bench")}
    vectors = n * DIM * 4
    total = sum(files.values())
    snapshot = files.get("faiss_index", 0)
    sqlite = sum(v for k, v in files.items() if k.startswith("ltmc.sqlite3"))
    return [
        [
            human(n),
            f"{(vectors + text) / 1e6:.0f}",
            f"{sqlite / 1e6:.0f}",
            f"{snapshot / 1e6:.0f}",
            f"{total / 1e6:.0f}",
            f"{total / (vectors + text):.2f}x",
        ]
    ]


def scale_section(sizes: list[int], queries: int, work: Path, launches: int) -> None:
    efs = (32, 64, 96, 128, 256)
    recall, filtered, writes, restarts, disks = [], [], {}, [], []
    for n in sizes:
        data_dir = cached_data_dir(n, LABEL)
        log(f"scale: {n} memories ({data_dir})")
        service = open_service(data_dir)
        index = service.storage.index
        vectors = np.asarray(index._base.vectors)
        recall += recall_rows(f"clustered {human(n)} (ltms index)", index, noisy_queries(vectors, 200, 7), efs, 50)
        del vectors
        service.close()
        filtered += retrieve_rows(data_dir, n, queries)
        restarts += restart_rows(data_dir, n, launches)
        disks += disk_rows(data_dir, n)
        writes[n] = write_rows(data_dir, n, work)
    from text_corpus import minilm_corpus

    log("scale: MiniLM corpus")
    _texts, sentences = minilm_corpus()  # once: the sentence list grows with the modules imported meanwhile
    recall += minilm_rows(efs, sentences)
    log("scale: float16 against float32")
    halves = float16_rows((64, 128, 256), sizes[0], sentences)
    thresholds = threshold_rows(cached_data_dir(sizes[0], LABEL), (10_000, 25_000, 50_000, 100_000))

    from ltms.storage.embedded import EXACT_SUBSET_LIMIT, HNSW_PARAMS, HNSW_THRESHOLD

    emit("### Scale: approximate search, filters, updates, saves, restart (issue 13)\n")
    emit(
        f"ltms's index settings: HNSW M={HNSW_PARAMS.m}, efConstruction={HNSW_PARAMS.ef_construction}, "
        f"efSearch={HNSW_PARAMS.ef_search}; HNSW from {human(HNSW_THRESHOLD)} live vectors (`LTMC_INDEX=auto`); "
        f"filters matching at most {human(EXACT_SUBSET_LIMIT)} memories are searched exactly over just them.\n"
    )
    emit(table(["data", "search", "p50 ms", "p99 ms", "recall@10 vs exact"], recall))
    emit()
    emit(
        "`FaissIndex.search` of the data directory's own index (one query, one thread), against an exact scan of the "
        "same vectors. Clustered = the populated directories (n/100 clusters; queries are noisy copies of stored "
        "vectors). MiniLM = all-MiniLM-L6-v2 vectors of distinct sentences from the Python documentation and "
        "docstrings (bench/text_corpus.py), 300 held-out sentences as queries.\n"
    )
    emit(table(["data", "search", "recall@10 vs exact float32", "largest cosine change"], halves))
    emit()
    emit(
        "The same index kinds built from float32 vectors (which ltms stores at float16), against an exact float32 "
        "search of the originals; the last column is the largest change in a cosine over 1000 stored vectors.\n"
    )
    emit(table(["exact index size", "exact p50 ms", "exact p99 ms"], thresholds))
    emit()
    emit(
        "Where exact search stops being cheap: the automatic switch to HNSW sits where an exact scan costs a few "
        "milliseconds, compared with the HNSW rows above.\n"
    )
    emit(table(["memories", "filter", "matching", "hits", "retrieve p50 ms", "retrieve p99 ms"], filtered))
    emit()
    emit(
        "`MemoryService.retrieve(k=10, mode='semantic')`, embedding excluded, faiss 1 thread; `hits` is how many "
        "came back (never fewer than k when k match).\n"
    )
    rows = []
    for n, w in writes.items():
        rows.append(
            [
                human(n),
                ms(p50(w["update"])),
                ms(p50(w["delete"])),
                f"{p50(w['health']) * 1e6:.0f} us",
                ms(p50(w["stats"])),
            ]
        )
    emit(table(["memories", "update p50 ms", "delete p50 ms", "health() p50", "stats() p50 ms"], rows))
    emit()
    rows = []
    for n, w in writes.items():
        s = w["save"]
        rows.append(
            [
                human(n),
                secs(s["save"]),
                len(s["stores"]),
                f"{ms(pct(s['stores'], 99))} / {ms(max(s['stores']))}",
                f"{ms(pct(s['searches'], 99))} / {ms(max(s['searches']))}",
                f"{ms(pct(s['base_stores'], 99))} / {ms(max(s['base_stores']))}",
                f"{ms(pct(s['base_searches'], 99))} / {ms(max(s['base_searches']))}",
                ms(s["write_lock"]),
                ms(s["apply_lock"]),
                mib(s["rss_rise"]),
                mib(s["index_bytes"]),
            ]
        )
    emit(
        table(
            [
                "memories",
                "forced save s",
                "store+retrieve pairs meanwhile",
                "store p99 / max ms",
                "retrieve p99 / max ms",
                "without a save: store p99 / max",
                "... retrieve p99 / max",
                "index write lock held, longest ms",
                "apply lock held, longest ms",
                "RSS rise MiB",
                "snapshot MiB",
            ],
            rows,
        )
    )
    emit()
    emit(
        "A forced `save_snapshot` (delta folded into a new base, streamed to disk) on a thread while the main thread "
        "stores and retrieves back to back; RSS sampled every 20 ms. The same loop ran 5 s without a save first: "
        "on this shared machine the outliers come and go with other work. The lock columns are what a save can "
        "make a store or search wait for: the readers-writer lock's write side (searches wait) and the lock that "
        "orders index changes (stores wait), the longest hold by anyone while the save ran.\n"
    )
    rows = []
    for n, w in writes.items():
        for mode, rates in w["threads"].items():
            rows.append([human(n), mode, *parallel_cells(rates)])
    emit(table(["memories", "mode", *[f"{t} thread(s) retrieves/s" for t in PARALLEL_COUNTS]], rows))
    emit()
    emit(
        table(
            [
                "memories",
                "launches",
                "spawn -> first retrieve answered s",
                "RSS then MiB",
                "RSS after the check MiB",
                "RSS / raw vectors",
                "peak RSS MiB",
            ],
            restarts,
        )
    )
    emit()
    emit(
        "A fresh `python` process per launch: imports, `MemoryService` open (snapshot mapped, change log replayed), "
        "one retrieve; median. The checksum of a large snapshot runs afterwards on a thread, which also copies the "
        "mapped index into memory (so nothing depends on the file): `RSS after the check`.\n"
    )
    emit(
        table(
            ["memories", "vectors + text MB", "SQLite MB", "snapshot MB", "total MB", "total / (vectors + text)"], disks
        )
    )
    emit()


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
    parser.add_argument("--scale-sizes", default="100000,1000000", help="the scale section's sizes; '' for none")
    parser.add_argument("--only-scale", action="store_true", help="run only the scale section")
    parser.add_argument("--launches", type=int, default=3, help="restart launches per size (scale section)")
    parser.add_argument("--load-probe", nargs=2, metavar=("DATA_DIR", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--restart-probe", metavar="DATA_DIR", help=argparse.SUPPRESS)
    parser.add_argument(
        "--only-parallel",
        metavar="DATA_DIR",
        help="run only the parallel-search table, on this populated data directory (e.g. a copy of the cached one)",
    )
    parser.add_argument("--parallel-rounds", type=int, default=3, help="rounds of 1, 2, 4 threads (--only-parallel)")
    args = parser.parse_args()
    if args.load_probe:
        load_probe(*args.load_probe)
        return
    if args.restart_probe:
        restart_probe(args.restart_probe)
        return
    faiss.omp_set_num_threads(1)  # as the server runs (ltms sets OMP_NUM_THREADS=1)
    if args.only_parallel:
        header("Parallel searches")
        parallel_section(Path(args.only_parallel), 200, args.parallel_rounds)
        return
    if args.only_scale:
        header("Scale: the ltms index at 100k and 1M")
        work = CACHE / "work"
        work.mkdir(parents=True, exist_ok=True)
        scale_section(parse_sizes(args.scale_sizes), max(20, args.queries // 4), work, args.launches)
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

    scale_sizes = parse_sizes(args.scale_sizes) if not args.quick else []
    if scale_sizes:
        scale_section(scale_sizes, max(20, args.queries // 4), work, args.launches)


if __name__ == "__main__":
    main()

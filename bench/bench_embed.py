"""Embedding throughput: the default model (all-MiniLM-L6-v2 in numpy) and the hashing embedder.

Each configuration runs in a fresh process (so the model's cold load is measured and BLAS thread settings,
which must be set before numpy is imported, can differ): default BLAS threads and OPENBLAS_NUM_THREADS=1
(OMP_NUM_THREADS=1 too), in alternation.

Texts: synthetic English sentences of 8 to 60 words (a typical stored memory is one to three sentences).

    PYTHONPATH=. python bench/bench_embed.py
    PYTHONPATH=. python bench/bench_embed.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TEXT = (
    "the deploy of the billing service failed because the database migration locked the orders table for "
    "twenty minutes while the cache was cold and nobody noticed the alert until the morning standup when "
    "Alice rolled it back and we agreed to run migrations in smaller batches with a timeout next time the "
    "team also decided to move the staging cluster to the new region and to review the on call rota"
)


def texts(count: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    words_all = TEXT.split(" ")
    out = []
    for i in range(count):
        n = rng.randint(8, 60)
        start = rng.randrange(len(words_all))
        words = [words_all[(start + j * rng.randint(1, 3)) % len(words_all)] for j in range(n)]
        out.append(f"Note {i}: " + " ".join(words) + ".")
    return out


def worker(kind: str, single: int, batched: int, batch: int) -> None:
    """In a fresh process: cold load, batch-1 latency, batched throughput. Prints JSON."""
    from ltms.embeddings import make_embedder

    t0 = time.perf_counter()
    embedder = make_embedder(kind)
    first = embedder.embed(["warm up: load the weights"])
    cold = time.perf_counter() - t0
    assert first.shape == (1, embedder.dimension)
    one = []
    for text in texts(single, 1):
        t = time.perf_counter()
        embedder.embed([text])
        one.append(time.perf_counter() - t)
    many = texts(batched, 2)
    t = time.perf_counter()
    for start in range(0, len(many), batch):
        embedder.embed(many[start : start + batch])
    rate = len(many) / (time.perf_counter() - t)
    print(json.dumps({"cold": cold, "one": one, "rate": rate}))


def main() -> None:
    from common import emit, header, ms, p50, pct, table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=60, help="texts embedded one at a time")
    parser.add_argument("--batched", type=int, default=512, help="texts embedded in batches")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each thread setting")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, single, batched, batch = args.worker
        worker(kind, int(single), int(batched), int(batch))
        return
    if args.quick:
        args.single, args.batched, args.rounds = 15, 64, 1

    header("Embedding throughput")
    settings = [("default", {}), ("1 thread", {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})]
    results: dict[tuple[str, str], list[dict]] = {}
    for kind in ("minilm", "hash"):
        for _ in range(args.rounds):
            for name, extra in settings:
                env = {**os.environ, **extra}
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", kind, str(args.single), str(args.batched), str(args.batch)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                results.setdefault((kind, name), []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for (kind, name), runs in results.items():
        one = [x for r in runs for x in r["one"]]
        rate = sorted(r["rate"] for r in runs)[len(runs) // 2]
        cold = sorted(r["cold"] for r in runs)[len(runs) // 2]
        label = "all-MiniLM-L6-v2 (default)" if kind == "minilm" else "hash (tests only)"
        rows.append([label, name, f"{cold:.2f}", ms(p50(one)), ms(pct(one, 99)), f"{1 / p50(one):.0f}", f"{rate:.0f}"])
    emit(
        table(
            [
                "embedder",
                "BLAS threads",
                "cold load + first text s",
                "batch 1 p50 ms",
                "batch 1 p99 ms",
                "batch 1 texts/s",
                f"batch {args.batch} texts/s",
            ],
            rows,
        )
    )
    emit()
    emit(
        f"{args.single} texts one at a time, {args.batched} texts in batches of {args.batch} (8-60 words each), "
        f"{args.rounds} alternating fresh process(es) per setting; cold load = process-local import, weight load "
        "and the first text."
    )
    emit()


if __name__ == "__main__":
    main()

"""Retrieval quality on the project's labelled set, per mode and question type, and what hybrid retrieval costs.

Quality: every memory of bench/retrieval/dataset.json (see bench/retrieval/make_dataset.py) is stored through
`MemoryService.store_many` into a fresh data directory, with the default model (all-MiniLM-L6-v2) unless
`--embedder hash`. Every question is then asked with `retrieve(question, k=10, mode=...)` in `semantic`, `keyword`
and `hybrid` mode (hybrid once per `--weights` value: `ltms.service.fuse` is replaced, in this process only, by
`fuse` with that keyword weight). Per question, with its evidence memories E (all of them are needed to answer):

- recall@5, recall@10: 1 when every memory of E is among the first 5 (10) hits, else 0;
- MRR: 1 / the rank of the first memory of E among the 10 hits (0 when none is);
- passage: for long documents, whether the hit's passage (start/end offsets) covers the planted fact.

Cost, embedding excluded (query vectors are computed once, then served from a cache):
- retrieve p50 per mode on the labelled set, and on a store of `--scale` memories (random unit vectors, texts
  made of the set's sentences) where hybrid should stay within 1.5x of semantic;
- the keyword leg's share of a store: p50 of storing 1 KB memories with the FTS triggers, and without them
  (dropped in a scratch copy);
- storing a 30 KiB memory against embedding its chunks in one batch (the model dominates both).

    PYTHONPATH=. python bench/bench_retrieval.py                          # MiniLM, ~5 minutes on 2 busy cores
    PYTHONPATH=. python bench/bench_retrieval.py --quick                  # hash embedder, 10k scale: < 1 minute
    PYTHONPATH=. python bench/bench_retrieval.py --weights 0.2,0.3,0.5    # sweep fusion's keyword weight
    PYTHONPATH=. python bench/bench_retrieval.py --update-readme          # and replace its section in README.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import io
import json
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, emit, header, log, ms, p50, settings_for, table, unit_vectors

import ltms.service
from ltms.config import Settings
from ltms.embeddings.base import Embedder
from ltms.records import SearchHit
from ltms.retrieval import fusion
from ltms.retrieval.names import split_names
from ltms.service import MemoryService

DATASET = ROOT / "bench" / "retrieval" / "dataset.json"
README = ROOT / "bench" / "README.md"
BEGIN = "<!-- BEGIN RETRIEVAL RESULTS (bench/bench_retrieval.py --update-readme) -->"
END = "<!-- END RETRIEVAL RESULTS -->"
K = 10
TYPES = ("single-hop", "multi-hop", "temporal", "long-doc", "identifier", "paraphrase")


# -- embedders ------------------------------------------------------------------------------------------------------


class CachedQueries:
    """Wraps an embedder and remembers query vectors, so retrieve is timed without the model."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self._queries: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed(texts)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        if text not in self._queries:
            self._queries[text] = self.inner.embed_query(text)
        return self._queries[text]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_offsets(text)


class RandomVectors:
    """Random unit vectors for any text (the scale store: the legs' cost, not their quality, is measured)."""

    name = "bench-random-384"
    dimension = 384
    max_tokens = 254

    def __init__(self, seed: int = 7) -> None:
        self._pool = unit_vectors(4096, seed, self.dimension)
        self._next = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.arange(self._next, self._next + len(texts)) % len(self._pool)
        self._next += len(texts)
        return self._pool[rows].copy()

    embed_documents = embed

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def make_embedder(kind: str) -> Embedder:
    if kind == "hash":
        from ltms.embeddings.hashing import HashingEmbedder

        return HashingEmbedder()
    from ltms.embeddings.minilm import MiniLMEmbedder

    return MiniLMEmbedder()


# -- storing the set ------------------------------------------------------------------------------------------------


def epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def store_dataset(service: MemoryService, memories: list[dict[str, Any]], batch: int = 64) -> dict[str, int]:
    """Store every memory (created_at from the set, as an import would); returns key -> memory id."""
    ids: dict[str, int] = {}
    started = time.perf_counter()
    for start in range(0, len(memories), batch):
        part = memories[start : start + batch]
        results = service.store_many(
            [(m["text"], None, m["metadata"], None) for m in part],
            timestamps=[(epoch(m["created_at"]), None) for m in part],
        )
        for memory, result in zip(part, results, strict=True):
            if not result.created:
                raise SystemExit(f"memory {memory['key']} was deduplicated: the set must not repeat a text")
            ids[memory["key"]] = result.id
        log(f"  stored {start + len(part)}/{len(memories)} ({time.perf_counter() - started:.0f} s)")
    return ids


# -- scoring --------------------------------------------------------------------------------------------------------


@dataclass
class Score:
    n: int = 0
    at5: float = 0.0
    at10: float = 0.0
    rr: float = 0.0
    passages: int = 0
    overlapping: int = 0
    passages_asked: int = 0

    def add(self, ranks: list[int | None], passage: tuple[bool, bool] | None) -> None:
        self.n += 1
        self.at5 += all(r is not None and r <= 5 for r in ranks)
        self.at10 += all(r is not None and r <= K for r in ranks)
        found = [r for r in ranks if r is not None]
        self.rr += 1 / min(found) if found else 0.0
        if passage is not None:
            self.passages_asked += 1
            self.passages += passage[0]
            self.overlapping += passage[1]


@dataclass
class Run:
    label: str
    by_type: dict[str, Score] = field(default_factory=dict)
    overall: Score = field(default_factory=Score)


@contextlib.contextmanager
def keyword_weight(weight: float) -> Iterator[None]:
    """Hybrid fusion with this keyword weight, in this process only. (`fuse`'s default is bound when it is
    defined, so the service's name for it is replaced rather than the module constant.)"""
    original = ltms.service.fuse
    ltms.service.fuse = functools.partial(fusion.fuse, keyword_weight=weight)
    try:
        yield
    finally:
        ltms.service.fuse = original


def evaluate(
    service: MemoryService, dataset: dict[str, Any], ids: dict[str, int], mode: str, label: str
) -> tuple[Run, list[dict[str, Any]]]:
    run = Run(label, {t: Score() for t in TYPES})
    misses = []
    for q in dataset["questions"]:
        hits = service.retrieve(q["question"], k=K, mode=mode)
        position = {hit.memory.id: rank for rank, hit in enumerate(hits, 1)}
        wanted = [ids[key] for key in q["evidence"]]
        ranks = [position.get(memory_id) for memory_id in wanted]
        passage = _passage(hits, wanted[0], q["span"]) if "span" in q else None
        run.by_type[q["type"]].add(ranks, passage)
        run.overall.add(ranks, passage)
        if not all(r is not None and r <= K for r in ranks):
            misses.append({"id": q["id"], "type": q["type"], "question": q["question"], "ranks": ranks})
    return run, misses


def _passage(hits: list[SearchHit], memory_id: int, span: list[int]) -> tuple[bool, bool]:
    """(the hit's passage covers the fact, it overlaps the fact); both False when the document was not found."""
    for hit in hits:
        if hit.memory.id == memory_id and hit.passage is not None:
            start, end = hit.passage.start, hit.passage.end
            return start <= span[0] and end >= span[1], start < span[1] and end > span[0]
    return False, False


# -- timing ---------------------------------------------------------------------------------------------------------


def retrieve_latency(service: MemoryService, queries: list[str], modes: Sequence[str], rounds: int) -> dict[str, float]:
    """p50 seconds per mode; modes alternate query by query so the machine's swings hit them alike."""
    for query in queries:  # embed every query once (and its topic, for the names leg), outside the timings
        service.embedder.embed_query(query)
        named = split_names(query)
        if named is not None:
            service.embedder.embed_query(named.topic)
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for query in queries:
            for mode in modes:
                t = time.perf_counter()
                service.retrieve(query, k=K, mode=mode)
                samples[mode].append(time.perf_counter() - t)
    return {mode: p50(values) for mode, values in samples.items()}


def scale_texts(dataset: dict[str, Any], n: int, seed: int = 3) -> Iterator[str]:
    """n distinct short texts made of two of the set's short memories each (realistic words, any overlap)."""
    rng = random.Random(seed)
    short = [re.sub(r"^\[[^\]]*\] ", "", m["text"]) for m in dataset["memories"] if m["source"] != "document"]
    for i in range(n):
        yield f"{rng.choice(short)} {rng.choice(short)} (#{i})"


def scale_store(dataset: dict[str, Any], n: int, root: Path) -> float:
    """Fill a store of n memories with random vectors and save its snapshot (the index it settles on, HNSW at 100k);
    returns the seconds the stores took."""
    service = open_scale_store(n, root, "auto")
    texts = list(scale_texts(dataset, n))
    started = time.perf_counter()
    for start in range(0, n, 2000):
        service.store_many([(t, None, None, None) for t in texts[start : start + 2000]])
        if start and start % 20000 == 0:
            log(f"  scale store: {start}/{n} ({time.perf_counter() - started:.0f} s)")
    took = time.perf_counter() - started
    service.save_snapshot(force=True)
    service.close()
    return took


def open_scale_store(n: int, root: Path, index: str) -> MemoryService:
    settings = Settings.load(env={"LTMC_INDEX": index}, data_dir=root / f"scale-{n}")
    return MemoryService(settings, embedder=CachedQueries(RandomVectors()))  # type: ignore[arg-type]


def store_latency(root: Path, texts: list[str]) -> tuple[float, float]:
    """p50 seconds of `store` for 1 KB texts (random vectors, so no model): (with the FTS triggers, without them).
    Two stores side by side, the stores alternating, so the disk's swings hit both alike."""
    services = [
        MemoryService(
            settings_for(root / f"store-{name}"),
            embedder=RandomVectors(),  # type: ignore[arg-type]
            background_saves=False,
        )
        for name in ("fts", "nofts")
    ]
    try:
        with services[1].storage.db.write() as conn:  # type: ignore[attr-defined]
            for trigger in ("memories_fts_insert", "memories_fts_delete", "memories_fts_update"):
                conn.execute(f"DROP TRIGGER {trigger}")
        samples: list[list[float]] = [[], []]
        for i, text in enumerate(texts):
            for which in (i % 2, 1 - i % 2):
                t = time.perf_counter()
                services[which].store(text)
                samples[which].append(time.perf_counter() - t)
        return p50(samples[0]), p50(samples[1])
    finally:
        for service in services:
            service.close()


def long_text(dataset: dict[str, Any], size: int, offset: int) -> str:
    """About `size` bytes of the set's documents (different ones for each offset), cut at a word."""
    docs = [m["text"] for m in dataset["memories"] if m["source"] == "document"]
    text = ""
    i = offset
    while len(text.encode("utf-8")) < size + 2000:
        text += docs[i % len(docs)] + "\n\n"
        i += 1
    text = text.encode("utf-8")[:size].decode("utf-8", "ignore")
    return text[: text.rfind(" ")]


def long_store_cost(service: MemoryService, dataset: dict[str, Any], repeats: int) -> tuple[float, float, int]:
    """(store p50, embed-chunks p50, chunks) for a 30 KiB memory; store and embed alternate on fresh texts."""
    stores, embeds = [], []
    chunks = 0
    for i in range(repeats):
        text = long_text(dataset, 30 * 1024, offset=3 * i + 1)
        windows = [text[s.start : s.end] for s in service.chunker.spans(text)]
        chunks = len(windows)
        t = time.perf_counter()
        service.embedder.embed_documents(windows)
        embeds.append(time.perf_counter() - t)
        t = time.perf_counter()
        service.store(text + f"\n\n(copy {i})")
        stores.append(time.perf_counter() - t)
    return p50(stores), p50(embeds), chunks


# -- report ---------------------------------------------------------------------------------------------------------


def pct(value: float, n: int) -> str:
    return f"{100 * value / n:.1f}" if n else "-"


def quality_tables(runs: list[Run], baseline: str, default: str) -> str:
    out = []
    for title, metric in (("recall@10", "at10"), ("recall@5", "at5"), ("MRR", "rr")):
        headers = ["question type (n)", *(r.label for r in runs), f"{default} - {baseline}"]
        rows = []
        for name in (*TYPES, "overall"):
            scores = [r.overall if name == "overall" else r.by_type[name] for r in runs]
            n = scores[0].n
            values = [getattr(s, metric) for s in scores]
            base = values[[r.label for r in runs].index(baseline)]
            best = values[[r.label for r in runs].index(default)]
            cells = [pct(v, n) if metric != "rr" else f"{v / n:.3f}" for v in values]
            delta = f"{100 * (best - base) / n:+.1f}" if metric != "rr" else f"{(best - base) / n:+.3f}"
            label = f"**{name}** ({n})" if name == "overall" else f"{name} ({n})"
            rows.append([label, *cells, delta])
        unit = " (percent of questions whose evidence is all in the top k)" if metric != "rr" else ""
        out.append(f"**{title}**{unit}\n\n" + table(headers, rows))
    docs = [r.by_type["long-doc"] for r in runs]
    out.append(
        "**Long documents: the passage returned with the document** (percent of long-doc questions; the document "
        "must be in the top 10)\n\n"
        + table(
            ["passage", *(r.label for r in runs)],
            [
                ["covers the planted fact", *(pct(s.passages, s.passages_asked) for s in docs)],
                ["overlaps it", *(pct(s.overlapping, s.passages_asked) for s in docs)],
            ],
        )
    )
    return "\n\n".join(out)


def update_readme(text: str) -> None:
    current = README.read_text()
    body = "\n".join(("#" + line) if line.startswith("#") else line for line in text.splitlines())
    section = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        _, foot = rest.split(END, 1)
        current = f"{head}{section}{foot}"
    else:
        current = current.rstrip("\n") + f"\n\n## Retrieval quality (bench_retrieval.py)\n\n{section}\n"
    README.write_text(current)


# -- main -----------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedder", choices=("minilm", "hash"), default="minilm")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument(
        "--weights",
        default=str(fusion.DEFAULT_KEYWORD_WEIGHT),
        help="comma list of hybrid keyword weights to compare (default: the library's)",
    )
    parser.add_argument("--scale", type=int, default=100_000, help="memories in the latency store (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the questions")
    parser.add_argument("--long-repeats", type=int, default=3, help="30 KiB stores timed")
    parser.add_argument("--quick", action="store_true", help="smoke test: --embedder hash --scale 10000 --rounds 1")
    parser.add_argument("--misses", type=Path, help="write every question hybrid missed (JSON) here")
    parser.add_argument("--update-readme", action="store_true", help="replace this benchmark's section of README.md")
    args = parser.parse_args()
    if args.quick:
        args.embedder, args.scale, args.rounds, args.long_repeats = "hash", min(args.scale, 10_000), 1, 2
    weights = [float(w) for w in args.weights.split(",") if w.strip()]
    default_weight = fusion.DEFAULT_KEYWORD_WEIGHT

    dataset = json.loads(args.dataset.read_text())
    started = time.perf_counter()
    capture: list[str] = []

    def out(text: str = "") -> None:
        emit(text)
        capture.append(text)

    with tempfile.TemporaryDirectory(prefix="ltmc-bench-retrieval-") as tmp:
        root = Path(tmp)
        embedder = CachedQueries(make_embedder(args.embedder))
        service = MemoryService(settings_for(root / "set"), embedder=embedder)  # type: ignore[arg-type]
        log(f"storing {len(dataset['memories'])} memories with {embedder.name}")
        t = time.perf_counter()
        ids = store_dataset(service, dataset["memories"])
        store_seconds = time.perf_counter() - t
        chunks = service.storage.health().index.get("vectors")

        runs: list[Run] = []
        hybrid_misses: list[dict[str, Any]] = []
        for mode in ("semantic", "keyword"):
            log(f"asking {len(dataset['questions'])} questions: {mode}")
            runs.append(evaluate(service, dataset, ids, mode, mode)[0])
        for weight in weights:
            log(f"asking {len(dataset['questions'])} questions: hybrid, keyword weight {weight}")
            with keyword_weight(weight):
                run, misses = evaluate(service, dataset, ids, "hybrid", f"hybrid {weight:g}")
            runs.append(run)
            if weight == default_weight or not hybrid_misses:
                hybrid_misses = misses
        default_label = f"hybrid {default_weight:g}" if default_weight in weights else runs[-1].label

        log("timing retrieve on the set")
        queries = [q["question"] for q in dataset["questions"]]
        set_latency = retrieve_latency(service, queries, ("semantic", "keyword", "hybrid"), args.rounds)
        log("timing 30 KiB stores")
        long_store, long_embed, long_chunks = long_store_cost(service, dataset, args.long_repeats)
        service.close()

        scale_latency: dict[str, dict[str, float]] = {}
        if args.scale:
            log(f"building a store of {args.scale} memories")
            scale_seconds = scale_store(dataset, args.scale, root)
            for index in ("auto", "exact"):
                scaled = open_scale_store(args.scale, root, index)
                while index == "exact" and scaled.storage.index.kind != "exact":  # rebuilt in the background
                    time.sleep(0.2)
                kind = scaled.storage.index.kind
                log(f"timing retrieve at scale ({kind} vector index)")
                modes = ("semantic", "keyword", "hybrid")
                scale_latency[kind] = retrieve_latency(scaled, queries, modes, args.rounds)
                scale_chunks = scaled.storage.health().index.get("vectors")
                scaled.close()
        log("timing 1 KB stores with and without the keyword index")
        kb_texts = [long_text(dataset, 1024, offset=i)[:1000] + f" ({i})" for i in range(300)]
        with_fts, without_fts = store_latency(root, kb_texts)

    heading = io.StringIO()
    with contextlib.redirect_stdout(heading):
        header("Retrieval quality and cost (bench_retrieval.py)")
    out(heading.getvalue().rstrip("\n") + "\n")
    by_type = {t: sum(q["type"] == t for q in dataset["questions"]) for t in TYPES}
    out(
        f"The labelled set: {len(dataset['memories'])} memories ({chunks} chunks with {embedder.name}), "
        f"{len(dataset['questions'])} questions ({', '.join(f'{t} {n}' for t, n in by_type.items())}), built by "
        f"`python bench/retrieval/make_dataset.py` (seed {dataset['seed']}). Stored in {store_seconds:.0f} s. "
        f"Each question is asked once per mode with k={K}; hybrid once per keyword weight "
        f"(the library default is {default_weight:g}).\n"
    )
    out(quality_tables(runs, "semantic", default_label))
    out()
    rows = [["labelled set", f"{len(dataset['memories'])} memories, exact", *_latency_cells(set_latency)]]
    for kind, latency in scale_latency.items():
        rows.append([f"{args.scale} memories", f"{scale_chunks} vectors, {kind}", *_latency_cells(latency)])
    out(
        "**Retrieve p50, embedding excluded** (ms; k=10; every question, "
        f"{args.rounds} rounds, modes interleaved)\n\n"
        + table(["store", "size", "semantic", "keyword", "hybrid", "hybrid / semantic"], rows)
    )
    out()
    out(
        "**Store cost**\n\n"
        + table(
            ["what", "p50 ms", "note"],
            [
                ["store a 1 KB memory, with the keyword index", ms(with_fts), "random vectors: no model"],
                ["the same without the FTS triggers", ms(without_fts), f"keyword write: {ms(with_fts - without_fts)}"],
                [f"store a 30 KiB memory ({long_chunks} chunks)", ms(long_store), embedder.name],
                [
                    f"embed its {long_chunks} chunks in one batch",
                    ms(long_embed),
                    f"ratio {long_store / long_embed:.2f}",
                ],
            ],
        )
    )
    if args.scale:
        out(f"\nThe {args.scale}-memory store took {scale_seconds:.0f} s to fill (store_many, 2,000 per call).")
    out(f"\n_Total {time.perf_counter() - started:.0f} s._")
    if args.misses:
        args.misses.write_text(json.dumps(hybrid_misses, indent=1))
    if args.update_readme:
        update_readme("\n".join(capture))
    return 0


def _latency_cells(latency: dict[str, float]) -> list[str]:
    return [
        ms(latency["semantic"]),
        ms(latency["keyword"]),
        ms(latency["hybrid"]),
        f"{latency['hybrid'] / latency['semantic']:.2f}",
    ]


if __name__ == "__main__":
    sys.exit(main())

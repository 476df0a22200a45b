"""feature-extraction: sentence embeddings pooled and normalized as the bundle's runtime config says.

Unlike transformers' feature-extraction pipeline, which answers token-level vectors, a predict
request answers one pooled vector per input (what sentence-transformers' ``encode`` returns).
Bundles exported with ``pooling: none`` answer token vectors, one list per input.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BadRequest
from ..inputs import parse_items
from ..tasknames import FEATURE_EXTRACTION
from . import EMBEDDINGS_ROUTE, TEXT, Embedder, Prepared, encode_texts, register
from .params import check_known, get_bool

POOLINGS = ("mean", "cls", "max", "none")


def _params(raw: dict) -> dict:
    check_known(raw, ("normalize",))
    return {"normalize": get_bool(raw, "normalize", None)}


def pool(hidden: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """Sentence vectors from token vectors (batch, tokens, dim) and the attention mask (batch, tokens)."""
    if how == "cls":
        return hidden[:, 0]
    if how == "max":
        return np.where(mask[..., None] > 0, hidden, np.float32(-1e9)).max(axis=1)
    weights = mask.astype(hidden.dtype)[:, None, :]  # (batch, 1, tokens)
    # One matmul sums the unmasked token vectors without a (batch, tokens, dim) temporary.
    summed = np.matmul(weights, hidden)[:, 0]
    return summed / np.maximum(weights.sum(axis=2), 1e-9)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("...i,...i->...", vectors, vectors))[..., None]
    return vectors / np.maximum(norms, 1e-12)


def sentence_vectors(model, prepared: Prepared, outputs: list[dict], normalize: bool | None = None) -> np.ndarray:
    """(inputs, dim) float32 sentence embeddings for a pooled model."""
    runtime = model.manifest.runtime
    normalize = runtime.normalize if normalize is None else normalize
    if normalize and runtime.pooling == "mean" and len(outputs) == 1:
        hidden = outputs[0][model.output_names[0]]
        if hidden.ndim == 3 and hidden.shape[0] == 1 and hidden.dtype == np.float32:
            return _one_mean_normalized(hidden[0], prepared.feeds[0]["attention_mask"][0])
    parts = []
    for feed, out in zip(prepared.feeds, outputs):
        hidden = out[model.output_names[0]]
        if hidden.ndim == 2:  # a graph that already pools (sentence_embedding output): (batch, dim)
            parts.append(hidden)
        elif normalize and runtime.pooling == "mean":
            # The mean's 1/tokens factor cancels in the normalization: the masked sum suffices, and
            # every numpy call saved counts at batch 1 (bench/runtime.md, handler overhead).
            mask = feed["attention_mask"].astype(hidden.dtype)[:, None, :]
            parts.append(np.matmul(mask, hidden)[:, 0])
        else:
            parts.append(pool(hidden, feed["attention_mask"], runtime.pooling))
    vectors = (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.float32, copy=False)
    return l2_normalize(vectors) if normalize else vectors


def _one_mean_normalized(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(1, dim) float32: one row's masked token sum scaled to unit length, in four numpy calls.

    The same vector as the batch path (the mean's 1/tokens cancels in the normalization), for the
    most common request, one text: each numpy call costs microseconds right after session.run,
    and the batch path makes a dozen (bench/warm_latency.md, "pool + normalize").
    """
    summed = np.dot(mask.astype(hidden.dtype), hidden)
    norm = math.sqrt(float(np.dot(summed, summed)))
    summed *= np.float32(1.0 / max(norm, 1e-12))
    return summed[None]


def _preprocess(model, items: list, params: dict) -> Prepared:
    return encode_texts(model, items)


def _shape(results: list, single: bool, params: dict):
    return results


def _openai_routes(runtime) -> tuple[str, ...]:
    # /v1/embeddings answers one vector per input: only a pooled model has one.
    return () if runtime is not None and runtime.pooling == "none" else (EMBEDDINGS_ROUTE,)


def _parse_texts(model, raw) -> list:
    """/v1/embeddings ``input``: a string or a list of strings."""
    if isinstance(raw, list) and raw and all(isinstance(x, (int, list)) and not isinstance(x, bool) for x in raw):
        raise BadRequest("token-id arrays are not supported as input", hint="send strings")
    return parse_items(raw, TEXT, model.limits.max_batch, field="input")[0]


def _text_width(model) -> int | None:
    # From the graph's output shape when it is static (always for exported encoders).
    width = model.session.get_outputs()[0].shape[-1] if hasattr(model, "session") else None
    return width if isinstance(width, int) else None


TEXT_EMBEDDER = Embedder(parse=_parse_texts, prepare=encode_texts, vectors=sentence_vectors, width=_text_width)


@register(FEATURE_EXTRACTION, inputs=TEXT, parse_params=_params, preprocess=_preprocess, shape=_shape,
          synonyms=("embeddings", "embedding", "sentence-embeddings", "sentence-similarity", "default"),
          params_schema={"normalize": {"type": "boolean"}}, openai_routes=_openai_routes, embedder=TEXT_EMBEDDER,
          sample={"inputs": ["modelfn serves models as functions", "cold starts should be fast"]})
def postprocess(model, prepared: Prepared, outputs: list[dict], params: dict) -> list:
    normalize = model.manifest.runtime.normalize if params["normalize"] is None else params["normalize"]
    if model.manifest.runtime.pooling == "none":
        results = []
        for enc, (row, hidden) in zip(prepared.encodings, _rows(model, outputs)):
            tokens = hidden[row, :len(enc.ids)]
            results.append((l2_normalize(tokens) if normalize else tokens).tolist())
        return results
    return sentence_vectors(model, prepared, outputs, params["normalize"]).tolist()


def _rows(model, outputs: list[dict]):
    for out in outputs:
        hidden = out[model.output_names[0]]
        for row in range(hidden.shape[0]):
            yield row, hidden


# -- parity: how export compares a candidate graph with the original (functions/tasks/parity.py) ---------

PARITY_METRICS = {"mean_cosine": ("cosine", "mean"), "min_cosine": ("cosine", "min")}
PARITY_GATED = ("mean_cosine", "min_cosine")
PARITY_SCORE = "cosine"  # per-sample column the worst inputs are ranked by (lowest first)


def parity_samples(split: str = "eval") -> list:
    """The built-in texts (functions.tasks.parity.text_samples)."""
    from .parity import text_samples

    return text_samples(split)


def parity_metrics(runtime, samples: list, encodings: list, reference: list, candidate: list) -> dict:
    """Per-sample cosine of the sentence vectors a caller gets (pooled as the bundle's runtime config says)."""
    from .parity import cosine_rows

    def vector(hidden: np.ndarray, enc) -> np.ndarray:
        if hidden.ndim == 2:  # the graph pools itself
            return hidden[0]
        return pool(hidden, np.asarray([enc.attention_mask]), runtime.pooling)[0]

    ref = np.stack([vector(r[0], e) for r, e in zip(reference, encodings)])
    cand = np.stack([vector(c[0], e) for c, e in zip(candidate, encodings)])
    return {"cosine": cosine_rows(ref, cand)}

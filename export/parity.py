"""The parity gate: does a candidate ONNX model answer like the original PyTorch model, for every input, as served?

Every sample is tokenized by the very tokenizer.json the bundle ships and run alone (batch 1, no
padding), and again in mixed batches of ``BATCH_SIZE`` padded to their longest row, the way the
runtime serves a list. What is compared, per sample, is what a caller receives (pooled embeddings,
label probabilities, tags, answer spans); each task module in functions/tasks/ declares that
comparison (``parity_metrics``), its metrics and which of them the gate holds to a threshold.

Decisions carry their uncertainty: a mean is judged by the lower bound of its 95% bootstrap
interval (fixed seed, so the same outputs always give the same bound), a minimum is the worst
case over the whole set, and the worst inputs are kept with their class for the report.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from functions.model import sequence_outputs
from functions.tasknames import FEATURE_EXTRACTION, QUESTION_ANSWERING, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION
from functions.tasks import parity_module
from functions.tasks.parity import cosine_rows

from .samples import Sample

BATCH_SIZE = 8  # rows per mixed batch in the batch-independence check (and the batch latency)
BATCH_INDEPENDENCE = 0.9999  # min cosine between an input's answer alone and in a batch: float noise only
LCB_SUFFIX = "_lcb95"
BOOTSTRAP_RESAMPLES = 1000
WORST = 5  # worst inputs kept per candidate


@dataclass(frozen=True)
class Encoded:
    feeds: dict[str, np.ndarray]  # every tensor the graph might take, shape (1, L)
    encoding: Any  # the tokenizers.Encoding (attention/special masks, sequence ids, offsets)


def encode(tokenizer, samples: list[Sample]) -> list[Encoded]:
    out = []
    for sample in samples:
        enc = tokenizer.encode(sample.text, sample.pair) if sample.pair is not None else tokenizer.encode(sample.text)
        feeds = {
            "input_ids": np.asarray([enc.ids], dtype=np.int64),
            "attention_mask": np.asarray([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64),
        }
        out.append(Encoded(feeds=feeds, encoding=enc))
    return out


def gated(task: str) -> tuple[str, ...]:
    return tuple(parity_module(task).PARITY_GATED)


# -- running the models --------------------------------------------------------------------------------

def run_onnx(session, encoded: list[Encoded]) -> list[list[np.ndarray]]:
    """Raw outputs per sample, each sample alone."""
    names = [i.name for i in session.get_inputs()]
    return [[np.asarray(o, dtype=np.float32) for o in session.run(None, {n: e.feeds[n] for n in names})]
            for e in encoded]


def mixed_batches(count: int, size: int = BATCH_SIZE, seed: int = 0) -> list[list[int]]:
    """Sample indices shuffled (fixed seed) into batches: long and short inputs end up side by side."""
    order = np.random.default_rng(seed).permutation(count).tolist()
    return [order[i:i + size] for i in range(0, count, size)]


def pad_batch(encoded: list[Encoded], names: list[str], pad_id: int) -> dict[str, np.ndarray]:
    """Feeds for several samples, right-padded to the longest as the runtime pads (functions/model.py)."""
    width = max(e.feeds["input_ids"].shape[1] for e in encoded)
    out = {}
    for n in names:
        fill = pad_id if n == "input_ids" else 0
        out[n] = np.full((len(encoded), width), fill, dtype=np.int64)
        for row, e in enumerate(encoded):
            out[n][row, :e.feeds[n].shape[1]] = e.feeds[n][0]
    return out


def run_onnx_batched(session, encoded: list[Encoded], pad_id: int,
                     batches: list[list[int]] | None = None) -> list[list[np.ndarray]]:
    """Raw outputs per sample when run inside mixed padded batches, cut back to each sample's own tokens."""
    names = [i.name for i in session.get_inputs()]
    token_axis = sequence_outputs(session)
    results: list[list[np.ndarray] | None] = [None] * len(encoded)
    for batch in batches or mixed_batches(len(encoded)):
        outputs = session.run(None, pad_batch([encoded[i] for i in batch], names, pad_id))
        for row, i in enumerate(batch):
            length = encoded[i].feeds["input_ids"].shape[1]
            results[i] = [np.asarray(o[row:row + 1, :length] if tok else o[row:row + 1], dtype=np.float32)
                          for o, tok in zip(outputs, token_axis)]
    return results  # type: ignore[return-value]


def batch_consistency(alone: list[list[np.ndarray]], batched: list[list[np.ndarray]]) -> np.ndarray:
    """Per sample, cosine between its raw outputs alone and in a batch (1.0: the batch changed nothing)."""
    a = [np.concatenate([o.ravel() for o in outs]) for outs in alone]
    b = [np.concatenate([o.ravel() for o in outs]) for outs in batched]
    return np.asarray([float(cosine_rows(x[None], y[None])[0]) for x, y in zip(a, b)])


def run_torch(source_dir: Path, task: str, encoded: list[Encoded]) -> list[list[np.ndarray]]:
    """The original model's raw outputs in the same order as the ONNX graph's outputs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    from .convert import quiet

    cls = {
        FEATURE_EXTRACTION: transformers.AutoModel,
        TEXT_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
        TOKEN_CLASSIFICATION: transformers.AutoModelForTokenClassification,
        QUESTION_ANSWERING: transformers.AutoModelForQuestionAnswering,
    }[task]
    with quiet():
        model = cls.from_pretrained(str(source_dir), local_files_only=True).eval()
    accepted = set(inspect.signature(model.forward).parameters)
    # Samples of the same length run together: no padding, so each row is its batch-1 answer up to
    # float noise, and a few hundred samples cost a few dozen calls instead of one each.
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(encoded):
        groups.setdefault(e.feeds["input_ids"].shape[1], []).append(i)
    results: list[list[np.ndarray] | None] = [None] * len(encoded)
    with torch.inference_mode():
        for members in groups.values():
            for start in range(0, len(members), 32):
                rows = members[start:start + 32]
                feeds = {k: torch.from_numpy(np.concatenate([encoded[i].feeds[k] for i in rows]))
                         for k in encoded[rows[0]].feeds if k in accepted}
                out = model(**feeds)
                if task == FEATURE_EXTRACTION:
                    tensors = [out.last_hidden_state]
                elif task == QUESTION_ANSWERING:
                    tensors = [out.start_logits, out.end_logits]
                else:
                    tensors = [out.logits]
                arrays = [t.float().numpy() for t in tensors]
                for row, i in enumerate(rows):
                    results[i] = [a[row:row + 1] for a in arrays]
    return results  # type: ignore[return-value]


# -- comparing: per-sample columns from the task, then statistics --------------------------------------

@dataclass(frozen=True)
class Assessment:
    metrics: dict[str, float]
    worst: tuple[dict, ...]  # {"text", "kind", "score"}, worst first


def compare(task: str, runtime, samples: list[Sample], encoded: list[Encoded],
            reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-sample columns of ``candidate`` against ``reference``, as the task module compares them."""
    return parity_module(task).parity_metrics(runtime, samples, [e.encoding for e in encoded], reference, candidate)


def lower_bound(values: np.ndarray, weights: np.ndarray | None = None, *, resamples: int = BOOTSTRAP_RESAMPLES,
                seed: int = 0) -> float:
    """2.5th percentile of the bootstrap distribution of the (weighted) mean: a one-sided 97.5% lower bound."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()) if values.size else float("nan")
    idx = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    means = (values[idx] * weights[idx]).sum(1) / np.maximum(weights[idx].sum(1), 1e-12)
    return float(np.percentile(means, 2.5))


def _label(sample: Sample, width: int = 60) -> str:
    text = sample.text if sample.pair is None else f"{sample.text} | {sample.pair}"
    text = " ".join(text.split()) or repr(sample.text)
    return text if len(text) <= width else text[:width - 1] + "…"


def assess(task: str, samples: list[Sample], columns: dict[str, np.ndarray], *, worst: int = WORST) -> Assessment:
    """Aggregate metrics (means with their lower bound, minima, maxima) and the worst inputs."""
    module = parity_module(task)
    weights = columns.get("weight")
    metrics: dict[str, float] = {}
    for metric, (column, reduction) in module.PARITY_METRICS.items():
        values = np.asarray(columns[column], dtype=np.float64)
        keep = ~np.isnan(values)
        if not keep.any():
            continue
        v, w = values[keep], (weights[keep] if weights is not None else None)
        if reduction == "mean":
            metrics[metric] = float(np.average(v, weights=w))
            if metric in module.PARITY_GATED:
                metrics[metric + LCB_SUFFIX] = lower_bound(v, w)
        elif reduction == "min":
            metrics[metric] = float(v.min())
        else:
            metrics[metric] = float(v.max())
    score = np.asarray(columns[module.PARITY_SCORE], dtype=np.float64)
    order = np.argsort(score, kind="stable")[:worst]
    listed = tuple({"text": _label(samples[i]), "kind": samples[i].kind, "score": round(float(score[i]), 4)}
                   for i in order)
    return Assessment(metrics, listed)


def judged(task: str, metric: str, metrics: dict[str, float]) -> float:
    """The value a threshold on ``metric`` is held against: a mean's lower bound, a minimum as is."""
    return metrics.get(metric + LCB_SUFFIX, metrics.get(metric, float("-inf")))


def gate(task: str, metrics: dict[str, float], thresholds: dict[str, float]) -> bool:
    return all(judged(task, m, metrics) >= thresholds[m] for m in gated(task) if m in thresholds)


def gate_thresholds(task: str, thresholds: dict[str, Any]) -> dict[str, float]:
    """The thresholds that apply to ``task`` (others, e.g. cosine for a classifier, are dropped)."""
    return {m: float(thresholds[m]) for m in gated(task) if m in thresholds}


def classes(samples: list[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.kind] = counts.get(s.kind, 0) + 1
    return dict(sorted(counts.items()))


__all__ = ["Assessment", "BATCH_INDEPENDENCE", "BATCH_SIZE", "Encoded", "assess", "batch_consistency", "classes",
           "compare", "encode", "gate", "gate_thresholds", "gated", "judged", "lower_bound", "mixed_batches",
           "pad_batch", "run_onnx", "run_onnx_batched", "run_torch"]

"""The parity gate: does a candidate ONNX model answer like the original PyTorch model?

Every sample is run one at a time (batch 1, no padding), tokenized by the very tokenizer.json the
bundle ships, so the comparison sees exactly what the runtime will feed. Outputs are reduced to
what a caller receives (pooled embeddings, label probabilities, tags, answer spans) before they are
compared: drift that does not change an answer is not drift a user can see.

Gated metrics: feature-extraction mean_cosine and min_cosine; every other task ``agreement`` (top-1
label, token tag, or exact answer span). The rest (max_prob_gap, accuracy) are recorded only.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from functions.manifest import RuntimeConfig
from functions.tasks.classification import sigmoid, softmax
from functions.tasks.embeddings import l2_normalize
from functions.tasks.embeddings import pool as runtime_pool
from functions.tasknames import FEATURE_EXTRACTION, QUESTION_ANSWERING, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION

from .samples import Sample

GATED: dict[str, tuple[str, ...]] = {
    FEATURE_EXTRACTION: ("mean_cosine", "min_cosine"),
    TEXT_CLASSIFICATION: ("agreement",),
    TOKEN_CLASSIFICATION: ("agreement",),
    QUESTION_ANSWERING: ("agreement",),
}
MAX_ANSWER_TOKENS = 15  # the runtime's default max_answer_len (functions/tasks/qa.py)


@dataclass(frozen=True)
class Encoded:
    feeds: dict[str, np.ndarray]  # every tensor the graph might take, shape (1, L)
    special: np.ndarray  # (L,) 1 where the tokenizer added a special token
    sequence_ids: np.ndarray  # (L,) 0 first text, 1 second text, -1 special


def encode(tokenizer, samples: list[Sample]) -> list[Encoded]:
    out = []
    for sample in samples:
        enc = tokenizer.encode(sample.text, sample.pair) if sample.pair is not None else tokenizer.encode(sample.text)
        ids = np.asarray(enc.ids, dtype=np.int64)[None, :]
        feeds = {
            "input_ids": ids,
            "attention_mask": np.asarray(enc.attention_mask, dtype=np.int64)[None, :],
            "token_type_ids": np.asarray(enc.type_ids, dtype=np.int64)[None, :],
        }
        seq = np.asarray([-1 if s is None else s for s in enc.sequence_ids], dtype=np.int64)
        out.append(Encoded(feeds=feeds, special=np.asarray(enc.special_tokens_mask, dtype=np.int64), sequence_ids=seq))
    return out


# -- running the models --------------------------------------------------------------------------------

def run_onnx(session, encoded: list[Encoded]) -> list[list[np.ndarray]]:
    names = [i.name for i in session.get_inputs()]
    return [[np.asarray(o, dtype=np.float32) for o in session.run(None, {n: e.feeds[n] for n in names})]
            for e in encoded]


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
    results = []
    with torch.inference_mode():
        for e in encoded:
            feeds = {k: torch.from_numpy(v) for k, v in e.feeds.items() if k in accepted}
            out = model(**feeds)
            if task == FEATURE_EXTRACTION:
                results.append([out.last_hidden_state.float().numpy()])
            elif task == QUESTION_ANSWERING:
                results.append([out.start_logits.float().numpy(), out.end_logits.float().numpy()])
            else:
                results.append([out.logits.float().numpy()])
    return results


# -- reducing outputs to answers -----------------------------------------------------------------------

def pool(hidden: np.ndarray, mask: np.ndarray, runtime: RuntimeConfig) -> np.ndarray:
    """Sentence vectors exactly as the runtime makes them (functions/tasks/embeddings.py)."""
    vec = runtime_pool(hidden, mask, runtime.pooling)
    return l2_normalize(vec) if runtime.normalize else vec


def _probs(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    return sigmoid(logits) if multi_label else softmax(logits)


def best_span(start: np.ndarray, end: np.ndarray, context: np.ndarray) -> tuple[int, int]:
    """Highest start+end score over spans inside the context, at most MAX_ANSWER_TOKENS long."""
    idx = np.flatnonzero(context)
    if idx.size == 0:
        return (-1, -1)
    s, e = start[idx], end[idx]
    scores = s[:, None] + e[None, :]
    i, j = np.indices(scores.shape)
    scores = np.where((j >= i) & (j - i < MAX_ANSWER_TOKENS), scores, -np.inf)
    a, b = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(idx[a]), int(idx[b])


def compare(task: str, runtime: RuntimeConfig, samples: list[Sample], encoded: list[Encoded],
            reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict[str, float]:
    """Per-task metrics of ``candidate`` against ``reference`` (both raw graph outputs per sample)."""
    if task == FEATURE_EXTRACTION:
        cos = []
        for e, ref, cand in zip(encoded, reference, candidate):
            mask = e.feeds["attention_mask"]
            a, b = pool(ref[0], mask, runtime)[0], pool(cand[0], mask, runtime)[0]
            cos.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
        return {"mean_cosine": float(np.mean(cos)), "min_cosine": float(np.min(cos))}
    if task == TEXT_CLASSIFICATION:
        agree, gaps, correct, labelled = [], [], 0, 0
        for s, ref, cand in zip(samples, reference, candidate):
            p, q = _probs(ref[0][0], runtime.multi_label), _probs(cand[0][0], runtime.multi_label)
            if runtime.multi_label:
                agree.append(bool(np.array_equal(p > 0.5, q > 0.5)))
                predicted = {runtime.labels[i] if i < len(runtime.labels) else str(i) for i in np.flatnonzero(q > 0.5)}
            else:
                agree.append(int(np.argmax(p)) == int(np.argmax(q)))
                top = int(np.argmax(q))
                predicted = {runtime.labels[top] if top < len(runtime.labels) else str(top)}
            gaps.append(float(np.max(np.abs(p - q))))
            if s.label is not None:
                labelled += 1
                correct += s.label in predicted
        metrics = {"agreement": float(np.mean(agree)), "max_prob_gap": float(np.max(gaps))}
        if labelled:
            metrics["accuracy"] = correct / labelled
        return metrics
    if task == TOKEN_CLASSIFICATION:
        same = total = 0
        for e, ref, cand in zip(encoded, reference, candidate):
            keep = e.special == 0
            same += int((ref[0][0].argmax(-1)[keep] == cand[0][0].argmax(-1)[keep]).sum())
            total += int(keep.sum())
        return {"agreement": same / total if total else 1.0}
    if task == QUESTION_ANSWERING:
        exact = []
        for e, ref, cand in zip(encoded, reference, candidate):
            context = e.sequence_ids == 1
            exact.append(best_span(ref[0][0], ref[1][0], context) == best_span(cand[0][0], cand[1][0], context))
        return {"agreement": float(np.mean(exact))}
    raise ValueError(task)


def gate(task: str, metrics: dict[str, float], thresholds: dict[str, float]) -> bool:
    return all(metrics.get(m, float("-inf")) >= thresholds[m] for m in GATED[task] if m in thresholds)


def gate_thresholds(task: str, thresholds: dict[str, Any]) -> dict[str, float]:
    """The thresholds that apply to ``task`` (others, e.g. cosine for a classifier, are dropped)."""
    return {m: float(thresholds[m]) for m in GATED[task] if m in thresholds}


__all__ = ["GATED", "Encoded", "best_span", "compare", "encode", "gate", "gate_thresholds", "pool",
           "run_onnx", "run_torch"]

"""text-classification: softmax (or sigmoid for multi-label models) over the labels, with top_k.

Answers in transformers' text-classification pipeline shapes: without ``top_k`` a text gets
``[{label, score}]`` (and a list of texts one best label each); with ``top_k`` each text gets a
list of up to ``top_k`` labels, best first; ``top_k: null`` means every label.
"""

from __future__ import annotations

import numpy as np

from ..tasknames import TEXT_CLASSIFICATION
from . import TEXT_OR_PAIR, Prepared, encode_texts, register
from .params import MISSING, check_known, choice_schema, get_choice, get_int, int_schema

FUNCTIONS = ("softmax", "sigmoid", "none")


def _params(raw: dict) -> dict:
    check_known(raw, ("top_k", "function_to_apply"))
    return {
        "top_k": get_int(raw, "top_k", MISSING, lo=1, hi=100_000, nullable=True),
        "function_to_apply": get_choice(raw, "function_to_apply", None, FUNCTIONS),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def _preprocess(model, items: list, params: dict) -> Prepared:
    return encode_texts(model, items)


def label_scores(model, outputs: list[dict], function: str | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """(scores (rows, labels), label names) from the first output's logits, as transformers' classification
    pipelines score them: ``function`` None is sigmoid for multi-label or one-label models, else softmax."""
    logits = np.concatenate([out[model.output_names[0]] for out in outputs]).astype(np.float32)
    if function is None:
        function = "sigmoid" if model.manifest.runtime.multi_label or logits.shape[-1] == 1 else "softmax"
    scores = {"softmax": softmax, "sigmoid": sigmoid, "none": lambda x: x}[function](logits)
    return scores, _labels(model, logits.shape[-1])


def _labels(model, count: int) -> tuple[str, ...]:
    labels = model.manifest.runtime.labels
    return labels if len(labels) == count else tuple(f"LABEL_{i}" for i in range(count))


@register(TEXT_CLASSIFICATION, inputs=TEXT_OR_PAIR, parse_params=_params, preprocess=_preprocess,
          shape=lambda results, single, params: _shape(results, single, params),
          synonyms=("sentiment-analysis", "sequence-classification"),
          params_schema={"top_k": int_schema(1, 100_000, nullable=True),
                         "function_to_apply": choice_schema(*FUNCTIONS)},
          sample={"inputs": "I love this movie", "parameters": {"top_k": 2}})
def postprocess(model, prepared: Prepared, outputs: list[dict], params: dict) -> list:
    scores, labels = label_scores(model, outputs, params["function_to_apply"])
    top_k = params["top_k"]
    results = []
    for row in scores:
        if top_k is MISSING:
            best = int(row.argmax())
            results.append({"label": labels[best], "score": float(row[best])})
            continue
        order = np.argsort(-row, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        results.append([{"label": labels[i], "score": float(row[i])} for i in order])
    return results


def _shape(results: list, single: bool, params: dict):
    # transformers answers a single text without top_k as a one-element list.
    if single and params["top_k"] is MISSING:
        return results
    return results[0] if single else results


# -- parity: how export compares a candidate graph with the original (functions/tasks/parity.py) ---------

PARITY_METRICS = {"agreement": ("agreement", "mean"), "max_prob_gap": ("prob_gap", "max"),
                  "accuracy": ("correct", "mean")}
PARITY_GATED = ("agreement",)
PARITY_SCORE = "score"


def parity_samples(split: str = "eval") -> list:
    """The built-in texts plus sentiment texts with gold labels. Labels score ``accuracy`` only for
    models whose labels are named positive/negative; otherwise the original model's own answers are
    the labels (``agreement``)."""
    from .parity import sentiment_samples, text_samples

    return text_samples(split) + sentiment_samples(split)


def parity_metrics(runtime, samples: list, encodings: list, reference: list, candidate: list) -> dict:
    """Per sample: same top label (multi-label: same label set), largest probability gap, gold correctness."""
    names = {label.lower(): i for i, label in enumerate(runtime.labels)}
    agree, gaps, correct = [], [], []
    for sample, ref, cand in zip(samples, reference, candidate):
        f = sigmoid if runtime.multi_label else softmax
        p, q = f(ref[0][0].astype(np.float64)), f(cand[0][0].astype(np.float64))
        chosen = set(np.flatnonzero(q > 0.5)) if runtime.multi_label else {int(np.argmax(q))}
        agree.append(float(np.array_equal(p > 0.5, q > 0.5) if runtime.multi_label
                           else int(np.argmax(p)) == int(np.argmax(q))))
        gaps.append(float(np.max(np.abs(p - q))))
        gold = names.get((sample.label or "").lower())
        correct.append(float(gold in chosen) if gold is not None else np.nan)
    agree_arr, gap_arr = np.asarray(agree), np.asarray(gaps)
    return {"agreement": agree_arr, "prob_gap": gap_arr, "correct": np.asarray(correct),
            "score": agree_arr - gap_arr}

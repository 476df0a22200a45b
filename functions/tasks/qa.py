"""question-answering: extractive answers, as transformers' question-answering pipeline gives them.

The context is split into windows of ``max_seq_len`` tokens overlapping by ``doc_stride``; every
window of every question runs in one padded batch. Spans longer than ``max_answer_len`` tokens or
outside the context are excluded; answers are aligned to whole words, equal answers from
different windows add their scores, and ``top_k`` best are returned (a single one as an object).
"""

from __future__ import annotations

import numpy as np

from ..errors import BadRequest, PayloadTooLarge
from ..model import MAX_CHARS_PER_TOKEN
from ..tasknames import QUESTION_ANSWERING
from . import QUESTION_CONTEXT, Prepared, chunked_feeds, register
from .params import check_known, get_bool, get_int, int_schema


# Windows one request may run (over all its questions): a long context costs one model row per
# window, so an unbounded one would cost seconds and gigabytes. 64 windows of the default 384
# tokens cover ~16k tokens of context.
MAX_WINDOWS = 64


def _params(raw: dict) -> dict:
    check_known(raw, ("top_k", "doc_stride", "max_answer_len", "max_seq_len", "handle_impossible_answer",
                      "align_to_words"))
    return {
        "top_k": get_int(raw, "top_k", 1, lo=1, hi=1000),
        "doc_stride": get_int(raw, "doc_stride", None, lo=0, hi=1 << 16),
        "max_answer_len": get_int(raw, "max_answer_len", 15, lo=1, hi=1 << 16),
        "max_seq_len": get_int(raw, "max_seq_len", None, lo=8, hi=1 << 16),
        "handle_impossible_answer": get_bool(raw, "handle_impossible_answer", False),
        "align_to_words": get_bool(raw, "align_to_words", True),
    }


def _preprocess(model, items: list, params: dict) -> Prepared:
    max_seq_len = params["max_seq_len"] or min(model.limits.max_tokens, 384)
    if max_seq_len > model.limits.max_tokens:
        raise BadRequest(f"parameters.max_seq_len must be at most {model.limits.max_tokens} for this model")
    stride = params["doc_stride"] if params["doc_stride"] is not None else min(max_seq_len // 2, 128)
    if stride > max_seq_len:
        raise BadRequest(f"parameters.doc_stride ({stride}) is larger than max_seq_len ({max_seq_len})")
    # Before tokenizing: contexts whose characters could not fit MAX_WINDOWS windows even at the
    # generous characters-per-token bound are refused by their length alone.
    step = max(max_seq_len - stride, 1)
    max_chars = MAX_WINDOWS * step * MAX_CHARS_PER_TOKEN
    if sum(len(question) + len(context) for question, context in items) > max_chars:
        raise PayloadTooLarge(f"contexts are longer than {max_chars} characters in all; a request runs at most "
                              f"{MAX_WINDOWS} windows of {max_seq_len} tokens", hint="send shorter contexts")
    spans, owners = [], []
    for i, (question, context) in enumerate(items):
        for enc in model.encode_pair_spans(question, context, max_length=max_seq_len, stride=stride):
            spans.append(enc)
            owners.append(i)
        if len(spans) > MAX_WINDOWS:
            raise PayloadTooLarge(f"contexts need more than {MAX_WINDOWS} windows of {max_seq_len} tokens",
                                  hint="send shorter contexts or raise parameters.max_seq_len")
    return Prepared(feeds=chunked_feeds(model, spans), encodings=spans,
                    tokens=sum(len(e.ids) for e in spans), extra=(items, owners))


def _masked_probs(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    logits = np.where(allowed, logits, -10000.0)
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def _best_spans(start: np.ndarray, end: np.ndarray, allowed: np.ndarray, top_k: int, max_answer_len: int):
    candidates = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)
    flat = candidates.ravel()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) <= top_k:
        order = np.argsort(-flat)
    else:
        idx = np.argpartition(-flat, top_k)[:top_k]
        order = idx[np.argsort(-flat[idx])]
    starts, ends = np.unravel_index(order, candidates.shape)
    keep = allowed[starts] & allowed[ends]
    return starts[keep], ends[keep], candidates[starts[keep], ends[keep]]


def _char_span(enc, s: int, e: int, align: bool) -> tuple[int, int]:
    if align:
        start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
        if start_word is not None and end_word is not None:
            first = enc.word_to_chars(start_word, sequence_index=1)
            last = enc.word_to_chars(end_word, sequence_index=1)
            if first is not None and last is not None:
                return first[0], last[1]
    return enc.offsets[s][0], enc.offsets[e][1]


def answers_for(context: str, windows: list, params: dict) -> list[dict]:
    """``windows``: (encoding, start_logits, end_logits) per window of one question."""
    top_k, impossible = params["top_k"], params["handle_impossible_answer"]
    pre_k = top_k * 2 + 10 if params["align_to_words"] else top_k
    answers: list[dict] = []
    min_null = 1_000_000.0
    for enc, start_logits, end_logits in windows:
        allowed = np.array([sid == 1 for sid in enc.sequence_ids])
        allowed[0] = True  # transformers keeps the CLS position in the softmax (unanswerable marker)
        start = _masked_probs(start_logits.astype(np.float32), allowed)
        end = _masked_probs(end_logits.astype(np.float32), allowed)
        if impossible:
            min_null = min(min_null, float(start[0] * end[0]))
        start[0] = end[0] = 0.0
        for s, e, score in zip(*_best_spans(start, end, allowed, pre_k, params["max_answer_len"])):
            lo, hi = _char_span(enc, int(s), int(e), params["align_to_words"])
            text = context[lo:hi]
            same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += float(score)
            else:
                answers.append({"score": float(score), "start": lo, "end": hi, "answer": text})
    if impossible:
        answers.append({"score": min_null, "start": 0, "end": 0, "answer": ""})
    return sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]


def _shape(results: list, single: bool, params: dict):
    # transformers answers one best answer as an object, several as a list.
    shaped = [r[0] if len(r) == 1 else r for r in results]
    return shaped[0] if single else shaped


@register(QUESTION_ANSWERING, inputs=QUESTION_CONTEXT, parse_params=_params, preprocess=_preprocess, shape=_shape,
          synonyms=("qa",),
          params_schema={"top_k": int_schema(1, 1000), "doc_stride": int_schema(0, 1 << 16),
                         "max_answer_len": int_schema(1, 1 << 16), "max_seq_len": int_schema(8, 1 << 16),
                         "handle_impossible_answer": {"type": "boolean"}, "align_to_words": {"type": "boolean"}},
          sample={"inputs": {"question": "What is the capital of France?",
                             "context": "Paris is the capital of France."}})
def postprocess(model, prepared: Prepared, outputs: list[dict], params: dict) -> list:
    items, owners = prepared.extra
    names = model.output_names
    start_name, end_name = ("start_logits", "end_logits") if "start_logits" in names else names[:2]
    starts = [row for out in outputs for row in out[start_name]]
    ends = [row for out in outputs for row in out[end_name]]
    per_item: list[list] = [[] for _ in items]
    for owner, enc, s, e in zip(owners, prepared.encodings, starts, ends):
        n = len(enc.ids)
        per_item[owner].append((enc, s[:n], e[:n]))
    return [answers_for(context, per_item[i], params) for i, (_, context) in enumerate(items)]


# -- parity: how export compares a candidate graph with the original (functions/tasks/parity.py) ---------

PARITY_METRICS = {"agreement": ("agreement", "mean"), "accuracy": ("correct", "mean")}
PARITY_GATED = ("agreement",)
PARITY_SCORE = "agreement"
PARITY_MAX_ANSWER_TOKENS = 15  # the default max_answer_len above


def parity_samples(split: str = "eval") -> list:
    """Generated question/context pairs whose answer is known (``label``), plus odd ones without."""
    from .parity import qa_samples

    return qa_samples(split)


def best_span(start: np.ndarray, end: np.ndarray, context: np.ndarray,
              max_answer_len: int = PARITY_MAX_ANSWER_TOKENS) -> tuple[int, int]:
    """Highest start+end score over spans inside the context (a boolean mask), at most ``max_answer_len`` tokens."""
    idx = np.flatnonzero(context)
    if idx.size == 0:
        return (-1, -1)
    scores = start[idx][:, None] + end[idx][None, :]
    i, j = np.indices(scores.shape)
    scores = np.where((j >= i) & (j - i < max_answer_len), scores, -np.inf)
    a, b = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(idx[a]), int(idx[b])


def parity_metrics(runtime, samples: list, encodings: list, reference: list, candidate: list) -> dict:
    """Per sample: the same best answer span as the original; ``correct`` where a gold answer is known."""
    exact, correct = [], []
    for sample, enc, ref, cand in zip(samples, encodings, reference, candidate):
        context = np.asarray([s == 1 for s in enc.sequence_ids])
        span = best_span(cand[0][0], cand[1][0], context)
        exact.append(float(best_span(ref[0][0], ref[1][0], context) == span))
        if sample.label is None or span[0] < 0:
            correct.append(np.nan if sample.label is None else 0.0)
            continue
        text = (sample.pair or "")[enc.offsets[span[0]][0]:enc.offsets[span[1]][1]]
        correct.append(float(text.strip(" .,?!") == sample.label))
    return {"agreement": np.asarray(exact), "correct": np.asarray(correct)}

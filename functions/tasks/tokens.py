"""token-classification: per-token labels with transformers' aggregation strategies and offsets.

``aggregation_strategy`` none answers one entry per token (``entity``, ``index``); simple groups
adjacent tokens of one entity; first / average / max first force every word to one label (from
its first token, the average of its tokens' scores, or its highest-scoring token) and then group.
``start``/``end`` are character offsets into the input; ``word`` is the decoded token text.
"""

from __future__ import annotations

import numpy as np

from ..tasknames import TOKEN_CLASSIFICATION
from . import TEXT, Prepared, encode_texts, register
from .classification import softmax
from .params import check_known, choice_schema, get_choice, get_str_list

STRATEGIES = ("none", "simple", "first", "average", "max")


def _params(raw: dict) -> dict:
    check_known(raw, ("aggregation_strategy", "ignore_labels"))
    return {
        "aggregation_strategy": get_choice(raw, "aggregation_strategy", "none", STRATEGIES),
        "ignore_labels": get_str_list(raw, "ignore_labels", ["O"]),
    }


def _preprocess(model, items: list, params: dict) -> Prepared:
    prepared = encode_texts(model, items)
    prepared.extra = items
    return prepared


def _pre_entities(model, text: str, enc, scores: np.ndarray) -> list[dict]:
    word_aware, unk = model.word_aware, model.unk_token_id
    found = []
    for idx, (token, token_id, special, (start, end)) in enumerate(
            zip(enc.tokens, enc.ids, enc.special_tokens_mask, enc.offsets)):
        if special:
            continue
        ref = text[start:end]
        if word_aware:
            is_subword = len(token) != len(ref)
        else:  # no subword marker: a token glued to the previous character continues a word
            is_subword = start > 0 and " " not in text[start - 1:start + 1]
        if token_id == unk:
            token, is_subword = ref, False
        found.append({"word": token, "scores": scores[idx], "start": start, "end": end,
                      "index": idx, "is_subword": is_subword})
    return found


def _word(model, labels, group: list[dict], strategy: str) -> dict:
    if strategy == "first":
        scores = group[0]["scores"]
    elif strategy == "max":
        scores = max(group, key=lambda e: e["scores"].max())["scores"]
    else:
        scores = np.nanmean(np.stack([e["scores"] for e in group]), axis=0)
    best = int(scores.argmax())
    return {"entity": labels[best], "score": scores[best],
            "word": model.decode_tokens([e["word"] for e in group]),
            "start": group[0]["start"], "end": group[-1]["end"]}


def _tag(label: str) -> tuple[str, str]:
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def _group(model, entities: list[dict]) -> list[dict]:
    def close(run: list[dict]) -> dict:
        return {"entity_group": run[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([e["score"] for e in run])),
                "word": model.decode_tokens([e["word"] for e in run]),
                "start": run[0]["start"], "end": run[-1]["end"]}

    groups, run = [], []
    for entity in entities:
        if run:
            bi, tag = _tag(entity["entity"])
            if not (tag == _tag(run[-1]["entity"])[1] and bi != "B"):
                groups.append(close(run))
                run = []
        run.append(entity)
    if run:
        groups.append(close(run))
    return groups


def entities_for(model, text: str, enc, logits: np.ndarray, strategy: str, ignore: list[str]) -> list[dict]:
    labels = model.manifest.runtime.labels or tuple(f"LABEL_{i}" for i in range(logits.shape[-1]))
    pre = _pre_entities(model, text, enc, softmax(logits.astype(np.float32)))
    if strategy in ("none", "simple"):
        entities = []
        for p in pre:
            best = int(p["scores"].argmax())
            entities.append({"entity": labels[best], "score": p["scores"][best], "index": p["index"],
                             "word": p["word"], "start": p["start"], "end": p["end"]})
    else:
        entities, word = [], []
        for p in pre:
            if word and not p["is_subword"]:
                entities.append(_word(model, labels, word, strategy))
                word = []
            word.append(p)
        if word:
            entities.append(_word(model, labels, word, strategy))
    if strategy != "none":
        entities = _group(model, entities)
    key = "entity" if strategy == "none" else "entity_group"
    out = []
    for e in entities:
        if e[key] not in ignore:
            e["score"] = float(e["score"])
            out.append(e)
    return out


@register(TOKEN_CLASSIFICATION, inputs=TEXT, parse_params=_params, preprocess=_preprocess, synonyms=("ner",),
          params_schema={"aggregation_strategy": choice_schema(*STRATEGIES),
                         "ignore_labels": {"type": ["array", "null"], "items": {"type": "string"}}},
          sample={"inputs": "John lives in Paris", "parameters": {"aggregation_strategy": "simple"}})
def postprocess(model, prepared: Prepared, outputs: list[dict], params: dict) -> list:
    logits = [row for out in outputs for row in out[model.output_names[0]]]
    return [entities_for(model, text, enc, row[:len(enc.ids)], params["aggregation_strategy"],
                         params["ignore_labels"])
            for text, enc, row in zip(prepared.extra, prepared.encodings, logits)]


# -- parity: how export compares a candidate graph with the original (functions/tasks/parity.py) ---------

PARITY_METRICS = {"agreement": ("agreement", "mean")}
PARITY_GATED = ("agreement",)
PARITY_SCORE = "agreement"


def parity_samples(split: str = "eval") -> list:
    """The built-in texts plus entity-dense sentences; tags are the original model's own (no gold tags)."""
    from .parity import entity_samples, text_samples

    return text_samples(split) + entity_samples(split)


def parity_metrics(runtime, samples: list, encodings: list, reference: list, candidate: list) -> dict:
    """Per sample: the share of its (non-special) tokens tagged as the original tags them; ``weight``
    is the token count, so the mean is over tokens."""
    agree, weight = [], []
    for enc, ref, cand in zip(encodings, reference, candidate):
        keep = np.asarray(enc.special_tokens_mask) == 0
        total = int(keep.sum())
        same = int((ref[0][0].argmax(-1)[keep] == cand[0][0].argmax(-1)[keep]).sum())
        agree.append(same / total if total else 1.0)
        weight.append(float(max(total, 1)))
    return {"agreement": np.asarray(agree), "weight": np.asarray(weight)}

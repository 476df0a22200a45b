"""Readable text for a model's answer, per task, for `modelfn call` (``--json`` prints the raw answer).

    feature-extraction     dimension and norm of each vector, and its first components
    text-classification    labels with scores, best first
    token-classification   entities with their words, scores and character spans
    question-answering     answers with scores and character spans
    anything else          the answer as indented JSON
"""

from __future__ import annotations

import json
import math
from typing import Any

from functions.tasknames import FEATURE_EXTRACTION, QUESTION_ANSWERING, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION

from .registry_cmd import _table  # the CLI's one table layout


def render(task: str, inputs: Any, answer: Any) -> str:
    """The answer of ``task`` to ``inputs`` (one input or a list of them) as lines of text."""
    single = not isinstance(inputs, list)
    items = [inputs] if single else inputs
    renderer = _RENDERERS.get(task)
    if renderer is None:
        return json.dumps(answer, indent=2, ensure_ascii=False)
    results = _per_input(task, answer, single, len(items))
    if results is None:  # not the shape this task answers in: show it as it came
        return json.dumps(answer, indent=2, ensure_ascii=False)
    if single:
        return renderer(results[0])
    blocks = [f"[{i}] {_snippet(item)}\n" + _indent(renderer(result)) for i, (item, result) in
              enumerate(zip(items, results))]
    return "\n".join(blocks)


def _per_input(task: str, answer: Any, single: bool, count: int) -> list | None:
    if single and task == FEATURE_EXTRACTION:
        # embeddings answer one vector per input even for a single text
        return answer if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], list) else None
    if single:
        # text-classification answers a single text with a list, as transformers' pipeline does
        return [answer]
    if not isinstance(answer, list) or len(answer) != count:
        return None
    return answer


def _vector(result: Any) -> str:
    if isinstance(result, list) and result and all(isinstance(row, list) for row in result):
        # pooling "none": one vector per token
        return f"{len(result)} token vectors of dimension {len(result[0])}"
    if not isinstance(result, list) or not all(isinstance(x, (int, float)) for x in result):
        return json.dumps(result)
    norm = math.sqrt(sum(x * x for x in result))
    head = ", ".join(f"{x:.4f}" for x in result[:4])
    more = ", ..." if len(result) > 4 else ""
    return f"dimension {len(result)}, norm {norm:.4f}: [{head}{more}]"


def _labels(result: Any) -> str:
    rows = result if isinstance(result, list) else [result]
    rows = [r for r in rows if isinstance(r, dict)]
    width = max((len(str(r.get("label", ""))) for r in rows), default=5)
    return "\n".join(f"{str(r.get('label', '?')).ljust(width)}  {_score(r)}" for r in rows) or "(no labels)"


def _entities(result: Any) -> str:
    rows = [r for r in (result if isinstance(result, list) else [result]) if isinstance(r, dict)]
    if not rows:
        return "(no entities)"
    table = [[str(r.get("entity_group") or r.get("entity") or "?"), str(r.get("word", "")), _score(r),
              f"{r.get('start')}-{r.get('end')}"] for r in rows]
    return _table(table, ["ENTITY", "WORD", "SCORE", "SPAN"])


def _answers(result: Any) -> str:
    rows = [r for r in (result if isinstance(result, list) else [result]) if isinstance(r, dict)]
    return "\n".join(f"{r.get('answer', '')!r}  score {_score(r)}, span {r.get('start')}-{r.get('end')}"
                     for r in rows) or "(no answer)"


def _score(row: dict) -> str:
    score = row.get("score")
    return f"{score:.4f}" if isinstance(score, (int, float)) else "-"


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _snippet(item: Any, limit: int = 60) -> str:
    text = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_RENDERERS = {
    FEATURE_EXTRACTION: _vector,
    TEXT_CLASSIFICATION: _labels,
    TOKEN_CLASSIFICATION: _entities,
    QUESTION_ANSWERING: _answers,
}

__all__ = ["render"]

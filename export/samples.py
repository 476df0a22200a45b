"""The texts the parity gate runs: a built-in set that provokes the usual quantization failures, plus the user's own.

The built-in set is chosen for coverage, not realism: ordinary sentences, one long enough to be
truncated, non-ASCII scripts, a near-empty input and a long repetitive one (degenerate attention
patterns are where int8 drifts most).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from functions.tasknames import QUESTION_ANSWERING, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION

from .errors import ExportError


@dataclass(frozen=True)
class Sample:
    text: str
    pair: str | None = None  # QA: the context that goes with ``text`` (the question)
    label: str | None = None  # text-classification: expected label, for accuracy


_LONG = ("Serverless functions start cold, load their model once and then answer many requests. " * 40).strip()

BUILTIN_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "I loved this movie, the acting was wonderful and the story kept me hooked.",
    "This was a terrible experience and I will never go back.",
    "How do I reset my password if I no longer have access to my email?",
    "Paris is the capital of France and its largest city.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Café, naïve, résumé — accents and em dashes “quoted”.",
    "ok",
    ".",
    "a",
    "the the the the the the the the the the the the the the the the the the the the the the the the",
    "data " * 120,
    _LONG,
)

BUILTIN_QA: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris is the capital of France and its largest city."),
    ("Who wrote the report?", "The report was written by Mary Smith in London last year."),
    ("When does the function start?", "A serverless function starts cold when the first request arrives."),
    ("Where is the river?", "The river runs through Berlin, the capital city of Germany."),
    ("What does the model serve?", _LONG),
    ("Wo liegt München?", "München liegt in Bayern, im Süden von Deutschland."),
    ("?", "ok"),
    ("What is repeated?", "data " * 120),
    ("Which fruit is red?", "An apple is red and a banana is yellow."),
    ("How fast is it?", "It answers in about two milliseconds at batch size one."),
)


def builtin_samples(task: str) -> list[Sample]:
    if task == QUESTION_ANSWERING:
        return [Sample(text=q, pair=c) for q, c in BUILTIN_QA]
    return [Sample(text=t) for t in BUILTIN_TEXTS]


def load_eval_file(path: str | Path, task: str) -> list[Sample]:
    """JSONL: {"text": ..., "label": ...} per line, or {"question": ..., "context": ...} for question-answering."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ExportError(f"eval file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"eval file {path} cannot be read: {exc}") from None
    samples: list[Sample] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportError(f"{path}:{number}: not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise ExportError(f"{path}:{number}: each line must be a JSON object")
        if task == QUESTION_ANSWERING:
            if not isinstance(row.get("question"), str) or not isinstance(row.get("context"), str):
                raise ExportError(f"{path}:{number}: question-answering needs string fields 'question' and 'context'")
            samples.append(Sample(text=row["question"], pair=row["context"]))
            continue
        if not isinstance(row.get("text"), str):
            raise ExportError(f"{path}:{number}: needs a string field 'text'")
        label = row.get("label")
        if label is not None and task != TEXT_CLASSIFICATION:
            label = None  # labels only score classification; other tasks compare against the original
        samples.append(Sample(text=row["text"], label=None if label is None else str(label)))
    if not samples:
        raise ExportError(f"eval file {path} holds no samples")
    return samples


def gather_samples(task: str, eval_file: str | Path | None = None) -> list[Sample]:
    samples = builtin_samples(task)
    if eval_file is not None:
        samples += load_eval_file(eval_file, task)
    return samples


__all__ = ["BUILTIN_QA", "BUILTIN_TEXTS", "Sample", "builtin_samples", "gather_samples", "load_eval_file"]

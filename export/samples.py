"""The inputs the parity gate runs: the task's built-in set (declared by its module in functions/tasks/), plus the user's own.

The built-in sets are generated in code (functions/tasks/parity.py), deterministic, a few hundred
inputs spanning length, scripts, casing, digits, punctuation, code, repetition and near-empty
texts, each tagged with its class. Static quantization calibrates on the ``calibration`` split,
which shares no input with the ``eval`` split the gate scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from functions.tasknames import QUESTION_ANSWERING, TEXT_CLASSIFICATION
from functions.tasks import parity_module
from functions.tasks.parity import CALIBRATION, EVAL, ParitySample

from .errors import ExportError

Sample = ParitySample
USER = "user"  # the class of every --eval-file input


def builtin_samples(task: str, split: str = EVAL) -> list[Sample]:
    """The task's built-in parity set (``split``: eval or calibration), as its task module declares it."""
    return list(parity_module(task).parity_samples(split))


def calibration_samples(task: str) -> list[Sample]:
    return builtin_samples(task, CALIBRATION)


BUILTIN_TEXTS: tuple[str, ...] = tuple(s.text for s in builtin_samples("feature-extraction"))


def read_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, value) for every non-blank line of a JSONL eval file; ExportError naming the file
    (and the line) when it cannot be read or a line is not JSON. Every task's --eval-file reads through it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ExportError(f"eval file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"eval file {path} cannot be read: {exc}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ExportError(f"{path}:{number}: not valid JSON: {exc.msg}") from None
    return rows


def load_eval_file(path: str | Path, task: str) -> list[Sample]:
    """JSONL: {"text": ..., "label": ...} per line, or {"question": ..., "context": ...} for question-answering."""
    path = Path(path)
    samples: list[Sample] = []
    for number, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise ExportError(f"{path}:{number}: each line must be a JSON object")
        if task == QUESTION_ANSWERING:
            if not isinstance(row.get("question"), str) or not isinstance(row.get("context"), str):
                raise ExportError(f"{path}:{number}: question-answering needs string fields 'question' and 'context'")
            samples.append(Sample(text=row["question"], pair=row["context"], kind=USER))
            continue
        if not isinstance(row.get("text"), str):
            raise ExportError(f"{path}:{number}: needs a string field 'text'")
        label = row.get("label")
        if label is not None and task != TEXT_CLASSIFICATION:
            label = None  # labels only score classification; other tasks compare against the original
        samples.append(Sample(text=row["text"], label=None if label is None else str(label), kind=USER))
    if not samples:
        raise ExportError(f"eval file {path} holds no samples")
    return samples


def gather_samples(task: str, eval_file: str | Path | None = None) -> list[Sample]:
    samples = builtin_samples(task)
    if eval_file is not None:
        samples += load_eval_file(eval_file, task)
    return samples


__all__ = ["BUILTIN_TEXTS", "USER", "Sample", "builtin_samples", "calibration_samples", "gather_samples", "load_eval_file"]

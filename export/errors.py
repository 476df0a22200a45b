"""Errors raised at export time, each one line a user can act on.

    ModelfnError                      (functions.errors)
    └── ExportError                   export could not produce a bundle (exit 2)
        ├── SourceError               the source directory is missing or holds no usable model
        ├── TaskMismatchError         the model's architecture cannot do the requested task
        ├── OutputError               the output directory exists or cannot be written
        ├── ConversionError           Optimum / ONNX Runtime failed on a model they should handle
        └── ParityGateError           no candidate answers like the original (exit 3), carries the table
"""

from __future__ import annotations

from functions.errors import ModelfnError


class ExportError(ModelfnError):
    """Export could not produce a bundle; nothing was written."""


class SourceError(ExportError):
    """The source is not a usable Hugging Face model directory."""


class TaskMismatchError(ExportError):
    """The checkpoint's architecture has no head for the requested task."""


class OutputError(ExportError):
    """The bundle cannot be written where asked."""


class ConversionError(ExportError):
    """The ONNX export, optimization or quantization step failed."""


class ParityGateError(ExportError):
    """Every candidate drifted past the thresholds. ``table`` is the printed candidate table."""

    exit_code = 3

    def __init__(self, message: str, *, table: str = "", candidates: tuple = (), hint: str | None = None):
        super().__init__(message, hint=hint)
        self.table = table
        self.candidates = candidates


__all__ = ["ConversionError", "ExportError", "OutputError", "ParityGateError", "SourceError", "TaskMismatchError"]

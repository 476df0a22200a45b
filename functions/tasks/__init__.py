"""Task registry: canonical task name -> what a request for it expects and how it is processed.

A task is three functions and an input kind:

    parse_params(raw: dict)                       -> validated parameters (BadRequest on bad ones)
    preprocess(model, items, params)              -> Prepared (encodings and ONNX feeds)
    postprocess(model, prepared, outputs, params) -> one result per item, in transformers' shapes

The HTTP layer (functions/app.py) only decodes the request, looks the task up here, runs the
feeds and encodes the answer. Register a task with :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UnknownTaskError
from ..tasknames import SUPPORTED_TASKS, resolve_task

TEXT = "text"  # a string, or a list of strings
QUESTION_CONTEXT = "question-context"  # {"question", "context"}, or a list of them
TEXT_OR_PAIR = "text-or-pair"  # a string, {"text", "text_pair"}, or a list of either


@dataclass
class Prepared:
    """A request's batch, ready for the session: one feed per chunk of at most max_batch rows."""

    feeds: list[dict]
    encodings: list = field(default_factory=list)
    tokens: int = 0
    extra: Any = None


@dataclass(frozen=True)
class Task:
    name: str
    inputs: str
    parse_params: Callable[[dict], dict]
    preprocess: Callable[..., Prepared]
    postprocess: Callable[..., list]
    # Whether a single (non-list) input is answered with a single result; text-classification
    # keeps transformers' quirk of answering a single text with a list.
    shape: Callable[[list, bool, dict], Any] | None = None


TASKS: dict[str, Task] = {}


def chunked_feeds(model, encodings: list) -> list[dict]:
    """Feeds of at most ``max_batch`` rows each, every chunk padded to its own longest row."""
    size = model.limits.max_batch
    return [model.feed(encodings[i:i + size]) for i in range(0, len(encodings), size)]


def encode_texts(model, items: list) -> Prepared:
    """The common preprocess: tokenize strings (or text pairs) into one padded batch."""
    encodings = model.encode(items)
    return Prepared(feeds=chunked_feeds(model, encodings), encodings=encodings,
                    tokens=sum(len(e.ids) for e in encodings))


def register(name: str, *, inputs: str, parse_params: Callable[[dict], dict],
             preprocess: Callable[..., Prepared], shape: Callable[[list, bool, dict], Any] | None = None):
    """Decorator for a task's postprocess function; the other parts are given as arguments."""
    canonical = resolve_task(name)

    def decorator(postprocess: Callable[..., list]) -> Callable[..., list]:
        TASKS[canonical] = Task(canonical, inputs, parse_params, preprocess, postprocess, shape)
        return postprocess

    return decorator


def get_task(name: str) -> Task:
    """The task for a (possibly synonym) name; UnknownTaskError lists the served ones."""
    canonical = resolve_task(name)
    _load_all()
    try:
        return TASKS[canonical]
    except KeyError:
        raise UnknownTaskError(f"task {name!r} has no runtime implementation",
                               hint="served tasks: " + ", ".join(sorted(TASKS))) from None


def parity_module(name: str):
    """The task's module: its PARITY_* declarations, parity_samples() and parity_metrics() (used by export)."""
    import sys

    return sys.modules[get_task(name).postprocess.__module__]


def _load_all() -> None:
    # Import for the registration side effect, once; each module is small and numpy-only.
    if len(TASKS) < len(SUPPORTED_TASKS):
        from . import classification, embeddings, qa, tokens  # noqa: F401


__all__ = ["TASKS", "Task", "Prepared", "register", "get_task", "parity_module", "chunked_feeds", "encode_texts", "TEXT", "QUESTION_CONTEXT", "TEXT_OR_PAIR"]

"""Task registry: what a task is, in one place per task.

Each module of this package registers one task with :func:`register`, declaring

    name, synonyms                                 what models.yaml and the CLI accept for it
    inputs                                         the kind of ``inputs`` (functions.inputs.INPUT_KINDS)
    parse_params(raw: dict)                        -> validated parameters (BadRequest on bad ones)
    params_schema                                  the OpenAPI properties of ``parameters``
    preprocess(model, items, params)               -> Prepared (encodings and ONNX feeds)
    postprocess(model, prepared, outputs, params)  -> one result per item, in transformers' shapes
    openai_routes(runtime)                         the OpenAI-shaped routes a bundle of it serves
    sample                                         a request body that shows the task (events, docs)
    embedder                                       how /v1/embeddings embeds its ``input`` (an Embedder)

Everything else asks this registry: the service and both adapters (functions/service.py), the
OpenAPI schema (functions/schemas.py), models.yaml validation, the template's routes, the event
fixtures. Adding a task is adding one module here and naming it in ``_MODULES``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UnknownTaskError
from ..inputs import AUDIO, IMAGE, QUESTION_CONTEXT, TEXT, TEXT_OR_PAIR

# The modules that register tasks, imported on first use. Each is small and imports only what the
# image ships; a module whose engine is heavy imports it lazily.
_MODULES = ("embeddings", "classification", "tokens", "qa", "generation", "image_classification",
            "zero_shot_image", "image_features", "speech_recognition")

# OpenAI-shaped routes a task may serve besides POST /models/{name}/predict.
EMBEDDINGS_ROUTE = "embeddings"  # POST /v1/embeddings
CHAT_ROUTE = "chat"  # POST /v1/chat/completions
COMPLETIONS_ROUTE = "completions"  # POST /v1/completions
TRANSCRIPTIONS_ROUTE = "transcriptions"  # POST /v1/audio/transcriptions (multipart)
# GET /models/{name}/v1/models: no task lists it; every model that serves any route above has it
# (functions.routes.model_routes), so an OpenAI client pointed at one model can list it.
MODELS_ROUTE = "models"


@dataclass
class Prepared:
    """A request's batch, ready for the session: one feed per chunk of at most max_batch rows."""

    feeds: list[dict]
    encodings: list = field(default_factory=list)
    tokens: int = 0
    extra: Any = None


def _no_openai_routes(runtime) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Embedder:
    """How POST /v1/embeddings embeds a request's ``input`` for a task that serves it (functions/openai.py
    adds the OpenAI fields around it): text encoders tokenize and pool, CLIP-style bundles embed texts
    and images with their two towers.

    ``parse(model, raw_input) -> items`` validates the ``input`` (BadRequest on bad ones);
    ``prepare(model, items) -> Prepared`` tokenizes and decodes them into feeds;
    ``vectors(model, prepared, outputs) -> (items, dim) float32`` answers one vector per item, in order;
    ``width(model) -> int | None`` is the vector width when the graph declares it (checked before any run).
    """

    parse: Callable[[Any, Any], list]
    prepare: Callable[[Any, list], "Prepared"]
    vectors: Callable[[Any, "Prepared", list[dict]], Any]
    width: Callable[[Any], int | None]
    inputs: str = TEXT  # the kind of ``input`` parse takes (functions.inputs.INPUT_KINDS; the OpenAPI schema)


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
    synonyms: tuple[str, ...] = ()
    params_schema: dict = field(default_factory=dict)
    # Which OpenAI routes a bundle of this task serves, given its manifest's runtime config (or
    # None when only models.yaml is known, e.g. for the committed template).
    openai_routes: Callable[[Any], tuple[str, ...]] = _no_openai_routes
    sample: dict = field(default_factory=dict)
    # Whether answers are produced piece by piece (SSE with ``stream: true``), so a deployment should
    # stream them (Lambda response streaming) rather than buffer.
    streams: bool = False
    embedder: Embedder | None = None


TASKS: dict[str, Task] = {}
_SYNONYMS: dict[str, str] = {}
_loaded = False


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
             preprocess: Callable[..., Prepared], shape: Callable[[list, bool, dict], Any] | None = None,
             synonyms: tuple[str, ...] = (), params_schema: dict | None = None,
             openai_routes: Callable[[Any], tuple[str, ...]] = _no_openai_routes, sample: dict | None = None,
             streams: bool = False, embedder: Embedder | None = None):
    """Decorator for a task's postprocess function; the other parts are given as arguments."""

    def decorator(postprocess: Callable[..., list]) -> Callable[..., list]:
        TASKS[name] = Task(name, inputs, parse_params, preprocess, postprocess, shape, tuple(synonyms),
                           dict(params_schema or {}), openai_routes, dict(sample or {}), streams, embedder)
        for alias in synonyms:
            _SYNONYMS[alias] = name
        return postprocess

    return decorator


def _load_all() -> None:
    # Import for the registration side effect, once.
    global _loaded
    if not _loaded:
        for module in _MODULES:
            importlib.import_module(f"{__name__}.{module}")
        _loaded = True


def task_names() -> tuple[str, ...]:
    """The canonical names of every task, in registration order."""
    _load_all()
    return tuple(TASKS)


def resolve_task(name: str) -> str:
    """The canonical task name for ``name`` (a name or a synonym, any case, ``_`` for ``-``);
    UnknownTaskError lists the valid ones."""
    _load_all()
    key = str(name).strip().lower().replace("_", "-")
    if key in TASKS:
        return key
    if key in _SYNONYMS:
        return _SYNONYMS[key]
    raise UnknownTaskError(f"unknown task {name!r}", hint="supported tasks: " + ", ".join(TASKS))


def get_task(name: str) -> Task:
    """The task for a (possibly synonym) name; UnknownTaskError lists the served ones."""
    return TASKS[resolve_task(name)]


def parity_module(name: str):
    """The task's module: its PARITY_* declarations, parity_samples() and parity_metrics() (used by export)."""
    import sys

    return sys.modules[get_task(name).postprocess.__module__]


__all__ = ["TASKS", "Task", "Prepared", "Embedder", "register", "get_task", "resolve_task", "task_names",
           "parity_module", "chunked_feeds", "encode_texts", "EMBEDDINGS_ROUTE", "CHAT_ROUTE", "COMPLETIONS_ROUTE",
           "TRANSCRIPTIONS_ROUTE", "MODELS_ROUTE", "TEXT", "QUESTION_CONTEXT", "TEXT_OR_PAIR", "IMAGE", "AUDIO"]

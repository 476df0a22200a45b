"""The HTTP API's routes, in one table: the Lambda handler, the ASGI app (and with it the GPU
server), the template, the event fixtures and the client all read it.

``operation`` names the ModelService method that answers: ``service.<operation>(name?, content_type?,
body?)``, the model's name for ``model_path`` routes, content type and body for POST routes.
``openai`` names the task registry's OpenAI route (functions.tasks: a task says which of them a
bundle of it serves), None for the routes every model answers. ``openapi`` documents the route in
the OpenAPI schema (functions.schemas; a function of the task where the body depends on it).
``batched``: the GPU server runs it through its batcher (``service.begin_<operation>``).
``invocation_key``: a SageMaker /invocations body with this key stands for this route.
A new route is one entry here and its ModelService method.

Every stack-wide OpenAI route also has a model-scoped twin under the model's own path
(``/v1/embeddings`` -> ``/models/{name}/v1/embeddings``, ``scoped``), derived here, never listed by
hand: a stack answers one model per stack-wide route, so ``OpenAI(base_url=openai_base(name))``
is how a client reaches any one model of a multi-model stack. A twin runs the same operation after
checking the path's name (``takes_name`` is False: the operation never sees it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import schemas
from .tasks import CHAT_ROUTE, COMPLETIONS_ROUTE, EMBEDDINGS_ROUTE, MODELS_ROUTE, TRANSCRIPTIONS_ROUTE, Task


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {name} for the model's name
    operation: str
    summary: str
    openai: str | None = None
    # Stack-wide routes of a multi-model API go to one model: the first that serves them.
    stack_wide: bool = False
    openapi: dict | Callable[[Task], dict] = field(default_factory=dict, compare=False, hash=False)
    batched: bool = False
    invocation_key: str | None = None
    # The model-scoped twin of a stack-wide OpenAI route (scoped_twin): under /models/{name}/, same operation.
    scoped: bool = False
    # The twin's ``openai``, where it differs: the stack-wide model list stays with the first text-generation
    # model (whose chat it names), while every model with an OpenAI API lists itself under its own path.
    twin_openai: str | None = None

    @property
    def model_path(self) -> bool:
        return "{name}" in self.path

    @property
    def takes_name(self) -> bool:
        """Whether the operation takes the path's model name as its first argument; a scoped twin's
        adapter checks the name itself and calls the stack-wide operation without it."""
        return self.model_path and not self.scoped

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(re.escape(self.path).replace(re.escape("{name}"), "(?P<name>[^/]+)"))

    def for_model(self, name: str) -> str:
        return self.path.replace("{name}", name)

    def openapi_extra(self, task: Task, width: int | None = None) -> dict:
        """What the OpenAPI schema says of this route for a model of ``task`` (body, error answers);
        ``width``, the served model's vector width, bounds /v1/embeddings' ``dimensions``."""
        if not callable(self.openapi):
            extra = self.openapi
        else:
            extra = self.openapi(task, width) if self.openapi is schemas.embeddings else self.openapi(task)
        return schemas.scoped(extra) if self.scoped else extra


_STACK_ROUTES: tuple[Route, ...] = (
    Route("POST", "/models/{name}/predict", "predict", "Run the model (Hugging Face inference request shape)",
          openapi=schemas.predict, batched=True, invocation_key="inputs"),
    Route("POST", "/v1/embeddings", "embeddings", "OpenAI-compatible embeddings",
          openai=EMBEDDINGS_ROUTE, stack_wide=True, openapi=schemas.embeddings, batched=True, invocation_key="input"),
    Route("POST", "/v1/chat/completions", "chat_completions",
          "OpenAI-compatible chat completions (text-generation models)", openai=CHAT_ROUTE, stack_wide=True,
          openapi=schemas.CHAT_COMPLETIONS, invocation_key="messages"),
    Route("POST", "/v1/completions", "completions", "OpenAI-compatible completions (text-generation models)",
          openai=COMPLETIONS_ROUTE, stack_wide=True, openapi=schemas.COMPLETIONS, invocation_key="prompt"),
    Route("POST", "/v1/audio/transcriptions", "transcriptions",
          "OpenAI-compatible audio transcriptions (speech-recognition models; multipart/form-data)",
          openai=TRANSCRIPTIONS_ROUTE, stack_wide=True, openapi=schemas.TRANSCRIPTIONS),
    Route("GET", "/v1/models", "models", "OpenAI-compatible model list", openai=COMPLETIONS_ROUTE,
          stack_wide=True, openapi=schemas.MODELS, twin_openai=MODELS_ROUTE),
    Route("GET", "/models/{name}", "info", "What this function serves", openapi=schemas.INFO),
    Route("GET", "/health", "health", "Liveness", stack_wide=True, openapi=schemas.HEALTH),
)


OPENAI_PREFIX = "/models/{name}"


def scoped_twin(route: Route) -> Route:
    """The model-scoped twin of a stack-wide OpenAI route: its path under ``/models/{name}``, the
    same operation, body, schema and batching; no /invocations body shape of its own (the stack-wide
    route has it) and never stack-wide."""
    return replace(route, path=OPENAI_PREFIX + route.path, summary=f"{route.summary}, this model only",
                   stack_wide=False, invocation_key=None, scoped=True, openai=route.twin_openai or route.openai,
                   twin_openai=None)


ROUTES: tuple[Route, ...] = _STACK_ROUTES + tuple(
    scoped_twin(r) for r in _STACK_ROUTES if r.stack_wide and r.openai is not None)


def openai_base(name: str) -> str:
    """The path a model's own OpenAI API lives under: ``OpenAI(base_url=API_URL + openai_base(name))``."""
    return OPENAI_PREFIX.replace("{name}", name) + "/v1"


def find_route(method: str, path: str) -> Route | None:
    """The table's route for a concrete method and path (a model's name filled in), or None."""
    return next((r for r in ROUTES if r.method == method.upper() and r.pattern.fullmatch(path)), None)


def model_routes(name: str, openai_routes: tuple[str, ...]) -> list[tuple[Route, str]]:
    """(route, concrete path) for every route a model with these OpenAI routes answers (a model with
    any of them also lists itself: MODELS_ROUTE)."""
    served = (*openai_routes, MODELS_ROUTE) if openai_routes else ()
    return [(r, r.for_model(name)) for r in ROUTES if r.openai is None or r.openai in served]


__all__ = ["Route", "ROUTES", "find_route", "model_routes", "openai_base", "scoped_twin"]

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
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from . import schemas
from .tasks import CHAT_ROUTE, COMPLETIONS_ROUTE, EMBEDDINGS_ROUTE, TRANSCRIPTIONS_ROUTE, Task


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

    @property
    def model_path(self) -> bool:
        return "{name}" in self.path

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(re.escape(self.path).replace(re.escape("{name}"), "(?P<name>[^/]+)"))

    def for_model(self, name: str) -> str:
        return self.path.replace("{name}", name)

    def openapi_extra(self, task: Task, width: int | None = None) -> dict:
        """What the OpenAPI schema says of this route for a model of ``task`` (body, error answers);
        ``width``, the served model's vector width, bounds /v1/embeddings' ``dimensions``."""
        if not callable(self.openapi):
            return self.openapi
        return self.openapi(task, width) if self.openapi is schemas.embeddings else self.openapi(task)


ROUTES: tuple[Route, ...] = (
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
          stack_wide=True, openapi=schemas.MODELS),
    Route("GET", "/models/{name}", "info", "What this function serves", openapi=schemas.INFO),
    Route("GET", "/health", "health", "Liveness", stack_wide=True, openapi=schemas.HEALTH),
)


def model_routes(name: str, openai_routes: tuple[str, ...]) -> list[tuple[Route, str]]:
    """(route, concrete path) for every route a model with these OpenAI routes answers."""
    return [(r, r.for_model(name)) for r in ROUTES if r.openai is None or r.openai in openai_routes]


__all__ = ["Route", "ROUTES", "model_routes"]

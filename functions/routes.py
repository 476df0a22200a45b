"""The HTTP API's routes, in one table: the Lambda handler, the ASGI app, the template, the event
fixtures and the client all read it.

``operation`` names the ModelService method that answers; ``openai`` names the task registry's
OpenAI route (functions.tasks: a task says which of them a bundle of it serves), None for the routes
every model answers; ``model_path`` routes carry the model's name in the path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .tasks import CHAT_ROUTE, COMPLETIONS_ROUTE, EMBEDDINGS_ROUTE, TRANSCRIPTIONS_ROUTE


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {name} for the model's name
    operation: str
    summary: str
    openai: str | None = None
    # Stack-wide routes of a multi-model API go to one model: the first that serves them.
    stack_wide: bool = False

    @property
    def model_path(self) -> bool:
        return "{name}" in self.path

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(re.escape(self.path).replace(re.escape("{name}"), "(?P<name>[^/]+)"))

    def for_model(self, name: str) -> str:
        return self.path.replace("{name}", name)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/models/{name}/predict", "predict", "Run the model (Hugging Face inference request shape)"),
    Route("POST", "/v1/embeddings", "embeddings", "OpenAI-compatible embeddings",
          openai=EMBEDDINGS_ROUTE, stack_wide=True),
    Route("POST", "/v1/chat/completions", "chat_completions",
          "OpenAI-compatible chat completions (text-generation models)", openai=CHAT_ROUTE, stack_wide=True),
    Route("POST", "/v1/completions", "completions", "OpenAI-compatible completions (text-generation models)",
          openai=COMPLETIONS_ROUTE, stack_wide=True),
    Route("POST", "/v1/audio/transcriptions", "transcriptions",
          "OpenAI-compatible audio transcriptions (speech-recognition models; multipart/form-data)",
          openai=TRANSCRIPTIONS_ROUTE, stack_wide=True),
    Route("GET", "/v1/models", "models", "OpenAI-compatible model list", openai=COMPLETIONS_ROUTE,
          stack_wide=True),
    Route("GET", "/models/{name}", "info", "What this function serves"),
    Route("GET", "/health", "health", "Liveness", stack_wide=True),
)


def model_routes(name: str, openai_routes: tuple[str, ...]) -> list[tuple[Route, str]]:
    """(route, concrete path) for every route a model with these OpenAI routes answers."""
    return [(r, r.for_model(name)) for r in ROUTES if r.openai is None or r.openai in openai_routes]


__all__ = ["Route", "ROUTES", "model_routes"]

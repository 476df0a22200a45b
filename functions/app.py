"""The HTTP API of one model as a FastAPI app: a thin ASGI adapter over functions.service.

    POST /models/{name}/predict   Hugging Face inference shape {"inputs": ..., "parameters": {...}}
    POST /v1/embeddings           OpenAI-compatible embeddings (embedding models only)
    GET  /models/{name}           what is served: version, task, labels, quantization, limits, parity
    GET  /health                  liveness
    GET  /v1/models               OpenAI's model list (the one model served)
    POST /v1/chat/completions     OpenAI chat completions, SSE with stream: true (text-generation models)
    POST /v1/completions          OpenAI completions, SSE with stream: true (text-generation models)
    GET  /openapi.json, /docs     the schema

For local serving (``uvicorn --factory functions.app:create_app``), the OpenAPI schema and the GPU
endpoint. Lambda does not run this app: functions/handler.py routes API Gateway events to the same
ModelService directly and builds this app only to answer /openapi.json. Errors render through
functions.http.render_error in both. Compute runs inline on the event loop, as a Lambda
environment serves one request at a time and a thread hop would cost more than it buys; the GPU
server passes a functions.batching.Batcher, which runs the session on a thread of its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse

from . import observability, schemas
from .errors import BadRequest, RequestError
from .http import EVENT_STREAM_MEDIA_TYPE, JSON_MEDIA_TYPE, dumps, error_headers, render_error, status_error
from .inputs import check_body_size
from .service import Answer, ModelService

if TYPE_CHECKING:
    from .batching import Batcher


def create_app(bundle_dir: str | Path | None = None, *, name: str | None = None, version: str | None = None,
               max_batch: int | None = None, max_tokens: int | None = None,
               truncate: bool | None = None) -> FastAPI:
    """Load the bundle (see ModelService.load for how each setting resolves) and return the app serving it."""
    service = ModelService.load(bundle_dir, name=name, version=version, max_batch=max_batch,
                                max_tokens=max_tokens, truncate=truncate)
    observability.set_model(service.name, service.version)
    return build_app(service)


def build_app(service: ModelService, *, batcher: "Batcher | None" = None) -> FastAPI:
    """The FastAPI app over an already loaded service.

    With a ``batcher`` (the GPU server, functions/adapters/sagemaker.py) predict and embeddings run
    through its token-budget batches, off the event loop, and /health shows its counters; without
    one they run inline, as on Lambda.
    """
    served, task = service.name, service.task
    # No slash redirects: the Lambda adapter answers 404 for "/health/", and so must this app.
    app = FastAPI(title=f"modelfn: {served}", version=service.version or "unversioned",
                  description=f"{task.name} model {served!r} served by modelfn.", redoc_url=None,
                  redirect_slashes=False)
    app.state.service = service
    app.state.model = service.model
    for kind in (RequestError, HTTPException, RequestValidationError):
        app.add_exception_handler(kind, _render)
    app.add_middleware(ErrorMiddleware, log_inputs=service.log_inputs)

    @app.post("/models/{name}/predict", summary="Run the model (Hugging Face inference request shape)",
              openapi_extra=schemas.predict(task))
    async def predict(name: str, request: Request):
        content_type = request.headers.get("content-type")
        if batcher is not None:
            return _respond(request, await batcher.serve(
                request, lambda body: service.begin_predict(name, content_type, body)))
        return _respond(request, service.predict(name, content_type, await read_body(request, service.max_body_bytes)))

    @app.post("/v1/embeddings", summary="OpenAI-compatible embeddings", openapi_extra=schemas.embeddings(task))
    async def create_embeddings(request: Request):
        content_type = request.headers.get("content-type")
        if batcher is not None:
            return _respond(request, await batcher.serve(
                request, lambda body: service.begin_embeddings(content_type, body)))
        return _respond(request, service.embeddings(content_type, await read_body(request, service.max_body_bytes)))

    @app.post("/v1/chat/completions", summary="OpenAI-compatible chat completions (text-generation models)",
              openapi_extra=schemas.CHAT_COMPLETIONS)
    async def chat_completions(request: Request):
        body = await read_body(request, service.max_body_bytes)
        return _respond(request, service.chat_completions(request.headers.get("content-type"), body))

    @app.post("/v1/completions", summary="OpenAI-compatible completions (text-generation models)",
              openapi_extra=schemas.COMPLETIONS)
    async def completions(request: Request):
        body = await read_body(request, service.max_body_bytes)
        return _respond(request, service.completions(request.headers.get("content-type"), body))

    @app.get("/v1/models", summary="OpenAI-compatible model list", openapi_extra=schemas.MODELS)
    async def list_models(request: Request):
        return _respond(request, service.models())

    @app.get("/models/{name}", summary="What this function serves", openapi_extra=schemas.INFO)
    async def model_info(name: str, request: Request):
        return _respond(request, service.info(name))

    @app.get("/health", summary="Liveness", openapi_extra=schemas.HEALTH)
    async def health(request: Request):
        answer = service.health()
        if batcher is not None:
            answer = answer._replace(payload={**answer.payload, "batching": batcher.snapshot()})
        return _respond(request, answer)

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes: by its Content-Length before reading
    anything, else while streaming it, so an oversized body is never held in memory whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isascii() and declared.strip().isdigit():
        check_body_size(int(declared.strip()[:32]), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        check_body_size(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _respond(request: Request, answer: Answer) -> Response:
    if answer.batch is not None:
        state = request.scope.setdefault("modelfn", {})
        state["batch"], state["tokens"] = answer.batch, answer.tokens
    if answer.stream is not None:
        # Starlette runs a plain iterator in its thread pool, so decoding does not block the loop.
        return StreamingResponse(answer.stream, status_code=answer.status, media_type=EVENT_STREAM_MEDIA_TYPE)
    return Response(dumps(answer.payload), status_code=answer.status, media_type=JSON_MEDIA_TYPE)


async def _render(request: Request, exc: Exception) -> Response:
    headers = None
    if isinstance(exc, HTTPException):
        headers = dict(exc.headers) if exc.headers else None
        exc = status_error(exc.status_code, str(exc.detail))
    elif isinstance(exc, RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        exc = BadRequest(f"{where}: {first.get('msg', 'invalid value')}")
    status, payload = render_error(exc)
    request.scope.setdefault("modelfn", {})["error_code"] = payload["error"]["code"]
    headers = {**(headers or {}), **error_headers(exc)} or None
    return Response(dumps(payload), status_code=status, media_type=JSON_MEDIA_TYPE, headers=headers)


class ErrorMiddleware:
    """Outermost ASGI layer: turns escaped exceptions into the error shape and records each request."""

    def __init__(self, app, log_inputs: bool = False):
        self.app = app
        self.log_inputs = log_inputs

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        fields = observability.begin()
        state: dict[str, Any] = {}
        scope["modelfn"] = state
        status = {"code": 500, "sent": False}
        body_seen: list[bytes] = []

        async def receive_logged():
            message = await receive()
            if self.log_inputs and message.get("type") == "http.request":
                body_seen.append(message.get("body", b""))
            return message

        async def send_tracked(message):
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive_logged, send_tracked)
        except Exception as exc:  # noqa: BLE001 - the last line of defence must catch everything
            observability.exception("unhandled error", fields, path=scope.get("path"))
            if status["sent"]:
                raise
            code, payload = render_error(exc)
            status["code"], state["error_code"] = code, payload["error"]["code"]
            await Response(dumps(payload), status_code=code, media_type=JSON_MEDIA_TYPE,
                           headers=error_headers(exc) or None)(scope, receive, send)
        observability.record_request(method=scope["method"], path=scope["path"], status=status["code"],
                                     started=started, fields=fields, batch=state.get("batch"),
                                     tokens=state.get("tokens"), error_code=state.get("error_code"),
                                     body=b"".join(body_seen) or None)


__all__ = ["create_app", "build_app"]

"""The HTTP API of one model as a FastAPI app: a thin ASGI adapter over functions.service.

Its routes are the route table's (functions/routes.py: predict, embeddings, chat and completions,
the model list, info, health), each answered by the ModelService method the table names and
documented with the table's summary and schema; FastAPI adds GET /openapi.json and /docs.

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

from . import observability
from .errors import BadRequest, RequestError
from .http import EVENT_STREAM_MEDIA_TYPE, JSON_MEDIA_TYPE, dumps, error_headers, render_error, status_error
from .inputs import check_body_size
from .routes import ROUTES, Route
from .service import Answer, ModelService

if TYPE_CHECKING:
    from .batching import Batcher
    from .generation.scheduler import GenerationScheduler


def create_app(bundle_dir: str | Path | None = None, *, name: str | None = None, version: str | None = None,
               max_batch: int | None = None, max_tokens: int | None = None,
               truncate: bool | None = None) -> FastAPI:
    """Load the bundle (see ModelService.load for how each setting resolves) and return the app serving it."""
    service = ModelService.load(bundle_dir, name=name, version=version, max_batch=max_batch,
                                max_tokens=max_tokens, truncate=truncate)
    observability.set_model(service.name, service.version)
    return build_app(service)


def build_app(service: ModelService, *, batcher: "Batcher | None" = None,
              generations: "GenerationScheduler | None" = None) -> FastAPI:
    """The FastAPI app over an already loaded service.

    With a ``batcher`` (the GPU server, functions/adapters/sagemaker.py) predict and embeddings run
    through its token-budget batches, off the event loop, and /health shows its counters; with
    ``generations`` (the GPU server with a text-generation model) chat, completions and predict run
    on its bounded generator pool; without either they run inline, as on Lambda.
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

    for route in ROUTES:
        # With the model's vector width, a `dimensions` past it is schema-invalid too, as the app refuses it.
        app.add_api_route(route.path, _endpoint(route, service, batcher, generations), methods=[route.method],
                          name=route.operation, summary=route.summary,
                          openapi_extra=route.openapi_extra(task, service.embedding_width))
    return app


def _endpoint(route: Route, service: ModelService, batcher: "Batcher | None",
              generations: "GenerationScheduler | None" = None):
    """The FastAPI endpoint answering ``route`` with ``service.<route.operation>``, called as the Lambda
    handler calls it (functions/handler.py): the model's name from the path, then the content type
    and body of a POST. With a batcher, batched routes run ``service.begin_<operation>`` through it;
    with a generation scheduler, every POST runs on its pool of generators."""
    operation, posted = route.operation, route.method == "POST"
    batched = batcher is not None and route.batched

    async def answer(request: Request, args: list) -> Response:
        if posted:
            args.append(request.headers.get("content-type"))
            if generations is not None:
                call = getattr(service, operation)
                return _respond(request, await generations.serve(
                    request, lambda body: call(*args, body),
                    read=lambda r: read_body(r, service.max_body_bytes), budget_ms=service.settings.time_budget_ms))
            if batched:
                begin = getattr(service, "begin_" + operation)
                return _respond(request, await batcher.serve(request, lambda body: begin(*args, body),
                                                             read=lambda r: read_body(r, service.max_body_bytes)))
            args.append(await read_body(request, service.max_body_bytes))
        result = getattr(service, operation)(*args)
        if operation == "health":  # the GPU server's liveness shows its queue
            if batcher is not None:
                result = result._replace(payload={**result.payload, "batching": batcher.snapshot()})
            if generations is not None:
                result = result._replace(payload={**result.payload, "generation": generations.snapshot()})
        return _respond(request, result)

    # FastAPI reads the path parameter (and documents it) from the endpoint's signature.
    if route.scoped:  # a model-scoped OpenAI route: the name is checked, the operation is the stack-wide one
        async def endpoint(name: str, request: Request):
            service.check_name(name)
            return await answer(request, [])
    elif route.model_path:
        async def endpoint(name: str, request: Request):
            return await answer(request, [name])
    else:
        async def endpoint(request: Request):
            return await answer(request, [])
    return endpoint


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
        # Starlette runs a plain iterator in its thread pool, so decoding does not block the loop (the
        # generation scheduler hands over an async iterator that decodes on its own pool).
        return StreamingResponse(answer.stream, status_code=answer.status, media_type=EVENT_STREAM_MEDIA_TYPE)
    if answer.media_type is not None:  # already text (e.g. a transcription as text/plain)
        return Response(answer.payload, status_code=answer.status, media_type=answer.media_type)
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

"""The Lambda entry point: ``functions.handler.handler``, a direct API Gateway adapter.

It reads REST API (payload 1.0) and HTTP API (payload 2.0) proxy events itself, routes them with
the table below to functions.service.ModelService, and answers a proxy response dict. No web
framework runs on this path: importing FastAPI/pydantic alone costs more than the whole
onnxruntime + tokenizers cold start (bench/runtime.md). FastAPI is built lazily, from the same
service, only to answer GET /openapi.json. Errors render through functions.http, as in the
FastAPI app (functions/app.py), so both answer the same statuses and bodies.

The state lives in a LambdaHandler (one service, or a loader with its backoff); the module's
``handler`` serves the current one (``current()``/``use()``), and ``handler_for(service)`` makes one
for a service built elsewhere (tests inject services that way instead of re-importing this module).
The service (ONNX session, tokenizer) is built when this module is imported, i.e. in the Lambda
init phase, which SAM local and the Runtime Interface Emulator also run at start. A bundle that
cannot be loaded does not fail the import: every request is answered with the error (a 503
``model_unavailable`` with Retry-After) and loading is retried with exponential backoff (1 s doubling
to 60 s), so a broken image is diagnosable from its responses and logs and a registry that comes
back is picked up without a redeploy.

If the bundle directory is absent or empty and MODELFN_REGISTRY_URI is set, the bundle is fetched from
the registry (MODELFN_MODEL_NAME, MODELFN_MODEL_VERSION) into MODELFN_FETCH_DIR first.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable

from . import deadline, observability
from .bundle import locate_bundle
from .errors import BundleError, ModelfnError, RequestError
from .http import EVENT_STREAM_MEDIA_TYPE, JSON_MEDIA_TYPE, dumps, error_headers, no_route, render_error, wrong_method
from .proxy_event import ProxyRequest as _Request
from .proxy_event import parse as _parse_event
from .routes import ROUTES, Route
from .service import Answer, ModelService
from .settings import default_bundle_dir

# After a failed load the next attempt waits 1, 2, 4 ... up to 60 s: a registry that is down is not
# hammered by every request, and each request in between is answered 503 with Retry-After at once.
LOAD_BACKOFF_S, LOAD_BACKOFF_MAX_S = 1.0, 60.0


def _load_from_environment() -> ModelService:
    """The service of the bundle the environment names (see ModelService.load), fetched if need be."""
    return ModelService.load(locate_bundle(default_bundle_dir()))


class LambdaHandler:
    """API Gateway proxy events -> one ModelService, as a Lambda handler: ``lambda_handler(event, context)``.

    Given a ``service`` it serves that one (tests, other adapters); given a ``load`` it builds the
    service on first need, and after a failed load answers every request with the error (503 with
    Retry-After) until the backoff allows the next attempt. ``clock`` times the backoff (tests step it).
    """

    def __init__(self, service: ModelService | None = None, *, load: Callable[[], ModelService] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if (service is None) == (load is None):
            raise TypeError("LambdaHandler takes a service or a load function, not both or neither")
        self._service, self._loader, self.clock = service, load, clock
        self._load_error: ModelfnError | None = None
        self._failures, self._next_attempt = 0, 0.0
        self._openapi_schema: dict | None = None
        if service is not None:
            observability.set_model(service.name, service.version)

    @classmethod
    def from_environment(cls) -> LambdaHandler:
        """The handler the Lambda image runs: its bundle from MODELFN_* (functions.settings), loaded lazily."""
        return cls(load=_load_from_environment)

    def load(self) -> ModelService | None:
        """The service, loading it if this is the first need or the backoff is over; None while failing."""
        if self._service is None:
            now = self.clock()
            if self._load_error is not None and now < self._next_attempt:
                return None  # backing off: the request is answered with the last error
            try:
                self._service = self._loader()
                observability.set_model(self._service.name, self._service.version)
                self._load_error, self._failures = None, 0
            except Exception as exc:  # noqa: BLE001 - keep the environment alive to report it
                if isinstance(exc, ModelfnError):
                    self._load_error = exc
                    observability.log("ERROR", "model bundle could not be loaded", error=str(exc))
                else:
                    self._load_error = BundleError(f"model could not be loaded: {type(exc).__name__}: {exc}")
                    observability.exception("model bundle could not be loaded")
                self._failures += 1
                # Counted from the end of the attempt: a slow failure (timeouts) still leaves the full wait.
                self._next_attempt = self.clock() + min(LOAD_BACKOFF_S * 2 ** (self._failures - 1),
                                                        LOAD_BACKOFF_MAX_S)
        return self._service

    def unavailable(self) -> ModelfnError:
        """The load error for this request, telling the caller when the next load attempt is due."""
        error = self._load_error or BundleError("model could not be loaded")
        error.retry_after = max(1, math.ceil(self._next_attempt - self.clock()))
        return error

    def openapi(self, service: ModelService) -> dict:
        """The OpenAPI document, built once: FastAPI + pydantic load only when someone asks for it."""
        if self._openapi_schema is None:
            from .app import build_app

            self._openapi_schema = build_app(service).openapi()
        return self._openapi_schema

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        return _handle(self, event, context)


# -- the routes --------------------------------------------------------------------------------
RouteCall = Callable[[LambdaHandler, ModelService, re.Match, _Request], Answer]


def _openapi(lambda_handler: LambdaHandler, service: ModelService, match: re.Match, request: _Request) -> Answer:
    return Answer(200, lambda_handler.openapi(service))


def _call(route: Route) -> RouteCall:
    """The call a table route makes on the service: the model's name from the path, then the
    content type and body for POST routes (read up to the body limit). A model-scoped OpenAI route
    checks the path's name and calls the stack-wide operation."""
    operation, named, scoped, posted = route.operation, route.takes_name, route.scoped, route.method == "POST"

    def call(lambda_handler: LambdaHandler, service: ModelService, match: re.Match, request: _Request) -> Answer:
        if scoped:
            service.check_name(match["name"])
        args = [match["name"]] if named else []
        if posted:
            args += [request.header("content-type"), request.body(service.max_body_bytes)]
        return getattr(service, operation)(*args)

    return call


# The API's routes (functions/routes.py), plus the schema, which only this adapter builds lazily.
_ROUTES: tuple[tuple[str, re.Pattern, RouteCall], ...] = tuple(
    (route.method, route.pattern, _call(route)) for route in ROUTES) + (
    ("GET", re.compile(r"/openapi\.json"), _openapi),
)


def _dispatch(lambda_handler: LambdaHandler, service: ModelService, request: _Request) -> Answer:
    """Like Starlette's router: a path no route matches is 404, a known path with another method 405."""
    method = "GET" if request.method == "HEAD" else request.method
    allowed = []
    for route_method, pattern, call in _ROUTES:
        match = pattern.fullmatch(request.path)
        if match is not None:
            if route_method == method:
                return call(lambda_handler, service, match, request)
            allowed.append(route_method)
    raise wrong_method() if allowed else no_route()


# -- the handler -------------------------------------------------------------------------------
def _accept(lambda_handler: LambdaHandler, event: Any, is_proxy: bool) -> tuple[ModelService, _Request]:
    """The service and the parsed request for an event, or the error to answer instead: 503 while
    the bundle cannot be loaded, 400 for anything that is no well-formed API Gateway proxy event."""
    service = lambda_handler.load()
    if service is None:
        raise lambda_handler.unavailable()
    return service, _parse_event(event)


def _handle(lambda_handler: LambdaHandler, event: Any, context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    fields: dict[str, Any] = {}
    method = path = "-"
    batch = tokens = error_code = retry_after = None
    request = service = None
    media_type = JSON_MEDIA_TYPE
    # Everything that reads the event, logging included, is inside the try: a handler that raises
    # is a Lambda function error, which the deployment's canary alarm counts as a failed release.
    try:
        is_proxy = isinstance(event, dict) and isinstance(event.get("requestContext"), dict)
        fields = observability.begin(context, event["requestContext"].get("requestId") if is_proxy else None)
        service, request = _accept(lambda_handler, event, is_proxy)
        method, path = request.method, request.path
        # The request's time budget: Lambda's remaining time less a margin, capped by the setting.
        with deadline.scope(deadline.Deadline.for_request(context, service.settings.time_budget_ms)):
            answer = _dispatch(lambda_handler, service, request)
            if answer.stream is not None:
                # A buffered proxy response cannot stream: the whole event stream goes as one body.
                body, media_type = "".join(answer.stream), EVENT_STREAM_MEDIA_TYPE
            elif answer.media_type is not None:  # already text (e.g. a transcription as text/plain)
                body, media_type = answer.payload, answer.media_type
            else:
                body = dumps(answer.payload)
        status, batch, tokens = answer.status, answer.batch, answer.tokens
    except Exception as exc:  # noqa: BLE001 - every fault becomes the error shape, never a traceback
        if not isinstance(exc, ModelfnError):
            observability.exception("unhandled error", fields, path=path)
        status, payload = render_error(exc)
        error_code = payload["error"]["code"]
        body, media_type = dumps(payload), JSON_MEDIA_TYPE
        retry_after = error_headers(exc).get("retry-after")
    try:
        logged = None
        if service is not None and service.log_inputs and request is not None:
            try:
                logged = request.body(service.max_body_bytes)
            except RequestError:
                logged = None
        observability.record_request(method=method, path=path, status=status, started=started, fields=fields,
                                     batch=batch, tokens=tokens, error_code=error_code, body=logged)
    except Exception:  # noqa: BLE001 - a log line that cannot be written must not fail the request
        pass
    headers = {"content-type": media_type}  # a new dict: callers may mutate the response
    if status == 405:
        headers["allow"] = _allowed(path)
    elif retry_after is not None:
        headers["retry-after"] = retry_after
    return {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}


def _allowed(path: str) -> str:
    return ", ".join(m for m, pattern, _ in _ROUTES if pattern.fullmatch(path))


def handler_for(service: ModelService) -> LambdaHandler:
    """A Lambda handler serving ``service``, already loaded: how tests and other adapters inject one."""
    return LambdaHandler(service)


def current() -> LambdaHandler:
    """The LambdaHandler behind the entry point ``handler`` (and the streaming loop, functions.response_stream)."""
    return _current


def use(lambda_handler: LambdaHandler) -> LambdaHandler:
    """Make ``lambda_handler`` the one the entry point serves; returns the one it replaces."""
    global _current
    previous, _current = _current, lambda_handler
    return previous


def _entry(event: Any, context: Any) -> dict[str, Any]:
    return _handle(_current, event, context)


def _wrap():
    if observability.tracing_enabled():
        from aws_lambda_powertools import Tracer  # the X-Ray SDK is heavy: only when tracing is on

        return Tracer(service=observability.SERVICE).capture_lambda_handler(_entry)
    return _entry


# The Lambda entry point. The bundle is loaded here, at import, i.e. in the Lambda init phase; a
# failure is retried by the first requests (with backoff), never fails the import.
_current = LambdaHandler.from_environment()
handler = _wrap()
_current.load()

__all__ = ["LambdaHandler", "current", "handler", "handler_for", "use"]

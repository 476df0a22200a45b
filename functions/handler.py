"""The Lambda entry point: ``functions.handler.handler``, a direct API Gateway adapter.

It reads REST API (payload 1.0) and HTTP API (payload 2.0) proxy events itself, routes them with
the table below to functions.service.ModelService, and answers a proxy response dict. No web
framework runs on this path: importing FastAPI/pydantic alone costs more than the whole
onnxruntime + tokenizers cold start (bench/runtime.md). FastAPI is built lazily, from the same
service, only to answer GET /openapi.json. Errors render through functions.http, as in the
FastAPI app (functions/app.py), so both answer the same statuses and bodies.

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

import base64
import binascii
import math
import re
import time
from pathlib import Path
from typing import Any, Callable

from . import observability
from .bundle import locate_bundle
from .errors import BadRequest, BundleError, ModelfnError, RequestError
from .http import EVENT_STREAM_MEDIA_TYPE, JSON_MEDIA_TYPE, dumps, error_headers, no_route, render_error, wrong_method
from .inputs import check_body_size
from .routes import ROUTES, Route
from .service import Answer, ModelService
from .settings import default_bundle_dir

_service: ModelService | None = None
_load_error: ModelfnError | None = None
_openapi_schema: dict | None = None
# After a failed load the next attempt waits 1, 2, 4 ... up to 60 s: a registry that is down is not
# hammered by every request, and each request in between is answered 503 with Retry-After at once.
LOAD_BACKOFF_S, LOAD_BACKOFF_MAX_S = 1.0, 60.0
_failures = 0
_next_attempt = 0.0
_clock: Callable[[], float] = time.monotonic  # tests replace it to step through the backoff


def _bundle_dir() -> Path:
    return locate_bundle(default_bundle_dir())


def _load() -> ModelService | None:
    global _service, _load_error, _failures, _next_attempt
    if _service is None:
        now = _clock()
        if _load_error is not None and now < _next_attempt:
            return None  # backing off: the request is answered with the last error
        try:
            _service = ModelService.load(_bundle_dir())
            observability.set_model(_service.name, _service.version)
            _load_error, _failures = None, 0
        except Exception as exc:  # noqa: BLE001 - keep the environment alive to report it
            if isinstance(exc, ModelfnError):
                _load_error = exc
                observability.log("ERROR", "model bundle could not be loaded", error=str(exc))
            else:
                _load_error = BundleError(f"model could not be loaded: {type(exc).__name__}: {exc}")
                observability.exception("model bundle could not be loaded")
            _failures += 1
            # Counted from the end of the attempt: a slow failure (timeouts) still leaves the full wait.
            _next_attempt = _clock() + min(LOAD_BACKOFF_S * 2 ** (_failures - 1), LOAD_BACKOFF_MAX_S)
    return _service


def _unavailable() -> ModelfnError:
    """The load error for this request, telling the caller when the next load attempt is due."""
    error = _load_error or BundleError("model could not be loaded")
    error.retry_after = max(1, math.ceil(_next_attempt - _clock()))
    return error


# -- the event ---------------------------------------------------------------------------------
class _Request:
    """What the routes need from a proxy event; the body is decoded only by routes that read it."""

    __slots__ = ("event", "method", "path", "headers")

    def __init__(self, event: dict):
        self.event = event
        context = event["requestContext"]
        http = context.get("http")
        if http is not None:  # HTTP API, payload 2.0
            self.method = http.get("method") or "GET"
            path = http.get("path") or event.get("rawPath") or "/"
        else:  # REST API, payload 1.0
            self.method = event.get("httpMethod") or context.get("httpMethod") or "GET"
            path = event.get("path") or "/"
        stage = context.get("stage")
        # Behind a custom domain or a named HTTP API stage the path may still carry the stage.
        if stage and stage != "$default" and path.startswith("/" + stage + "/"):
            path = path[len(stage) + 1:]
        headers = event.get("headers") or {k: v[-1] for k, v in (event.get("multiValueHeaders") or {}).items()
                                           if isinstance(v, list) and v}
        body = event.get("body")
        if not (isinstance(self.method, str) and isinstance(path, str) and isinstance(headers, dict)
                and all(isinstance(v, str) for v in headers.values())
                and (body is None or isinstance(body, str))):
            raise BadRequest("malformed API Gateway proxy event (method, path, headers or body)")
        self.path, self.headers = path, headers

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (``name`` in lower case)."""
        value = self.headers.get(name)
        if value is None:
            for key, candidate in self.headers.items():
                if key.lower() == name:
                    return candidate
        return value

    def body(self, limit: int | None = None) -> bytes:
        """The raw body; 413 past ``limit`` bytes, decided from the event's length before decoding."""
        raw = self.event.get("body")
        if not raw:
            return b""
        if limit is not None:  # base64 carries 3 bytes per 4 characters; UTF-8 at least 1 per character
            check_body_size(len(raw) // 4 * 3 if self.event.get("isBase64Encoded") else len(raw), limit)
        if self.event.get("isBase64Encoded"):
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("request body is marked base64-encoded but is not valid base64") from None
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates from a \\ud800 escape in the event JSON
            raise BadRequest(f"request body is not valid UTF-8 (character {exc.start})") from None


# -- the routes --------------------------------------------------------------------------------
def _openapi(service: ModelService, match: re.Match, request: _Request) -> Answer:
    global _openapi_schema
    if _openapi_schema is None:
        from .app import build_app  # FastAPI + pydantic: only when someone asks for the schema

        _openapi_schema = build_app(service).openapi()
    return Answer(200, _openapi_schema)


RouteCall = Callable[[ModelService, re.Match, _Request], Answer]


def _call(route: Route) -> RouteCall:
    """The call a table route makes on the service: the model's name from the path, then the
    content type and body for POST routes (read up to the body limit)."""
    operation, named, posted = route.operation, route.model_path, route.method == "POST"

    def call(service: ModelService, match: re.Match, request: _Request) -> Answer:
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


def _dispatch(service: ModelService, request: _Request) -> Answer:
    """Like Starlette's router: a path no route matches is 404, a known path with another method 405."""
    method = "GET" if request.method == "HEAD" else request.method
    allowed = []
    for route_method, pattern, call in _ROUTES:
        match = pattern.fullmatch(request.path)
        if match is not None:
            if route_method == method:
                return call(service, match, request)
            allowed.append(route_method)
    raise wrong_method() if allowed else no_route()


# -- the handler -------------------------------------------------------------------------------
def _handle(event: Any, context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    fields: dict[str, Any] = {}
    method = path = "-"
    batch = tokens = error_code = retry_after = None
    request = None
    media_type = JSON_MEDIA_TYPE
    # Everything that reads the event, logging included, is inside the try: a handler that raises
    # is a Lambda function error, which the deployment's canary alarm counts as a failed release.
    try:
        is_proxy = isinstance(event, dict) and isinstance(event.get("requestContext"), dict)
        fields = observability.begin(context, event["requestContext"].get("requestId") if is_proxy else None)
        service = _service or _load()
        if service is None:
            raise _unavailable()
        if not is_proxy:
            raise BadRequest("not an API Gateway proxy event; invoke this function through API Gateway")
        try:
            request = _Request(event)
        except (AttributeError, TypeError, IndexError) as exc:  # fields of the wrong JSON type
            raise BadRequest("malformed API Gateway proxy event") from exc
        method, path = request.method, request.path
        answer = _dispatch(service, request)
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
        if _service is not None and _service.log_inputs and request is not None:
            try:
                logged = request.body(_service.max_body_bytes)
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


def _wrap():
    if observability.tracing_enabled():
        from aws_lambda_powertools import Tracer  # the X-Ray SDK is heavy: only when tracing is on

        return Tracer(service=observability.SERVICE).capture_lambda_handler(_handle)
    return _handle


handler = _wrap()
_load()

__all__ = ["handler"]

"""The one place where errors become HTTP responses, and the ASGI middleware that guarantees it.

Every response that is not a success has the body ``{"error": {"code", "message"}}``: RequestError
subclasses carry their status and code; FastAPI's routing and validation errors are mapped to the
same shape; anything else is a 500 whose body says only that the fault was logged.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from . import observability
from .errors import ModelfnError, RequestError

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "unprocessable_entity"}


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_response(exc: BaseException) -> Response:
    """The response for any exception; the only function that renders errors."""
    headers = None
    if isinstance(exc, RequestError):
        status, code, message = exc.status, exc.code, str(exc)
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        code = _HTTP_CODES.get(status, "http_error")
        message = {404: "no such route", 405: "method not allowed on this route"}.get(status, str(exc.detail))
        headers = dict(exc.headers) if exc.headers else None
    elif isinstance(exc, RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        status, code, message = 400, "bad_request", f"{where}: {first.get('msg', 'invalid value')}"
    elif isinstance(exc, ModelfnError):  # a bundle or config fault on our side, not the caller's
        status, code, message = 500, "model_unavailable", str(exc)
    else:
        status, code, message = 500, "internal_error", "internal error; the details are in the function's logs"
    return json_response({"error": {"code": code, "message": message}}, status, headers)


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
                status["code"] = message["status"]
                status["sent"] = True
            await send(message)

        try:
            await self.app(scope, receive_logged, send_tracked)
        except Exception as exc:  # noqa: BLE001 - the last line of defence must catch everything
            observability.logger.exception("unhandled error", extra={"path": scope.get("path")})
            if status["sent"]:
                raise
            response = error_response(exc)
            status["code"] = response.status_code
            await response(scope, receive, send)
        observability.record_request(method=scope["method"], path=scope["path"], status=status["code"],
                                     started=started, state=state, body=b"".join(body_seen) or None,
                                     log_inputs=self.log_inputs)


async def _render(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RequestError):
        request.scope.setdefault("modelfn", {})["error_code"] = exc.code
    return error_response(exc)


def install_error_handling(app: FastAPI, *, log_inputs: bool) -> None:
    app.add_exception_handler(RequestError, _render)
    app.add_exception_handler(HTTPException, _render)
    app.add_exception_handler(RequestValidationError, _render)
    app.add_middleware(ErrorMiddleware, log_inputs=log_inputs)

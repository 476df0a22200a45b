"""The one place where exceptions become HTTP error bodies, and where answers become JSON bytes.

Framework-free on purpose: the Lambda adapter (functions/handler.py) and the FastAPI adapter
(functions/app.py) both render through :func:`render_error` and :func:`dumps`, so a caller sees the
same status and body whichever serves it. Every answer that is not a success has the body
``{"error": {"code", "message"}}``: RequestError subclasses carry their status and code; a bundle
or configuration fault is a 503 ``model_unavailable`` (with Retry-After when the error knows
when to try again); anything else is a 500 whose body says only
that the fault was logged.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import MethodNotAllowed, ModelfnError, NotFound, RequestError

try:  # orjson writes a 384-float embedding ~20x faster than json (bench/runtime.md); same values
    import orjson
except ImportError:  # pragma: no cover - the image ships it; without it answers are the same, slower
    orjson = None

JSON_MEDIA_TYPE = "application/json"
EVENT_STREAM_MEDIA_TYPE = "text/event-stream; charset=utf-8"  # as Starlette spells it, on both adapters
SSE_DONE = "data: [DONE]\n\n"  # OpenAI's end-of-stream event

# Status -> code for statuses a framework produces without a RequestError (FastAPI's routing).
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
              415: "unsupported_media_type", 422: "unprocessable_entity", 429: "too_many_requests"}

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode


def dumps(payload: Any) -> str:
    """Compact JSON text (the same JSON values with or without orjson; float spelling may differ).

    Only JSON types are accepted (TypeError otherwise). Non-finite floats cannot reach here:
    LoadedModel.run rejects non-finite model outputs, and json would raise ValueError for them.
    """
    if orjson is not None:
        try:
            return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
        except orjson.JSONEncodeError:
            # A lone surrogate or an int past 64 bits (in an error message, a path): the stdlib
            # spells both, and ASCII escapes keep the text encodable as UTF-8.
            return _encode_ascii(payload)
    return _encode(payload)


def sse_event(payload: Any) -> str:
    """One server-sent event carrying ``payload`` as JSON (OpenAI's streaming framing)."""
    return f"data: {dumps(payload)}\n\n"


def render_error(exc: BaseException) -> tuple[int, dict]:
    """(status, body) for any exception; the only function that renders errors."""
    if isinstance(exc, RequestError):
        status, code, message = exc.status, exc.code, str(exc)
    elif isinstance(exc, ModelfnError):  # a bundle, registry or config fault on our side: try later
        status, code, message = 503, "model_unavailable", str(exc)
    else:
        status, code, message = 500, "internal_error", "internal error; the details are in the function's logs"
    return status, {"error": {"code": code, "message": message}}


def error_headers(exc: BaseException) -> dict[str, str]:
    """Headers an error answer carries: Retry-After when the error says when to try again."""
    retry_after = getattr(exc, "retry_after", None)
    return {"retry-after": str(int(retry_after))} if isinstance(retry_after, (int, float)) else {}


def no_route() -> NotFound:
    return NotFound("no such route")


def wrong_method() -> MethodNotAllowed:
    return MethodNotAllowed("method not allowed on this route")


def status_error(status: int, message: str) -> RequestError:
    """A RequestError for a bare HTTP status a framework raised (its routing, its validation)."""
    if status == 404:
        return no_route()
    if status == 405:
        return wrong_method()
    err = RequestError(message)
    err.status, err.code = status, HTTP_CODES.get(status, "http_error")
    return err


__all__ = ["JSON_MEDIA_TYPE", "EVENT_STREAM_MEDIA_TYPE", "SSE_DONE", "sse_event", "HTTP_CODES", "dumps", "render_error",
           "error_headers", "no_route", "wrong_method", "status_error"]

"""API Gateway proxy events (REST payload 1.0, HTTP API payload 2.0): what an adapter needs from one.

Shared by the model function (functions/handler.py, functions/response_stream.py) and the GPU
stream relay (functions/relay.py), which must not import the handler: importing it loads a model.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .errors import BadRequest
from .inputs import check_body_size


def is_proxy(event: Any) -> bool:
    """Whether ``event`` looks like an API Gateway proxy event at all (a dict with a requestContext)."""
    return isinstance(event, dict) and isinstance(event.get("requestContext"), dict)


def parse(event: Any) -> ProxyRequest:
    """The request an event carries; 400 for anything that is no well-formed API Gateway proxy event."""
    if not is_proxy(event):
        raise BadRequest("not an API Gateway proxy event; invoke this function through API Gateway")
    try:
        return ProxyRequest(event)
    except (AttributeError, TypeError, IndexError) as exc:  # fields of the wrong JSON type
        raise BadRequest("malformed API Gateway proxy event") from exc


class ProxyRequest:
    """What the routes need from a proxy event; the body is decoded only by routes that read it."""

    __slots__ = ("event", "headers", "method", "path")

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


__all__ = ["ProxyRequest", "is_proxy", "parse"]

"""Chat completions streamed as OpenAI's server-sent events: ``data: {chunk}`` events, each with
``choices[].delta.content``, ending ``data: [DONE]``. An ``{"error": ...}`` event or a stream that
ends without ``[DONE]`` raises APIError; a stalled or broken stream raises the transport errors."""

from __future__ import annotations

import json
from typing import Iterator

import httpx

from .errors import APIError, CallTimeoutError, UnreachableError, error_fields, one_line


class ChatStream:
    """The text of a streamed chat completion, piece by piece as the server sends it. After the
    last piece, ``finish_reason`` and ``usage`` hold what the stream said of them."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self._pieces = self._iterate()

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def __next__(self) -> str:
        return next(self._pieces)

    def text(self) -> str:
        """All of the remaining text, joined."""
        return "".join(self)

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> "ChatStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _iterate(self) -> Iterator[str]:
        request = self.response.request
        try:
            for data in iter_sse(self.response):
                if data == "[DONE]":
                    return
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise APIError(200, "invalid_stream", f"not JSON in the event stream: {one_line(data, 120)!r}",
                                   method=request.method, url=str(request.url)) from None
                if isinstance(chunk, dict) and "error" in chunk:
                    code, message = error_fields(chunk)
                    raise APIError(200, code, message, method=request.method, url=str(request.url))
                self.usage = chunk.get("usage") or self.usage
                for choice in chunk.get("choices") or ():
                    self.finish_reason = choice.get("finish_reason") or self.finish_reason
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
            raise APIError(200, "incomplete_stream", "the event stream ended without data: [DONE]",
                           method=request.method, url=str(request.url))
        except httpx.TimeoutException:
            raise CallTimeoutError(f"the stream from {request.url} stalled") from None
        except httpx.TransportError as exc:
            raise UnreachableError(f"the stream from {request.url} broke: {one_line(exc)}") from None
        finally:
            self.response.close()


def iter_sse(response: httpx.Response) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines); comments and
    other fields are skipped."""
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


__all__ = ["ChatStream", "iter_sse"]

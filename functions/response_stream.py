"""Lambda response streaming: a small Lambda Runtime API loop that streams each answer as it is made.

API Gateway REST APIs stream a Lambda proxy integration whose response transfer mode is ``STREAM``:
the integration calls the function's response-streaming invocation, and the function answers in
the metadata-then-payload format: a JSON prelude ``{"statusCode", "headers"}``, eight null bytes,
then the body. The managed Python runtime only buffers, so the image runs this loop instead of it
(``python -m functions.response_stream`` as the entry point; the Runtime API address comes from
``AWS_LAMBDA_RUNTIME_API``), speaking the Runtime API (version 2018-06-01) itself:

    GET  /2018-06-01/runtime/invocation/next            -> the event and its request id
    POST /2018-06-01/runtime/invocation/{id}/response   Lambda-Runtime-Function-Response-Mode: streaming,
                                                        Transfer-Encoding: chunked; prelude, delimiter, body
    POST /2018-06-01/runtime/invocation/{id}/error      when not even a prelude could be produced
    POST /2018-06-01/runtime/init/error                 when the loop cannot start

Requests are routed exactly as functions/handler.py routes buffered ones (the same table and
service; errors rendered by functions.http); an SSE answer (``stream: true``) goes out one event per
chunk, anything else as one chunk. A fault after the prelude was sent is reported in the
``Lambda-Runtime-Function-Error-Type`` / ``-Body`` trailers, as the Runtime API specifies.
Buffered integrations and local emulators keep using ``functions.handler.handler``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

RUNTIME_API = "AWS_LAMBDA_RUNTIME_API"
API_VERSION = "2018-06-01"
PRELUDE_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
DELIMITER = b"\x00" * 8
_ERROR_TYPE, _ERROR_BODY = "Lambda-Runtime-Function-Error-Type", "Lambda-Runtime-Function-Error-Body"


class InvocationContext:
    """The parts of Lambda's context object the handler and the logs read, from the /next headers."""

    def __init__(self, headers: http.client.HTTPMessage):
        self.aws_request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn", "")
        self.deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms") or 0)
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 0)
        trace = headers.get("Lambda-Runtime-Trace-Id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace  # where the X-Ray SDK looks for it

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


def stream_answer(event: Any, context: Any = None) -> tuple[dict, Iterator[bytes]]:
    """The metadata prelude and the body chunks for one API Gateway proxy event.

    Routing, errors and the request log are functions/handler.py's; only the transport differs.
    """
    from . import (
        handler as buffered,  # loads the model bundle (the init phase), as the buffered entry does
    )
    from . import deadline, observability
    from .errors import ModelfnError
    from .http import EVENT_STREAM_MEDIA_TYPE, JSON_MEDIA_TYPE, dumps, render_error

    started = time.perf_counter()
    is_proxy = isinstance(event, dict) and isinstance(event.get("requestContext"), dict)
    fields = observability.begin(context, event["requestContext"].get("requestId") if is_proxy else None)
    method = path = "-"
    try:
        lambda_handler = buffered.current()
        service, request = buffered._accept(lambda_handler, event, is_proxy)
        method, path = request.method, request.path
        # The stream's generation keeps this deadline while the body is sent after we return.
        with deadline.scope(deadline.Deadline.for_request(context, service.settings.time_budget_ms)):
            answer = buffered._dispatch(lambda_handler, service, request)
    except Exception as exc:  # noqa: BLE001 - every fault becomes the error shape, never a traceback
        if not isinstance(exc, ModelfnError):
            observability.exception("unhandled error", fields, path=path)
        status, payload = render_error(exc)
        observability.record_request(method=method, path=path, status=status, started=started, fields=fields,
                                     error_code=payload["error"]["code"])
        headers = {"content-type": JSON_MEDIA_TYPE}
        if status == 405:
            headers["allow"] = buffered._allowed(path)
        return {"statusCode": status, "headers": headers}, iter([dumps(payload).encode("utf-8")])

    media_type = EVENT_STREAM_MEDIA_TYPE if answer.stream is not None else JSON_MEDIA_TYPE
    pieces = answer.stream if answer.stream is not None else iter([dumps(answer.payload)])

    def body() -> Iterator[bytes]:
        try:
            for piece in pieces:
                yield piece.encode("utf-8")
        finally:
            observability.record_request(method=method, path=path, status=answer.status, started=started,
                                         fields=fields, batch=answer.batch, tokens=answer.tokens)

    return {"statusCode": answer.status, "headers": {"content-type": media_type}}, body()


class RuntimeClient:
    """HTTP calls to the Lambda Runtime API at ``host:port``."""

    def __init__(self, address: str):
        host, _, port = address.rpartition(":")
        self.host, self.port = host or address, int(port) if host else 80
        self.base = f"/{API_VERSION}/runtime"

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=None)  # /next waits for work

    def next_invocation(self) -> tuple[InvocationContext, bytes]:
        conn = self._connection()
        try:
            conn.request("GET", f"{self.base}/invocation/next")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"Runtime API /invocation/next answered {response.status}: {body[:200]!r}")
            return InvocationContext(response.headers), body
        finally:
            conn.close()

    def stream_response(self, request_id: str, prelude: dict, chunks: Iterator[bytes]) -> None:
        """POST the prelude, the delimiter and each chunk as it comes (HTTP/1.1 chunked, error trailers)."""
        conn = self._connection()
        try:
            conn.putrequest("POST", f"{self.base}/invocation/{request_id}/response", skip_accept_encoding=True)
            conn.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.putheader("Content-Type", PRELUDE_CONTENT_TYPE)
            conn.putheader("Trailer", f"{_ERROR_TYPE}, {_ERROR_BODY}")
            conn.endheaders()
            conn.send(_chunk(json.dumps(prelude, separators=(",", ":")).encode("utf-8") + DELIMITER))
            trailers = b""
            try:
                for data in chunks:
                    if data:
                        try:
                            conn.send(_chunk(data))
                        except OSError:
                            # The receiver closed the stream (its caller left): stop making the answer;
                            # closing the chunks (below) ends the work behind them (a generator, an upstream).
                            from . import observability

                            observability.log("WARNING", "response stream closed by the receiver")
                            return
            except Exception as exc:  # noqa: BLE001 - the status is out; the fault goes in the trailers
                from . import observability

                observability.exception("response stream failed")
                error = json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}).encode("utf-8")
                trailers = (f"{_ERROR_TYPE}: Function.{type(exc).__name__}\r\n"
                            f"{_ERROR_BODY}: {base64.b64encode(error).decode('ascii')}\r\n").encode("ascii")
            conn.send(b"0\r\n" + trailers + b"\r\n")
            _expect_accepted(conn, "response")
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            conn.close()

    def post_error(self, request_id: str | None, exc: BaseException) -> None:
        """Report an invocation (or, without ``request_id``, the initialization) as failed."""
        path = f"{self.base}/invocation/{request_id}/error" if request_id else f"{self.base}/init/error"
        body = json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__})
        conn = self._connection()
        try:
            conn.request("POST", path, body=body.encode("utf-8"),
                         headers={_ERROR_TYPE: f"Runtime.{type(exc).__name__}", "Content-Type": "application/json"})
            _expect_accepted(conn, "error")
        finally:
            conn.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _expect_accepted(conn: http.client.HTTPConnection, what: str) -> None:
    response = conn.getresponse()
    body = response.read()
    if response.status != 202:
        raise RuntimeError(f"Runtime API rejected the {what}: {response.status} {body[:200]!r}")


def serve(address: str | None = None, *, max_invocations: int | None = None,
          answer: Callable[[Any, Any], tuple[dict, Iterator[bytes]]] | None = None) -> None:
    """Answer invocations from the Runtime API at ``address`` (default $AWS_LAMBDA_RUNTIME_API), streaming.

    ``answer(event, context)`` gives each invocation's prelude and body chunks; by default
    :func:`stream_answer` (the model function's routes, its bundle loaded now, in the init phase).
    The GPU stream relay (functions/relay.py) passes its own. ``max_invocations`` stops the loop
    after that many (tests); Lambda runs it until it freezes the environment.
    """
    client = RuntimeClient(address or os.environ[RUNTIME_API])
    if answer is None:
        try:
            from . import handler  # noqa: F401 - load the bundle now, in the init phase
        except Exception as exc:
            client.post_error(None, exc)
            raise
        answer = stream_answer
    served = 0
    while max_invocations is None or served < max_invocations:
        context, raw = client.next_invocation()
        served += 1
        try:
            event = json.loads(raw) if raw else {}
            prelude, chunks = answer(event, context)
        except Exception as exc:  # noqa: BLE001 - nothing was sent yet: report it as the invocation's error
            client.post_error(context.aws_request_id, exc)
            continue
        client.stream_response(context.aws_request_id, prelude, chunks)


if __name__ == "__main__":  # pragma: no cover - the image's entry point
    serve()

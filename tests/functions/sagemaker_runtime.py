"""A local stand-in of the SageMaker runtime's InvokeEndpointWithResponseStream (moto has none).

``POST /endpoints/{name}/invocations-response-stream`` is forwarded to a real GPU server's
/invocations (``modelfn serve`` or the SageMakerApp) with the headers SageMaker passes on
(Content-Type, Accept from X-Amzn-SageMaker-Accept, X-Amzn-SageMaker-Custom-Attributes); each
piece the container sends is relayed as it arrives, HTTP/1.1 chunked, encoded as an AWS
event-stream ``PayloadPart`` message (prelude with total and header lengths and its CRC32, the
``:event-type`` / ``:message-type`` / ``:content-type`` headers, the payload, the message CRC32),
which botocore's own parser reads. Errors come back as the runtime sends them: a container's
4xx/5xx as ModelError (424, OriginalStatusCode/OriginalMessage), an unknown endpoint as
ValidationError, and on request a failure before the call (``fail_with``) or an error event after
some parts (``stream_error_after``). A client that leaves closes the container connection too.
"""

from __future__ import annotations

import http.client
import json
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_STRING = 7  # event-stream header value type: string


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (application/vnd.amazon.eventstream)."""
    encoded = b""
    for name, value in headers.items():
        key, data = name.encode("utf-8"), value.encode("utf-8")
        encoded += bytes([len(key)]) + key + bytes([_STRING]) + struct.pack(">H", len(data)) + data
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def payload_part(data: bytes) -> bytes:
    return event_message({":event-type": "PayloadPart", ":message-type": "event",
                          ":content-type": "application/octet-stream"}, data)


def model_error(status: int, original: str) -> dict:
    """The body of the runtime's ModelError (424) for a container that answered ``status`` with ``original``."""
    side = "client" if status < 500 else "server"
    return {"ErrorCode": f"{side.upper()}_ERROR_FROM_MODEL", "OriginalStatusCode": status, "OriginalMessage": original,
            "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/x",
            "Message": f'Received {side} error ({status}) from primary with message "{original}". See '
                       "https://us-east-1.console.aws.amazon.com/cloudwatch/home for more information."}


def exception_event(kind: str, message: str, error_code: str | None = None) -> bytes:
    body = {"Message": message, **({"ErrorCode": error_code} if error_code else {})}
    return event_message({":exception-type": kind, ":message-type": "exception",
                          ":content-type": "application/json"}, json.dumps(body).encode("utf-8"))


class SageMakerRuntime(ThreadingHTTPServer):
    """Serves endpoint ``endpoint`` from the GPU server at ``upstream`` (a base URL)."""

    daemon_threads = True

    def __init__(self, upstream: str, endpoint: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream, self.endpoint = urlsplit(upstream), endpoint
        self.fail_with: tuple[int, str, str] | None = None  # (status, error type, message) instead of a call
        self.stream_error_after: tuple[int, str] | None = None  # (parts, exception type) then that error event
        self.forwarded: list[dict[str, str]] = []  # the headers each container request carried
        self.client_left = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        server: SageMakerRuntime = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = self.path.split("/")  # /endpoints/{name}/invocations-response-stream
        if len(parts) != 4 or parts[3] != "invocations-response-stream" or parts[2] != server.endpoint:
            self._error(400, "ValidationError", f"Endpoint {parts[2] if len(parts) > 2 else '?'} of account "
                                                "123456789012 not found.")
            return
        if server.fail_with is not None:
            self._error(*server.fail_with)
            return
        forwarded = {"Content-Type": self.headers.get("Content-Type") or "application/octet-stream"}
        for ours, theirs in (("X-Amzn-SageMaker-Accept", "Accept"),
                             ("X-Amzn-SageMaker-Custom-Attributes", "X-Amzn-SageMaker-Custom-Attributes")):
            if self.headers.get(ours):
                forwarded[theirs] = self.headers[ours]
        server.forwarded.append(forwarded)
        upstream = http.client.HTTPConnection(server.upstream.hostname, server.upstream.port, timeout=120)
        try:
            upstream.request("POST", "/invocations", body=body, headers=forwarded)
            answer = upstream.getresponse()
            if answer.status >= 400:
                error = model_error(answer.status, answer.read().decode("utf-8", "replace"))
                self._error(424, "ModelError", error.pop("Message"), **error)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.amazon.eventstream")
            self.send_header("X-Amzn-SageMaker-Content-Type", answer.getheader("Content-Type") or "")
            self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = 0
            while data := answer.read1(65536):
                if server.stream_error_after is not None and sent == server.stream_error_after[0]:
                    kind = server.stream_error_after[1]
                    self._chunk(exception_event(kind, "the model stream broke", "StreamBroken"))
                    break
                try:
                    self._chunk(payload_part(data))
                except OSError:  # the caller left: leave the container too, as SageMaker does
                    server.client_left.set()
                    return
                sent += 1
            self.wfile.write(b"0\r\n\r\n")
        finally:
            upstream.close()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _error(self, status: int, kind: str, message: str, **members) -> None:
        body = json.dumps({"Message": message, **members}).encode("utf-8")
        self.send_response(status)
        self.send_header("x-amzn-ErrorType", f"{kind}:http://internal.amazon.com/coral/com.amazon.sagemaker/")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

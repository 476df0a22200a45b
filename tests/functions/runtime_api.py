"""A local server speaking the Lambda Runtime API (2018-06-01) for the response-streaming tests: it
hands out queued events and records what the function sends (headers, chunks, trailers)."""

from __future__ import annotations

import json
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from functions import response_stream


class RuntimeAPI(ThreadingHTTPServer):
    """A stand-in for Lambda's Runtime API: hands out queued events, records what the function sends."""

    daemon_threads = True

    def __init__(self, events: list, *, hang_up_after: int | None = None, hung_up: threading.Event | None = None):
        super().__init__(("127.0.0.1", 0), _RuntimeHandler)
        self.events = list(events)
        self.responses: dict[str, dict] = {}
        self.errors: dict[str, dict] = {}
        # Reset the response connection after this many chunks, as when the API's caller goes away.
        self.hang_up_after = hang_up_after
        self.hung_up = hung_up or threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        assert self.path == "/2018-06-01/runtime/invocation/next"
        number = len(self.server.responses) + len(self.server.errors)
        if not self.server.events:  # nothing more to hand out: the loop under test stops on the error
            self.send_response(410)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        event = self.server.events.pop(0)
        body = event if isinstance(event, bytes) else json.dumps(event).encode("utf-8")
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", f"req-{number}")
        self.send_header("Lambda-Runtime-Deadline-Ms", "9999999999999")
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:f")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        parts = self.path.split("/")  # /2018-06-01/runtime/invocation/{id}/{response|error}
        request_id, kind = parts[-2], parts[-1]
        headers = {k.lower(): v for k, v in self.headers.items()}
        if headers.get("transfer-encoding") == "chunked":
            chunks, trailers = self._read_chunked()
            if trailers is None:  # hung up: what arrived before is kept
                self.server.responses[request_id] = {"headers": headers, "chunks": chunks, "hung_up": True}
                return
        else:
            chunks, trailers = [self.rfile.read(int(headers.get("content-length", 0)))], {}
        record = {"headers": headers, "chunks": chunks, "trailers": trailers}
        (self.server.responses if kind == "response" else self.server.errors)[request_id] = record
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _read_chunked(self):
        chunks, trailers = [], {}
        while True:
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                break
            chunks.append(self.rfile.read(size))
            assert self.rfile.read(2) == b"\r\n"
            if self.server.hang_up_after is not None and len(chunks) >= self.server.hang_up_after:
                self._hang_up()
                return chunks, None
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("ascii").partition(":")
            trailers[name.strip().lower()] = value.strip()
        return chunks, trailers

    def _hang_up(self):
        # SO_LINGER 0: close with a reset, so the function's next write fails at once.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True
        self.server.hung_up.set()


def run_loop(events: list, *, answer=None, hang_up_after: int | None = None,
             hung_up: threading.Event | None = None) -> RuntimeAPI:
    """Serve ``events`` through functions.response_stream.serve (``answer``: its default, else the one
    given) against a fresh stand-in; returns the stand-in with what the function sent. With
    ``hang_up_after`` it resets the connection after that many chunks and sets ``hung_up``."""
    server = RuntimeAPI(events, hang_up_after=hang_up_after, hung_up=hung_up)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        response_stream.serve(server.address, max_invocations=len(events), answer=answer)
    finally:
        server.shutdown()
        server.server_close()
    return server


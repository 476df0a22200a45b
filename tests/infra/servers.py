"""Loopback HTTP servers for the client tests: uvicorn in a thread, an API Gateway-like SigV4 check
that recomputes each signature with botocore, a scripted fault server, and a fake chat route
speaking OpenAI's server-sent events."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator


from tests.functions.servers import serving

TEST_REGION = "us-east-1"
TEST_KEY_ID = "AKIDMODELFNTEST"
TEST_SECRET = "modelfn-test-secret"

_AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256 Credential=(?P<cred>[^,]+), SignedHeaders=(?P<signed>[^,]+), "
                      r"Signature=(?P<sig>[0-9a-f]{64})$")


@contextmanager
def serve(app) -> Iterator[str]:
    """Run an ASGI app under uvicorn on 127.0.0.1 (no lifespan, 1 s to shut down); yields its base URL."""
    with serving(app, lifespan="off", timeout_graceful_shutdown=1) as url:
        yield url


async def read_body(receive) -> bytes:
    """The whole body of an ASGI request."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # as a real server: nothing more until disconnect

    return receive


async def send_json(send, status: int, payload, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class SigV4Check:
    """ASGI middleware checking AWS SigV4 as API Gateway does for IAM auth, with the secret it knows
    for each access key: the signature is recomputed by botocore from the request as received (method,
    raw path, query, the signed headers, the body). Rejections answer 403 in the template's error
    shape with API Gateway's response types. ``verified`` records each accepted request's headers."""

    def __init__(self, app, *, keys: dict[str, str] | None = None, region: str = TEST_REGION,
                 service: str = "execute-api", prefix: str = ""):
        self.app, self.keys, self.region, self.service, self.prefix = app, keys or {TEST_KEY_ID: TEST_SECRET}, \
            region, service, prefix
        self.verified: list[dict] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.check(scope, headers, body)
        if problem:
            code, message = problem
            return await send_json(send, 403, {"error": {"code": code, "message": message}})
        self.verified.append(headers)
        if self.prefix:  # API Gateway's stage: /prod/models/x -> /models/x for the function
            scope = dict(scope, path=scope["path"][len(self.prefix):] or "/",
                         raw_path=scope["raw_path"][len(self.prefix):] or b"/")
        await self.app(scope, _replay(body), send)

    def check(self, scope, headers: dict, body: bytes) -> tuple[str, str] | None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        auth = headers.get("authorization")
        if not auth:
            return "MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token"
        match = _AUTH_RE.match(auth)
        if not match:
            return "INCOMPLETE_SIGNATURE", "Authorization header requires Credential, SignedHeaders, Signature"
        key_id, date, region, service, terminator = (match["cred"].split("/") + [""] * 5)[:5]
        if key_id not in self.keys:
            return "INVALID_SIGNATURE", "The security token included in the request is invalid."
        if (region, service, terminator) != (self.region, self.service, "aws4_request"):
            return "INVALID_SIGNATURE", f"Credential should be scoped to {self.region}/{self.service}"
        amz_date = headers.get("x-amz-date", "")
        signed = match["signed"].split(";")
        if "host" not in signed or "x-amz-date" not in signed or not amz_date.startswith(date):
            return "INCOMPLETE_SIGNATURE", "host and x-amz-date must be signed, on the credential's date"
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        if abs((datetime.now(timezone.utc) - when).total_seconds()) > 300:
            return "INVALID_SIGNATURE", "Signature expired"
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{scope['scheme']}://{headers['host']}{scope['raw_path'].decode('latin-1')}"
        url += f"?{query}" if query else ""
        request = AWSRequest(method=scope["method"], url=url, data=body,
                             headers={name: headers.get(name, "") for name in signed})
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(key_id, self.keys[key_id]), service, region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, match["sig"]):
            return "INVALID_SIGNATURE", ("The request signature we calculated does not match the signature you "
                                         "provided. Check your AWS Secret Access Key and signing method.")
        return None


class ApiKeyCheck:
    """ASGI middleware: 403 unless ``x-api-key`` is the key (API Gateway with a usage plan)."""

    def __init__(self, app, key: str, prefix: str = ""):
        self.app, self.key, self.prefix = app, key, prefix

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers") or [])
        if headers.get(b"x-api-key", b"").decode() != self.key:
            return await send_json(send, 403, {"error": {"code": "INVALID_API_KEY", "message": "Forbidden"}})
        if self.prefix:
            scope = dict(scope, path=scope["path"][len(self.prefix):] or "/",
                         raw_path=scope["raw_path"][len(self.prefix):] or b"/")
        await self.app(scope, receive, send)


class Scripted:
    """Answers each request with the next scripted (status, headers, JSON body); the last repeats.
    ``delay_s`` holds an answer back (for timeouts). ``requests`` records (method, path, headers, body)."""

    def __init__(self, *answers: tuple[int, dict, object], delay_s: float = 0.0):
        self.answers = list(answers)
        self.delay_s = delay_s
        self.requests: list[tuple[str, str, dict, bytes]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((scope["method"], scope["path"], headers, body))
        status, extra, payload = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await send_json(send, status, payload, [(k.encode(), str(v).encode()) for k, v in extra.items()])


class FakeChat:
    """A text-generation model's routes in OpenAI's shapes: GET /models/{name} (task), and
    POST /v1/chat/completions (and /models/{name}/v1/chat/completions) answering ``pieces`` as server-sent events ending ``data: [DONE]``
    (or one body without ``stream``). With ``gate``, it sends the first piece, then waits for the
    gate before the rest, so a test can prove pieces arrive as they are sent."""

    def __init__(self, name: str, pieces: list[str], *, gate: threading.Event | None = None,
                 error_after: int | None = None, done: bool = True):
        self.name, self.pieces, self.gate, self.error_after, self.done = name, pieces, gate, error_after, done
        self.bodies: list[dict] = []
        self.paths: list[str] = []  # the chat route each body came on

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == f"/models/{self.name}":
            return await send_json(send, 200, {"name": self.name, "task": "text-generation"})
        if method != "POST" or path not in ("/v1/chat/completions", f"/models/{self.name}/v1/chat/completions"):
            return await send_json(send, 404, {"error": {"code": "not_found", "message": "no such route"}})
        request = json.loads(body)
        self.bodies.append(request)
        self.paths.append(path)
        if request.get("model") not in (None, self.name):
            return await send_json(send, 404, {"error": {"code": "not_found",
                                                         "message": f"no model named {request['model']!r} here"}})
        base = {"id": "chatcmpl-test", "created": 0, "model": self.name}
        if not request.get("stream"):
            text = "".join(self.pieces)
            return await send_json(send, 200, {**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(self.pieces),
                          "total_tokens": 3 + len(self.pieces)}})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})

        async def event(data: str) -> None:
            await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})

        chunk = {**base, "object": "chat.completion.chunk"}
        await event(json.dumps({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                                      "finish_reason": None}]}))
        for i, piece in enumerate(self.pieces):
            if self.error_after is not None and i == self.error_after:
                await event(json.dumps({"error": {"code": "model_unavailable", "message": "the model stopped"}}))
                break
            await event(json.dumps({**chunk, "choices": [{"index": 0, "delta": {"content": piece},
                                                          "finish_reason": None}]}))
            if i == 0 and self.gate is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 10)
        else:
            await event(json.dumps({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                    "usage": {"prompt_tokens": 3, "completion_tokens": len(self.pieces),
                                              "total_tokens": 3 + len(self.pieces)}}))
            if self.done:
                await event("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class StagedGateway:
    """ASGI middleware answering as a deployed REST API does around its routes: the app lives under
    /{stage}; another stage is 403 ``{"message": "Forbidden"}``; a path under the stage that is not
    one of ``paths`` is 403 Missing Authentication Token in the template's error shape."""

    def __init__(self, app, paths: set[str], stage: str = "prod"):
        self.app, self.paths, self.prefix = app, paths, "/" + stage

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if not path.startswith(self.prefix + "/"):
            return await send_json(send, 403, {"message": "Forbidden"})
        inner = path[len(self.prefix):]
        if inner not in self.paths:
            return await send_json(send, 403, {"error": {"code": "MISSING_AUTHENTICATION_TOKEN",
                                                         "message": "Missing Authentication Token"}})
        scope = dict(scope, path=inner, raw_path=inner.encode())
        await self.app(scope, receive, send)

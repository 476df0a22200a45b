"""Hostile input through both adapters: every answer is a 4xx in the error shape, never a 5xx or a raise.

Each case is one fault a caller can inject (malformed Unicode, pathological JSON, oversized bodies,
odd API Gateway event fields); the Lambda handler (v1 and v2 events) and the ASGI app must give the
same exact status and code, and keep answering correctly afterwards.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from functions.app import build_app
from tests.functions.conftest import FakeLambdaContext, call
from tests.functions.eventfiles import make_event

LIMIT = 256 * 1024  # MODELFN_MAX_BODY_BYTES here: small, so oversized bodies stay cheap
EMBED_PREDICT = "/models/embed/predict"
ROUTES = (EMBED_PREDICT, "/v1/embeddings")


def _deep(depth: int) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"


# (id, raw body, status, code); every body is sent to both POST routes.
BODIES = [
    ("lone-high-surrogate", b'{"inputs": "a\\ud800b", "input": "a\\ud800b"}', 400, "bad_request"),
    ("lone-low-surrogate", b'{"inputs": ["ok", "\\udfff"], "input": ["ok", "\\udfff"]}', 400, "bad_request"),
    ("surrogate-in-key", b'{"\\ud800": 1}', 400, "bad_request"),
    ("surrogate-in-parameter", b'{"inputs": "x", "input": "x", "parameters": {"normalize": "\\ud800"}}',
     400, "bad_request"),
    ("deep-array-100k", _deep(100_000), 400, "bad_request"),
    ("deep-array-900", _deep(900), 400, "bad_request"),
    ("deep-array-40", _deep(40), 400, "bad_request"),
    ("deep-object", b'{"inputs": ' + b'{"a": ' * 500 + b"1" + b"}" * 500 + b"}", 400, "bad_request"),
    ("int-5000-digits", b'{"inputs": "x", "input": "x", "dimensions": ' + b"9" * 5000 + b"}", 400, "bad_request"),
    ("int-4000-digits", b'{"inputs": "x", "input": "x", "parameters": {"normalize": ' + b"9" * 4000 + b"}}",
     400, "bad_request"),
    ("nan-literal", b'{"inputs": "x", "input": "x", "dimensions": NaN}', 400, "bad_request"),
    ("infinity-literal", b'{"inputs": "x", "input": "x", "dimensions": -Infinity}', 400, "bad_request"),
    ("float-overflow", b'{"inputs": "x", "input": "x", "dimensions": 1e400}', 400, "bad_request"),
    ("over-the-body-limit", b'{"inputs": "' + b"a " * LIMIT + b'"}', 413, "payload_too_large"),
]


@pytest.fixture(scope="module")
def embed_bundle(tiny_bundle):
    return tiny_bundle("feature-extraction")


@pytest.fixture
def embedder(load_handler, embed_bundle):
    return load_handler(embed_bundle, MODELFN_MODEL_NAME="embed", MODELFN_MAX_BATCH=3, MODELFN_MAX_BODY_BYTES=LIMIT)


@pytest.fixture
def client(embedder):
    return TestClient(build_app(embedder.load()), raise_server_exceptions=False)


def _good(embedder, client):
    """One correct request on each adapter: the same 200 answer as before the hostile ones."""
    event = make_event("POST", "/v1/embeddings", {"input": "the city"})
    status, body, _ = call(embedder, event)
    asgi = client.post("/v1/embeddings", json={"input": "the city"})
    assert status == asgi.status_code == 200
    return body["data"][0]["embedding"]


@pytest.mark.parametrize("case", BODIES, ids=[c[0] for c in BODIES])
def test_hostile_body_is_a_4xx_on_both_adapters(embedder, client, case):
    _, raw, status, code = case
    before = _good(embedder, client)
    for path in ROUTES:
        for version in (1, 2):
            got_status, got, _ = call(embedder, make_event("POST", path, raw, version=version,
                                                                   base64_body=version == 1))
            assert (got_status, got["error"]["code"]) == (status, code), (path, version, got)
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), (path, response.text)
    assert _good(embedder, client) == before


def test_body_limit_default_is_lambdas_6_mb(load_handler, embed_bundle):
    module = load_handler(embed_bundle, MODELFN_MODEL_NAME="embed")
    assert module.load().max_body_bytes == 6 * 1024 * 1024
    over = b'{"input": "' + b"a" * (6 * 1024 * 1024) + b'"}'
    status, body, _ = call(module, make_event("POST", "/v1/embeddings", over))
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


def test_asgi_refuses_by_content_length_without_reading(client):
    response = client.post("/v1/embeddings", content=b'{"input": "x"}',
                           headers={"content-type": "application/json", "content-length": str(LIMIT + 1)})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_asgi_stops_reading_a_streamed_body_past_the_limit(embedder):
    """A chunked body with no Content-Length: the app stops pulling chunks once past the limit."""
    app = build_app(embedder.load())
    pulled, sent = [], []
    chunk = b"x" * 4096

    async def receive():
        pulled.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": True}  # an endless body

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/embeddings", "raw_path": b"/v1/embeddings", "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json")], "server": ("test", 80),
             "client": ("127.0.0.1", 1)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert sum(pulled) <= LIMIT + len(chunk)
    assert json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"


def test_asgi_streamed_body_within_the_limit_is_answered(client):
    def chunks():
        yield b'{"input": '
        yield b'"the city"}'

    response = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json()["data"][0]["embedding"]


def _odd_events():
    """(id, event) pairs with odd values where API Gateway puts strings."""
    cases = []

    def add(name, mutate, version=2, method="GET", path="/health"):
        event = make_event(method, path, None, version=version)
        mutate(event)
        cases.append((name, event))

    add("request-id-object", lambda e: e["requestContext"].__setitem__("requestId", {"a": [1, 2]}))
    add("request-id-surrogate", lambda e: e["requestContext"].__setitem__("requestId", "\udc00"))
    add("request-id-huge", lambda e: e["requestContext"].__setitem__("requestId", "r" * 1_000_000))
    add("request-id-int", lambda e: e["requestContext"].__setitem__("requestId", 10 ** 400))
    add("path-surrogate", lambda e: e["requestContext"]["http"].__setitem__("path", "/he\ud800alth"))
    add("path-control-chars", lambda e: e["requestContext"]["http"].__setitem__("path", "/health\x00\r\n\x1b[2J"))
    add("path-huge", lambda e: e["requestContext"]["http"].__setitem__("path", "/" + "p" * 1_000_000))
    add("path-number", lambda e: e["requestContext"]["http"].__setitem__("path", 7))
    add("path-null", lambda e: e["requestContext"]["http"].__setitem__("path", None))
    add("method-list", lambda e: e["requestContext"]["http"].__setitem__("method", ["GET"]))
    add("method-huge", lambda e: e["requestContext"]["http"].__setitem__("method", "G" * 1_000_000))
    add("method-surrogate", lambda e: e["requestContext"]["http"].__setitem__("method", "\ud800"))
    add("v1-path-surrogate", lambda e: e.__setitem__("path", "/\udfff"), version=1)
    add("v1-method-object", lambda e: e.__setitem__("httpMethod", {"GET": 1}), version=1)
    add("header-surrogate", lambda e: e["headers"].__setitem__("content-type", "application/\ud800"),
        method="POST", path=EMBED_PREDICT)
    add("stage-number", lambda e: e["requestContext"].__setitem__("stage", 5))
    add("request-context-list", lambda e: e.__setitem__("requestContext", []))
    add("model-name-surrogate", lambda e: e["requestContext"]["http"].__setitem__("path", "/models/\ud800"))
    return cases


ODD_EVENTS = _odd_events()


@pytest.mark.parametrize("case", ODD_EVENTS, ids=[c[0] for c in ODD_EVENTS])
def test_odd_event_fields_never_make_the_handler_raise(embedder, case, capsys):
    _, event = case
    response = embedder(event, FakeLambdaContext(aws_request_id="\ud800" + "i" * 5000))
    assert 400 <= response["statusCode"] < 500 or response["statusCode"] == 200
    body = json.loads(response["body"])
    assert response["statusCode"] == 200 or set(body["error"]) == {"code", "message"}
    response["body"].encode("utf-8")  # what Lambda will send must be valid UTF-8
    for line in capsys.readouterr().out.splitlines():  # one bounded JSON line per request
        assert len(line) < 20_000 and json.loads(line)["message"]


def test_a_log_line_that_cannot_be_written_does_not_fail_the_request(embedder, monkeypatch):
    class BrokenStdout:
        def write(self, text):
            raise OSError("stdout is gone")

        def flush(self):
            raise OSError("stdout is gone")

    monkeypatch.setattr("sys.stdout", BrokenStdout())
    status, body, _ = call(embedder, make_event("GET", "/health", None))
    assert status == 200 and body["status"] == "ok"


def test_non_string_context_ids_are_logged_as_their_type(embedder, capsys):
    capsys.readouterr()
    call(embedder, make_event("GET", "/health", None), FakeLambdaContext(aws_request_id=12345))
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line["function_request_id"] == "<int>" and line["status"] == 200

"""Lambda response streaming (functions/response_stream.py) against a local server speaking the
Lambda Runtime API: the streaming response mode headers, HTTP/1.1 chunked transfer, the
metadata prelude + eight null bytes + body, one SSE event per chunk, error trailers, /error."""

from __future__ import annotations

import json

import pytest

from functions import response_stream
from tests.functions.eventfiles import make_event
from tests.functions.runtime_api import RuntimeAPI, run_loop

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "hi 🙂 東京"}], "max_tokens": 12, "temperature": 0}


def _run(events: list) -> RuntimeAPI:
    return run_loop(events)


def _split(record: dict) -> tuple[dict, bytes]:
    body = b"".join(record["chunks"])
    prelude, delimiter, payload = body.partition(response_stream.DELIMITER)
    assert delimiter, "no eight-null-byte delimiter after the prelude"
    return json.loads(prelude), payload


@pytest.fixture
def generation_handler(load_handler, gen_bundle):
    return load_handler(gen_bundle("llama"), MODELFN_MODEL_NAME="tiny")


def test_streamed_sse_answer(generation_handler):
    from tests.functions.conftest import call

    server = _run([make_event("POST", CHAT, {**BODY, "stream": True}, version=1)])
    record = server.responses["req-0"]
    assert record["headers"]["lambda-runtime-function-response-mode"] == "streaming"
    assert record["headers"]["content-type"] == "application/vnd.awslambda.http-integration-response"
    assert record["trailers"] == {}
    prelude, payload = _split(record)
    assert prelude == {"statusCode": 200, "headers": {"content-type": "text/event-stream; charset=utf-8"}}
    # The prelude and delimiter travel first, then each server-sent event in its own chunk, as made.
    assert record["chunks"][0].endswith(response_stream.DELIMITER)
    events = [c.decode("utf-8") for c in record["chunks"][1:]]
    assert len(events) > 3 and all(e.startswith("data: ") and e.endswith("\n\n") for e in events)
    assert events[-1] == "data: [DONE]\n\n"
    # The same answer as the buffered handler gives as one body (ids and timestamps aside).
    buffered = generation_handler(make_event("POST", CHAT, {**BODY, "stream": True}), None)["body"]

    def content(sse: str) -> str:
        frames = [json.loads(f[6:]) for f in sse.split("\n\n") if f and f != "data: [DONE]"]
        return "".join(f["choices"][0]["delta"].get("content", "") for f in frames)

    assert content(payload.decode("utf-8")) == content(buffered) != ""
    status, whole, _ = call(generation_handler, make_event("POST", CHAT, BODY))
    assert status == 200 and whole["choices"][0]["message"]["content"] == content(buffered)


def test_json_answers_and_errors_stream_as_one_chunk(generation_handler):
    server = _run([make_event("POST", CHAT, BODY, version=2),
                   make_event("POST", CHAT, {**BODY, "max_tokens": 10_000}, version=2),
                   make_event("GET", CHAT, None, version=2),
                   {"not": "an API Gateway event"}])
    ok_prelude, ok = _split(server.responses["req-0"])
    assert ok_prelude["statusCode"] == 200 and json.loads(ok)["object"] == "chat.completion"
    bad_prelude, bad = _split(server.responses["req-1"])
    assert bad_prelude == {"statusCode": 400, "headers": {"content-type": "application/json"}}
    assert "context window" in json.loads(bad)["error"]["message"] or "at most" in json.loads(bad)["error"]["message"]
    method_prelude, _ = _split(server.responses["req-2"])
    assert method_prelude == {"statusCode": 405, "headers": {"content-type": "application/json", "allow": "POST"}}
    direct_prelude, direct = _split(server.responses["req-3"])
    assert direct_prelude["statusCode"] == 400 and "not an API Gateway proxy event" in json.loads(direct)["error"]["message"]
    assert server.errors == {}


def test_a_fault_after_the_prelude_goes_in_the_trailers(generation_handler, monkeypatch):
    def broken(event, context):
        def chunks():
            yield b"data: partial\n\n"
            raise RuntimeError("decoder fell over")
        return {"statusCode": 200, "headers": {"content-type": "text/event-stream"}}, chunks()

    monkeypatch.setattr(response_stream, "stream_answer", broken)
    server = _run([make_event("POST", CHAT, BODY)])
    record = server.responses["req-0"]
    assert record["chunks"][1] == b"data: partial\n\n"
    assert record["trailers"]["lambda-runtime-function-error-type"] == "Function.RuntimeError"
    import base64

    error = json.loads(base64.b64decode(record["trailers"]["lambda-runtime-function-error-body"]))
    assert error == {"errorMessage": "decoder fell over", "errorType": "RuntimeError"}


def test_an_event_that_is_not_json_is_reported_on_the_error_endpoint(generation_handler):
    server = _run([b"{{{", make_event("GET", "/health", None)])
    record = server.errors["req-0"]
    assert record["headers"]["lambda-runtime-function-error-type"] == "Runtime.JSONDecodeError"
    assert json.loads(record["chunks"][0])["errorType"] == "JSONDecodeError"
    prelude, body = _split(server.responses["req-1"])  # the loop goes on serving
    assert prelude["statusCode"] == 200 and json.loads(body)["status"] == "ok"

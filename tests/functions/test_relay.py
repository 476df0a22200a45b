"""The GPU stream relay (functions/relay.py) end to end without AWS: a Lambda Runtime API stand-in
drives the relay's streaming loop, the relay calls InvokeEndpointWithResponseStream through boto3
on a SageMaker runtime stand-in (tests/functions/sagemaker_runtime.py), which forwards to a real
GPU server on a tiny chat bundle and relays its chunks as event-stream PayloadParts."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config

from functions import relay as relay_module
from functions.handler import handler_for
from functions.relay import Relay
from functions.response_stream import DELIMITER
from functions.service import ModelService
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event
from tests.functions.runtime_api import run_loop
from tests.functions.sagemaker_runtime import SageMakerRuntime
from tests.functions.servers import (
    free_port,
    serving,
    start_process,
    wait_for,
    wait_until_ready,
)

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
CHAT_BODY = {"messages": [{"role": "user", "content": "hi 🙂 東京"}], "max_tokens": 12, "temperature": 0}
COMPLETION_BODY = {"prompt": "the quick brown", "max_tokens": 12, "temperature": 0}
ENDPOINT = "stack-tiny"


@pytest.fixture(scope="module")
def lm(gen_bundle) -> ModelService:
    return ModelService.load(gen_bundle("llama"), name="tiny-llama", provider="cpu")


@pytest.fixture(scope="module")
def gpu_server(gen_bundle, tmp_path_factory):
    """`serve` (the GPU container's entry point) on the tiny chat bundle, in its own process."""
    port = free_port()
    log = tmp_path_factory.mktemp("relay") / "serve.log"
    proc = start_process(["-m", "functions.serve"], {"MODELFN_BUNDLE_DIR": str(gen_bundle("llama")),
                                                     "MODELFN_MODEL_NAME": "tiny-llama", "MODELFN_PROVIDER": "cpu",
                                                     "SAGEMAKER_BIND_TO_PORT": str(port)}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc=proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture
def runtime(gpu_server):
    with _runtime(gpu_server) as server:
        yield server


class _runtime:
    """The SageMaker runtime stand-in in front of ``upstream``, served from a thread."""

    def __init__(self, upstream: str):
        self.server = SageMakerRuntime(upstream, ENDPOINT)

    def __enter__(self) -> SageMakerRuntime:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _relay(runtime: SageMakerRuntime, endpoint: str = ENDPOINT) -> Relay:
    client = boto3.client("sagemaker-runtime", endpoint_url=runtime.url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"total_max_attempts": 1}))
    return Relay(client, endpoint)


def _answer(record: dict) -> tuple[dict, list[bytes]]:
    """The prelude and the body chunks the function streamed for one invocation."""
    first = record["chunks"][0]
    assert first.endswith(DELIMITER), "the prelude and the delimiter travel first"
    return json.loads(first[: -len(DELIMITER)]), record["chunks"][1:]


def _content(events: str, chat: bool) -> str:
    frames = [json.loads(f[6:]) for f in events.split("\n\n") if f and f != "data: [DONE]"]
    key = (lambda c: c["delta"].get("content") or "") if chat else (lambda c: c["text"])
    return "".join(key(f["choices"][0]) for f in frames if f.get("choices"))


def test_streamed_pieces_concatenate_to_the_unstreamed_answer(runtime):
    events = [make_event("POST", CHAT, {**CHAT_BODY, "stream": True}, version=1),
              make_event("POST", CHAT, CHAT_BODY, version=1),
              make_event("POST", COMPLETIONS, {**COMPLETION_BODY, "stream": True}, version=1),
              make_event("POST", COMPLETIONS, COMPLETION_BODY, version=1)]
    server = run_loop(events, answer=_relay(runtime))
    assert server.errors == {}
    for stream_id, whole_id, chat in (("req-0", "req-1", True), ("req-2", "req-3", False)):
        prelude, chunks = _answer(server.responses[stream_id])
        assert prelude == {"statusCode": 200, "headers": {"content-type": "text/event-stream; charset=utf-8"}}
        assert server.responses[stream_id]["trailers"] == {}
        # Relayed as the server decoded it: many parts, not one buffered body.
        assert len(chunks) > 3
        body = b"".join(chunks).decode("utf-8")
        assert body.endswith("data: [DONE]\n\n") and body.count("data: [DONE]") == 1
        whole_prelude, whole = _answer(server.responses[whole_id])
        assert whole_prelude == {"statusCode": 200, "headers": {"content-type": "application/json"}}
        answer = json.loads(b"".join(whole))
        text = answer["choices"][0]["message"]["content"] if chat else answer["choices"][0]["text"]
        assert _content(body, chat) == text != ""
    # The container was told which route was called (functions/adapters/sagemaker.py routes by it).
    assert [f["X-Amzn-SageMaker-Custom-Attributes"] for f in runtime.forwarded] == \
        [f"modelfn-route={p}" for p in (CHAT, CHAT, COMPLETIONS, COMPLETIONS)]


def test_the_buffered_entry_point_gives_the_same_answer_in_one_body(runtime, monkeypatch):
    monkeypatch.setattr(relay_module, "_current", _relay(runtime))
    response = relay_module.handler(make_event("POST", CHAT, {**CHAT_BODY, "stream": True}), None)
    assert response["statusCode"] == 200 and response["body"].endswith("data: [DONE]\n\n")
    whole = relay_module.handler(make_event("POST", CHAT, CHAT_BODY), None)
    assert _content(response["body"], True) == json.loads(whole["body"])["choices"][0]["message"]["content"]


def test_the_servers_invocations_answer_streams_chunked_as_it_decodes(gpu_server):
    """SageMaker relays a chunked /invocations answer part by part (HTTP/1.1 chunked encoding)."""
    where = urlsplit(gpu_server)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    try:
        conn.request("POST", "/invocations", body=json.dumps({**CHAT_BODY, "stream": True}),
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Type").startswith("text/event-stream")
        parts = []
        while data := response.read1(65536):
            parts.append(data)
    finally:
        conn.close()
    assert len(parts) > 3 and parts[-1].endswith(b"data: [DONE]\n\n")


def test_errors_keep_the_lambda_tiers_shapes_and_statuses(runtime, lm):
    too_long = {**CHAT_BODY, "max_tokens": 10_000}
    events = [make_event("POST", CHAT, {**too_long, "stream": True}),
              make_event("POST", CHAT, b"{not json"),
              make_event("GET", CHAT, None),
              {"not": "an API Gateway event"},
              make_event("POST", CHAT, b'{"messages": "' + b"x" * (6 * 2**20) + b'"}')]
    server = run_loop(events, answer=_relay(runtime))
    lambda_tier = handler_for(lm)
    for request_id, event in (("req-0", events[0]), ("req-1", events[1])):
        prelude, chunks = _answer(server.responses[request_id])
        status, body, _ = call(lambda_tier, event)
        assert prelude == {"statusCode": status, "headers": {"content-type": "application/json"}}
        assert status == 400 and json.loads(b"".join(chunks)) == body
    prelude, _ = _answer(server.responses["req-2"])
    assert prelude == {"statusCode": 405, "headers": {"content-type": "application/json", "allow": "POST"}}
    prelude, chunks = _answer(server.responses["req-3"])
    assert prelude["statusCode"] == 400 and "not an API Gateway proxy event" in json.loads(b"".join(chunks))["error"]["message"]
    prelude, chunks = _answer(server.responses["req-4"])
    assert prelude["statusCode"] == 413 and json.loads(b"".join(chunks))["error"]["code"] == "payload_too_large"
    assert len(runtime.forwarded) == 2  # the 405, the stray event and the 413 never reached the endpoint


@pytest.mark.parametrize("status, kind, expected, retry_after", [
    (429, "ModelNotReadyException", (503, "model_not_ready"), "60"),  # scaled to zero: an instance is starting
    (503, "ServiceUnavailable", (503, "unavailable"), "5"),
    (500, "InternalFailure", (502, "endpoint_error"), None),
    (400, "ThrottlingException", (429, "throttled"), None),
])
def test_runtime_errors_map_to_the_apis_statuses(runtime, status, kind, expected, retry_after):
    runtime.fail_with = (status, kind, f"{kind} from the stand-in")
    server = run_loop([make_event("POST", CHAT, {**CHAT_BODY, "stream": True})], answer=_relay(runtime))
    prelude, chunks = _answer(server.responses["req-0"])
    error = json.loads(b"".join(chunks))["error"]
    assert (prelude["statusCode"], error["code"]) == expected and error["message"]
    assert prelude["headers"].get("retry-after") == retry_after


def test_an_error_event_before_any_part_gets_a_status_and_one_after_ends_the_stream_in_band(runtime):
    runtime.stream_error_after = (0, "ModelStreamError")
    server = run_loop([make_event("POST", CHAT, {**CHAT_BODY, "stream": True})], answer=_relay(runtime))
    prelude, chunks = _answer(server.responses["req-0"])
    assert prelude["statusCode"] == 502
    assert json.loads(b"".join(chunks))["error"]["code"] == "endpoint_error"

    runtime.stream_error_after = (3, "InternalStreamFailure")
    server = run_loop([make_event("POST", CHAT, {**CHAT_BODY, "stream": True})], answer=_relay(runtime))
    prelude, chunks = _answer(server.responses["req-0"])
    assert prelude["statusCode"] == 200
    events = b"".join(chunks).decode("utf-8").split("\n\n")
    # Three relayed events, then the error as the Lambda tier's streams report one, then [DONE].
    assert json.loads(events[-3][6:])["error"]["code"] == "unavailable"
    assert events[-2:] == ["data: [DONE]", ""]
    assert server.responses["req-0"]["trailers"] == {}


def test_a_client_that_leaves_stops_the_endpoints_stream(lm, monkeypatch):
    """The API's caller goes away mid-answer: the relay's write fails, it closes the endpoint's stream,
    SageMaker (the stand-in) leaves the container, and the server closes the generator unfinished."""
    from functions.adapters.sagemaker import SageMakerApp
    from functions.batching import BatchLimits

    hung_up, closed = threading.Event(), threading.Event()
    real = lm.chat_completions

    def slow_stream(content_type, body):
        answer = real(content_type, body)
        if answer.stream is None:
            return answer

        def pieces():
            try:
                for i, piece in enumerate(answer.stream):
                    if i == 2 and not hung_up.wait(60):  # hold the rest until the caller has hung up
                        raise RuntimeError("the caller never hung up")
                    if i >= 2:
                        time.sleep(0.05)  # a piece at a time, so the hang-up travels back before the end
                    yield piece
            finally:
                closed.set()

        return answer._replace(stream=pieces())

    monkeypatch.setattr(lm, "chat_completions", slow_stream)
    body = {**CHAT_BODY, "max_tokens": 60, "stream": True}
    app = SageMakerApp(lambda: lm, BatchLimits(), generation_slots=lambda provider: 1)
    with serving(app, lifespan="on") as url, _runtime(url) as runtime:
        wait_until_ready(url)
        api = run_loop([make_event("POST", CHAT, body)], answer=_relay(runtime), hang_up_after=2, hung_up=hung_up)
        record = api.responses["req-0"]
        assert record.get("hung_up") and len(record["chunks"]) == 2  # the prelude and the first event
        assert runtime.client_left.wait(30)
        wait_for(lambda: httpx.get(url + "/health").json()["generation"]["running"] == 0, "the server's counters")
        health = httpx.get(url + "/health").json()["generation"]
        assert health["abandoned"] == 1 and health["completed"] == 0
        assert closed.wait(10)

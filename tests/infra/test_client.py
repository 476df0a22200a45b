"""infra.client.Client against the real app over a tiny bundle on loopback (plain, behind a SigV4
check, behind an API-key check), a stack on moto's CloudFormation, scripted faults, and a fake chat
route streaming OpenAI's server-sent events."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import httpx
import pytest

from infra.client import (APIError, AuthError, CallTimeoutError, Client, CredentialsError, NotFoundError,
                          RetryPolicy, ServerError, ThrottledError, UnreachableError)
from infra.client.client import retry_after_seconds
from infra.emulator import free_port
from tests.infra.clientfixtures import create_stack, template_outputs
from tests.infra.servers import ApiKeyCheck, FakeChat, Scripted, serve

TEXTS = ["a cold start in 0.2 s", "fast from a cold start"]
TINY_MODELS = [{"name": "tiny", "source": "/unused", "task": "feature-extraction"}]


def test_importing_the_client_loads_no_ml_stack():
    heavy = ("torch", "transformers", "optimum", "onnxruntime", "numpy")
    code = f"import sys, infra.client; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_predict_embed_info_health_on_the_served_app(no_aws_creds, plain_url):
    with Client(plain_url) as client:
        assert client.auth_mode == "none"
        vectors = client.predict("tiny", TEXTS)
        assert client.embed(TEXTS, model="tiny") == [pytest.approx(v, abs=1e-5) for v in vectors]
        assert len(client.embed("one", dimensions=8)[0]) == 8
        info = client.info("tiny")
        assert (info["name"], info["task"], info["version"]) == ("tiny", "feature-extraction", "1")
        assert client.health()["status"] == "ok"


def test_iam_auth_signs_every_call(aws_creds, signed_server, plain_url):
    url, check = signed_server
    before = len(check.verified)
    with Client(url, auth="iam") as signed, Client(plain_url) as plain:
        assert signed.predict("tiny", TEXTS) == plain.predict("tiny", TEXTS)
        assert signed.info("tiny")["task"] == "feature-extraction"
    assert len(check.verified) == before + 2


def test_execute_api_urls_default_to_iam_and_loopback_to_none(no_aws_creds):
    assert Client("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod").auth_mode == "iam"
    assert Client("http://127.0.0.1:3000").auth_mode == "none"
    assert Client("http://127.0.0.1:3000", api_key="k").auth_mode == "api-key"


def test_missing_credentials(no_aws_creds, signed_server):
    url, _ = signed_server
    with Client(url, auth="iam") as client, pytest.raises(CredentialsError) as caught:
        client.predict("tiny", "x")
    assert "no AWS credentials found" in str(caught.value) and "\n" not in str(caught.value)


def test_wrong_credentials_are_a_403_with_the_apis_code(aws_creds, monkeypatch, signed_server):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    url, _ = signed_server
    with Client(url, auth="iam") as client, pytest.raises(AuthError) as caught:
        client.predict("tiny", "x")
    err = caught.value
    assert (err.status, err.code) == (403, "INVALID_SIGNATURE")
    assert "signature we calculated does not match" in err.api_message and "\n" not in str(err)


def test_unsigned_call_to_an_iam_api(no_aws_creds, signed_server):
    url, _ = signed_server
    with Client(url, auth="none") as client, pytest.raises(AuthError) as caught:
        client.health()
    assert caught.value.code == "MISSING_AUTHENTICATION_TOKEN" and "SigV4" in str(caught.value)


def test_unknown_model_is_a_404(no_aws_creds, plain_url):
    with Client(plain_url) as client, pytest.raises(NotFoundError) as caught:
        client.predict("nope", "x")
    assert (caught.value.status, caught.value.code) == (404, "not_found") and "nope" in str(caught.value)


def test_unreachable_endpoint(no_aws_creds):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client(url) as client, pytest.raises(UnreachableError) as caught:
        client.health()
    assert str(caught.value).startswith(f"cannot connect to {url}/health")


def test_timeout(no_aws_creds):
    with serve(Scripted((200, {}, {"status": "ok"}), delay_s=2)) as url:
        with Client(url, timeout=0.2) as client, pytest.raises(CallTimeoutError, match="within 0.2 s"):
            client.health()


def test_throttling_retries_honour_retry_after_then_succeed(no_aws_creds):
    waits: list[float] = []
    server = Scripted((429, {"Retry-After": "0.1"}, {"error": {"code": "THROTTLED", "message": "Too Many Requests"}}),
                      (503, {"Retry-After": "0.1"}, {"error": {"code": "overloaded", "message": "queue full"}}),
                      (200, {}, {"status": "ok"}))
    with serve(server) as url, Client(url, sleep=waits.append) as client:
        assert client.health() == {"status": "ok"}
    assert waits == [0.1, 0.1] and len(server.requests) == 3


def test_throttling_after_every_retry_is_a_typed_error(no_aws_creds):
    server = Scripted((429, {"Retry-After": "0.1"}, {"error": {"code": "THROTTLED", "message": "Too Many Requests"}}))
    with serve(server) as url, Client(url, retries=2) as client:  # the real sleep: 2 x 0.1 s
        with pytest.raises(ThrottledError) as caught:
            client.predict("tiny", "x")
    err = caught.value
    assert (err.status, err.code, err.attempts, err.retry_after) == (429, "THROTTLED", 3, 0.1)
    assert len(server.requests) == 3 and "after 3 attempts" in str(err)


def test_backoff_is_exponential_with_jitter_without_retry_after(no_aws_creds):
    waits: list[float] = []
    server = Scripted((502, {}, {"message": "Internal server error"}))  # API Gateway's bare shape
    with serve(server) as url, Client(url, retries=3, sleep=waits.append, rng=lambda: 1.0) as client:
        with pytest.raises(ServerError) as caught:
            client.health()
    assert waits == [0.5, 1.0, 2.0]
    assert (caught.value.code, caught.value.api_message) == ("bad_gateway", "Internal server error")
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=4.0)
    assert [policy.delay(n, None, lambda: 0.0) for n in range(3)] == [0.5, 1.0, 2.0]
    assert policy.delay(5, None) is None and policy.delay(0, 61.0) is None


def test_no_retry_on_client_errors_or_a_long_retry_after(no_aws_creds):
    server = Scripted((429, {"Retry-After": "3600"}, {"error": {"code": "THROTTLED", "message": "slow down"}}))
    with serve(server) as url, Client(url, sleep=pytest.fail) as client:
        with pytest.raises(ThrottledError) as caught:
            client.health()
    assert caught.value.attempts == 1 and caught.value.retry_after == 3600


def test_retry_after_as_an_http_date():
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds("1.5") == 1.5


def test_api_key_auth(no_aws_creds, tiny_app, monkeypatch):
    with serve(ApiKeyCheck(tiny_app, "the-key")) as url:
        with Client(url, api_key="the-key") as client:
            assert client.info("tiny")["name"] == "tiny"
        monkeypatch.setenv("MODELFN_API_KEY", "the-key")
        with Client(url) as client:
            assert client.health()["status"] == "ok"
        with Client(url, api_key="other") as client, pytest.raises(AuthError, match="INVALID_API_KEY"):
            client.health()


def test_chat_streams_pieces_as_they_arrive(no_aws_creds):
    gate = threading.Event()
    pieces = ["Hel", "lo", " wor", "ld"]
    app = FakeChat("chat", pieces, gate=gate)
    with serve(app) as url, Client(url, timeout=10) as client:
        stream = client.chat("Hi", model="chat", max_tokens=8)
        assert next(stream) == "Hel"  # the server holds the rest until the gate opens
        gate.set()
        assert stream.text() == "lo world"
        assert (stream.finish_reason, stream.usage["completion_tokens"]) == ("stop", 4)
    assert app.bodies[0] == {"messages": [{"role": "user", "content": "Hi"}], "stream": True, "model": "chat",
                             "max_tokens": 8}
    assert app.paths == ["/models/chat/v1/chat/completions"]  # a named model: its own OpenAI route


def test_chat_errors(no_aws_creds):
    with serve(FakeChat("chat", ["a", "b"], error_after=1)) as url, Client(url) as client:
        stream = client.chat("Hi", model="chat")
        with pytest.raises(APIError, match="model_unavailable"):
            list(stream)
        with pytest.raises(NotFoundError):
            client.chat("Hi", model="other")
    with serve(FakeChat("chat", ["a"], done=False)) as url, Client(url) as client:
        with pytest.raises(APIError, match="without data: \\[DONE\\]"):
            client.chat("Hi", model="chat").text()


def test_client_from_a_stack_signs_with_iam(aws_creds, moto_url, signed_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    url, check = signed_server
    name = "modelfn-" + uuid.uuid4().hex[:8]
    create_stack(moto_url, name, template_outputs(TINY_MODELS, url))
    with Client(stack_name=name) as client:
        assert (client.base_url, client.auth_mode) == (url, "iam")
        assert client.endpoints.models() == ["tiny"]
        assert len(client.predict("tiny", TEXTS)) == 2
    assert check.verified[-1]["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_client_from_an_api_key_stack_reads_its_key(aws_creds, moto_url, tiny_app, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    key = boto3.client("apigateway").create_api_key(name="k-" + uuid.uuid4().hex[:6], enabled=True)
    with serve(ApiKeyCheck(tiny_app, key["value"], prefix="/prod")) as url:
        name = "modelfn-" + uuid.uuid4().hex[:8]
        create_stack(moto_url, name, template_outputs(TINY_MODELS, url + "/prod", api_key_id=key["id"]),
                     auth_mode="API_KEY")
        with Client(stack_name=name) as client:
            assert client.auth_mode == "api-key"
            assert client.info("tiny")["task"] == "feature-extraction"


def test_openai_client_and_client_agree(no_aws_creds, plain_url):
    openai = pytest.importorskip("openai")
    with Client(plain_url) as client:
        ours = client.embed(TEXTS, model="tiny")
    theirs = openai.OpenAI(base_url=plain_url + "/v1", api_key="unused", http_client=httpx.Client())
    assert [d.embedding for d in theirs.embeddings.create(model="tiny", input=TEXTS).data] == \
        [pytest.approx(v, abs=1e-6) for v in ours]

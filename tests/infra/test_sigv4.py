"""SigV4 auth for httpx and requests: every signature is recomputed by botocore on a loopback server
(tests/infra/servers.SigV4Check) from the request as it arrived; the official OpenAI client and
huggingface_hub's InferenceClient call a protected endpoint through it."""

from __future__ import annotations

import json

import httpx
import pytest

from infra.client import CredentialsError, RequestsSigV4Auth, SigV4Auth, infer_service_region
from tests.infra.servers import TEST_KEY_ID, FakeChat, SigV4Check, send_json, serve


async def _echo(scope, receive, send):
    """Answers what it received: method, path, query and body."""
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    await send_json(send, 200, {"method": scope["method"], "path": scope["path"],
                                "query": scope["query_string"].decode(), "body": body.decode()})


@pytest.fixture(scope="module")
def echo_server():
    check = SigV4Check(_echo)
    with serve(check) as url:
        yield url, check


@pytest.mark.parametrize("url, expected", [
    ("https://a1b2c3d4e5.execute-api.eu-west-2.amazonaws.com/prod/models/x/predict", ("execute-api", "eu-west-2")),
    ("https://a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn/prod", ("execute-api", "cn-north-1")),
    ("https://abcdefghij.lambda-url.us-west-2.on.aws/", ("lambda", "us-west-2")),
    ("https://runtime.sagemaker.ap-south-1.amazonaws.com/endpoints/e/invocations", ("sagemaker", "ap-south-1")),
    ("http://127.0.0.1:3000/models/x/predict", (None, None)),
    ("https://api.example.com/prod", (None, None)),
])
def test_service_and_region_from_the_url(url, expected):
    assert infer_service_region(url) == expected


def test_httpx_signature_is_verified_by_botocore(aws_creds, echo_server):
    url, check = echo_server
    with httpx.Client(auth=SigV4Auth()) as http:
        answer = http.post(url + "/models/a%20b/predict?b=2&a=1", json={"inputs": "héllo"})
        got = http.get(url + "/health")
    assert answer.status_code == 200, answer.text
    echoed = answer.json()
    assert (echoed["method"], echoed["path"], echoed["query"]) == ("POST", "/models/a b/predict", "b=2&a=1")
    assert json.loads(echoed["body"]) == {"inputs": "héllo"}
    assert got.status_code == 200, got.text
    signed = check.verified[-2]["authorization"]
    assert f"Credential={TEST_KEY_ID}/" in signed and "/us-east-1/execute-api/aws4_request" in signed
    assert "SignedHeaders=content-type;host;x-amz-date" in signed


def test_requests_signature_is_verified_by_botocore(aws_creds, echo_server):
    import requests

    url, _ = echo_server
    answer = requests.post(url + "/v1/embeddings", json={"input": ["a", "b"]}, auth=RequestsSigV4Auth(), timeout=10)
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["body"]) == {"input": ["a", "b"]}
    assert requests.get(url + "/health?x=1", auth=RequestsSigV4Auth(), timeout=10).status_code == 200


def test_temporary_credentials_sign_the_session_token(aws_creds, monkeypatch, echo_server):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-of-a-role-session")
    url, check = echo_server
    with httpx.Client(auth=SigV4Auth()) as http:
        assert http.post(url + "/x", json={}).status_code == 200
    headers = check.verified[-1]
    assert headers["x-amz-security-token"] == "token-of-a-role-session"


def test_the_check_rejects_wrong_secrets_tampered_bodies_and_unsigned_requests(aws_creds, monkeypatch, echo_server):
    """The verifying server is a real check: each way of getting the signature wrong fails."""
    url, _ = echo_server
    with httpx.Client() as http:
        unsigned = http.post(url + "/x", json={})
    assert (unsigned.status_code, unsigned.json()["error"]["code"]) == (403, "MISSING_AUTHENTICATION_TOKEN")

    class Tamper(SigV4Auth):
        def auth_flow(self, request):
            signed = next(super().auth_flow(request))
            headers = {k: v for k, v in signed.headers.items() if k.lower() != "content-length"}
            yield httpx.Request(signed.method, signed.url, headers=headers, content=b'{"inputs": "other"}')

    with httpx.Client(auth=Tamper()) as http:
        tampered = http.post(url + "/x", json={"inputs": "mine"})
    assert (tampered.status_code, tampered.json()["error"]["code"]) == (403, "INVALID_SIGNATURE")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with httpx.Client(auth=SigV4Auth()) as http:
        wrong = http.post(url + "/x", json={})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "INVALID_SIGNATURE")


def test_region_defaults_to_the_aws_configuration_and_can_be_given(aws_creds, monkeypatch):
    with serve(SigV4Check(_echo, region="eu-central-1")) as url:
        with httpx.Client(auth=SigV4Auth()) as http:  # AWS_DEFAULT_REGION is us-east-1
            assert http.get(url + "/health").status_code == 403
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
        with httpx.Client(auth=SigV4Auth()) as http:
            assert http.get(url + "/health").status_code == 200
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with httpx.Client(auth=SigV4Auth(region="eu-central-1")) as http:
            assert http.get(url + "/health").status_code == 200


def test_missing_credentials_raise_a_typed_error(no_aws_creds, echo_server):
    url, check = echo_server
    before = len(check.verified)
    with httpx.Client(auth=SigV4Auth()) as http, pytest.raises(CredentialsError, match="no AWS credentials"):
        http.get(url + "/health")
    assert len(check.verified) == before


def test_openai_client_gets_embeddings_through_sigv4(aws_creds, signed_server, plain_url):
    openai = pytest.importorskip("openai")
    url, check = signed_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                           http_client=httpx.Client(auth=SigV4Auth()))
    texts = ["a cold start", "fast from a cold start"]
    result = client.embeddings.create(model="tiny", input=texts)
    vectors = [d.embedding for d in result.data]
    # The same model's vectors through its own route on the unprotected server
    expected = httpx.post(plain_url + "/models/tiny/predict", json={"inputs": texts}).json()
    assert len(vectors) == 2 and len(vectors[0]) == len(expected[0])
    for got, want in zip(vectors, expected):
        assert got == pytest.approx(want, abs=1e-5)
    assert check.verified[-1]["authorization"].startswith("AWS4-HMAC-SHA256 ")

    unsigned = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        unsigned.embeddings.create(model="tiny", input="a")


def test_openai_client_chat_streams_through_sigv4(aws_creds):
    openai = pytest.importorskip("openai")
    pieces = ["Paris", " is", " the", " capital", "."]
    with serve(SigV4Check(FakeChat("chat", pieces))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                               http_client=httpx.Client(auth=SigV4Auth()))
        stream = client.chat.completions.create(model="chat", stream=True,
                                                messages=[{"role": "user", "content": "Capital of France?"}])
        streamed = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        whole = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Capital?"}])
    assert streamed == pieces
    assert whole.choices[0].message.content == "".join(pieces)


def test_huggingface_inference_client_through_sigv4(aws_creds, signed_server, plain_url):
    hub = pytest.importorskip("huggingface_hub")
    import requests

    url, check = signed_server
    session = requests.Session()
    session.auth = RequestsSigV4Auth()
    hub.configure_http_backend(backend_factory=lambda: session)
    try:
        client = hub.InferenceClient(model=url + "/models/tiny/predict", token="unused")
        vector = client.feature_extraction("a cold start")
    finally:
        hub.configure_http_backend()
    expected = httpx.post(plain_url + "/models/tiny/predict", json={"inputs": "a cold start"}).json()
    import numpy as np

    assert vector.reshape(-1).tolist() == pytest.approx(np.asarray(expected).reshape(-1).tolist(), abs=1e-5)
    assert check.verified[-1]["authorization"].startswith("AWS4-HMAC-SHA256 ")

"""The Lambda adapter (API Gateway events) and the FastAPI adapter (ASGI) answer every request alike.

Both serve the same loaded ModelService; each request, good or bad, goes through the Lambda
``handler`` as a REST (v1) and an HTTP API (v2) event and through the FastAPI app over HTTP, and
the status codes and JSON bodies must agree (floats within tolerance).
"""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from functions.app import build_app
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event
from tests.functions.test_errors import CASES as ERROR_CASES

CLASSIFY, EMBED = "/models/tiny-text/predict", "/models/embed/predict"
JSON_TYPE = {"content_type": "application/json"}

# (id, method, path, body, make_event kwargs)
CLASSIFIER_CASES = [(c[0], c[1], c[2], c[3], c[4]) for c in ERROR_CASES] + [
    ("single", "POST", CLASSIFY, {"inputs": "I love this movie"}, {}),
    ("list-top-k", "POST", CLASSIFY, {"inputs": ["I love it", "bad"], "parameters": {"top_k": 2}}, {}),
    ("pair", "POST", CLASSIFY, {"inputs": {"text": "a cat", "text_pair": "a dog"}}, {}),
    ("sigmoid", "POST", CLASSIFY, {"inputs": "x", "parameters": {"function_to_apply": "sigmoid"}}, {}),
    ("base64-body", "POST", CLASSIFY, {"inputs": "I love this movie"}, {"base64_body": True}),
    ("json-suffix-type", "POST", CLASSIFY, {"inputs": "ok"}, {"content_type": "application/vnd.api+json"}),
    ("charset-type", "POST", CLASSIFY, {"inputs": "ok"}, {"content_type": "application/json; charset=utf-8"}),
    ("no-content-type", "POST", CLASSIFY, {"inputs": "ok"}, {"content_type": None}),
    ("over-long-422", "POST", CLASSIFY, {"inputs": "paris " * 40}, {}),
    ("info", "GET", "/models/tiny-text", None, {}),
    ("health", "GET", "/health", None, {}),
    ("openapi", "GET", "/openapi.json", None, {}),
    ("post-health", "POST", "/health", {"inputs": "x"}, {}),
    ("post-info", "POST", "/models/tiny-text", {"inputs": "x"}, {}),
    ("get-embeddings", "GET", "/v1/embeddings", None, {}),
    ("put-predict", "PUT", CLASSIFY, {"inputs": "x"}, {}),
    ("trailing-slash", "GET", "/health/", None, {}),
    ("nested-unknown", "GET", "/models/tiny-text/predict/more", None, {}),
    ("options-unknown", "DELETE", "/nowhere", None, {}),
    ("null-parameters", "POST", CLASSIFY, {"inputs": "x", "parameters": None}, {}),
    ("unknown-field", "POST", CLASSIFY, {"inputs": "x", "stream": True}, {}),
    ("unicode", "POST", CLASSIFY, {"inputs": "naïve café 東京 🙂"}, {}),
]

EMBED_CASES = [
    ("predict", "POST", EMBED, {"inputs": ["the city", "paris"]}, {}),
    ("predict-unnormalized", "POST", EMBED, {"inputs": "hello", "parameters": {"normalize": False}}, {}),
    ("embeddings", "POST", "/v1/embeddings", {"input": ["the city", "paris"], "model": "embed"}, {}),
    ("embeddings-base64", "POST", "/v1/embeddings", {"input": "x", "encoding_format": "base64"}, {}),
    ("embeddings-dimensions", "POST", "/v1/embeddings", {"input": "hello world", "dimensions": 8}, {}),
    ("embeddings-too-many-dims", "POST", "/v1/embeddings", {"input": "x", "dimensions": 33}, {}),
    ("embeddings-zero-dims", "POST", "/v1/embeddings", {"input": "x", "dimensions": 0}, {}),
    ("embeddings-token-ids", "POST", "/v1/embeddings", {"input": [[1, 2, 3]]}, {}),
    ("embeddings-format", "POST", "/v1/embeddings", {"input": "x", "encoding_format": "int8"}, {}),
    ("embeddings-other-model", "POST", "/v1/embeddings", {"input": "x", "model": "other"}, {}),
    ("embeddings-too-many", "POST", "/v1/embeddings", {"input": ["a", "b", "c", "d"]}, {}),
    ("embeddings-empty", "POST", "/v1/embeddings", {"input": ""}, {}),
    ("embeddings-unknown-field", "POST", "/v1/embeddings", {"input": "x", "stream": True}, {}),
    ("embeddings-malformed", "POST", "/v1/embeddings", b"{", {}),
    ("embeddings-non-utf8", "POST", "/v1/embeddings", b'{"input": "\xff"}', {"base64_body": True}),
    ("embeddings-form", "POST", "/v1/embeddings", b"input=x", {"content_type": "text/plain"}),
    ("info", "GET", "/models/embed", None, {}),
    # The model-scoped OpenAI routes: the same operation under the model's own path.
    ("scoped-embeddings", "POST", "/models/embed/v1/embeddings", {"input": ["the city"], "model": "embed"}, {}),
    ("scoped-embeddings-no-model", "POST", "/models/embed/v1/embeddings", {"input": "x", "dimensions": 8}, {}),
    ("scoped-embeddings-other-model", "POST", "/models/embed/v1/embeddings", {"input": "x", "model": "other"}, {}),
    ("scoped-embeddings-other-path", "POST", "/models/other/v1/embeddings", {"input": "x"}, {}),
    ("scoped-embeddings-get", "GET", "/models/embed/v1/embeddings", None, {}),
    ("scoped-chat-of-encoder", "POST", "/models/embed/v1/chat/completions", {"messages": []}, {}),
]


def _raw(body) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    return json.dumps(body).encode("utf-8")


def _asgi(client: TestClient, method: str, path: str, body, kwargs: dict):
    headers = {}
    content_type = kwargs.get("content_type", "application/json")
    raw = _raw(body)
    if raw is not None and content_type is not None:
        headers["content-type"] = content_type
    response = client.request(method, path, content=raw, headers=headers)
    return response.status_code, response.json(), response.headers["content-type"]


def assert_same(a, b, where="body"):
    """Equal JSON, floats within tolerance (one session, but keep float noise out of the question)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, str) and isinstance(b, str) and a != b and where.endswith("embedding"):
        va, vb = (list(memoryview(base64.b64decode(s)).cast("f")) for s in (a, b))
        assert_same(va, vb, where)
    else:
        assert a == b, where


def _check_alike(module, case, version):
    _, method, path, body, kwargs = case
    client = TestClient(build_app(module.load()), raise_server_exceptions=False)
    lam_status, lam_body, lam_headers = call(module, make_event(method, path, body, version=version, **kwargs))
    asgi_status, asgi_body, asgi_type = _asgi(client, method, path, body, kwargs)
    assert lam_status == asgi_status, (lam_body, asgi_body)
    assert lam_headers["content-type"] == asgi_type == "application/json"
    assert_same(lam_body, asgi_body)
    if lam_status >= 400:
        assert set(lam_body) == {"error"} and lam_body["error"]["message"]
        assert lam_status < 500, lam_body  # nothing here is a server fault
    return lam_status


@pytest.fixture(scope="module")
def classifier_bundle(tiny_bundle):
    return tiny_bundle("text-classification")


@pytest.fixture(scope="module")
def embed_bundle(tiny_bundle):
    return tiny_bundle("feature-extraction")


@pytest.fixture
def classifier(load_handler, classifier_bundle):
    return load_handler(classifier_bundle, MODELFN_MAX_BATCH=4, MODELFN_MAX_TOKENS=16, MODELFN_TRUNCATE=0)


@pytest.fixture
def embedder(load_handler, embed_bundle):
    return load_handler(embed_bundle, MODELFN_MODEL_NAME="embed", MODELFN_MAX_BATCH=3)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("case", CLASSIFIER_CASES, ids=[c[0] for c in CLASSIFIER_CASES])
def test_classifier_answers_alike(classifier, case, version):
    _check_alike(classifier, case, version)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("case", EMBED_CASES, ids=[c[0] for c in EMBED_CASES])
def test_embedder_answers_alike(embedder, case, version):
    _check_alike(embedder, case, version)


def test_both_adapters_keep_serving_after_all_bad_requests(classifier):
    good = ("good", "POST", CLASSIFY, {"inputs": ["I love this movie", "terrible film"]}, {})
    assert _check_alike(classifier, good, 2) == 200
    first = call(classifier, make_event("POST", CLASSIFY, good[3]))
    for case in CLASSIFIER_CASES:
        _check_alike(classifier, case, 2)
    assert _check_alike(classifier, good, 2) == 200
    assert call(classifier, make_event("POST", CLASSIFY, good[3])) == first


def test_405_names_the_allowed_methods(classifier):
    response = classifier(make_event("GET", CLASSIFY, None), None)
    assert response["statusCode"] == 405 and response["headers"]["allow"] == "POST"


def test_stage_prefix_is_stripped(classifier):
    event = make_event("GET", "/health", None, version=1)
    event["path"] = "/Prod/health"  # custom domain base path mapping keeps the stage in the path
    status, body, _ = call(classifier, event)
    assert status == 200 and body["status"] == "ok"
    event = make_event("GET", "/dev/health", None, version=2)
    event["requestContext"]["stage"] = "dev"  # named HTTP API stage
    assert call(classifier, event)[0] == 200


def test_invalid_base64_body_is_a_400(classifier):
    event = make_event("POST", CLASSIFY, {"inputs": "x"})
    event["body"], event["isBase64Encoded"] = "%%%not base64", True
    status, body, _ = call(classifier, event)
    assert status == 400 and "base64" in body["error"]["message"]


@pytest.mark.parametrize("damage", [
    lambda e: e.__setitem__("body", {"inputs": "x"}),
    lambda e: e.__setitem__("headers", ["content-type"]),
    lambda e: e["requestContext"].__setitem__("http", "POST"),
    lambda e: e["requestContext"]["http"].__setitem__("path", 7),
], ids=["body-object", "headers-list", "http-string", "path-number"])
def test_malformed_proxy_event_is_a_400(classifier, damage):
    event = make_event("POST", CLASSIFY, {"inputs": "x"})
    damage(event)
    status, body, _ = call(classifier, event)
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert call(classifier, make_event("POST", CLASSIFY, {"inputs": "x"}))[0] == 200


@pytest.mark.parametrize("version", [1, 2])
def test_a_model_scoped_openai_route_answers_as_the_stack_wide_one_for_its_own_model_only(embedder, version):
    body = {"input": ["the city", "paris"], "model": "embed"}
    stack_wide = call(embedder, make_event("POST", "/v1/embeddings", body, version=version))
    scoped = call(embedder, make_event("POST", "/models/embed/v1/embeddings", body, version=version))
    assert stack_wide[0] == scoped[0] == 200
    assert_same(stack_wide[1], scoped[1])
    # Another model in the body: the stack-wide route's 404, word for word.
    other = {"input": "x", "model": "other"}
    wrong_body = call(embedder, make_event("POST", "/models/embed/v1/embeddings", other, version=version))
    assert wrong_body[0] == 404 and wrong_body[1] == call(embedder, make_event("POST", "/v1/embeddings", other,
                                                                               version=version))[1]
    # Another model in the path: the 404 predict and info answer for it.
    wrong_path = call(embedder, make_event("POST", "/models/other/v1/embeddings", {"input": "x"}, version=version))
    assert wrong_path[0] == 404 and "'other'" in wrong_path[1]["error"]["message"]
    assert call(embedder, make_event("GET", "/models/embed/v1/embeddings", None, version=version))[0] == 405
    # A route the task does not serve: the stack-wide route's 404 naming the predict route.
    chat = call(embedder, make_event("POST", "/models/embed/v1/chat/completions", {"messages": []}, version=version))
    assert chat[0] == 404 and "/models/embed/predict" in chat[1]["error"]["message"] + str(chat[1]["error"])

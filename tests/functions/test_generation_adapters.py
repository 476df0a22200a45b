"""The Lambda adapter and the ASGI adapter answer generation requests alike: the same statuses,
content types and bodies (greedy, so deterministic), JSON or server-sent events, good or bad."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from functions.app import build_app
from tests.functions.eventfiles import make_event

CHAT, COMPLETIONS, PREDICT = "/v1/chat/completions", "/v1/completions", "/models/tiny-qwen2/predict"
USER = [{"role": "user", "content": "hi 🙂 東京"}]

CASES = [
    ("chat", "POST", CHAT, {"messages": USER, "max_tokens": 12, "temperature": 0}),
    ("chat-stream", "POST", CHAT, {"messages": USER, "max_tokens": 12, "temperature": 0, "stream": True}),
    ("chat-stream-usage", "POST", CHAT, {"messages": USER, "max_tokens": 6, "temperature": 0, "stream": True,
                                         "stream_options": {"include_usage": True}}),
    ("chat-stop", "POST", CHAT, {"messages": USER, "max_tokens": 20, "temperature": 0, "stop": ["e", "a"]}),
    ("chat-seeded", "POST", CHAT, {"messages": USER, "max_tokens": 12, "seed": 7, "top_p": 0.9}),
    ("completions", "POST", COMPLETIONS, {"prompt": "hello world", "max_tokens": 10, "temperature": 0}),
    ("completions-stream", "POST", COMPLETIONS, {"prompt": "hello", "max_tokens": 10, "temperature": 0,
                                                 "stream": True}),
    ("predict", "POST", PREDICT, {"inputs": "hello", "parameters": {"max_new_tokens": 6}}),
    ("predict-list", "POST", PREDICT, {"inputs": ["a", "b"], "parameters": {"max_new_tokens": 4,
                                                                           "return_full_text": False}}),
    ("models", "GET", "/v1/models", None),
    ("info", "GET", "/models/tiny-qwen2", None),
    ("openapi", "GET", "/openapi.json", None),
    # the caller's mistakes
    ("unknown-field", "POST", CHAT, {"messages": USER, "logprobs": True}),
    ("wrong-type", "POST", CHAT, {"messages": USER, "max_tokens": "many"}),
    ("bad-role", "POST", CHAT, {"messages": [{"role": "tool", "content": "x"}]}),
    ("other-model", "POST", COMPLETIONS, {"prompt": "x", "model": "gpt-4o"}),
    ("over-window", "POST", COMPLETIONS, {"prompt": "hello", "max_tokens": 300}),
    ("over-window-stream", "POST", CHAT, {"messages": USER, "max_tokens": 300, "stream": True}),
    ("five-stops", "POST", COMPLETIONS, {"prompt": "x", "stop": list("abcde")}),
    ("malformed", "POST", COMPLETIONS, b"{"),
    ("not-object", "POST", CHAT, b"[]"),
    ("empty-body", "POST", CHAT, b""),
    ("predict-bad-param", "POST", PREDICT, {"inputs": "x", "parameters": {"max_new_tokens": 0}}),
    ("embeddings", "POST", "/v1/embeddings", {"input": "x"}),
    ("get-chat", "GET", CHAT, None),
]


def _raw(body):
    return body if body is None or isinstance(body, bytes) else json.dumps(body).encode("utf-8")


def _normalize(content_type: str, text: str):
    """JSON or SSE events, with the per-response id and timestamp taken out."""
    def clean(payload):
        if isinstance(payload, dict) and "created" in payload and "id" in payload:
            payload = {k: v for k, v in payload.items() if k not in ("id", "created")}
        return payload

    if content_type.startswith("text/event-stream"):
        frames = text.split("\n\n")
        assert frames[-2:] == ["data: [DONE]", ""]
        return [clean(json.loads(f[len("data: "):])) for f in frames[:-2]]
    return clean(json.loads(text))


@pytest.fixture(scope="module")
def bundle(gen_bundle):
    return gen_bundle("qwen2")


@pytest.fixture
def handler_module(load_handler, bundle):
    return load_handler(bundle, MODELFN_MAX_BATCH=2)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_generation_answers_alike(handler_module, case, version):
    name, method, path, body = case
    client = TestClient(build_app(handler_module.load()), raise_server_exceptions=False)
    response = handler_module(make_event(method, path, _raw(body), version=version), None)
    headers = {"content-type": "application/json"} if body is not None else {}
    asgi = client.request(method, path, content=_raw(body), headers=headers)
    lam_type = response["headers"]["content-type"]
    assert response["statusCode"] == asgi.status_code, (response["body"], asgi.text)
    assert lam_type == asgi.headers["content-type"]
    lam, other = _normalize(lam_type, response["body"]), _normalize(lam_type, asgi.text)
    assert lam == other
    if asgi.status_code >= 400:
        assert set(lam) == {"error"} and lam["error"]["message"] and asgi.status_code < 500
    if body and isinstance(body, dict) and body.get("stream") and asgi.status_code == 200:
        assert lam_type == "text/event-stream; charset=utf-8"
    expected = {"over-window": 400, "over-window-stream": 400, "embeddings": 404, "other-model": 404,
                "get-chat": 405, "malformed": 400, "bad-role": 400}
    assert asgi.status_code == expected.get(name, 400 if name in ("unknown-field", "wrong-type", "five-stops",
                                                                    "not-object", "empty-body",
                                                                    "predict-bad-param") else 200)


def test_openapi_documents_the_generation_bodies(handler_module):
    schema = TestClient(build_app(handler_module.load())).get("/openapi.json").json()
    chat = schema["paths"][CHAT]["post"]
    assert "messages" in chat["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    params = schema["paths"]["/models/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert "max_new_tokens" in params["schema"]["properties"]["parameters"]["properties"]
    assert "/v1/models" in schema["paths"] and COMPLETIONS in schema["paths"]


def test_encoder_answers_404_with_a_hint_on_generation_routes(load_handler, tiny_bundle):
    module = load_handler(tiny_bundle("feature-extraction"), MODELFN_MODEL_NAME="embed")
    client = TestClient(build_app(module.load()))
    for path, body in ((CHAT, {"messages": USER}), (COMPLETIONS, {"prompt": "x"})):
        response = module(make_event("POST", path, body), None)
        asgi = client.post(path, json=body)
        assert response["statusCode"] == asgi.status_code == 404
        assert json.loads(response["body"]) == asgi.json()
        assert "serves text-generation models" in asgi.json()["error"]["message"]
    assert client.get("/v1/models").json()["data"][0]["id"] == "embed"

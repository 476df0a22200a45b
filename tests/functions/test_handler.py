"""The Lambda handler over API Gateway REST (v1) and HTTP API (v2) events from events/."""

from __future__ import annotations

import json

import numpy as np
import pytest

from events.generate import build_events, render
from tests.functions.conftest import call
from tests.functions.eventfiles import EVENTS_DIR, event_names, load_event


@pytest.fixture(scope="module")
def embed_bundle(tiny_bundle):
    return tiny_bundle("feature-extraction")


@pytest.fixture
def handler(load_handler, embed_bundle):
    # The committed events address the model declared in models.yaml, `minilm`.
    return load_handler(embed_bundle, MODELFN_MODEL_NAME="minilm", MODELFN_MODEL_VERSION="3")


def test_committed_events_match_models_yaml():
    expected = build_events()
    assert sorted(expected) == event_names()
    for name, event in expected.items():
        assert (EVENTS_DIR / name).read_text(encoding="utf-8") == render(event), name


@pytest.mark.parametrize("name", [n for n in event_names() if n.startswith("minilm-")])
def test_every_event_is_answered(handler, name):
    status, body, headers = call(handler, load_event(name))
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    route = name.split("-")[1]
    if route == "predict":
        sent = json.loads(load_event(name)["body"])["inputs"]
        assert len(body) == len(sent) and all(len(v) == 32 for v in body)
    elif route == "embeddings":
        assert body["object"] == "list" and body["model"] == "minilm"
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    elif route == "info":
        assert body["name"] == "minilm" and body["version"] == "3" and body["task"] == "feature-extraction"
        assert body["limits"]["max_batch"] == 32 and "chosen" in body["quantization"]
    elif route == "models":  # the model's own OpenAI API lists it: /models/minilm/v1/models
        assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["minilm"]
    else:
        assert body["status"] == "ok"


@pytest.mark.parametrize("name", [n for n in event_names() if n.startswith("smollm-")])
def test_every_generation_event_is_answered(load_handler, gen_bundle, name):
    """The committed events of the default models.yaml's text-generation model, answered by a tiny LM
    served under its name: chat, completions, predict, the model list, info and health."""
    handler = load_handler(gen_bundle("llama"), MODELFN_MODEL_NAME="smollm", MODELFN_MODEL_VERSION="1")
    status, body, headers = call(handler, load_event(name))
    assert status == 200, body
    route = name.split("-")[1]
    if route == "chat":
        assert body["object"] == "chat.completion" and body["model"] == "smollm"
        assert body["choices"][0]["message"]["role"] == "assistant"
    elif route == "completions":
        assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] <= 8
    elif route == "predict":
        assert body[0]["generated_text"].startswith("The capital of France is")
    elif route == "models":
        assert [m["id"] for m in body["data"]] == ["smollm"]


@pytest.mark.parametrize("name", [n for n in event_names() if n.startswith("whisper-")])
def test_every_speech_event_is_answered(load_handler, tiny_speech_bundle, name):
    """The committed events of the default models.yaml's speech model, answered by a tiny Whisper served
    under its name: predict (the sample recording), info, health and its own OpenAI model list."""
    handler = load_handler(tiny_speech_bundle(), MODELFN_MODEL_NAME="whisper", MODELFN_MODEL_VERSION="1")
    status, body, headers = call(handler, load_event(name))
    assert status == 200, body
    route = name.split("-")[1]
    if route == "predict":
        assert isinstance(body["text"], str)
    elif route == "info":
        assert body["name"] == "whisper" and body["task"] == "automatic-speech-recognition"
    elif route == "models":
        assert [m["id"] for m in body["data"]] == ["whisper"]
    else:
        assert body["status"] == "ok"


def test_v1_and_v2_events_give_the_same_answer(handler):
    _, v1, _ = call(handler, load_event("minilm-predict-v1"))
    _, v2, _ = call(handler, load_event("minilm-predict-v2"))
    assert v1 == v2


def test_openapi_schema_lists_the_routes(handler):
    status, schema, _ = call(handler, load_event("minilm-health-v2", path="/openapi.json"))
    assert status == 200
    assert {"/models/{name}/predict", "/v1/embeddings", "/models/{name}", "/health"} <= set(schema["paths"])


def test_logs_carry_request_id_and_cold_start_but_no_text(handler, capsys):
    call(handler, load_event("minilm-predict-v2"))
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    request_logs = [l for l in lines if l.get("message") == "request"]
    assert request_logs, lines
    log = request_logs[-1]
    assert log["function_request_id"] and log["correlation_id"] == "JKJaXmPLvHcESHA="
    assert "cold_start" in log and log["batch_size"] == 2
    assert "modelfn serves" not in json.dumps(lines)
    emf = [l for l in lines if "_aws" in l]
    assert emf and emf[-1]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "modelfn"
    names = {m["Name"] for m in emf[-1]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Latency", "BatchSize", "Tokens"} <= names


def test_request_text_is_logged_only_when_asked(load_handler, embed_bundle, capsys):
    handler = load_handler(embed_bundle, MODELFN_MODEL_NAME="minilm", MODELFN_LOG_INPUTS="1")
    call(handler, load_event("minilm-predict-v2"))
    assert "modelfn serves models as functions" in capsys.readouterr().out


def test_missing_bundle_is_reported_not_crashed(load_handler, tmp_path):
    module = load_handler(tmp_path / "nowhere")
    status, body, headers = call(module, load_event("minilm-health-v2"))
    assert status == 503 and body["error"]["code"] == "model_unavailable" and headers["retry-after"]
    assert "manifest.json is missing" in body["error"]["message"]


def test_missing_bundle_is_fetched_from_the_registry(load_handler, embed_bundle, tmp_path):
    # A real registry (a directory) and the real fetch: no stand-in module that a reload could bypass
    # or double-count, so the test passes alone and in any order.
    from infra.registry import open_registry

    registry = tmp_path / "registry"
    open_registry(str(registry)).push("minilm", embed_bundle)
    module = load_handler(tmp_path / "absent", MODELFN_REGISTRY_URI=registry, MODELFN_MODEL_NAME="minilm",
                          MODELFN_MODEL_VERSION="1", MODELFN_FETCH_DIR=tmp_path / "fetch")
    status, body, _ = call(module, load_event("minilm-info-v1"))
    assert status == 200 and body["version"] == "1"
    fetched = tmp_path / "fetch" / "minilm" / "1"
    assert module.load().model.bundle_dir == fetched
    assert (fetched / "model.onnx").read_bytes() == (embed_bundle / "model.onnx").read_bytes()


def test_non_api_gateway_event_is_a_400(handler, lambda_context):
    response = handler({"inputs": "hello"}, lambda_context)
    assert response["statusCode"] == 400


def test_embeddings_match_predict(handler):
    _, predicted, _ = call(handler, load_event("minilm-predict-v2"))
    event = load_event("minilm-embeddings-v2")
    event["body"] = json.dumps({"input": json.loads(load_event("minilm-predict-v2")["body"])["inputs"]})
    _, answer, _ = call(handler, event)
    got = np.array([d["embedding"] for d in answer["data"]])
    np.testing.assert_allclose(got, np.array(predicted), atol=1e-6)


def _records(capsys) -> list[dict]:
    return [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]


def test_each_request_writes_one_valid_emf_record(handler, capsys):
    capsys.readouterr()
    call(handler, load_event("minilm-predict-v2"))
    call(handler, load_event("minilm-health-v2", path="/nowhere"))
    ok, missing = _records(capsys)
    for record in (ok, missing):
        directive = record["_aws"]["CloudWatchMetrics"][0]
        assert isinstance(record["_aws"]["Timestamp"], int)
        for dims in directive["Dimensions"]:
            assert all(isinstance(record[d], str) for d in dims)
        for metric in directive["Metrics"]:
            assert isinstance(record[metric["Name"]], (int, float)), metric
    assert {"model"} <= set(ok["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) and ok["model"] == "minilm"
    assert ok["status"] == 200 and ok["Tokens"] == ok["tokens"] > 0 and ok["BatchSize"] == 2
    assert missing["status"] == 404 and missing["ClientErrors"] == 1 and missing["error_code"] == "not_found"
    assert "BatchSize" not in missing


def test_cold_start_is_flagged_once(load_handler, embed_bundle, capsys, monkeypatch):
    import functions.observability as obs

    monkeypatch.setattr(obs, "_cold", True)  # as in a fresh execution environment
    handler = load_handler(embed_bundle)
    capsys.readouterr()
    call(handler, load_event("minilm-health-v2"))
    call(handler, load_event("minilm-health-v2"))
    first, second = _records(capsys)
    assert (first["cold_start"], first["ColdStart"]) == (True, 1)
    assert (second["cold_start"], second["ColdStart"]) == (False, 0)


def test_an_injected_service_is_served_as_loaded(embed_bundle):
    from functions.handler import handler_for
    from functions.service import ModelService

    service = ModelService.load(embed_bundle, name="minilm", version="7")
    status, body, _ = call(handler_for(service), load_event("minilm-info-v1"))
    assert status == 200 and (body["name"], body["version"]) == ("minilm", "7")


def test_use_replaces_what_the_entry_point_serves(embed_bundle, tmp_path, monkeypatch):
    import functions.handler as module
    from functions.handler import LambdaHandler, handler_for
    from functions.service import ModelService

    monkeypatch.setenv("MODELFN_BUNDLE_DIR", str(tmp_path / "nowhere"))
    previous = module.use(LambdaHandler.from_environment())
    try:
        assert call(module.handler, load_event("minilm-health-v2"))[0] == 503  # nothing to load there
        module.use(handler_for(ModelService.load(embed_bundle, name="minilm")))
        status, body, _ = call(module.handler, load_event("minilm-health-v2"))
    finally:
        module.use(previous)
    assert status == 200 and body["model"] == "minilm"

"""Property-based fuzzing of every route of the tiny models' apps, through both adapters.

Hypothesis draws request bodies from the whole space of JSON (structure, numbers, text), from
task-shaped requests with arbitrary values in every field and parameter, and from raw bytes and
broken JSON text (lone surrogate escapes, deep nesting, huge integers, NaN). Each request goes
through the Lambda handler (an HTTP API v2 event) and the ASGI app, and must:

* never answer 5xx, and answer the same status on both adapters;
* answer every error as exactly ``{"error": {"code": str, "message": str}}``;
* agree with the OpenAPI schema: a body the schema refuses is a 4xx, and a body it accepts is a
  200 unless a limit or cross-field rule the schema cannot express refused it (``ALLOWED_REFUSALS``);
* leave the app answering a known good request exactly as before.

Example counts are fixed (``max_examples``) so the module runs in about a minute on two cores.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.app import build_app
from functions.handler import handler_for
from functions.service import ModelService
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event

TASKS = {  # task -> (served name, known parameter names)
    "feature-extraction": ("tiny-feature", ["normalize"]),
    "text-classification": ("tiny-text", ["top_k", "function_to_apply"]),
    "token-classification": ("tiny-token", ["aggregation_strategy", "ignore_labels"]),
    "question-answering": ("tiny-question", ["top_k", "doc_stride", "max_answer_len", "max_seq_len",
                                             "handle_impossible_answer", "align_to_words"]),
}
MAX_BATCH = 4
# Refusals of schema-valid bodies that depend on the model or on several fields at once.
ALLOWED_REFUSALS = (
    (413, "payload_too_large"),  # batch size, body size, question-answering windows
    (422, "unprocessable_entity"),  # longer than max_tokens without truncation, unwindowable question
    (404, "not_found"),  # "model" naming another model
    (400, "dimensions must be"), (400, "max_seq_len must be at most"), (400, "is larger than max_seq_len"),
)

settings.register_profile("modelfn-fuzz", deadline=None, derandomize=False, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])

# -- strategies --------------------------------------------------------------------------------
_words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_texts = st.one_of(_words, st.sampled_from(["", " ", "\t\n", "\x1c", "\u3000", "paris", "a b c " * 40,
                                            "naïve café 東京 🙂", "\u200b", "[UNK] [SEP] [CLS]", "##ing"]))
_numbers = st.one_of(st.integers(), st.integers(min_value=-(10 ** 300), max_value=10 ** 300),
                     st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0, 1, -1, 2, 8, 33, 2 ** 63]))
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _texts)
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(_words, inner, max_size=5)),
                     max_leaves=20)


def _item(task: str):
    if task == "question-answering":
        return st.one_of(st.fixed_dictionaries({"question": _texts, "context": _texts}), _json)
    if task == "text-classification":
        return st.one_of(_texts, st.fixed_dictionaries({"text": _texts},
                                                       optional={"text_pair": st.one_of(st.none(), _texts)}), _json)
    return st.one_of(_texts, _json)


def _predict_bodies(task: str):
    _, known = TASKS[task]
    item = _item(task)
    inputs = st.one_of(item, st.lists(item, min_size=0, max_size=MAX_BATCH + 1), _json)
    params = st.one_of(st.none(), _json, st.dictionaries(st.one_of(st.sampled_from(known), _words), _json,
                                                         max_size=4),
                       st.dictionaries(st.sampled_from(known), _scalars, max_size=len(known)))
    return st.fixed_dictionaries({}, optional={"inputs": inputs, "parameters": params, "options": _json,
                                               "stream": _json})


_embedding_bodies = st.fixed_dictionaries({}, optional={
    "input": st.one_of(_texts, st.lists(_texts, max_size=MAX_BATCH + 1), _json),
    "model": st.one_of(st.sampled_from(["tiny-feature", "other"]), _json),
    "encoding_format": st.one_of(st.sampled_from(["float", "base64", "", "int8"]), _json),
    "dimensions": st.one_of(st.integers(min_value=-2, max_value=40), _json),
    "user": _json, "extra": _json})


def _broken(body: bytes) -> st.SearchStrategy[bytes]:
    """A JSON text made hostile: surrogate escapes, deep nesting, huge numbers, NaN, truncation."""
    text = body.decode("utf-8")
    return st.one_of(
        st.just(text.replace('"', '"\\ud800', 1).encode()),
        st.just(text.replace('"', '"\\udfff\\ud800', 2).encode()),
        st.integers(min_value=30, max_value=3000).map(lambda d: b'{"inputs": ' + b"[" * d + b"]" * d + b"}"),
        st.integers(min_value=4000, max_value=6000).map(lambda n: b'{"inputs": "x", "input": "x", "dimensions": '
                                                                  + b"7" * n + b"}"),
        st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]).map(
            lambda c: b'{"inputs": "x", "input": "x", "dimensions": ' + c + b"}"),
        st.integers(min_value=0, max_value=max(len(body) - 1, 0)).map(lambda n: body[:n]),
        st.binary(max_size=64),
    )


# -- the harness -------------------------------------------------------------------------------
def _exchange(lambda_handler, client: TestClient, method: str, path: str, body: bytes | None):
    """The request through both adapters; (status, JSON body) after checking they agree."""
    event = make_event(method, path, body, base64_body=True) if body is not None else make_event(method, path)
    lam_status, lam_body, _ = call(lambda_handler, event)
    response = client.request(method, path, content=body, headers={"content-type": "application/json"})
    assert lam_status < 500 and response.status_code < 500, (lam_body, response.text)
    assert lam_status == response.status_code, (path, body, lam_body, response.text)
    for got in (lam_body, response.json()):
        if lam_status >= 400:
            assert set(got) == {"error"} and set(got["error"]) == {"code", "message"}, got
            assert isinstance(got["error"]["code"], str) and isinstance(got["error"]["message"], str)
            assert got["error"]["message"] and "Traceback" not in got["error"]["message"]
    return lam_status, lam_body


def _check_schema(schema: dict, payload, status: int, answer) -> None:
    valid = jsonschema.Draft202012Validator(schema).is_valid(payload)
    if not valid:
        assert status >= 400, f"schema refuses {payload!r} but the app answered {status}"
    elif status >= 400:
        code, message = answer["error"]["code"], answer["error"]["message"]
        assert any(status == s and (what == code or message.startswith(what)) for s, what in ALLOWED_REFUSALS), (
            f"schema accepts {payload!r} but the app refused it: {status} {answer}")


@pytest.fixture(scope="module")
def apps(tiny_bundle):
    """task -> (service, ASGI client, OpenAPI document); loaded once per module."""
    built = {}
    for task in TASKS:
        service = ModelService.load(tiny_bundle(task), max_batch=MAX_BATCH, max_tokens=32)
        app = build_app(service)
        built[task] = (service, TestClient(app, raise_server_exceptions=False), app.openapi())
    return built


def _good_request(task: str) -> dict:
    if task == "question-answering":
        return {"inputs": {"question": "where?", "context": "in paris, by the river."}}
    if task == "text-classification":
        return {"inputs": ["I love this movie", {"text": "a cat", "text_pair": "a dog"}]}
    return {"inputs": ["the city", "paris"]}


def _body_schema(openapi: dict, path: str) -> dict:
    return openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


@pytest.mark.parametrize("task", list(TASKS))
def test_predict_fuzz(apps, task):
    service, client, openapi = apps[task]
    adapter = handler_for(service)
    name, _ = TASKS[task]
    path = f"/models/{name}/predict"
    schema = _body_schema(openapi, "/models/{name}/predict")
    good = json.dumps(_good_request(task)).encode()
    before = _exchange(adapter, client, "POST", path, good)
    assert before[0] == 200

    @settings(settings.get_profile("modelfn-fuzz"), max_examples=120)
    @given(payload=_predict_bodies(task))
    def structured(payload):
        status, answer = _exchange(adapter, client, "POST", path, json.dumps(payload).encode())
        _check_schema(schema, payload, status, answer)

    @settings(settings.get_profile("modelfn-fuzz"), max_examples=40)
    @given(raw=_broken(good))
    def broken(raw):
        status, _ = _exchange(adapter, client, "POST", path, raw)
        assert status >= 400

    structured()
    broken()
    assert _exchange(adapter, client, "POST", path, good) == before


def test_embeddings_fuzz(apps):
    service, client, openapi = apps["feature-extraction"]
    adapter = handler_for(service)
    schema = _body_schema(openapi, "/v1/embeddings")
    good = json.dumps({"input": ["the city", "paris"], "dimensions": 8}).encode()
    before = _exchange(adapter, client, "POST", "/v1/embeddings", good)
    assert before[0] == 200

    @settings(settings.get_profile("modelfn-fuzz"), max_examples=120)
    @given(payload=_embedding_bodies)
    def structured(payload):
        status, answer = _exchange(adapter, client, "POST", "/v1/embeddings", json.dumps(payload).encode())
        _check_schema(schema, payload, status, answer)

    @settings(settings.get_profile("modelfn-fuzz"), max_examples=40)
    @given(raw=_broken(good))
    def broken(raw):
        assert _exchange(adapter, client, "POST", "/v1/embeddings", raw)[0] >= 400

    structured()
    broken()
    assert _exchange(adapter, client, "POST", "/v1/embeddings", good) == before


_segments = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N"), include_characters="-_.~%"),
                    min_size=1, max_size=12)


@settings(settings.get_profile("modelfn-fuzz"), max_examples=80)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
       parts=st.lists(st.one_of(_segments, st.sampled_from(["models", "tiny-text", "predict", "v1", "embeddings",
                                                            "health", "openapi.json"])), min_size=1, max_size=4),
       body=st.one_of(st.none(), st.binary(max_size=32), _json.map(lambda v: json.dumps(v).encode())))
def test_every_route_and_method_fuzz(apps, method, parts, body):
    service, client, _ = apps["text-classification"]
    if method in ("GET", "HEAD", "OPTIONS"):
        body = None
    path = "/" + "/".join(parts)
    if method == "HEAD":  # ASGI answers HEAD without a body; compare statuses only
        event = make_event("HEAD", path)
        assert handler_for(service)(event, None)["statusCode"] < 500
        assert client.request("HEAD", path).status_code < 500
        return
    _exchange(handler_for(service), client, method, path, body)


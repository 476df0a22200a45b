"""Bad input never yields a 500 or a traceback, and the function keeps serving afterwards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.functions.conftest import call
from tests.functions.eventfiles import make_event

PREDICT = "/models/tiny-text/predict"
GOOD = {"inputs": ["I love this movie", "terrible film"], "parameters": {"top_k": 2}}

CASES = [
    # (id, method, path, body, extra kwargs for make_event, status, code)
    ("malformed-json", "POST", PREDICT, b'{"inputs": ', {}, 400, "bad_request"),
    ("not-an-object", "POST", PREDICT, b'["a"]', {}, 400, "bad_request"),
    ("empty-body", "POST", PREDICT, b"", {}, 400, "bad_request"),
    ("missing-inputs", "POST", PREDICT, {"parameters": {}}, {}, 400, "bad_request"),
    ("inputs-number", "POST", PREDICT, {"inputs": 3}, {}, 400, "bad_request"),
    ("inputs-list-of-numbers", "POST", PREDICT, {"inputs": ["a", 3]}, {}, 400, "bad_request"),
    ("empty-string", "POST", PREDICT, {"inputs": "  "}, {}, 400, "bad_request"),
    ("empty-list", "POST", PREDICT, {"inputs": []}, {}, 400, "bad_request"),
    ("too-many-inputs", "POST", PREDICT, {"inputs": ["x"] * 5}, {}, 413, "payload_too_large"),
    ("bad-top-k", "POST", PREDICT, {"inputs": "a", "parameters": {"top_k": "two"}}, {}, 400, "bad_request"),
    ("unknown-parameter", "POST", PREDICT, {"inputs": "a", "parameters": {"temperature": 1}}, {}, 400, "bad_request"),
    ("parameters-not-object", "POST", PREDICT, {"inputs": "a", "parameters": [1]}, {}, 400, "bad_request"),
    ("non-utf8", "POST", PREDICT, b'{"inputs": "\xff\xfe"}', {"base64_body": True}, 400, "bad_request"),
    ("wrong-content-type", "POST", PREDICT, b"inputs=hello", {"content_type": "application/x-www-form-urlencoded"},
     415, "unsupported_media_type"),
    ("unknown-model", "POST", "/models/gpt-9/predict", GOOD, {}, 404, "not_found"),
    ("unknown-model-info", "GET", "/models/gpt-9", None, {}, 404, "not_found"),
    ("unknown-route", "GET", "/v2/whatever", None, {}, 404, "not_found"),
    ("wrong-method", "GET", PREDICT, None, {}, 405, "method_not_allowed"),
    ("embeddings-on-classifier", "POST", "/v1/embeddings", {"input": "a"}, {}, 404, "not_found"),
]


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle("text-classification")


@pytest.fixture
def handler(load_handler, bundle):
    return load_handler(bundle, MODELFN_MAX_BATCH=4, MODELFN_MAX_TOKENS=16, MODELFN_TRUNCATE=0)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_in_the_error_shape(handler, case, version):
    _, method, path, body, kwargs, status, code = case
    got_status, got, headers = call(handler, make_event(method, path, body, version=version, **kwargs))
    assert got_status == status, got
    assert headers["content-type"] == "application/json"
    assert set(got) == {"error"} and got["error"]["code"] == code and got["error"]["message"]
    assert "Traceback" not in json.dumps(got)


def test_over_long_text_is_422_when_truncation_is_off(handler):
    status, got, _ = call(handler, make_event("POST", PREDICT, {"inputs": "paris " * 40}))
    assert status == 422 and got["error"]["code"] == "unprocessable_entity" and "16 tokens" in got["error"]["message"]


def test_over_long_text_is_truncated_when_truncation_is_on(load_handler, bundle):
    handler = load_handler(bundle, MODELFN_MAX_TOKENS=16, MODELFN_TRUNCATE="true")
    long_status, long_answer, _ = call(handler, make_event("POST", PREDICT, {"inputs": "paris " * 40}))
    _, cut_answer, _ = call(handler, make_event("POST", PREDICT, {"inputs": "paris " * 14}))
    assert long_status == 200 and long_answer == cut_answer  # 14 words + [CLS] + [SEP] = the 16-token limit


def test_base64_encoded_body_is_decoded(handler):
    plain = call(handler, make_event("POST", PREDICT, GOOD))
    encoded = call(handler, make_event("POST", PREDICT, GOOD, base64_body=True))
    assert plain[0] == encoded[0] == 200 and plain[1] == encoded[1]


def test_server_fault_is_a_500_without_traceback_and_serving_resumes(load_handler, bundle):
    module = load_handler(bundle)
    model = module.load().model
    real_session = model.session

    class Broken:
        def run(self, *args, **kwargs):
            raise RuntimeError("simulated ORT failure /secret/path")

    model.session = Broken()
    status, got, _ = call(module, make_event("POST", PREDICT, GOOD))
    assert status == 500 and got["error"]["code"] == "internal_error"
    assert "secret" not in got["error"]["message"] and "Traceback" not in got["error"]["message"]
    model.session = real_session
    assert call(module, make_event("POST", PREDICT, GOOD))[0] == 200


def test_keeps_serving_correctly_after_every_kind_of_bad_input(handler):
    first = call(handler, make_event("POST", PREDICT, GOOD))
    for _, method, path, body, kwargs, _, _ in CASES:
        call(handler, make_event(method, path, body, **kwargs))
    assert call(handler, make_event("POST", PREDICT, GOOD)) == first


def test_non_finite_model_output_is_a_500_not_null_or_invalid_json(load_handler, bundle):
    module = load_handler(bundle)
    model = module.load().model
    real_session = model.session

    class NaNs:
        def run(self, names, feed):
            return [np.full((len(feed["input_ids"]), 2), np.nan, dtype=np.float32) for _ in names]

    model.session = NaNs()
    status, got, _ = call(module, make_event("POST", PREDICT, GOOD))
    assert status == 500 and got["error"]["code"] == "internal_error"
    model.session = real_session
    assert call(module, make_event("POST", PREDICT, GOOD))[0] == 200


@pytest.mark.parametrize("headers", [{"content-type": 5}, {"content-type": ["application/json"]}])
def test_header_values_of_the_wrong_type_are_a_400(handler, headers):
    event = make_event("POST", PREDICT, GOOD)
    event["headers"] = headers
    status, body, _ = call(handler, event)
    assert status == 400 and body["error"]["code"] == "bad_request", body


def test_multi_value_headers_that_are_not_lists_are_ignored_not_a_500(handler):
    event = make_event("POST", PREDICT, GOOD, version=1)
    event["headers"] = None
    event["multiValueHeaders"] = {"content-type": {"a": 1}}
    status, body, _ = call(handler, event)
    assert status == 200, body  # no usable content-type: the body is read as JSON, as with none at all


def test_qa_top_k_equal_to_the_number_of_candidate_spans_answers(load_handler, tiny_bundle):
    """A one-token context has exactly one candidate span: top_k 1 and the boundary just above."""
    handler = load_handler(tiny_bundle("question-answering"))
    name = "tiny-question"
    for top_k in (1, 2, 49, 50):
        event = make_event("POST", f"/models/{name}/predict", {
            "inputs": {"question": "who", "context": "bob"}, "parameters": {"top_k": top_k, "align_to_words": False}})
        status, body, _ = call(handler, event)
        assert status == 200, (top_k, body)

"""What a caller gets when the SageMaker runtime answers an error: the InvokeEndpoint integration's
mapping templates (infra/template/_api.py, rendered by tests/infra/vtl.py as API Gateway renders them)
and the stream relay's runtime_failure (functions/relay.py) give the same status and error code, and
every answer is the API's JSON error shape."""

from __future__ import annotations

import json

import pytest

from functions.relay import runtime_failure
from tests.functions.sagemaker_runtime import model_error
from tests.infra.test_template import template  # noqa: F401 - the fixture: a stack with gpu models
from tests.infra.vtl import escape_javascript, integration_response, render

CONTAINER_422 = json.dumps({"error": {"code": "unprocessable_entity", "message": "text 0 has 300 tokens, over "
                                                                                  "max_tokens 256 (truncate: false)"}})
# (case, runtime status, error type (the x-amzn-ErrorType header, which the integration never sees), body,
#  the API's status and error code)
ANSWERS = [
    ("a container error passes through", 424, "ModelError", model_error(422, CONTAINER_422),
     422, "unprocessable_entity"),
    ("a crashed container's text", 424, "ModelError",
     model_error(500, "<html>Internal Server Error: can't load 'model.onnx' \\ path /opt/ml/model</html>"),
     500, "model_error"),
    ("throttled: the endpoint's concurrency limit", 400, "ThrottlingException", {"message": None},
     429, "throttled"),
    ("throttled, with a message", 400, "ThrottlingException", {"message": "Rate exceeded"}, 429, "throttled"),
    ("over the 6 MB limit", 400, "ValidationError",
     {"message": "1 validation error detected: Value at 'body' failed to satisfy constraint: Member must have "
                 "length less than or equal to 6291456"}, 413, "payload_too_large"),
    ("the endpoint is gone", 400, "ValidationError",
     {"message": "Endpoint stack-big-llm of account 123456789012 not found."}, 502, "endpoint_error"),
    ("another validation error", 400, "ValidationError",
     {"message": "Content type 'text/plain' is not \"supported\" — naïve / 😀"}, 400, "bad_request"),
    ("scaled to zero", 429, "ModelNotReadyException", {"message": "Model is not ready"}, 503, "model_not_ready"),
    ("unavailable", 503, "ServiceUnavailable", {"message": None}, 503, "unavailable"),
    ("internal failure", 500, "InternalFailure", {"message": None}, 502, "endpoint_error"),
    ("an internal dependency", 530, "InternalDependencyException", {"message": "x"}, 502, "endpoint_error"),
]


@pytest.mark.parametrize("case, status, kind, body, api_status, code", ANSWERS, ids=[a[0] for a in ANSWERS])
def test_the_integration_and_the_relay_map_a_runtime_error_alike(template, case, status, kind, body,  # noqa: F811
                                                                 api_status, code):
    paths = template["Resources"]["Api"]["Properties"]["DefinitionBody"]["paths"]
    integration = paths["/models/big-llm/predict"]["post"]["x-amazon-apigateway-integration"]
    answered, headers, text = integration_response(integration, status, json.dumps(body))
    error = json.loads(text)["error"]  # valid JSON, the API's shape, whatever the runtime's text held
    assert (answered, error["code"]) == (api_status, code), text
    assert error["message"]

    # The relay reads botocore's parse of the same answer: the error type from the header, members.
    members = {k: v for k, v in body.items() if k not in ("message", "Message")}
    relayed = runtime_failure({"Code": kind, "Message": body.get("message") or body.get("Message") or ""},
                              status, members)
    if relayed.body is not None:  # the container's own error body, passed as it is
        assert json.loads(relayed.body) == json.loads(text)
        assert relayed.status == api_status
    else:
        assert (relayed.status, relayed.code) == (api_status, code)
    assert headers.get("Retry-After") == (str(relayed.retry_after) if relayed.retry_after else None)


def test_a_message_keeps_its_text_through_the_escaping():
    message = "can't \"parse\" C:\\path / naïve 😀\n\ttab"
    _, _, text = render('{"m": "$util.escapeJavaScript($input.path(\'$.m\')).replaceAll("\\\\\'","\'")"}',
                        json.dumps({"m": message}))
    assert json.loads(text) == {"m": message}


def test_escape_javascript_is_javas_including_its_single_quote():
    assert escape_javascript("it's \"q\" a/b \\ é 😀\x01") == \
        "it\\'s \\\"q\\\" a\\/b \\\\ \\u00E9 \\uD83D\\uDE00\\u0001"
    with pytest.raises(ValueError):  # why the templates undo it: \' is no JSON escape
        json.loads('"' + escape_javascript("it's") + '"')

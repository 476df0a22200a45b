"""A gpu text-generation model's stream relay in template.yaml (infra/template/_relay.py, _api.py) and
its code folder from `modelfn build` (infra/build/relay_code.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import replace

import pytest

from functions.errors import ConfigError
from infra.build.relay_code import write_relay_code
from infra.spec import parse_models_file
from infra.template import Deployment, generate_template, write_template
from tests.functions.eventfiles import make_event
from tests.functions.runtime_api import RuntimeAPI
from tests.functions.servers import wait_for
from tests.infra.test_template import _checkov, _lint

MODELS = parse_models_file({"registry": "s3://models-bucket/team", "models": [
    {"name": "minilm", "source": "x", "task": "feature-extraction"},
    {"name": "gpu-chat", "source": "x", "task": "text-generation", "target": "gpu"},
    {"name": "gpu-chat-zero", "source": "x", "task": "text-generation", "target": "gpu", "scale_to_zero": True},
]})
STREAMED = ("/v1/chat/completions", "/v1/completions")
# Each chat model's own OpenAI routes (functions/routes.py's scoped twins) stream through its own relay.
OWN_STREAMED = ("/models/gpu-chat/v1/chat/completions", "/models/gpu-chat/v1/completions")


def _template(**changes) -> dict:
    deployments = [Deployment(spec=s, version=1, bundle_bytes=300 * 2**20, context=f".modelfn/build/{s.name}")
                   for s in MODELS.models]
    deployments = [replace(d, **changes) if d.is_gpu else d for d in deployments]
    return generate_template(MODELS, deployments, MODELS.registry)


@pytest.fixture(scope="module")
def template() -> dict:
    return _template()


def _paths(template: dict) -> dict:
    return template["Resources"]["Api"]["Properties"]["DefinitionBody"]["paths"]


def test_the_streaming_routes_go_through_the_relay_and_the_others_straight_to_the_endpoint(template):
    paths = _paths(template)
    for path in STREAMED + OWN_STREAMED:  # stack-wide: the first chat model, gpu-chat; then its own
        operation = paths[path]["post"]
        integration = operation["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy" and integration["responseTransferMode"] == "STREAM"
        assert integration["uri"]["Fn::Sub"].endswith(
            "lambda:path/2021-11-15/functions/${GpuChatRelay.Arn}/response-streaming-invocations")
        assert operation["security"] == paths["/health"]["get"]["security"]  # the same auth as every route
    # No extra hop where nothing streams: predict and info call InvokeEndpoint directly.
    for path, method in (("/models/gpu-chat/predict", "post"), ("/models/gpu-chat", "get"),
                         ("/models/gpu-chat/v1/models", "get")):
        integration = paths[path][method]["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws" and integration["uri"]["Fn::Sub"].endswith(
            "endpoints/${AWS::StackName}-gpu-chat/invocations")
    # API Gateway may invoke the relay on exactly those routes.
    permissions = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Permission"
                   and r["Properties"]["FunctionName"] == {"Ref": "GpuChatRelay"}]
    assert sorted(p["SourceArn"]["Fn::Sub"].rsplit("/*/", 1)[1] for p in permissions) == \
        sorted(f"POST{path}" for path in STREAMED + OWN_STREAMED)
    # The second chat model is reached on its own routes only, through its own relay.
    for path in (p.replace("gpu-chat", "gpu-chat-zero") for p in OWN_STREAMED):
        integration = paths[path]["post"]["x-amazon-apigateway-integration"]
        assert integration["responseTransferMode"] == "STREAM" and "${GpuChatZeroRelay.Arn}" in integration["uri"]["Fn::Sub"]


def test_the_relay_function_calls_its_own_endpoint_and_nothing_else(template):
    resources = template["Resources"]
    relay = resources["GpuChatRelay"]
    props = relay["Properties"]
    assert relay["Type"] == "AWS::Serverless::Function" and props["Runtime"].startswith("python3")
    assert props["CodeUri"] == ".modelfn/build/_relay" and "PackageType" not in props  # a zip, no image
    env = props["Environment"]["Variables"]
    assert env["MODELFN_ENDPOINT_NAME"] == {"Fn::Sub": "${AWS::StackName}-gpu-chat"}
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/var/task/relay-bootstrap"
    assert "MODELFN_INFERENCE_COMPONENT" not in env
    (policy,) = props["Policies"]
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow" and set(statement["Action"]) <= {
        "sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"}
    assert statement["Resource"] == {"Ref": "GpuChatEndpoint"}
    assert resources[props["LoggingConfig"]["LogGroup"]["Ref"]]["Type"] == "AWS::Logs::LogGroup"
    # Scale to zero: the relay names the inference component, as the InvokeEndpoint integration does.
    zero = resources["GpuChatZeroRelay"]["Properties"]["Environment"]["Variables"]
    assert zero["MODELFN_INFERENCE_COMPONENT"] == {"Fn::Sub": "${AWS::StackName}-gpu-chat-zero"}


@pytest.mark.parametrize("how", ["--no-stream", "stream_relay: false"])
def test_the_relay_can_be_turned_off(how):
    if how == "--no-stream":
        template = _template(stream=False)
    else:
        models = parse_models_file({"models": [
            {"name": "gpu-chat", "source": "x", "task": "text-generation", "target": "gpu", "stream_relay": False}]})
        template = generate_template(models, [Deployment(spec=models.models[0], version=1,
                                                         context=".modelfn/build/gpu-chat")], models.registry)
    assert not [k for k in template["Resources"] if k.endswith("Relay")]
    for path in STREAMED:
        integration = _paths(template)[path]["post"]["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws" and "responseTransferMode" not in integration


def test_stream_relay_is_a_gpu_boolean():
    with pytest.raises(ConfigError, match="stream_relay.*true or false"):
        parse_models_file({"models": [{"name": "g", "source": "x", "task": "text-generation", "target": "gpu",
                                       "stream_relay": "no"}]})
    with pytest.raises(ConfigError, match="stream_relay.*gpu target only"):
        parse_models_file({"models": [{"name": "l", "source": "x", "task": "text-generation", "stream_relay": False}]})


def test_a_template_with_relays_passes_the_linters_and_checkov(tmp_path, template):
    path = write_template(template, tmp_path / "template.yaml")
    _lint(path)
    report = _checkov(path)
    assert report["failures"] == set() and report["failed"] == 0 and report["passed"] > 0, report


def test_an_all_gpu_stack_with_a_relay_keeps_the_concurrency_parameter(tmp_path):
    models = parse_models_file({"models": [{"name": "gpu-chat", "source": "x", "task": "text-generation",
                                            "target": "gpu"}]})
    template = generate_template(models, [Deployment(spec=models.models[0], version=1,
                                                     context=".modelfn/build/gpu-chat")], models.registry)
    assert "ReservedConcurrency" in template["Parameters"]  # the relay function refers to it
    _lint(write_template(template, tmp_path / "template.yaml"))


def test_the_relay_code_starts_the_streaming_loop_from_its_own_folder(tmp_path):
    """`modelfn build`'s folder alone (functions/ + relay-bootstrap, no PYTHONPATH) runs the relay's
    streaming Runtime API loop, which answers a request it refuses without calling SageMaker, and
    imports no model runtime."""
    folder = write_relay_code(tmp_path / "build")
    bootstrap = folder / "relay-bootstrap"
    assert os.access(bootstrap, os.X_OK) and (folder / "functions" / "relay.py").is_file()
    api = RuntimeAPI([make_event("GET", "/v1/chat/completions", None, version=1)])
    threading.Thread(target=api.serve_forever, daemon=True).start()
    env = {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "LAMBDA_TASK_ROOT": str(folder),
           "AWS_LAMBDA_RUNTIME_API": api.address, "MODELFN_ENDPOINT_NAME": "stack-gpu-chat",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    # The wrapper gets the managed runtime's own command line as arguments, and ignores it.
    proc = subprocess.Popen([str(bootstrap), "/var/runtime/bootstrap"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "req-0" in api.responses or proc.poll() is not None, "the relay's answer", timeout=60)
    finally:
        proc.kill()
        output = proc.communicate()[0].decode("utf-8", "replace")
        api.shutdown()
        api.server_close()
    record = api.responses["req-0"]
    prelude, _, body = b"".join(record["chunks"]).partition(b"\0" * 8)
    assert json.loads(prelude)["statusCode"] == 405, output
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    script = ("import sys, functions.relay, functions.response_stream; "
              "print(sorted(m for m in ('numpy', 'onnxruntime', 'onnxruntime_genai', 'tokenizers') if m in sys.modules))")
    probe = subprocess.run([sys.executable, "-c", script], cwd=folder, env={**env, "PYTHONPATH": str(folder)},
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"

"""Fixtures for the client tests (imported by name by the test modules): AWS credentials in the
environment, and the real app over a tiny bundle on loopback, plain and behind a SigV4 check."""

from __future__ import annotations

import pytest

from tests.infra.servers import TEST_KEY_ID, TEST_REGION, TEST_SECRET, SigV4Check, serve

_AWS_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
             "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "MODELFN_URL", "MODELFN_API_KEY")


@pytest.fixture
def no_aws_creds(monkeypatch, tmp_path):
    """An environment where the AWS credential chain finds nothing and reaches nothing."""
    for var in _AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture
def aws_creds(no_aws_creds, monkeypatch):
    """Static test credentials the SigV4 check knows."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET)


@pytest.fixture(scope="session")
def tiny_app(tiny_bundle):
    """The real app (functions.app.create_app) over a tiny feature-extraction bundle, served as "tiny"."""
    from functions.app import create_app

    return create_app(tiny_bundle("feature-extraction"), name="tiny", version="1")


@pytest.fixture(scope="session")
def plain_url(tiny_app):
    """The tiny app on loopback, no auth (as `modelfn serve` or `sam local start-api`)."""
    with serve(tiny_app) as url:
        yield url


@pytest.fixture(scope="session")
def signed_server(tiny_app):
    """(base URL, check): the tiny app behind an IAM-auth check, under a /prod stage prefix."""
    check = SigV4Check(tiny_app, prefix="/prod")
    with serve(check) as url:
        yield url + "/prod", check


@pytest.fixture(scope="session")
def moto_url():
    """moto's real HTTP server on loopback (CloudFormation, API Gateway), one per session."""
    from moto.server import ThreadedMotoServer

    from infra.emulator import free_port

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def template_outputs(models: list[dict], base_url: str, *, api_key_id: str | None = None) -> dict:
    """The Outputs the real template generator writes for ``models``, resolved to literal values with
    the API at ``base_url`` (what CloudFormation would show after a deploy)."""
    from infra.spec import parse_models_file
    from infra.template import committed_deployments, generate_template

    models_file = parse_models_file({"registry": "./registry", "models": models})
    outputs = generate_template(models_file, committed_deployments(models_file), "./registry")["Outputs"]
    api_prefix = "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/prod"
    resolved = {}
    for key, output in outputs.items():
        value = output["Value"]
        if output.get("Condition") == "UseApiKeyAuth" and api_key_id:
            value = api_key_id
        elif output.get("Condition"):
            continue
        elif "Fn::Sub" in value:
            assert value["Fn::Sub"].startswith(api_prefix), value
            value = base_url + value["Fn::Sub"][len(api_prefix):]
        elif "Ref" in value:
            value = f"arn:aws:lambda:us-east-1:123456789012:function:{value['Ref'].split('.')[0]}:live"
        resolved[key] = {"Value": value, **({"Description": output["Description"]} if "Description" in output else {})}
    return resolved


def create_stack(moto_url: str, name: str, outputs: dict, auth_mode: str = "AWS_IAM") -> None:
    """A CloudFormation stack on moto with these outputs and the template's AuthMode parameter."""
    import json

    import boto3

    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"AuthMode": {"Type": "String", "Default": "AWS_IAM",
                                    "AllowedValues": ["AWS_IAM", "API_KEY", "NONE"]}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": outputs,
    }
    boto3.client("cloudformation", endpoint_url=moto_url, region_name=TEST_REGION).create_stack(
        StackName=name, TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": "AuthMode", "ParameterValue": auth_mode}])

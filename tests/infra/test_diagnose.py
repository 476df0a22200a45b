""""Not found" for everything, diagnosed: `modelfn call` and `modelfn endpoints --check` against the real
app on loopback, called with a wrong base path, a missing or wrong stage (behind an API Gateway-like
stage), a wrong model name, or nothing deployed, each named in one line with its fix."""

from __future__ import annotations

import pytest
import yaml

from infra.cli import main
from infra.client import Client
from infra.client.diagnose import diagnose_not_found
from tests.infra.servers import Scripted, StagedGateway, serve

GATEWAY_PATHS = {"/health", "/models/tiny", "/models/tiny/predict", "/v1/embeddings"}


@pytest.fixture(scope="module")
def gateway_url(tiny_app):
    """The tiny app behind a REST API-like stage /prod (no auth): the URL without the stage."""
    with serve(StagedGateway(tiny_app, GATEWAY_PATHS)) as url:
        yield url


def _call(capsys, *argv: str) -> tuple[int, str]:
    code = main(["call", *argv])
    err = capsys.readouterr().err
    return code, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("modelfn: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_local_server_called_with_a_stage_is_told_to_drop_it(no_aws_creds, plain_url, capsys):
    code, err = _call(capsys, "tiny", "hello", "--url", plain_url + "/prod", "--task", "feature-extraction")
    line = _one_error_line(err)
    assert code == 1 and "the URL has an extra path /prod (local servers" in line
    assert line.rstrip(")").endswith(f"use --url {plain_url}")


def test_wrong_model_name_on_the_right_url_lists_the_served_model(no_aws_creds, plain_url, capsys):
    code, err = _call(capsys, "nope", "hello", "--url", plain_url)
    line = _one_error_line(err)
    assert code == 1 and "answers (GET /health is ok) but has no model 'nope'; it serves 'tiny'" in line


@pytest.mark.parametrize("suffix, cause", [
    ("", "the stage /prod is missing from the URL"),
    ("/dev", "the URL names stage /dev, but the API's stage is /prod"),
    ("/prod/models", "the URL has an extra path /models;"),
])
def test_gateway_url_without_or_with_the_wrong_stage(no_aws_creds, gateway_url, capsys, suffix, cause):
    code, err = _call(capsys, "tiny", "hello", "--url", gateway_url + suffix, "--task", "feature-extraction")
    line = _one_error_line(err)
    assert code == 1 and cause in line and f"use --url {gateway_url}/prod" in line, line


def test_gateway_wrong_model_is_not_reported_as_a_wrong_url(no_aws_creds, gateway_url, capsys):
    # API Gateway answers 403 Missing Authentication Token for a route it lacks, not 404.
    code, err = _call(capsys, "nope", "hello", "--url", gateway_url + "/prod")
    line = _one_error_line(err)
    assert code == 1 and "403" in line and "has no model 'nope'; it serves 'tiny'" in line


def test_nothing_deployed_and_unknown_stage(no_aws_creds, capsys):
    with serve(Scripted((404, {}, {"message": "Not Found"}))) as url:
        code, err = _call(capsys, "tiny", "hello", "--url", url, "--task", "feature-extraction")
    line = _one_error_line(err)
    assert code == 1 and f"{url} is not a modelfn API: no modelfn API answers there" in line
    assert "is the API deployed (`sam deploy`)" in line
    with serve(Scripted((403, {}, {"message": "Forbidden"}))) as url:
        code, err = _call(capsys, "tiny", "hello", "--url", url + "/prod", "--task", "feature-extraction")
    assert "API Gateway knows no such stage or API here" in _one_error_line(err)


def test_a_route_the_model_lacks_keeps_its_own_error(no_aws_creds, plain_url):
    # API and model are both there: the 404 was about the route, and no probe claims otherwise.
    with Client(plain_url) as client:
        assert diagnose_not_found(client, "tiny") is None
        assert diagnose_not_found(client) is None


def test_endpoints_check(no_aws_creds, plain_url, tmp_path, capsys):
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": [{"name": "tiny", "source": "x", "task": "feature-extraction"}]}))
    args = ["endpoints", "--models-file", str(models_file), "--check"]
    assert main([*args, "--local", plain_url]) == 0
    out = capsys.readouterr().out
    assert f"ok   GET {plain_url}/health -> 200" in out and f"ok   GET {plain_url}/models/tiny -> 200" in out

    assert main([*args, "--local", plain_url + "/prod"]) == 1
    captured = capsys.readouterr()
    assert f"FAIL GET {plain_url}/prod/health -> 404 no such route" in captured.out
    assert f"use --url {plain_url}" in _one_error_line(captured.err)

    models_file.write_text(yaml.safe_dump({"models": [{"name": "other", "source": "x", "task": "feature-extraction"}]}))
    assert main([*args, "--local", plain_url]) == 1
    captured = capsys.readouterr()
    assert f"FAIL GET {plain_url}/models/other -> 404" in captured.out
    assert "has no model 'other'; it serves 'tiny'" in _one_error_line(captured.err)

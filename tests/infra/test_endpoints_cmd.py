"""`modelfn endpoints`: from a stack's outputs (moto's CloudFormation, with the outputs the real
template generator writes) and for a local server from models.yaml through the task registry."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from infra.cli import main
from tests.infra.clientfixtures import create_stack, template_outputs

API = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/prod"
MODELS = [{"name": "minilm", "source": "/unused", "task": "feature-extraction"},
          {"name": "sentiment-2", "source": "/unused", "task": "text-classification"}]


@pytest.fixture
def stack(aws_creds, moto_url):
    name = "modelfn-" + uuid.uuid4().hex[:8]
    create_stack(moto_url, name, template_outputs(MODELS, API))
    return name


def test_stack_routes_as_json(stack, moto_url, capsys):
    assert main(["endpoints", "--stack-name", stack, "--endpoint-url", moto_url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["base_url"] == API and data["auth_mode"] == "AWS_IAM" and data["region"] == "us-east-1"
    assert data["models"]["minilm"] == {"POST /models/minilm/predict": API + "/models/minilm/predict",
                                        "GET /models/minilm": API + "/models/minilm",
                                        "POST /v1/embeddings": API + "/v1/embeddings"}
    assert data["models"]["sentiment-2"] == {"POST /models/sentiment-2/predict": API + "/models/sentiment-2/predict",
                                             "GET /models/sentiment-2": API + "/models/sentiment-2"}
    assert {"method": "GET", "path": "/health", "url": API + "/health", "model": None} in data["routes"]
    # minilm's own OpenAI API, for OpenAI(base_url=...): no route of its own; sentiment serves none.
    assert data["openai_base_urls"] == {"minilm": API + "/models/minilm/v1"}
    assert all(not r["path"].endswith("/v1") for r in data["routes"])


def test_stack_routes_as_a_table(stack, moto_url, capsys):
    assert main(["endpoints", "--stack-name", stack, "--endpoint-url", moto_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"stack {stack} (us-east-1), auth AWS_IAM: {API}"
    assert lines[1].split() == ["MODEL", "METHOD", "URL"]
    rows = [line.split() for line in lines[2:]]
    assert rows[0] == ["minilm", "POST", API + "/models/minilm/predict"]
    assert ["sentiment-2", "GET", API + "/models/sentiment-2"] in rows
    assert ["-", "GET", API + "/health"] in rows
    assert rows[-1] == ["minilm", API + "/models/minilm/v1"]  # the OpenAI base URLs, after the routes


def test_stack_name_defaults_to_samconfig(aws_creds, moto_url, tmp_path, monkeypatch, capsys):
    name = "from-samconfig-" + uuid.uuid4().hex[:6]
    create_stack(moto_url, name, template_outputs(MODELS[:1], API))
    (tmp_path / "samconfig.toml").write_text(f'version = 0.1\n[default.global.parameters]\nstack_name = "{name}"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["endpoints", "--endpoint-url", moto_url, "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["models"]) == ["minilm"]


def test_missing_stack_is_one_line(aws_creds, moto_url, capsys):
    assert main(["endpoints", "--stack-name", "no-such-stack", "--endpoint-url", moto_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelfn: error: cannot read stack 'no-such-stack':") and err.count("\n") == 1


def test_stack_without_modelfn_outputs_is_one_line(aws_creds, moto_url, capsys):
    name = "other-" + uuid.uuid4().hex[:6]
    create_stack(moto_url, name, {"Something": {"Value": "x"}})
    assert main(["endpoints", "--stack-name", name, "--endpoint-url", moto_url]) == 2
    err = capsys.readouterr().err
    assert "has no ApiUrl output" in err and err.count("\n") == 1


def test_missing_credentials_for_the_stack_is_one_line(no_aws_creds, moto_url, capsys):
    assert main(["endpoints", "--stack-name", "any", "--endpoint-url", moto_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelfn: error: no AWS credentials found to read stack 'any'") and err.count("\n") == 1


def test_local_routes_come_from_models_yaml_and_the_task_registry(tmp_path, capsys):
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": MODELS}))
    assert main(["endpoints", "--local", "http://127.0.0.1:3000/", "--models-file", str(models_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "local" and data["auth_mode"] is None
    # feature-extraction serves /v1/embeddings; text-classification does not
    assert "POST /v1/embeddings" in data["models"]["minilm"]
    assert list(data["models"]["sentiment-2"]) == ["POST /models/sentiment-2/predict", "GET /models/sentiment-2"]
    assert data["models"]["minilm"]["POST /models/minilm/predict"] == "http://127.0.0.1:3000/models/minilm/predict"
    assert data["models"]["minilm"]["POST /models/minilm/v1/embeddings"] == \
        "http://127.0.0.1:3000/models/minilm/v1/embeddings"
    assert data["openai_base_urls"] == {"minilm": "http://127.0.0.1:3000/models/minilm/v1"}

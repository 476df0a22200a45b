"""`modelfn registry ...` through the real dispatcher: output, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest

from functions.manifest import MODEL_FILE
from infra.cli import main
from infra.emulator import free_port


@pytest.fixture
def cli(registry_uri, capsys):
    """Run `modelfn registry --registry URI [--endpoint-url URL] ARGS...` -> (exit code, stdout, stderr)."""
    uri, endpoint = registry_uri

    def run(*args: str):
        prefix = ["registry", "--registry", uri] + (["--endpoint-url", endpoint] if endpoint else [])
        code = main(prefix + list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _one_line_error(code: int, err: str, expected: str, *, exit_code: int = 2) -> None:
    assert code == exit_code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("modelfn: error: ")
    assert expected in lines[0], lines[0]


def test_push_promote_rollback_history_pull_verify_delete(cli, bundle, tmp_path):
    code, out, _ = cli("push", "m", str(bundle("a")))
    assert (code, out.strip()) == (0, "m: pushed version 1")
    assert cli("push", "m", str(bundle("a")))[1].strip() == "m: already stored as version 1"
    cli("push", "m", str(bundle("b")))
    code, out, _ = cli("promote", "m", "1", "--reason", "launch")
    assert (code, out.strip()) == (0, "m: prod -> version 1")
    assert cli("promote", "m", "2")[1].strip() == "m: prod -> version 2 (was 1)"
    assert cli("rollback", "m")[1].strip() == "m: prod rolled back to version 1 (was 2)"

    code, out, _ = cli("list")
    assert out.split() == ["m"]
    code, out, _ = cli("list", "m")
    header, *rows = out.strip().splitlines()
    assert header.split() == ["VERSION", "TASK", "QUANTIZATION", "SIZE", "PUSHED", "ACTOR", "ALIASES"]
    assert [r.split()[0] for r in rows] == ["1", "2"] and rows[0].endswith("prod")

    code, out, _ = cli("history", "m", "--json")
    entries = json.loads(out)
    assert [(e["version"], e["action"]) for e in entries] == [(1, "promote"), (2, "promote"), (1, "rollback")]
    assert entries[0]["reason"] == "launch"
    code, out, _ = cli("history", "m")
    assert out.splitlines()[0].split() == ["TIME", "ACTION", "FROM", "TO", "ACTOR", "REASON"]

    code, out, _ = cli("show", "m", "prod", "--json")
    shown = json.loads(out)
    assert shown["version"] == 1 and shown["aliases"] == ["prod"] and MODEL_FILE in shown["manifest"]["files"]

    code, out, _ = cli("pull", "m", "prod", str(tmp_path / "out"))
    assert code == 0 and (tmp_path / "out" / MODEL_FILE).is_file()
    code, out, _ = cli("verify", "m")
    assert code == 0 and [line.split()[:2] for line in out.strip().splitlines()[1:]] == [["1", "ok"], ["2", "ok"]]

    code, _, err = cli("delete", "m", "1")
    _one_line_error(code, err, "in use by alias prod")
    assert cli("delete", "m", "2")[0] == 0
    assert json.loads(cli("list", "m", "--json")[1])[0]["version"] == 1


def test_verify_exits_1_on_corruption(cli, registry, bundle):
    cli("push", "m", str(bundle("a")))
    from tests.infra.registry.test_faults import _flip_first_byte, _overwrite

    _overwrite(registry, f"models/m/versions/1/{MODEL_FILE}", _flip_first_byte)
    code, out, err = cli("verify", "m")
    assert code == 1 and "CORRUPT" in out and MODEL_FILE in out
    code, _, err = cli("pull", "m", "1", "somewhere")
    _one_line_error(code, err, MODEL_FILE, exit_code=1)


@pytest.mark.parametrize("args, expected", [
    (("show", "ghost", "1"), "no model 'ghost'"),
    (("show", "m", "9"), "model 'm' has no version 9 (versions: 1)"),
    (("show", "m", "canary"), "model 'm' has no alias 'canary'"),
    (("history", "m", "--alias", "canary"), "no alias 'canary'"),
    (("promote", "m", "5"), "has no version 5"),
    (("rollback", "m"), "no alias 'prod'"),
    (("pull", "m", "staging", "out"), "no alias 'staging'"),
    (("push", "m", "/nonexistent/bundle"), "is not a model bundle"),
])
def test_unknown_model_version_alias_give_one_clear_line(cli, bundle, args, expected):
    cli("push", "m", str(bundle("a")))
    code, _, err = cli(*args)
    _one_line_error(code, err, expected)




def _s3_cli(capsys, uri: str, endpoint: str, *args: str):
    code = main(["registry", "--registry", uri, "--endpoint-url", endpoint, *args])
    return code, capsys.readouterr().err


def test_unreachable_endpoint(aws_env, capsys):
    code, err = _s3_cli(capsys, "s3://models/reg", f"http://127.0.0.1:{free_port()}", "list")
    _one_line_error(code, err, "cannot reach S3 endpoint http://127.0.0.1:")


def test_missing_bucket(moto_endpoint, aws_env, capsys):
    code, err = _s3_cli(capsys, "s3://no-such-bucket-here/reg", moto_endpoint, "list", "m")
    _one_line_error(code, err, "S3 bucket 'no-such-bucket-here' does not exist")


def test_missing_credentials(s3_bucket, moto_endpoint, monkeypatch, capsys):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, err = _s3_cli(capsys, f"s3://{s3_bucket}/reg", moto_endpoint, "list")
    _one_line_error(code, err, "no AWS credentials found")


def test_endpoint_from_environment(s3_bucket, moto_endpoint, monkeypatch, bundle, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    assert main(["registry", "push", "m", str(bundle("a")), "--registry", f"s3://{s3_bucket}/reg"]) == 0
    assert "pushed version 1" in capsys.readouterr().out


def test_default_registry_comes_from_models_yaml(tmp_path, monkeypatch, bundle, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models.yaml").write_text(
        "registry: ./elsewhere\nmodels:\n  - name: m\n    source: .\n    task: feature-extraction\n")
    assert main(["registry", "push", "m", str(bundle("a"))]) == 0
    assert (tmp_path / "elsewhere" / "models" / "m" / "versions" / "1" / "manifest.json").is_file()
    (tmp_path / "models.yaml").unlink()
    assert main(["registry", "push", "m", str(bundle("a"))]) == 0
    assert (tmp_path / ".modelfn" / "registry" / "models" / "m" / "versions" / "1").is_dir()
    capsys.readouterr()

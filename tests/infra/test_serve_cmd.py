"""`modelfn serve NAME`: the GPU server on this machine, over an exported bundle or a registry alias."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx
import pytest

from infra.cli import main as modelfn
from tests.functions.servers import ROOT, free_port, start_process, wait_until_ready

CLI = ["-c", "import sys; from infra.cli import main; sys.exit(main())", "serve"]


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        proc.kill()


def test_serves_a_bundle_directory_with_the_contract_and_the_routes(tiny_bundle, tmp_path):
    port = free_port()
    bundle = tiny_bundle("text-classification", quantization="none")
    proc = start_process([*CLI, "sentiment", "--bundle", str(bundle), "--port", str(port)], {}, tmp_path / "log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc=proc)
        predicted = httpx.post(url + "/models/sentiment/predict", json={"inputs": ["I love it", "terrible film"]})
        assert predicted.status_code == 200 and len(predicted.json()) == 2
        assert httpx.post(url + "/invocations", json={"inputs": ["I love it", "terrible film"]}).json() == predicted.json()
        info = httpx.get(url + "/models/sentiment").json()
        assert info["provider"] == "CPUExecutionProvider" and info["task"] == "text-classification"
    finally:
        assert _stop(proc) in (0, -signal.SIGTERM)
    log = (tmp_path / "log").read_text()
    assert f"sentiment from {bundle}" in log and "provider auto" in log


def test_pulls_the_alias_from_the_registry_when_nothing_is_exported(tiny_bundle, tmp_path):
    from infra.registry import open_registry

    registry = open_registry(str(tmp_path / "registry"))
    version = registry.push("embed", tiny_bundle("feature-extraction", quantization="none")).version
    registry.promote("embed", "staging", version, actor="test", reason="test")
    port = free_port()
    work = tmp_path / "project"
    work.mkdir()
    proc = start_process([*CLI, "embed", "--registry", str(tmp_path / "registry"), "--alias", "staging",
                          "--port", str(port), "--max-batch-tokens", "2048"], {}, tmp_path / "log", cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc=proc)
        assert httpx.get(url + "/models/embed").json()["version"] == str(version)
        embedded = httpx.post(url + "/invocations", json={"input": ["paris", "london"]}).json()
        assert [d["index"] for d in embedded["data"]] == [0, 1]
    finally:
        _stop(proc)
    assert (work / ".modelfn" / "pulled" / f"embed-v{version}" / "manifest.json").is_file()



def test_the_models_yaml_limits_apply_as_on_the_endpoint_unless_set_here(tiny_bundle, tmp_path):
    """NAME's models.yaml entry sets the limits the deployed endpoint gets (request limits and the
    batching ones); the environment and options still win."""
    import yaml

    work = tmp_path / "project"
    work.mkdir()
    (work / "models.yaml").write_text(yaml.safe_dump({"models": [{
        "name": "sentiment", "source": "x", "task": "text-classification", "target": "gpu", "max_tokens": 16,
        "truncate": False, "max_concurrent_requests": 3, "max_batch_tokens": 2048, "max_batch_requests": 40}]}))
    port = free_port()
    bundle = tiny_bundle("text-classification", quantization="none")
    proc = start_process([*CLI, "sentiment", "--bundle", str(bundle), "--port", str(port), "--max-batch-requests", "8"],
                         {"MODELFN_MAX_BATCH_TOKENS": "4096"}, tmp_path / "log", cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc=proc)
        long = httpx.post(url + "/models/sentiment/predict", json={"inputs": "word " * 40})
        assert long.status_code == 422 and "limit of 16 tokens" in long.json()["error"]["message"], long.text
        assert httpx.post(url + "/models/sentiment/predict", json={"inputs": "short"}).status_code == 200
    finally:
        _stop(proc)
    log = (tmp_path / "log").read_text()
    ready = json.loads(next(line for line in log.splitlines() if '"message":"ready"' in line))
    # models.yaml's 3 requests; the environment's 4096 tokens over models.yaml's 2048; the option's 8 rows over its 40
    assert (ready["max_concurrent_requests"], ready["max_batch_tokens"], ready["max_batch_requests"]) == (3, 4096, 8)
    assert "limits from models.yaml: max_batch=32, max_batch_requests=40, max_concurrent_requests=3, max_tokens=16, " \
           "truncate=false" in log

def test_nothing_to_serve_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert modelfn(["serve", "ghost", "--registry", str(tmp_path / "empty-registry")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to serve for 'ghost'" in err[0] and "modelfn export ghost" in err[0]


def test_bad_server_options_are_refused_before_loading(tmp_path, monkeypatch, capsys, tiny_bundle):
    monkeypatch.chdir(tmp_path)
    code = modelfn(["serve", "x", "--bundle", str(tmp_path), "--max-concurrent-requests", "0"])
    assert code == 2 and "max_concurrent_requests must be an integer from 1" in capsys.readouterr().err


def test_help_stays_instant_no_web_framework_imported():
    probe = "import sys; from infra.cli import build_parser; build_parser(); print(sorted({'fastapi', 'uvicorn', 'torch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().replace("'", '"')) == []

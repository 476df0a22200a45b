"""`modelfn eval NAME --eval-file F`: a registered bundle re-checked against its source on the user's inputs."""

from __future__ import annotations

import json

import pytest

from export import candidates
from export.exporter import export_bundle
from infra.cli import main
from tests.export.test_parity_gate import _short_drift

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def eval_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    texts = ["the city of paris", "ok", "john and mary love the movie", "what a terrible film!", "a",
             "google is a new york company " * 6]
    path.write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n", encoding="utf-8")
    return path


def _registered(registry, name, bundle):
    assert main(["registry", "--registry", str(registry), "push", name, str(bundle)]) == 0


def test_eval_passes_a_good_bundle_and_shows_the_table(tiny_bundle, tmp_path, eval_file, capsys):
    registry = tmp_path / "registry"
    _registered(registry, "tiny", tiny_bundle("feature-extraction"))
    capsys.readouterr()
    code = main(["eval", "tiny", "--version", "latest", "--registry", str(registry), "--eval-file", str(eval_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "on 6 inputs of yours: PASS" in out
    assert "min_cosine>=0.97" in out and "worst inputs per candidate" in out and "[user]" in out


def test_eval_fails_a_bundle_that_drifts_on_the_users_inputs(tiny_model_dir, tmp_path, eval_file, capsys):
    candidates.register("test-short-drift")(_short_drift)
    try:
        export_bundle(tiny_model_dir("feature-extraction"), "feature-extraction", tmp_path / "b", name="drifty",
                      strategy="fixed:test-short-drift", allow_drift=True, search_budget_s=0)
    finally:
        candidates.REGISTRY.pop("test-short-drift")
    registry = tmp_path / "registry"
    _registered(registry, "drifty", tmp_path / "b")
    capsys.readouterr()
    code = main(["eval", "drifty", "--registry", str(registry), "--eval-file", str(eval_file), "--json"])
    out, err = capsys.readouterr()
    assert code == 3
    result = json.loads(out)
    assert result["passed"] is False and result["samples"] == 6
    worst = result["candidate"]["worst"]
    assert worst[0]["kind"] == "user" and worst[0]["text"] in ("ok", "a")  # the short ones drift
    assert err.strip().splitlines()[-1].startswith("modelfn: error: drifty version 1 drifts")


def test_eval_names_a_missing_model(tmp_path, eval_file, capsys):
    code = main(["eval", "nope", "--registry", str(tmp_path / "registry"), "--eval-file", str(eval_file)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith("modelfn: error:")

"""`modelfn quickstart` end to end where no container engine is used: export -> registry ->
`modelfn build` -> the handler under the real Lambda Runtime Interface Emulator -> invocations."""

from __future__ import annotations

import pytest
import yaml

from infra.cli import main
from tests.integration.samlocal import ROOT

pytestmark = pytest.mark.slow


def test_quickstart_without_containers_serves_through_the_emulator(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from infra.registry import open_registry

    registry = tmp_path / "registry"
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"registry": str(registry), "models": [
        {"name": "tiny", "source": str(tiny_model_dir("feature-extraction")), "task": "feature-extraction",
         "max_tokens": 64}]}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELFN_IMAGE_PYTHON", "3.11")  # the wheels the container tests fetch too
    argv = ["quickstart", "--no-containers", "--wheelhouse", str(ROOT / ".wheelhouse")]

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "containers skipped: --no-containers given" in out
    assert "GET /health -> 200" in out and "POST /models/tiny/predict -> 200" in out
    assert "POST /v1/embeddings -> 200" in out and "cos[2]" in out
    assert (tmp_path / ".modelfn" / "quickstart" / "template.yaml").is_file()
    assert open_registry(str(registry)).resolve("tiny", "prod") == 1

    # Run again: the verified bundle is reused, the same content is the same version, and the
    # alias does not gain a history entry for a promotion that moves nothing.
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "reusing the verified bundle" in out and "same content as before" in out
    assert len(open_registry(str(registry)).history("tiny", "prod")) == 1

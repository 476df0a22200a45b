"""A bundle made by the real exporter goes through the registry and comes back verified."""

from __future__ import annotations

import pytest

from functions.manifest import read_manifest, verify_bundle


def test_exported_tiny_bundle_round_trips(registry, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exporter = pytest.importorskip("export.exporter")
    if not hasattr(exporter, "export_bundle"):
        pytest.skip("export.exporter.export_bundle has not landed yet")
    source = tiny_bundle("feature-extraction")
    pushed = registry.push("tiny", source)
    assert pushed.created
    registry.promote("tiny", "prod", pushed.version)
    dest = registry.pull("tiny", "prod", tmp_path / "pulled")
    assert verify_bundle(dest) == read_manifest(source)
    assert registry.push("tiny", source).created is False

"""Registry semantics, run against the local directory and S3 (moto server over HTTP)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from functions.manifest import MANIFEST_FILE, MODEL_FILE, read_manifest, sha256_file
from infra.registry import (AliasState, Conflict, NotInRegistry, PushResult, Registry, RegistryError, VersionInfo,
                            open_registry)


def test_push_numbers_versions_and_dedups_identical_content(registry, bundle):
    first, second = bundle("one"), bundle("two")
    assert registry.push("m", first) == PushResult(1, True)
    assert registry.push("m", second) == PushResult(2, True)
    # Same files, freshly exported (created_at differs): still the same content.
    assert registry.push("m", bundle("one")) == PushResult(1, False)
    assert registry.push("other", first) == PushResult(1, True)
    assert registry.list_models() == ["m", "other"]
    infos = registry.list_versions("m")
    assert [i.version for i in infos] == [1, 2]
    assert infos[0].manifest.files == read_manifest(first).files
    assert infos[0].digest != infos[1].digest


def test_show_resolves_numbers_latest_and_aliases(registry, bundle):
    registry.push("m", bundle("one"))
    registry.push("m", bundle("two"))
    registry.promote("m", "prod", 1, actor="alice", reason="first")
    info = registry.show("m", "prod")
    assert isinstance(info, VersionInfo)
    assert (info.version, info.aliases) == (1, ("prod",))
    assert registry.show("m", "latest").version == 2
    assert registry.resolve("m", "2") == 2
    assert registry.show("m", 2).size_bytes > 0


def test_promote_and_rollback_keep_append_only_history(registry, bundle):
    for content in ("a", "b", "c"):
        registry.push("m", bundle(content))
    registry.promote("m", "prod", 1, actor="alice")
    registry.promote("m", "prod", 2, actor="bob", reason="better")
    state = registry.promote("m", "prod", 3, actor="carol")
    assert isinstance(state, AliasState) and state.version == 3
    assert registry.rollback("m", "prod", actor="dave", reason="regression").version == 2
    assert registry.rollback("m", "prod").version == 1  # walks back through the promotions
    with pytest.raises(Conflict, match="no earlier version"):
        registry.rollback("m", "prod")
    assert registry.rollback("m", "prod", to=3).version == 3
    history = registry.history("m", "prod")
    assert [(h.version, h.previous, h.action) for h in history] == [
        (1, None, "promote"), (2, 1, "promote"), (3, 2, "promote"),
        (2, 3, "rollback"), (1, 2, "rollback"), (3, 1, "rollback")]
    assert history[1].actor == "bob" and history[1].reason == "better"
    assert history[3].reason == "regression"
    assert registry.resolve("m", "prod") == 3
    # staging is independent of prod
    registry.promote("m", "staging", 1)
    assert registry.resolve("m", "staging") == 1 and registry.resolve("m", "prod") == 3


def test_history_times_come_from_the_injected_clock(registry_uri, bundle):
    uri, endpoint = registry_uri
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    registry = open_registry(uri, endpoint_url=endpoint, clock=lambda: when)
    registry.push("m", bundle("a"), actor="ci")
    registry.promote("m", "prod", 1)
    assert registry.history("m", "prod")[0].time == "2030-01-02T03:04:05+00:00"
    assert registry.show("m", 1).pushed_at == "2030-01-02T03:04:05+00:00"
    assert registry.show("m", 1).actor == "ci"


def test_pull_is_verified_and_complete(registry, bundle, tmp_path):
    source = bundle("a")
    registry.push("m", source)
    registry.promote("m", "prod", 1)
    dest = registry.pull("m", "prod", tmp_path / "out" / "m")
    assert (dest / MANIFEST_FILE).read_bytes() == (source / MANIFEST_FILE).read_bytes()
    for name in read_manifest(source).files:
        assert sha256_file(dest / name) == sha256_file(source / name)
    assert [p.name for p in dest.parent.iterdir()] == ["m"]  # no staging leftovers
    # Pulling the same version again into the same place is a no-op; another version is refused.
    assert registry.pull("m", 1, dest) == dest
    registry.push("m", bundle("b"))
    with pytest.raises(RegistryError, match="already exists"):
        registry.pull("m", 2, dest)


def test_versions_are_immutable(registry, bundle):
    registry.push("m", bundle("a"))
    from infra.registry.errors import AlreadyExists

    with pytest.raises(AlreadyExists):
        registry.store.put_new("models/m/versions/1/" + MODEL_FILE, b"replaced")
    assert registry.verify("m")[0].ok


def test_delete_refuses_aliased_version_and_never_reuses_the_number(registry, bundle):
    registry.push("m", bundle("a"))
    registry.push("m", bundle("b"))
    registry.promote("m", "prod", 2)
    with pytest.raises(Conflict, match="alias prod"):
        registry.delete("m", 2)
    registry.delete("m", 1)
    assert [i.version for i in registry.list_versions("m")] == [2]
    with pytest.raises(NotInRegistry, match="no version 1"):
        registry.show("m", 1)
    # The deleted content can come back, but as a new number: 1 must never name two contents.
    assert registry.push("m", bundle("a")) == PushResult(3, True)
    registry.promote("m", "prod", 3)
    registry.delete("m", 2)
    assert registry.push("m", bundle("c")).version == 4


def test_push_refuses_a_broken_bundle(registry, bundle):
    source = bundle("a")
    (source / MODEL_FILE).write_bytes(b"changed after export")
    with pytest.raises(Exception, match=MODEL_FILE):
        registry.push("m", source)
    with pytest.raises(NotInRegistry):
        registry.list_versions("m")


def test_invalid_names_are_refused(registry, bundle):
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.push("Bad Name", bundle("a"))
    registry.push("m", bundle("a"))
    for alias in ("latest", "12", "a/b"):
        with pytest.raises(RegistryError, match="invalid alias"):
            registry.promote("m", alias, 1)


def test_alias_document_layout(registry, bundle):
    """The alias doc is plain JSON others can read: current version plus full history."""
    registry.push("m", bundle("a"))
    registry.promote("m", "prod", 1, actor="alice", reason="launch")
    data, _ = registry.store.get("models/m/aliases/prod.json")
    doc = json.loads(data)
    assert doc["version"] == 1 and doc["alias"] == "prod" and doc["model"] == "m"
    assert doc["history"][0] == {"version": 1, "previous": None, "actor": "alice",
                                 "time": doc["history"][0]["time"], "reason": "launch", "action": "promote"}


def test_registry_accepts_an_injected_store(registry, bundle):
    wrapped = Registry(registry.store)
    wrapped.push("m", bundle("a"))
    assert registry.resolve("m", "latest") == 1

"""Concurrent writers: no lost alias update, no shared version number, no duplicate content."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest


def _together(n: int, work):
    """Run work(i) on n threads released at the same instant; return results in index order."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def test_sixteen_concurrent_promotions_all_land_exactly_once(registry, bundle):
    versions = [registry.push("m", bundle(f"v{i}")).version for i in range(16)]
    assert versions == list(range(1, 17))

    _together(16, lambda i: registry.promote("m", "prod", versions[i], actor=f"thread-{i}"))

    history = registry.history("m", "prod")
    assert sorted(h.version for h in history) == versions  # each promotion exactly once
    assert sorted(h.actor for h in history) == sorted(f"thread-{i}" for i in range(16))
    assert registry.resolve("m", "prod") == history[-1].version
    # The chain is unbroken: each entry's previous is the entry before it.
    assert [h.previous for h in history] == [None] + [h.version for h in history[:-1]]


def test_eight_concurrent_pushes_of_different_content_get_distinct_versions(registry, bundle):
    sources = [bundle(f"content-{i}") for i in range(8)]
    results = _together(8, lambda i: registry.push("m", sources[i]))
    assert all(r.created for r in results)
    assert sorted(r.version for r in results) == list(range(1, 9))
    # Every number holds the content of the push that got it.
    for source, result in zip(sources, results):
        assert registry.show("m", result.version).manifest.files == registry_files(source)


def test_eight_concurrent_pushes_of_the_same_content_make_one_version(registry, bundle):
    sources = [bundle("same") for _ in range(8)]
    results = _together(8, lambda i: registry.push("m", sources[i]))
    assert len({r.version for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert [i.version for i in registry.list_versions("m")] == [results[0].version]
    # The losers cleaned up after themselves: only the winner's number remains claimed.
    from infra.registry.versions import version_numbers

    assert version_numbers(registry.store, "m") == [results[0].version]
    assert registry.push("m", bundle("next")).version == results[0].version + 1


def registry_files(source):
    from functions.manifest import read_manifest

    return read_manifest(source).files


class _DeleteLandsFirst:
    """A store whose next alias write is preceded by a concurrent delete of ``version``'s manifest,
    i.e. the delete's last alias check happened just before the promotion's compare-and-swap."""

    def __init__(self, store, name: str, version: int):
        self._store, self._manifest, self.armed = store, f"models/{name}/versions/{version}/manifest.json", True

    def __getattr__(self, attr):
        return getattr(self._store, attr)

    def _race(self, key: str) -> None:
        if self.armed and "/aliases/" in key:
            self.armed = False
            self._store.delete(self._manifest)

    def put_new(self, key, data):
        self._race(key)
        return self._store.put_new(key, data)

    def put_if_match(self, key, data, etag):
        self._race(key)
        return self._store.put_if_match(key, data, etag)


@pytest.mark.parametrize("existing_alias", [True, False])
def test_a_promotion_racing_a_delete_never_leaves_the_alias_on_the_deleted_version(registry, bundle, existing_alias):
    from infra.registry import Conflict, NotInRegistry, Registry

    registry.push("m", bundle("a"))
    registry.push("m", bundle("b"))
    if existing_alias:
        registry.promote("m", "prod", 1)
    racing = Registry(_DeleteLandsFirst(registry.store, "m", 2))
    with pytest.raises(Conflict, match="was deleted"):
        racing.promote("m", "prod", 2)
    if existing_alias:
        assert registry.resolve("m", "prod") == 1
        assert [h.version for h in registry.history("m", "prod")] == [1, 2, 1]
    else:
        with pytest.raises(NotInRegistry):
            registry.resolve("m", "prod")

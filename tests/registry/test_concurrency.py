"""Concurrent writers: no lost alias update, no shared version number, no duplicate content."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


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

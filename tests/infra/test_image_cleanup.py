"""Which images a quickstart run's builds left behind, on listings shaped like podman's and Docker's."""

from __future__ import annotations

import pytest

from infra.image_cleanup import (
    StoredImage,
    list_images,
    own_size,
    remove_leftovers,
    run_leftovers,
)

MB = 1_000_000


def image(id_, parent="", tags=(), size=0, model=None) -> StoredImage:
    return StoredImage(id_, parent, tuple(tags), size, model)


BASE = image("base", tags=["public.ecr.aws/lambda/python:3.12"], size=180 * MB)
DEPS = image("deps", "base", size=400 * MB)  # the dependency stage: unlabelled, untagged, the build cache
LABEL = image("label", "base", size=180 * MB, model="minilm")  # shared by both builds (cached step)
OLD_FINAL = image("old-final", "label", ["minilmfunction:minilm-v1"], 380 * MB, "minilm")
OLD_RAPID = image("old-rapid", "old-final", ["minilmfunction:rapid-x86_64"], 390 * MB, "minilm")
OLD_COPY = image("old-copy", "label", size=370 * MB, model="minilm")  # OLD_FINAL's own layers
OLD_FINAL_ON_COPY = image("old-final", "old-copy", ["minilmfunction:minilm-v1"], 380 * MB, "minilm")
NEW_COPY = image("new-copy", "label", size=371 * MB, model="minilm")
NEW_FINAL = image("new-final", "new-copy", ["minilmfunction:minilm-v1"], 381 * MB, "minilm")
NEW_RAPID = image("new-rapid", "new-final", ["minilmfunction:rapid-x86_64"], 391 * MB, "minilm")


def untagged(stored: StoredImage) -> StoredImage:
    return StoredImage(stored.id, stored.parent, (), stored.size, stored.model)


def test_a_rebuild_removes_the_replaced_build_and_rapid_image_but_keeps_shared_layers_and_caches():
    before = [BASE, DEPS, LABEL, OLD_COPY, OLD_FINAL_ON_COPY, OLD_RAPID]
    after = [BASE, DEPS, LABEL, OLD_COPY, untagged(OLD_FINAL_ON_COPY), untagged(OLD_RAPID),
             NEW_COPY, NEW_FINAL, NEW_RAPID]
    left = run_leftovers(before, after, {"minilm"})
    # Children first, so each removal is of an image nothing else is built on.
    assert [i.id for i in left] == ["old-rapid", "old-final", "old-copy"]
    store = {i.id: i for i in after}
    assert sum(own_size(i, store) for i in left) == (390 - 380) * MB + (380 - 370) * MB + (370 - 180) * MB


def test_nothing_is_removed_when_the_builds_changed_nothing():
    before = [BASE, DEPS, LABEL, OLD_COPY, OLD_FINAL_ON_COPY, OLD_RAPID]
    assert run_leftovers(before, list(before), {"minilm"}) == []


def test_images_that_are_not_this_runs_leftovers_stay():
    users_dangling = image("users", "base", size=50 * MB)  # no modelfn label: never ours
    other_model = image("other", "base", size=60 * MB, model="smollm")  # modelfn's, but not built by this run
    old_leftover = image("stale", "label", size=300 * MB, model="minilm")  # untagged before the run already
    new_deps = image("deps-2", "base", size=410 * MB)  # this run's dependency stage: the next run's cache
    before = [BASE, DEPS, LABEL, OLD_FINAL, users_dangling, untagged(other_model), old_leftover]
    after = [*before, new_deps, image("in-run", "label", size=200 * MB, model="minilm")]
    assert [i.id for i in run_leftovers(before, after, {"minilm"})] == ["in-run"]


def test_a_tagged_image_or_one_a_kept_image_is_built_on_is_never_selected():
    before = [BASE, LABEL, OLD_FINAL]
    after = [BASE, LABEL, OLD_FINAL, NEW_COPY, image("child-of-copy", "new-copy", ["mine:1"], 1, "minilm")]
    assert run_leftovers(before, after, {"minilm"}) == []


class FakeEngine:
    """The two docker SDK calls remove_leftovers makes, over a raw listing; ``in_use`` refuses removal."""

    def __init__(self, raw: list[dict], in_use: set[str] = frozenset()):
        self.raw, self.in_use, self.removed = raw, in_use, []
        self.api = self

    def images(self, all=False):
        assert all, "intermediate images must be listed too"
        return self.raw

    def remove_image(self, image_id, noprune=False):
        from docker.errors import APIError

        assert noprune, "the engine must not remove parents on its own: the selection decides"
        if image_id in self.in_use:
            raise APIError("image is in use by a container")
        self.removed.append(image_id)


def _raw(stored: StoredImage, docker_style: bool) -> dict:
    tags = list(stored.tags) or (["<none>:<none>"] if docker_style else None)
    return {"Id": "sha256:" + stored.id, "ParentId": stored.parent, "RepoTags": tags, "Size": stored.size,
            "Labels": {"modelfn.model": stored.model} if stored.model else None}


@pytest.mark.parametrize("docker_style", [False, True])
def test_listing_reads_podman_and_docker_answers(docker_style):
    listed = list_images(FakeEngine([_raw(i, docker_style) for i in (BASE, untagged(OLD_FINAL), DEPS)]))
    assert listed == [BASE, untagged(OLD_FINAL), DEPS]


def test_an_image_in_use_is_kept_with_its_parents_and_the_rest_is_removed():
    before = [BASE, DEPS, LABEL, OLD_COPY, OLD_FINAL_ON_COPY, OLD_RAPID]
    after = [BASE, DEPS, LABEL, OLD_COPY, untagged(OLD_FINAL_ON_COPY), untagged(OLD_RAPID),
             NEW_COPY, NEW_FINAL, NEW_RAPID]
    engine = FakeEngine([_raw(i, False) for i in after], in_use={"old-final"})
    removed, freed = remove_leftovers(engine, before, {"minilm"})
    assert engine.removed == ["old-rapid"] and (removed, freed) == (1, 10 * MB)

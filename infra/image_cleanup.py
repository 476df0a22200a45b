"""Untagged images a run's image builds leave in the container engine's store, and their removal.

Every `sam build` of a changed function image moves the image's tag to the new build (and `sam
local` does the same with its ``:rapid-*`` image), so the previous build, its final-stage layers and
the old rapid image stay behind untagged: a few hundred MB per quickstart run, forever. This module
takes a listing of the store before the builds and one after, and selects what the run left:

- only images `modelfn build`'s Dockerfiles made (they carry the ``modelfn.model`` label) for the
  models this run built; never anything else in the store, and never an image that is tagged or
  that a kept image is built on;
- and of those, only images this run orphaned: created during the run, or tagged before it and
  untagged after it (their tag moved to this run's build), or untagged parents left with no other
  child once those are gone (the replaced build's own layers).

Untagged images that were already there before the run stay, as do the unlabelled dependency-stage
images: those are the build cache that makes the next run fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MODEL_LABEL = "modelfn.model"  # set by the Dockerfiles infra/build writes
_UNTAGGED = "<none>:<none>"  # how Docker's API spells "no tag"; podman's answers null


@dataclass(frozen=True)
class StoredImage:
    """One image of the store: ``size`` counts its parents' layers too, as the engines report it."""

    id: str
    parent: str
    tags: tuple[str, ...]
    size: int
    model: str | None


def _short(image_id: str | None) -> str:
    return (image_id or "").removeprefix("sha256:")


def list_images(client: Any) -> list[StoredImage]:
    """Every image of the store, intermediate ones included (docker SDK client, Docker or podman)."""
    return [StoredImage(id=_short(raw["Id"]), parent=_short(raw.get("ParentId")),
                        tags=tuple(t for t in raw.get("RepoTags") or () if t != _UNTAGGED),
                        size=int(raw.get("Size") or 0), model=(raw.get("Labels") or {}).get(MODEL_LABEL))
            for raw in client.api.images(all=True)]


def run_leftovers(before: Iterable[StoredImage], after: Iterable[StoredImage],
                  models: Iterable[str]) -> list[StoredImage]:
    """The images of ``after`` that the builds between the two listings left behind, for ``models``,
    in an order they can be removed in (children before parents)."""
    was = {image.id: image for image in before}
    remaining = {image.id: image for image in after}
    models = set(models)
    freed_parents: set[str] = set()  # parents of images selected so far
    selected: list[StoredImage] = []
    while True:
        parents = {image.parent for image in remaining.values()}
        picked = [image for image in remaining.values()
                  if image.model in models and not image.tags and image.id not in parents
                  and (image.id not in was or was[image.id].tags or image.id in freed_parents)]
        if not picked:
            return selected
        for image in picked:
            selected.append(image)
            freed_parents.add(image.parent)
            del remaining[image.id]


def own_size(image: StoredImage, store: dict[str, StoredImage]) -> int:
    """Bytes removing ``image`` frees: its size less its parent's (their layers are shared)."""
    parent = store.get(image.parent)
    return max(0, image.size - parent.size) if parent is not None else image.size


def remove_leftovers(client: Any, before: list[StoredImage], models: Iterable[str]) -> tuple[int, int]:
    """Remove what the builds since ``before`` left for ``models``; (images removed, bytes freed).

    An image the engine refuses to remove (a container still uses it) is skipped, with its parents.
    """
    from docker.errors import APIError

    after = list_images(client)
    store = {image.id: image for image in after}
    removed, freed, kept = 0, 0, set()
    for image in run_leftovers(before, after, models):
        if image.id in kept:
            kept.add(image.parent)
            continue
        try:
            client.api.remove_image(image.id, noprune=True)
        except APIError:  # in use or already gone: leave it, cleaning up is best effort
            kept.add(image.parent)
            continue
        removed += 1
        freed += own_size(image, store)
    return removed, freed


__all__ = ["MODEL_LABEL", "StoredImage", "list_images", "own_size", "remove_leftovers", "run_leftovers"]

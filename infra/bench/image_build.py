"""Build (or reuse) a model's function image for `modelfn bench` (image.py runs it).

The image is the one `modelfn build` + `sam build` make: the same build context (infra/build/context.py,
the bundle baked in, wheels from the host wheelhouse) built by the container engine, tagged by a digest
of its context and base image, so a second run reuses it and the engine's layer cache shares the
dependency stage with the images `sam build` makes of the same pins.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path

CONTEXT_DIR = Path(".modelfn") / "bench" / "image"  # the build context, reused across runs
IMAGE_REPOSITORY = "modelfn-bench"  # tags: modelfn-bench-NAME:DIGEST


class ImageRunFailed(RuntimeError):
    """The image could not be built, or a container of it did not answer (the message says why, in one line)."""


def base_image(architecture: str) -> str:
    """The base `modelfn build` would use here: $MODELFN_BASE_IMAGE, else the AWS Lambda Python base."""
    from infra import defaults
    from infra.build.context import default_base_image

    return defaults.base_image() or default_base_image(defaults.image_python(), architecture)


def engine_problem(architecture: str) -> str | None:
    """None when a container engine answers and has the base image; else why not, in one line."""
    import importlib.util

    from infra.local import container_engine_problem

    if importlib.util.find_spec("docker") is None:  # the engine's client library (aws-sam-cli brings it)
        return "the Docker SDK for Python (`docker`) is not installed (pip install 'modelfn[dev]')"
    return container_engine_problem(base_image(architecture), need_sam=False)


def _context_digest(context: Path, base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(path.relative_to(context).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_image(client, spec, bundle: Path, *, progress: Callable[[str], None], context_root: Path = CONTEXT_DIR,
                wheelhouse_root: Path | None = None) -> dict:
    """Build (or reuse) ``spec``'s function image with ``bundle`` baked in, from a context written under
    ``context_root`` with wheels from ``wheelhouse_root`` (default: `modelfn build`'s): {tag, reused,
    build_s, size_mb, base_image, python}."""
    from infra import defaults
    from infra.build.budget import refuse_forbidden
    from infra.build.context import publish_context, stage_context
    from infra.build.requirements import pinned_requirements, task_requirements
    from infra.build.wheelhouse import prepare_wheelhouse

    python, base = defaults.image_python(), base_image(spec.architecture)
    pins = pinned_requirements(python, spec.architecture, extra=task_requirements(spec.task))
    refuse_forbidden(spec.name, pins)
    wheelhouse = prepare_wheelhouse(pins, architecture=spec.architecture, python_version=python,
                                    root=wheelhouse_root or defaults.WHEELHOUSE)
    staged = stage_context(Path(context_root) / spec.name, name=spec.name, version=0, requirements=pins,
                           wheelhouse=wheelhouse, python_version=python, architecture=spec.architecture,
                           base_image=base, pull_bundle=lambda dest: shutil.copytree(bundle, dest))
    context = publish_context(staged, Path(context_root) / spec.name)
    repository = f"{IMAGE_REPOSITORY}-{spec.name}"
    tag = f"{repository}:{_context_digest(context, client.images.get(base).id)[:16]}"
    started = time.monotonic()
    try:
        image, reused = client.images.get(tag), True
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound: build it
        progress(f"building the function image {tag} from {context} (FROM {base})")
        try:
            image, _ = client.images.build(path=str(context), tag=tag, rm=True, forcerm=True)
        except Exception as exc:  # noqa: BLE001 - BuildError/APIError: one line
            raise ImageRunFailed(f"building the function image failed: {str(exc).splitlines()[0][:300]}") from None
        reused = False
        _remove_older(client, repository, tag)
    return {"tag": tag, "reused": reused, "build_s": time.monotonic() - started,
            "size_mb": image.attrs.get("Size", 0) / 1e6, "base_image": base, "python": python}


def _remove_older(client, repository: str, keep: str) -> None:
    """Earlier bench images of this model (other contexts) are not used again: remove their tags."""
    for image in client.images.list(name=repository):
        for tag in image.tags:
            short = tag.split("/")[-1]  # podman names it docker.io/library/REPOSITORY:TAG
            if short != keep and short.startswith(repository + ":"):
                try:
                    client.images.remove(tag)
                except Exception:  # noqa: BLE001 - in use or gone: not worth failing the bench over
                    pass

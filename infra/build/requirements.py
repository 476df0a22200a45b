"""Pinned runtime requirements for a function image, derived from what this environment runs.

The image must run the exact versions the tests ran, so the pins are the installed versions of the
runtime extra of the ``modelfn`` distribution and their dependency closure, with markers evaluated
for the image's Python and architecture (not the host's).
"""

from __future__ import annotations

import importlib.metadata as metadata
import re

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from functions.errors import ConfigError
from functions.tasknames import AUTOMATIC_SPEECH_RECOGNITION, TEXT_GENERATION

from .. import defaults

# The runtime set, as a fallback when the modelfn distribution metadata is not installed.
_RUNTIME_FALLBACK = ("numpy", "onnxruntime", "tokenizers", "fastapi", "orjson", "aws-lambda-powertools")
# Dependencies declared by runtime packages that the runtime never imports: tokenizers needs
# huggingface-hub only for from_pretrained (the runtime loads tokenizer.json from the bundle), and
# it would pull requests, tqdm, fsspec, hf-xet and more into every image.
EXCLUDED = frozenset({"huggingface-hub"})
# Only the cold-start fetch of large bundles needs an S3 client; the AWS base image ships boto3
# but the stand-in does not, so it is pinned explicitly when a model is fetched.
FETCH_EXTRA = ("boto3",)
# Image models decode requests with Pillow (functions/images.py); text models' images do not ship it.

_MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}

# GPU images: ONNX Runtime with the CUDA and TensorRT providers in place of the CPU build (pinned in
# infra/defaults.py; its dependencies are taken as onnxruntime's), and uvicorn to serve the
# SageMaker contract.
GPU_EXTRA = ("uvicorn",)
# Not installed into the image: pip runs from its wheel in the build stage, because CUDA runtime
# bases ship Python without pip.
INSTALLER = ("pip",)


# Tasks whose images need more than the runtime extra: the extra of pyproject.toml that adds it.
TASK_EXTRAS = {TEXT_GENERATION: "generation", AUTOMATIC_SPEECH_RECOGNITION: "audio"}  # genai + jinja2; soundfile


def runtime_roots(extra: str = "runtime") -> list[str]:
    """Top-level requirements of an extra of the installed modelfn distribution (``runtime``: what every
    function image ships)."""
    try:
        declared = metadata.requires("modelfn") or []
    except metadata.PackageNotFoundError:
        return list(_RUNTIME_FALLBACK) if extra == "runtime" else []
    roots = []
    for text in declared:
        req = Requirement(text)
        if req.marker is not None and req.marker.evaluate({"extra": extra}) \
                and not req.marker.evaluate({"extra": ""}):
            roots.append(str(req.name))
    return roots or (list(_RUNTIME_FALLBACK) if extra == "runtime" else [])


def task_requirements(task: str) -> tuple[str, ...]:
    """What a model of ``task`` needs in its image beyond the runtime extra (Pillow only for models
    that decode images, onnxruntime-genai only for generative ones)."""
    extra = TASK_EXTRAS.get(task) or ("image" if takes_images(task) else None)
    if extra is None:
        return ()
    roots = tuple(r for r in runtime_roots(extra) if canonicalize_name(r) != "modelfn")
    if not roots:
        raise ConfigError(f"{task} images need the {extra!r} extra, which is not installed",
                          hint=f"pip install -e '.[{extra}]'")
    return roots


def target_environment(python_version: str, architecture: str) -> dict[str, str]:
    """PEP 508 marker environment of the image, not of this host."""
    if not re.fullmatch(r"3\.\d{1,2}", python_version):
        raise ConfigError(f"python version must look like 3.12, got {python_version!r}")
    if architecture not in _MACHINES:
        raise ConfigError(f"architecture must be one of {', '.join(_MACHINES)}, got {architecture!r}")
    env = dict(default_environment())
    env.update(
        python_version=python_version,
        python_full_version=f"{python_version}.0",
        platform_machine=_MACHINES[architecture],
        sys_platform="linux",
        platform_system="Linux",
        os_name="posix",
        implementation_name="cpython",
        platform_python_implementation="CPython",
    )
    return env


def takes_images(task: str) -> bool:
    """Whether a model of ``task`` decodes images at run time (the task registry's input kind)."""
    from functions.inputs import IMAGE
    from functions.tasks import get_task

    return get_task(task).inputs == IMAGE


def pinned_requirements(python_version: str, architecture: str, *, fetch: bool = False,
                        extra: tuple[str, ...] = ()) -> list[str]:
    """``name==version`` for the runtime closure, sorted. Raises ConfigError when a package the image
    needs is not installed here (it could not be pinned to a tested version)."""
    env = target_environment(python_version, architecture)
    roots = runtime_roots() + (list(FETCH_EXTRA) if fetch else []) + list(extra)
    pins: dict[str, str] = {}
    pending = [(Requirement(r), "") for r in roots]
    while pending:
        req, extra = pending.pop()
        name = canonicalize_name(req.name)
        if name in EXCLUDED or name in pins:
            continue
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise ConfigError(
                f"runtime dependency {req.name} is not installed, so it cannot be pinned",
                hint="install the runtime extra: pip install -e '.[runtime]'",
            ) from None
        pins[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            for wanted in req.extras or {""}:
                if sub.marker is None or sub.marker.evaluate({**env, "extra": wanted}):
                    pending.append((Requirement(_without_marker(text)), ""))
                    break
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def _without_marker(text: str) -> str:
    # Markers were evaluated against the requirer's extras already; the dependency itself is then
    # needed unconditionally.
    return text.split(";", 1)[0].strip()


def gpu_requirements(python_version: str, *, fetch: bool = False, runtime: str = defaults.GPU_RUNTIME,
                     extra: tuple[str, ...] = ()) -> list[str]:
    """The pins of a GPU image: the Lambda runtime closure plus uvicorn and the task's ``extra``, with
    ``runtime`` (a pin like ``onnxruntime-gpu==1.31.1``, or ``onnxruntime`` for a CPU stand-in, pinned
    to the version here) in place of onnxruntime; with onnxruntime-gpu, a text-generation image's
    onnxruntime-genai becomes its CUDA package (defaults.GPU_GENAI_RUNTIME)."""
    name, _, version = runtime.partition("==")
    name = canonicalize_name(name.strip())
    if not re.fullmatch(r"onnxruntime(-gpu)?", name):
        raise ConfigError(f"the gpu runtime must be onnxruntime-gpu==VERSION or onnxruntime, got {runtime!r}")
    base = [p for p in pinned_requirements(python_version, "x86_64", fetch=fetch, extra=GPU_EXTRA + tuple(extra))
            if not p.startswith("onnxruntime==")]
    if not version:
        version = _installed_version(name)
    pins = base + [f"{name}=={version.strip()}"]
    if name == "onnxruntime-gpu" and any(p.startswith("onnxruntime-genai==") for p in pins):
        pins = [p for p in pins if not p.startswith("onnxruntime-genai==")] + [defaults.GPU_GENAI_RUNTIME]
    return sorted(pins)


def installer_requirements() -> list[str]:
    """pip, pinned to the version here: linked into GPU contexts to run from its wheel."""
    return [f"{name}=={_installed_version(name)}" for name in INSTALLER]


def _installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise ConfigError(f"{name} is not installed here, so it cannot be pinned",
                          hint=f"give a version: {name}==VERSION") from None

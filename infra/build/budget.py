"""What a function image will hold, computed before it is built, and the refusals `modelfn build` makes.

Image contents = the files the pinned wheels install (uncompressed sizes from each wheel as it goes
into the image, stripped: strip.py, less what the Dockerfile trims: context.trim_for) + the runtime code + the bundle when it is baked in. The base image
(Python, the Lambda runtime) is not counted: it is shared by every function and cached by Lambda.

Two refusals, both before anything is written:
- an image whose requirements include torch, transformers or optimum (the runtime never imports them;
  if one is pinned, a dependency pulled it in and the image would be gigabytes);
- an image whose contents exceed the model's ``image_budget_mb`` from models.yaml.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

import functions
from functions.errors import ConfigError

from .context import trim_for
from .strip import image_wheel

MB = 2**20
# Build-time libraries a function image must never carry (DESIGN.md: the runtime is lean).
FORBIDDEN = ("torch", "transformers", "optimum", "optimum-onnx")


@dataclass(frozen=True)
class ImageContents:
    packages_bytes: int  # what the wheels install, trimmed
    code_bytes: int  # functions/
    bundle_bytes: int  # 0 when the bundle is fetched at cold start

    @property
    def total_bytes(self) -> int:
        return self.packages_bytes + self.code_bytes + self.bundle_bytes

    def describe(self) -> str:
        return (f"{self.total_bytes / MB:.0f} MB (packages {self.packages_bytes / MB:.0f} + "
                f"code {self.code_bytes / MB:.1f} + bundle {self.bundle_bytes / MB:.0f})")


def refuse_forbidden(name: str, pins: list[str]) -> None:
    """Raise ConfigError when the pins include a build-time library (torch, transformers, optimum)."""
    found = sorted({canonicalize_name(p.split("==", 1)[0]) for p in pins} & set(FORBIDDEN))
    if found:
        raise ConfigError(
            f"model {name!r}: the image's requirements would install {', '.join(found)}, which the runtime never "
            f"imports (gigabytes and seconds of cold start); fix: remove the dependency that pulls "
            f"{found[0]} in from the runtime extras")


def trimmed(member: str, trim: tuple[str, ...]) -> bool:
    """Whether the installed file ``member`` (a path relative to site-packages) is removed by ``rm -rf``
    of one of the ``trim`` patterns (the pattern names the file or a folder above it)."""
    parts = member.split("/")
    for pattern in trim:
        segments = pattern.split("/")
        if len(parts) >= len(segments) and all(fnmatchcase(p, s) for p, s in zip(parts, segments)):
            return True
    return False


def installed_bytes(wheel: Path, trim: tuple[str, ...] = ()) -> int:
    """Bytes the wheel's files take once installed, less what the Dockerfile removes (``trim``)."""
    with zipfile.ZipFile(wheel) as archive:
        return sum(i.file_size for i in archive.infolist() if not i.is_dir() and not trimmed(i.filename, trim))


def _code_bytes() -> int:
    root = Path(functions.__file__).parent
    return sum(p.stat().st_size for p in root.rglob("*.py"))


def image_contents(pins: list[str], wheelhouse: Path, *, bundle_bytes: int = 0) -> ImageContents:
    """The contents of an image installing ``pins`` from ``wheelhouse`` (which holds their wheels)."""
    wanted = {}
    for pin in pins:
        name, _, version = pin.partition("==")
        wanted[(canonicalize_name(name), version)] = pin
    total = 0
    trim = trim_for(pins)
    for wheel in Path(wheelhouse).glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        if wanted.pop((canonicalize_name(name), str(version)), None) is not None:
            total += installed_bytes(image_wheel(wheel), trim)
    if wanted:
        raise ConfigError(f"wheelhouse {wheelhouse} has no wheel for {next(iter(wanted.values()))}",
                          hint="delete the wheelhouse folder and rerun modelfn build")
    return ImageContents(packages_bytes=total, code_bytes=_code_bytes(), bundle_bytes=bundle_bytes)


def check_image_budget(name: str, contents: ImageContents, budget_mb: int | None) -> None:
    """Raise ConfigError when the image holds more than ``budget_mb`` (None: no budget)."""
    if budget_mb is not None and contents.total_bytes > budget_mb * MB:
        raise ConfigError(
            f"model {name!r}: image contents {contents.describe()} exceed image_budget_mb {budget_mb}; fix: raise "
            f"image_budget_mb, fetch the bundle at cold start (a lower bake limit) or a smaller quantization")


__all__ = ["FORBIDDEN", "ImageContents", "check_image_budget", "image_contents", "installed_bytes", "refuse_forbidden", "trimmed"]

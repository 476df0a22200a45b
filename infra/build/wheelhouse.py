"""A wheelhouse for the image's platform and Python, downloaded on the host.

Image builds install from it with ``--no-index``: containers here (and in many CI setups) have no
route to a package index, and a build from fixed wheels is reproducible.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


from .. import defaults
from ..errors import WheelhouseError

# glibc of the Lambda base images: 2.26 (AL2, Python <= 3.11) and 2.34 (AL2023, Python >= 3.12);
# manylinux2014 wheels run on both. pip also accepts the older manylinux tags a 2_28 tag implies.
_PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
}
# One line per requirement set the folder was filled for. The folder is a cache shared by every image of
# its platform (each build context links exactly its pins' wheels, infra/build/context.py), so filling
# it for one set keeps the others' wheels: builds of different images, or of stacks with different
# models, do not download each other's wheels again.
_STAMP = ".requirements.sha256"


def wheelhouse_dir(root: Path, architecture: str, python_version: str, flavour: str = "") -> Path:
    """One folder per image platform; ``flavour`` ("gpu") keeps another image kind's wheels apart."""
    return Path(root) / f"{architecture}-py{python_version}{'-' + flavour if flavour else ''}"


def prepare_wheelhouse(
    requirements: list[str], *, architecture: str, python_version: str, root: Path = defaults.WHEELHOUSE,
    flavour: str = "",
) -> Path:
    """Download binary wheels for exactly ``requirements`` (pinned) into a per-platform folder.

    Returns at once when the folder was filled for the same requirements before; otherwise pip
    downloads what is missing (it reuses the wheels already there) and the set is recorded. Wheels of
    other requirement sets stay. Returns the folder.
    """
    dest = wheelhouse_dir(root, architecture, python_version, flavour)
    digest = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()
    stamp = dest / _STAMP
    filled = stamp.read_text().split() if stamp.is_file() else []
    if digest in filled:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    req_file = dest / "requirements.txt"
    req_file.write_text("\n".join(requirements) + "\n")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--no-deps", "--implementation", "cp",
           "--python-version", python_version, "--dest", str(dest), "-r", str(req_file)]
    for platform in _PLATFORMS[architecture]:
        cmd += ["--platform", platform]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip download failed"])[-1]
        raise WheelhouseError(
            f"cannot download wheels for {architecture} / Python {python_version}: {last}",
            hint="check network access to the package index, or pick a --python-version with wheels",
        )
    stamp.write_text("".join(f"{line}\n" for line in [*filled, digest]))
    return dest

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
_STAMP = ".requirements.sha256"



def wheelhouse_dir(root: Path, architecture: str, python_version: str, flavour: str = "") -> Path:
    """One folder per image platform; ``flavour`` ("gpu") keeps another image kind's wheels apart."""
    return Path(root) / f"{architecture}-py{python_version}{'-' + flavour if flavour else ''}"


def prepare_wheelhouse(
    requirements: list[str], *, architecture: str, python_version: str, root: Path = defaults.WHEELHOUSE,
    flavour: str = "",
) -> Path:
    """Download binary wheels for exactly ``requirements`` (pinned) into a per-platform folder.

    Reuses the folder when it was filled for the same requirements. Returns the folder.
    """
    dest = wheelhouse_dir(root, architecture, python_version, flavour)
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()
    stamp = dest / _STAMP
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob("*.whl"):
        stale.unlink()
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
    stamp.write_text(digest + "\n")
    return dest

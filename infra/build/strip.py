"""Wheels whose shared libraries ship with their debug symbols go into images stripped.

onnxruntime-genai's wheel carries ``libonnxruntime-genai.so`` unstripped: 166 MB, of which 10 MB is
code (measured: ``strip --strip-unneeded`` on a copy of the installed package, 170 MB -> 12 MB; the
stripped library imports and generates the same tokens, tests/infra/test_strip.py). onnxruntime's own
libraries are stripped already (78 MB before and after).

The stripping happens here, on the build host, rather than in the image's build stage: neither the AWS
Lambda base image nor the CI stand-in has binutils. A stripped copy of the wheel (its RECORD updated
with the new sha256 and sizes) is cached under ``<wheelhouse>/stripped/`` and linked into build
contexts in place of the original. Where the host has no ``strip``, or it cannot read the wheel's
architecture (an x86_64 host's binutils and an arm64 wheel), the wheel goes in as it is.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

STRIP_PACKAGES = frozenset({"onnxruntime-genai"})
STRIPPED_DIR = "stripped"
_SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _strip_tool() -> str | None:
    return shutil.which("strip")


def strip_wheel(wheel: Path, dest: Path) -> bool:
    """Write ``wheel`` to ``dest`` with every shared library stripped (``strip --strip-unneeded``) and
    its RECORD rewritten to match. Returns False, writing nothing, when a library cannot be stripped."""
    tool = _strip_tool()
    if tool is None:
        return False
    with tempfile.TemporaryDirectory(prefix="modelfn-strip-") as tmp, zipfile.ZipFile(wheel) as source:
        infos = source.infolist()
        root = Path(tmp)
        record_name = next((i.filename for i in infos if i.filename.endswith(".dist-info/RECORD")), None)
        payload: dict[str, bytes] = {}
        libraries = []
        for info in infos:
            if info.is_dir():
                continue
            data = source.read(info)
            name = info.filename
            if _SHARED_LIBRARY.search(name):
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                libraries.append(target)
            payload[name] = data
        if not libraries:
            return False
        done = subprocess.run([tool, "--strip-unneeded", *map(str, libraries)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return False
        for library in libraries:
            payload[library.relative_to(root).as_posix()] = library.read_bytes()
        if record_name is not None:
            rows = []
            for line in payload[record_name].decode().splitlines():
                path = line.split(",", 1)[0]
                if path in payload and path != record_name:
                    line = f"{path},{_record_hash(payload[path])},{len(payload[path])}"
                rows.append(line)
            payload[record_name] = ("\n".join(rows) + "\n").encode()
        partial = dest.with_name(f".{dest.name}.partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as out:
            for info in infos:
                if not info.is_dir():
                    out.writestr(info, payload[info.filename])
        os.replace(partial, dest)
    return True


def image_wheel(wheel: Path) -> Path:
    """The file to install in an image for ``wheel``: a stripped copy (made once, cached next to the
    wheelhouse) for the packages in STRIP_PACKAGES where this host can strip it, else ``wheel``."""
    name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
    if name not in STRIP_PACKAGES:
        return wheel
    cached = wheel.parent / STRIPPED_DIR / wheel.name
    if cached.is_file() and cached.stat().st_mtime >= wheel.stat().st_mtime:
        return cached
    return cached if strip_wheel(wheel, cached) else wheel


__all__ = ["STRIP_PACKAGES", "image_wheel", "strip_wheel"]

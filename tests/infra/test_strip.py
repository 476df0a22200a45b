"""onnxruntime-genai goes into images stripped (infra/build/strip.py): much smaller, and it still
loads and generates exactly what the unstripped library does."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from infra.build.budget import installed_bytes
from infra.build.strip import image_wheel
from infra.build.wheelhouse import prepare_wheelhouse

ROOT = Path(__file__).resolve().parents[2]
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

pytestmark = pytest.mark.skipif(shutil.which("strip") is None, reason="the host has no strip (binutils)")

_GENERATE = r"""
import json, sys
import onnxruntime_genai as og
model = og.Model(sys.argv[1])
params = og.GeneratorParams(model)
params.set_search_options(do_sample=False, max_length=40)
generator = og.Generator(model, params)
generator.append_tokens([1, 5, 9, 12, 7])
while not generator.is_done():
    generator.generate_next_token()
print(json.dumps({"file": og.__file__, "tokens": [int(t) for t in generator.get_sequence(0)]}))
"""


@pytest.fixture(scope="module")
def genai_wheel(tmp_path_factory) -> Path:
    """The onnxruntime-genai wheel of the version installed here, for this host's Python: from the
    project's wheelhouse when a build put it there, else downloaded (PyPI) into a temporary one."""
    pin = f"onnxruntime-genai=={version('onnxruntime-genai')}"
    name = f"onnxruntime_genai-{version('onnxruntime-genai')}-cp{PYTHON.replace('.', '')}-"
    found = sorted((ROOT / ".wheelhouse").glob(f"x86_64-py{PYTHON}/{name}*.whl"))
    if found:
        return found[0]
    folder = prepare_wheelhouse([pin], architecture="x86_64", python_version=PYTHON,
                                root=tmp_path_factory.mktemp("wheelhouse"))
    return next(folder.glob(f"{name}*.whl"))


def _generate(bundle: Path, path_first: Path | None = None) -> dict:
    env = {"PATH": "/usr/bin:/bin"}
    if path_first is not None:
        env["PYTHONPATH"] = str(path_first)
    done = subprocess.run([sys.executable, "-c", _GENERATE, str(bundle)], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_stripped_genai_is_small_and_generates_the_same_tokens(tmp_path, genai_wheel, gen_bundle):  # noqa: F811
    stripped = image_wheel(genai_wheel)
    assert stripped != genai_wheel and stripped.name == genai_wheel.name
    before, after = installed_bytes(genai_wheel), installed_bytes(stripped)
    assert after < before / 5, (before, after)  # measured: 169 MB -> 11 MB

    # RECORD matches every file as pip would install it.
    with zipfile.ZipFile(stripped) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        for path, digest, size in csv.reader(io.StringIO(archive.read(record).decode())):
            if digest:
                data = archive.read(path)
                assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert int(size) == len(data)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(target), str(stripped)], check=True)
    bundle = gen_bundle("llama")
    mine = _generate(bundle, target)
    assert Path(mine["file"]).resolve().is_relative_to(target.resolve())
    reference = _generate(bundle)
    assert not Path(reference["file"]).resolve().is_relative_to(target.resolve())
    assert mine["tokens"] == reference["tokens"] and len(mine["tokens"]) > 5


def test_without_strip_on_the_host_the_wheel_goes_in_as_it_is(tmp_path, monkeypatch, genai_wheel):
    copy = tmp_path / genai_wheel.name
    shutil.copy2(genai_wheel, copy)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert image_wheel(copy) == copy and not (tmp_path / "stripped").exists()


def test_other_wheels_are_not_touched(tmp_path):
    wheel = tmp_path / "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not opened: only onnxruntime-genai ships unstripped libraries")
    assert image_wheel(wheel) == wheel and not (tmp_path / "stripped").exists()

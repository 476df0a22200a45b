"""`modelfn build` against a real local registry: contexts, pins, and errors before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from functions.errors import ConfigError, ModelfnError
from infra.build import BuildSettings, build, pinned_requirements, render_dockerfile
from infra.cli import main as modelfn
from infra.registry import open_registry

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "transformers", "optimum", "optimum-onnx", "onnx", "sentence-transformers", "huggingface-hub"}


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory, tiny_bundle):
    """A local registry holding tiny v1 with alias prod."""
    root = tmp_path_factory.mktemp("registry")
    registry = open_registry(str(root))
    version = registry.push("tiny", tiny_bundle("feature-extraction")).version
    registry.promote("tiny", "prod", version)
    return root


def write_models(path: Path, **overrides) -> Path:
    model = {"name": "tiny", "source": "unused-at-build", "task": "feature-extraction", "memory_mb": 1024}
    model.update(overrides)
    path.write_text(yaml.safe_dump({"models": [model]}))
    return path


def settings(tmp_path: Path, registry_dir: Path, models: Path, **kw) -> BuildSettings:
    return BuildSettings(models_file=models, registry=str(registry_dir), out=tmp_path / "out" / "build",
                         template=tmp_path / "out" / "template.yaml", python_version="3.11",
                         wheelhouse=ROOT / ".wheelhouse", **kw)


def test_build_writes_contexts_and_template(tmp_path, registry_dir):
    result = build(settings(tmp_path, registry_dir, write_models(tmp_path / "models.yaml")), log=lambda _: None)
    ctx = result.contexts["tiny"]
    assert (ctx / "model" / "manifest.json").is_file() and (ctx / "model" / "model.onnx").is_file()
    assert (ctx / "functions" / "handler.py").is_file()
    assert not list(ctx.rglob("__pycache__"))
    pins = (ctx / "requirements.txt").read_text().split()
    assert all("==" in pin for pin in pins)
    assert not {p.split("==")[0] for p in pins} & HEAVY
    wheels = {w.name.split("-")[0].lower().replace("_", "-") for w in (ctx / "wheels").glob("*.whl")}
    assert wheels == {p.split("==")[0] for p in pins}
    dockerfile = (ctx / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.11\n" in dockerfile
    assert 'CMD ["functions.handler.handler"]' in dockerfile and "--no-index" in dockerfile
    template = yaml.safe_load(result.template.read_text())
    fn = template["Resources"]["TinyFunction"]
    assert fn["Metadata"]["DockerContext"] == "build/tiny"  # relative to the template's folder
    assert fn["Metadata"]["DockerTag"] == "tiny-v1"
    assert fn["Properties"]["MemorySize"] == 1024


def test_large_bundle_is_fetched_not_baked(tmp_path, registry_dir):
    # A registry reachable from Lambda is required for fetching; a local one is refused up front.
    with pytest.raises(ConfigError, match="s3:// registry"):
        build(settings(tmp_path, registry_dir, write_models(tmp_path / "models.yaml"), bake_limit_mb=0.001),
              log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_fetching_pins_boto3_and_baking_does_not():
    baked = {p.split("==")[0] for p in pinned_requirements("3.12", "x86_64")}
    fetched = {p.split("==")[0] for p in pinned_requirements("3.12", "x86_64", fetch=True)}
    assert "boto3" not in baked and {"boto3", "botocore", "s3transfer"} <= fetched
    assert {"numpy", "onnxruntime", "tokenizers", "fastapi", "orjson", "aws-lambda-powertools"} <= baked


@pytest.mark.parametrize("case, message", [
    ("missing-model", "no model"),
    ("missing-alias", "alias"),
    ("bad-yaml", "field 'memory_mb'"),
    ("wrong-task", "text-classification"),
])
def test_errors_stop_before_anything_is_written(tmp_path, registry_dir, capsys, case, message):
    models = tmp_path / "models.yaml"
    if case == "missing-model":
        write_models(models, name="absent")
    elif case == "missing-alias":
        write_models(models, alias="staging")
    elif case == "bad-yaml":
        write_models(models, memory_mb=64)
    else:
        write_models(models, task="text-classification")
    out = tmp_path / "out"
    code = modelfn(["build", "--models-file", str(models), "--registry", str(registry_dir),
                    "--out", str(out / "build"), "--template", str(out / "template.yaml"),
                    "--python-version", "3.11", "--wheelhouse", str(ROOT / ".wheelhouse")])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("modelfn: error:") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_dockerfile_refuses_a_base_image_with_another_python():
    text = render_dockerfile(name="m", version=2, python_version="3.12", architecture="arm64",
                             base_image="public.ecr.aws/lambda/python:3.12-arm64", baked=False)
    assert "sys.version_info[:2] == (3, 12)" in text
    assert "COPY model/" not in text and "fetched from the registry" in text
    assert text.count("FROM ${BASE_IMAGE}") == 2


def test_a_corrupted_bundle_leaves_the_previous_build_and_template_untouched(tmp_path, tiny_bundle):
    """Two models: the second's bundle fails its sha256 check at pull, after the first was staged."""
    from functions.manifest import MODEL_FILE

    root = tmp_path / "registry"
    registry = open_registry(str(root))
    for name in ("alpha", "beta"):
        registry.promote(name, "prod", registry.push(name, tiny_bundle("feature-extraction")).version)
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": [
        {"name": n, "source": "unused-at-build", "task": "feature-extraction"} for n in ("alpha", "beta")]}))
    first = build(settings(tmp_path, root, models), log=lambda _: None)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}

    # alpha moves to a new version (the build would rewrite its context), beta is now corrupted
    registry.promote("alpha", "prod", registry.push("alpha", tiny_bundle("feature-extraction", quantization="none")).version)
    stored = root / "models" / "beta" / "versions" / "1" / MODEL_FILE
    stored.write_bytes(bytes([stored.read_bytes()[0] ^ 1]) + stored.read_bytes()[1:])
    with pytest.raises(ModelfnError, match=MODEL_FILE):
        build(settings(tmp_path, root, models), log=lambda _: None)

    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before and first.template.is_file()

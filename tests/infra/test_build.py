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
    assert "compileall -q --invalidation-mode unchecked-hash ${LAMBDA_TASK_ROOT}/functions" in dockerfile
    # an encoder image drops onnxruntime's C API library (only onnxruntime-genai loads it)
    assert "rm -rf" in dockerfile and "onnxruntime/capi/libonnxruntime.so*" in dockerfile
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


def test_gpu_model_gets_a_sagemaker_image_context(tmp_path, tiny_bundle):
    """A gpu model: its own wheel set (the CPU onnxruntime standing in for onnxruntime-gpu here, as over
    the CI stand-in base), uvicorn, the pip wheel linked but not installed, `serve` as entry point."""
    root = tmp_path / "registry"
    registry = open_registry(str(root))
    registry.promote("tiny", "prod", registry.push("tiny", tiny_bundle("feature-extraction")).version)
    registry.promote("big", "prod", registry.push("big", tiny_bundle(
        "feature-extraction", target="gpu", quantization="fp16")).version)
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": [
        {"name": "tiny", "source": "unused-at-build", "task": "feature-extraction"},
        {"name": "big", "source": "unused-at-build", "task": "feature-extraction", "target": "gpu"}]}))
    result = build(settings(tmp_path, root, models, gpu_runtime="onnxruntime",
                            gpu_base_image="localhost/modelfn/cuda-standin:bookworm"), log=lambda _: None)
    ctx = result.contexts["big"]
    pins = (ctx / "requirements.txt").read_text().split()
    names = {p.split("==")[0] for p in pins}
    assert {"onnxruntime", "uvicorn", "fastapi", "tokenizers", "numpy"} <= names and "pip" not in names
    assert not names & HEAVY
    wheels = {w.name.split("-")[0].lower().replace("_", "-") for w in (ctx / "wheels").glob("*.whl")}
    assert wheels == names | {"pip"}
    dockerfile = (ctx / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=localhost/modelfn/cuda-standin:bookworm\n" in dockerfile
    assert 'ENTRYPOINT ["serve"]' in dockerfile and "COPY model/ /opt/ml/model/" in dockerfile
    assert "/tmp/wheels/pip-" in dockerfile and "--no-index" in dockerfile
    serve = ctx / "serve"
    assert serve.stat().st_mode & 0o111 and "exec python3 -m functions.serve" in serve.read_text()
    assert (ctx / "model" / "manifest.json").is_file() and (ctx / "functions" / "serve.py").is_file()
    assert not (ctx / "functions" / "spec.py").exists()  # models.yaml parsing is build time (infra/spec.py)
    # The Lambda model next to it keeps its own image and pins.
    lambda_ctx = result.contexts["tiny"]
    assert "uvicorn" not in (lambda_ctx / "requirements.txt").read_text()
    assert not (lambda_ctx / "serve").exists()
    template = yaml.safe_load(result.template.read_text())
    assert template["Resources"]["BigModel"]["Properties"]["PrimaryContainer"]["Image"]["Fn::Sub"].endswith(":big-v1")
    assert "TinyFunction" in template["Resources"]


def test_gpu_pins_swap_onnxruntime_for_onnxruntime_gpu():
    from infra import defaults
    from infra.build.requirements import gpu_requirements

    pins = gpu_requirements("3.12")
    assert defaults.GPU_RUNTIME.startswith("onnxruntime-gpu==") and defaults.GPU_RUNTIME in pins and not any(p.startswith("onnxruntime==") for p in pins)
    assert any(p.startswith("uvicorn==") for p in pins)
    with pytest.raises(ConfigError, match="gpu runtime"):
        gpu_requirements("3.12", runtime="tensorflow==2.0")


def test_gpu_pins_carry_the_task_extras_with_the_cuda_generation_runtime():
    from infra import defaults
    from infra.build.requirements import gpu_requirements, task_requirements

    generation = gpu_requirements("3.12", extra=task_requirements("text-generation"))
    assert defaults.GPU_GENAI_RUNTIME in generation and defaults.GPU_RUNTIME in generation
    assert not any(p.startswith(("onnxruntime-genai==", "onnxruntime==")) for p in generation)
    assert any(p.startswith("jinja2==") for p in generation)
    # Over the CPU stand-in of the CUDA base: the CPU packages installed here.
    standin = gpu_requirements("3.12", runtime="onnxruntime", extra=task_requirements("text-generation"))
    assert any(p.startswith("onnxruntime-genai==") for p in standin)
    assert not any(p.startswith(("onnxruntime-genai-cuda", "onnxruntime-gpu")) for p in standin)
    # An image model's GPU image decodes images too; a text encoder's ships neither extra.
    assert any(p.startswith("pillow==") for p in gpu_requirements("3.12", extra=task_requirements("image-classification")))
    assert not any(p.startswith(("pillow==", "onnxruntime-genai")) for p in gpu_requirements("3.12"))


def test_gpu_dockerfile_installs_python_only_where_the_base_has_none():
    from infra.build.gpu_image import render_gpu_dockerfile
    from infra.defaults import GPU_BASE_IMAGE as DEFAULT_GPU_BASE_IMAGE

    assert DEFAULT_GPU_BASE_IMAGE.startswith("nvidia/cuda:13.") and "cudnn-runtime-ubuntu24.04" in DEFAULT_GPU_BASE_IMAGE
    text = render_gpu_dockerfile(name="m", version=3, python_version="3.12", base_image=DEFAULT_GPU_BASE_IMAGE,
                                 baked=False, pip_wheel="pip-26.3-py3-none-any.whl", trim="*/tests")
    assert "command -v python3 >/dev/null 2>&1 || ( apt-get update" in text
    assert "sys.version_info[:2] == (3, 12)" in text
    assert "COPY model/" not in text and "SageMaker copies it from the registry to /opt/ml/model" in text


@pytest.mark.parametrize("host, image, uses_compat", [
    ("535.183.01", "580.95.05", True),    # SageMaker's ml.g6 driver, older than CUDA 13's: compat first
    ("580.95.05", "580.95.05", False),   # the same driver: nothing to do
    ("590.10", "580.95.05", False),      # a newer host driver runs CUDA 13 itself
    (None, "580.95.05", False),          # no NVIDIA driver (the CPU stand-in): nothing to do
])
def test_the_gpu_entry_point_puts_cuda_compat_first_only_under_an_older_driver(tmp_path, host, image, uses_compat):
    """The `serve` script, run by /bin/sh with a stand-in python3 that prints the library path it got."""
    import os
    import subprocess

    from infra.build.gpu_image import SERVE_SCRIPT

    compat = tmp_path / "compat"
    compat.mkdir()
    (compat / f"libcuda.so.{image}").write_bytes(b"")
    (compat / "libcuda.so.1").symlink_to(f"libcuda.so.{image}")
    version_file = tmp_path / "nvidia-version"
    if host is not None:
        version_file.write_text(f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {host}  Release Build  "
                                "(dvs-builder@U16-I3-B03-4-1)  Thu Jul 31 00:00:00 UTC 2025\nGCC version:  gcc 11.4\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text('#!/bin/sh\necho "ran $* with LD_LIBRARY_PATH=$LD_LIBRARY_PATH"\n')
    (bin_dir / "python3").chmod(0o755)
    script = tmp_path / "serve"
    script.write_text(SERVE_SCRIPT)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LD_LIBRARY_PATH": "/opt/x",
           "MODELFN_CUDA_COMPAT_DIR": str(compat), "MODELFN_NVIDIA_VERSION_FILE": str(version_file)}
    done = subprocess.run(["/bin/sh", str(script), "serve"], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    expected = f"{compat}:/opt/x" if uses_compat else "/opt/x"
    assert done.stdout.strip() == f"ran -m functions.serve with LD_LIBRARY_PATH={expected}"
    assert ("older than CUDA's" in done.stderr) == uses_compat
    refused = subprocess.run(["/bin/sh", str(script), "train"], capture_output=True, text=True, env=env, timeout=30)
    assert refused.returncode == 2 and "only serves models" in refused.stderr

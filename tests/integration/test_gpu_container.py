"""The GPU image of a gpu model, built by `modelfn build` over a CPU stand-in for the CUDA base, answers
the SageMaker contract inside a running container: `/ping`, then `/invocations` equal to the same
bundle served in-process, and a caller's mistake as a 4xx in the API's error shape.

The stand-in (scripts/standin-base/cuda-standin.Containerfile) is the Lambda base with its entry point
cleared; the image installs the CPU onnxruntime in place of onnxruntime-gpu (`--gpu-runtime
onnxruntime`). The container runs on the host's network, so the test reaches it on loopback.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import yaml

from tests.integration.samlocal import BASE_IMAGE, ROOT
from infra.emulator import free_port

pytestmark = [
    pytest.mark.slow, pytest.mark.containers,
    pytest.mark.skipif(not (ROOT / "functions" / "serve.py").is_file(),
                       reason="functions/serve.py (the SageMaker server the GPU image runs) is not in this tree"),
]

STANDIN = "localhost/modelfn/cuda-standin:test"
IMAGE = "modelfn-gpu-test:tiny-v1"
TEXTS = ["modelfn serves models as functions", "the capital of france is paris"]


@pytest.fixture(scope="module")
def cuda_standin(engine) -> str:
    """The CPU stand-in for the CUDA base, built over the Lambda base through the engine (no registry)."""
    engine.images.build(path=str(ROOT / "scripts" / "standin-base"), dockerfile="cuda-standin.Containerfile",
                        buildargs={"LAMBDA_BASE": BASE_IMAGE}, tag=STANDIN, rm=True)
    return STANDIN


@pytest.fixture(scope="module")
def gpu_bundle(tiny_bundle):
    return tiny_bundle("feature-extraction", target="gpu", quantization="fp16")


def build_gpu_image(work, engine, standin: str, python: str, bundle, model: dict, tag: str) -> str:
    """Push ``bundle`` as ``model["name"]`` version 1 (alias prod), `modelfn build` its GPU context over
    the CPU stand-in of the CUDA base, and build the image as ``tag``."""
    from infra.cli import main as modelfn
    from infra.registry import open_registry

    registry = open_registry(str(work / "registry"))
    registry.promote(model["name"], "prod", registry.push(model["name"], bundle).version)
    (work / "models.yaml").write_text(yaml.safe_dump({"models": [
        {"source": "unused-at-build", "target": "gpu", **model}]}))
    code = modelfn(["build", "--models-file", str(work / "models.yaml"), "--registry", str(work / "registry"),
                    "--out", str(work / "build"), "--template", str(work / "template.yaml"),
                    "--python-version", python, "--gpu-base-image", standin,
                    "--gpu-runtime", "onnxruntime", "--wheelhouse", str(ROOT / ".wheelhouse")])
    assert code == 0
    engine.images.build(path=str(work / "build" / model["name"]), tag=tag, rm=True, forcerm=True)
    return tag


@pytest.fixture(scope="module")
def gpu_image(tmp_path_factory, engine, cuda_standin, image_python, gpu_bundle) -> str:
    return build_gpu_image(tmp_path_factory.mktemp("gpu-project"), engine, cuda_standin, image_python, gpu_bundle,
                           {"name": "tiny", "task": "feature-extraction"}, IMAGE)


def _call(url: str, body: bytes | None = None, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_gpu_image_answers_ping_and_invocations_inside_a_container(engine, gpu_image, gpu_bundle):
    from functions.service import ModelService

    port = free_port()
    # SageMaker starts the container as `docker run IMAGE serve`.
    container = engine.containers.run(gpu_image, command=["serve"], detach=True, network_mode="host",
                                      environment={"SAGEMAKER_BIND_TO_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(container, base)

        status, answer = _call(base + "/invocations", json.dumps({"inputs": TEXTS}).encode())
        assert status == 200, answer
        expected = ModelService.load(gpu_bundle, name="tiny").predict(
            "tiny", "application/json", json.dumps({"inputs": TEXTS}).encode()).payload
        np.testing.assert_allclose(np.asarray(answer), np.asarray(expected), atol=1e-4)

        status, answer = _call(base + "/invocations", b'{"inputs": 42}')
        assert 400 <= status < 500 and set(answer["error"]) >= {"code", "message"}, answer
    finally:
        container.remove(force=True)


GEN_IMAGE = "modelfn-gpu-test:tinylm-v1"
CHAT = {"messages": [{"role": "user", "content": "what is the capital of france?"}], "max_tokens": 12,
        "temperature": 0}


@pytest.fixture(scope="module")
def gpu_generation_image(tmp_path_factory, engine, cuda_standin, image_python, gen_bundle) -> str:
    import dataclasses
    import shutil

    from functions.manifest import read_manifest

    work = tmp_path_factory.mktemp("gpu-gen-project")
    # The fixture's fp32 bundle, declared for the gpu target (fp32 runs on CUDA and, here, on the CPU).
    bundle = shutil.copytree(gen_bundle("llama"), work / "bundle")
    dataclasses.replace(read_manifest(bundle), target="gpu").write(bundle)
    return build_gpu_image(work, engine, cuda_standin, image_python, bundle,
                           {"name": "tinylm", "task": "text-generation", "quantization": "none"}, GEN_IMAGE)


def test_gpu_image_of_a_chat_model_answers_invocations_as_the_host_runtime_does(engine, gpu_generation_image,
                                                                                 gen_bundle):
    from functions.service import ModelService

    port = free_port()
    container = engine.containers.run(gpu_generation_image, command=["serve"], detach=True, network_mode="host",
                                      environment={"SAGEMAKER_BIND_TO_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(container, base)
        status, answer = _call(base + "/invocations", json.dumps(CHAT).encode())
        assert status == 200, answer
        expected = ModelService.load(gen_bundle("llama"), name="tinylm").chat_completions(
            "application/json", json.dumps(CHAT).encode()).payload
        assert answer["choices"][0]["message"] == expected["choices"][0]["message"]
        assert answer["usage"] == expected["usage"]
        status, health = _call(base + "/health")
        assert status == 200 and health["generation"]["completed"] == 1, health
        status, answer = _call(base + "/invocations", b'{"messages": "hi"}')
        assert status == 400 and answer["error"]["code"] == "bad_request", answer
    finally:
        container.remove(force=True)


def _wait_for_ping(container, base: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while status != 200:
        try:
            status, _ = _call(base + "/ping", timeout=5)
        except OSError:
            status = None
        if status != 200:
            container.reload()
            assert container.status == "running" and time.monotonic() < deadline, \
                container.logs()[-3000:].decode(errors="replace")
            time.sleep(0.5)

"""The real workflow on the MiniLM function: export -> registry -> `modelfn build` -> `sam build` ->
`sam local invoke` and `sam local start-api`, answers checked against sentence-transformers.

Needs a Docker-compatible engine at DOCKER_HOST with the Lambda Python base image (or the stand-in:
`eval "$(scripts/podman-setup.sh)" && scripts/standin-base/build.sh`) and the SAM CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.containers]

ROOT = Path(__file__).resolve().parents[2]
SAM = shutil.which("sam", path=str(Path(sys.executable).parent)) or shutil.which("sam")
BASE_IMAGE = os.environ.get("MODELFN_TEST_BASE_IMAGE", "public.ecr.aws/lambda/python:3.12")
IMAGE = "minilmfunction"  # sam build names the image after the function's logical id
SENTENCES = ["modelfn serves models as functions", "cold starts should be fast",
             "A man is playing a guitar on stage.", "Paris is the capital of France."]
HEAVY = ("torch", "transformers", "optimum")


def _engine():
    """The Docker-API client at DOCKER_HOST, or a skip reason."""
    if not SAM:
        pytest.skip("SAM CLI (`sam`) not installed")
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        pytest.skip("no container engine: set DOCKER_HOST (eval \"$(scripts/podman-setup.sh)\")")
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine
        pytest.skip(f"container engine at {os.environ.get('DOCKER_HOST', 'default socket')} not answering: {exc}")
    try:
        client.images.get(BASE_IMAGE)
    except Exception:  # noqa: BLE001
        pytest.skip(f"base image {BASE_IMAGE} not present (build the stand-in: scripts/standin-base/build.sh)")
    return client


@pytest.fixture(scope="module")
def engine():
    return _engine()


@pytest.fixture(scope="module")
def image_python(engine) -> str:
    """The base image's Python: 3.12 for the AWS base, 3.11 for the Debian stand-in."""
    out = engine.containers.run(BASE_IMAGE, entrypoint="python3", remove=True,
                                command=["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return out.decode().strip()


@pytest.fixture(scope="module")
def minilm_spec():
    from functions.spec import load_models_file

    return load_models_file(ROOT / "models.yaml").get("minilm")


@pytest.fixture(scope="module")
def project(tmp_path_factory, engine, image_python, minilm_spec):
    """A project folder after export, push, promote, `modelfn build` and `sam build`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from export.exporter import export_bundle
    from infra.cli import main as modelfn
    from infra.registry import open_registry

    work = tmp_path_factory.mktemp("project")
    spec = minilm_spec
    bundle = work / "bundle"
    export_bundle(spec.source_dir(), spec.task, bundle, name=spec.name, architecture=spec.architecture,
                  quantization=spec.quantization, thresholds=spec.parity, max_tokens=spec.max_tokens)
    registry = open_registry(str(work / "registry"))
    registry.promote(spec.name, spec.alias, registry.push(spec.name, bundle).version)
    shutil.copy(ROOT / "models.yaml", work / "models.yaml")
    code = modelfn(["build", "--models-file", str(work / "models.yaml"), "--registry", str(work / "registry"),
                    "--out", str(work / ".modelfn" / "build"), "--template", str(work / "template.yaml"),
                    "--python-version", image_python, "--base-image", BASE_IMAGE,
                    "--wheelhouse", str(ROOT / ".wheelhouse")])
    assert code == 0
    sam(work, "build", timeout=900)
    return work


def sam(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}
    proc = subprocess.run([SAM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"sam {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def reference(minilm_spec) -> np.ndarray:
    """sentence-transformers on the original model: what the function must match."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_spec.source_dir()), device="cpu")
    return model.encode(SENTENCES, normalize_embeddings=True)


def assert_parity(vectors, reference: np.ndarray, spec) -> None:
    got = np.asarray(vectors, dtype=np.float64)
    assert got.shape == reference.shape
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    cosines = (got * reference).sum(axis=1)
    assert cosines.mean() >= spec.parity["mean_cosine"], cosines
    assert cosines.min() >= spec.parity["min_cosine"], cosines


def test_sam_local_invoke_answers_within_parity(project, reference, minilm_spec):
    event = json.loads((ROOT / "events" / "minilm-predict-v1.json").read_text())
    event["body"] = json.dumps({"inputs": SENTENCES})
    event_file = project / "predict-event.json"
    event_file.write_text(json.dumps(event))
    proc = sam(project, "local", "invoke", "MinilmFunction", "--event", str(event_file))
    response = json.loads(proc.stdout.strip().splitlines()[-1])
    assert response["statusCode"] == 200, response
    assert_parity(json.loads(response["body"]), reference, minilm_spec)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sam_local_start_api_serves_predict_and_embeddings(project, reference, minilm_spec):
    import httpx

    port = _free_port()
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}
    log = (project / "start-api.log").open("w")
    server = subprocess.Popen([SAM, "local", "start-api", "--port", str(port), "--warm-containers", "EAGER"],
                              cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (project / "start-api.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "start-api did not answer /health within 180 s"
            time.sleep(1)
        predict = httpx.post(f"{base}/models/minilm/predict", json={"inputs": SENTENCES}, timeout=60)
        assert predict.status_code == 200, predict.text
        assert_parity(predict.json(), reference, minilm_spec)
        embeddings = httpx.post(f"{base}/v1/embeddings", json={"input": SENTENCES, "model": "minilm"}, timeout=60)
        assert embeddings.status_code == 200, embeddings.text
        data = sorted(embeddings.json()["data"], key=lambda item: item["index"])
        assert_parity([item["embedding"] for item in data], reference, minilm_spec)
        info = httpx.get(f"{base}/models/minilm", timeout=30).json()
        assert (info["name"], str(info["version"])) == ("minilm", "1")
    finally:
        # SIGINT is sam's Ctrl-C: it stops and removes its warm containers before exiting.
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def test_image_has_no_training_stack_and_size_is_reported(project, engine, image_python):
    image = engine.images.get(f"{IMAGE}:minilm-v1")
    probe = ("import importlib.util as u, json; "
             f"print(json.dumps({{m: u.find_spec(m) is not None for m in {HEAVY + ('onnxruntime', 'tokenizers')!r}}}))")
    out = engine.containers.run(image.id, entrypoint="python3", command=["-c", probe], remove=True,
                                environment={"PYTHONPATH": "/var/task"}, working_dir="/var/task")
    found = json.loads(out.decode().strip().splitlines()[-1])
    assert found["onnxruntime"] and found["tokenizers"], found  # the probe sees the task root
    assert not any(found[m] for m in HEAVY), found
    base = engine.images.get(BASE_IMAGE)
    size, base_size = image.attrs["Size"], base.attrs["Size"]
    bundle = sum(f.stat().st_size for f in (project / ".modelfn" / "build" / "minilm" / "model").iterdir())
    assert size < 1.5 * 2**30  # far under Lambda's 10 GB image limit; a leak of torch would be ~1 GB more
    _write_image_report(size, base_size, bundle, image_python)


def _write_image_report(size: int, base_size: int, bundle: int, python: str) -> None:
    mb = lambda n: f"{n / 1e6:.0f} MB"  # noqa: E731
    stand_in = "Debian stand-in" if python != "3.12" else "AWS"
    (ROOT / "bench" / "image.md").write_text(
        "# MiniLM function image\n\n"
        "Written by tests/integration/test_sam_local.py after `sam build` of the default models.yaml.\n\n"
        "| part | size |\n|---|---|\n"
        f"| whole image (`minilmfunction:minilm-v1`) | {mb(size)} |\n"
        f"| base image ({stand_in}, Python {python}) | {mb(base_size)} |\n"
        f"| runtime dependencies + functions/ + bundle | {mb(size - base_size)} |\n"
        f"| of which the int8 bundle | {mb(bundle)} |\n\n"
        "torch, transformers and optimum are absent from the image (checked inside it by the same test).\n")

"""Fixtures for the container tests: the engine at DOCKER_HOST, the base image's Python, one real
MiniLM export per session, and the sentence-transformers reference the functions must match."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.integration.samlocal import BASE_IMAGE, ROOT, SAM, SENTENCES


@pytest.fixture(scope="session")
def engine():
    """The Docker-API client at DOCKER_HOST; skips with the reason when there is none."""
    if not SAM:
        pytest.skip("SAM CLI (`sam`) not installed")
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        pytest.skip("no container engine: set DOCKER_HOST (eval \"$(sudo scripts/podman-setup.sh)\")")
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine
        pytest.skip(f"container engine at {os.environ.get('DOCKER_HOST', 'default socket')} not answering: {exc}")
    try:
        client.images.get(BASE_IMAGE)
    except Exception:  # noqa: BLE001
        pytest.skip(f"base image {BASE_IMAGE} not present (build the stand-in: sudo scripts/standin-base/build.sh)")
    return client


@pytest.fixture(scope="session")
def image_python(engine) -> str:
    """The base image's Python: 3.12 for the AWS base, 3.11 for the Debian stand-in."""
    out = engine.containers.run(BASE_IMAGE, entrypoint="python3", remove=True,
                                command=["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return out.decode().strip()


@pytest.fixture(scope="session")
def minilm_spec():
    from functions.spec import load_models_file

    return load_models_file(ROOT / "models.yaml").get("minilm")


@pytest.fixture(scope="session")
def minilm_bundle(tmp_path_factory, engine, minilm_spec) -> Path:
    """The default models.yaml's MiniLM, exported once for every container test."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from export.exporter import export_bundle

    spec = minilm_spec
    bundle = tmp_path_factory.mktemp("minilm") / "bundle"
    export_bundle(spec.source_dir(), spec.task, bundle, name=spec.name, architecture=spec.architecture,
                  quantization=spec.quantization, thresholds=spec.parity, max_tokens=spec.max_tokens)
    return bundle


@pytest.fixture(scope="session")
def reference(minilm_spec) -> np.ndarray:
    """sentence-transformers on the original model, normalized: what the functions must match."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_spec.source_dir()), device="cpu")
    return model.encode(SENTENCES, normalize_embeddings=True)

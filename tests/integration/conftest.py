"""Fixtures for the container tests: the engine at DOCKER_HOST, the base image's Python, and the
sentence-transformers reference the functions must match (MiniLM itself: tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.integration.samlocal import BASE_IMAGE, SENTENCES


@pytest.fixture(scope="session")
def engine():
    """The Docker-API client at DOCKER_HOST; skips with the reason when there is none."""
    from infra.local import container_engine_problem

    problem = container_engine_problem(BASE_IMAGE)
    if problem:
        pytest.skip(problem + ' (eval "$(bash scripts/containers-env.sh)" sets one up)')
    import docker

    return docker.from_env(timeout=600)


@pytest.fixture(scope="session")
def image_python(engine) -> str:
    """The base image's Python: 3.12 for the AWS base, 3.11 for the Debian stand-in."""
    from infra.local import image_python

    return image_python(BASE_IMAGE)


@pytest.fixture(scope="session")
def reference(minilm_spec) -> np.ndarray:
    """sentence-transformers on the original model, normalized: what the functions must match."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_spec.source_dir()), device="cpu")
    return model.encode(SENTENCES, normalize_embeddings=True)

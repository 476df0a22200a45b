"""Helpers for the container tests: run the SAM CLI, build a project, check parity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAM = shutil.which("sam", path=str(Path(sys.executable).parent)) or shutil.which("sam")
BASE_IMAGE = os.environ.get("MODELFN_TEST_BASE_IMAGE", "public.ecr.aws/lambda/python:3.12")
SENTENCES = ["modelfn serves models as functions", "cold starts should be fast",
             "A man is playing a guitar on stage.", "Paris is the capital of France."]
SAM_ENV = {"AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}


def sam(cwd: Path, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([SAM, *args], cwd=cwd, env={**os.environ, **SAM_ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"sam {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def modelfn_build(work: Path, registry: str, python: str, *extra: str) -> None:
    """`modelfn build` of the default models.yaml into ``work`` (template + contexts), then `sam build`."""
    from infra.cli import main as modelfn

    shutil.copy(ROOT / "models.yaml", work / "models.yaml")
    code = modelfn(["build", "--models-file", str(work / "models.yaml"), "--registry", registry,
                    "--out", str(work / ".modelfn" / "build"), "--template", str(work / "template.yaml"),
                    "--python-version", python, "--base-image", BASE_IMAGE,
                    "--wheelhouse", str(ROOT / ".wheelhouse"), *extra])
    assert code == 0


def predict_event(path: Path) -> Path:
    """An API Gateway (REST) event for POST /models/minilm/predict with SENTENCES."""
    event = json.loads((ROOT / "events" / "minilm-predict-v1.json").read_text())
    event["body"] = json.dumps({"inputs": SENTENCES})
    path.write_text(json.dumps(event))
    return path


def invoke_response(proc: subprocess.CompletedProcess) -> dict:
    """`sam local invoke` prints the function's response as the last line of stdout."""
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_parity(vectors, reference: np.ndarray, spec) -> None:
    got = np.asarray(vectors, dtype=np.float64)
    assert got.shape == reference.shape
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    cosines = (got * reference).sum(axis=1)
    assert cosines.mean() >= spec.parity["mean_cosine"], cosines
    assert cosines.min() >= spec.parity["min_cosine"], cosines

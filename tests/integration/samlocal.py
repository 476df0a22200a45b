"""Helpers for the container tests: run the SAM CLI, build a project, check parity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from infra.local import AWS_BASE_IMAGE, sam_binary, sam_env

ROOT = Path(__file__).resolve().parents[2]
SAM = sam_binary()
BASE_IMAGE = os.environ.get("MODELFN_TEST_BASE_IMAGE", AWS_BASE_IMAGE)
SENTENCES = ["modelfn serves models as functions", "cold starts should be fast",
             "A man is playing a guitar on stage.", "Paris is the capital of France."]


def sam(cwd: Path, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`sam ARGS` in cwd; on failure the assertion shows the tail of sam's output."""
    proc = subprocess.run([SAM, *args], cwd=cwd, env={**sam_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"sam {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def modelfn_build(work: Path, registry: str, python: str, *extra: str) -> None:
    """`modelfn build` of the default models.yaml's MiniLM into ``work`` (template + contexts)."""
    import yaml

    from infra.cli import main as modelfn

    declared = yaml.safe_load((ROOT / "models.yaml").read_text())
    declared["models"] = [m for m in declared["models"] if m["name"] == "minilm"]
    (work / "models.yaml").write_text(yaml.safe_dump(declared, sort_keys=False))
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

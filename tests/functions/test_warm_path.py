"""The warm request path: the one-text shortcuts answer as the general batch path does, and the
runtime and export open their sessions with the same options (functions/sessions.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export import measure
from functions import sessions, settings
from functions.errors import ConfigError
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
def test_export_measures_the_session_the_runtime_opens(tiny_bundle, threads, monkeypatch):
    """Same options on both sides, except that export's threads never spin (its candidates take
    turns in one process); the runtime's spin where each thread has a whole CPU."""
    monkeypatch.delenv("MODELFN_SPINNING", raising=False)
    monkeypatch.setattr(settings, "_cgroup_quota", lambda: None)  # whole CPUs, as on a host without a quota
    bundle = tiny_bundle("feature-extraction")
    runtime = LoadedModel(bundle, threads=threads, max_batch=8, max_tokens=None, truncate=True)
    exported = measure.session(bundle / MODEL_FILE, threads)
    assert _options(runtime.session)[:-1] == _options(exported)[:-1]
    assert _options(exported)[0] == threads and _options(exported)[-1] == "0"
    assert _options(runtime.session)[-1] == ("1" if threads > 1 else "0")


@pytest.mark.parametrize("env, quota, threads, spins", [
    (None, None, 2, True),     # a whole CPU per thread: spin
    (None, 2.0, 2, True),      # Lambda at 3,538 MB and up: whole vCPUs
    (None, 1.7, 2, False),     # Lambda at 3,008 MB: 2 threads on 1.7 vCPU, a spinning one steals the quota
    (None, None, 1, False),    # one thread: no pool to spin
    ("auto", 4.0, 3, True),
    ("off", None, 2, False),   # a shared host says so
    ("ON", 0.5, 1, True),      # forced, whatever the quota
])
def test_spinning_pays_with_a_whole_cpu_per_thread(monkeypatch, env, quota, threads, spins):
    if env is None:
        monkeypatch.delenv("MODELFN_SPINNING", raising=False)
    else:
        monkeypatch.setenv("MODELFN_SPINNING", env)
    monkeypatch.setattr(settings, "_cgroup_quota", lambda: quota)
    assert settings.spinning_pays(threads) is spins
    assert sessions.session_options(threads).get_session_config_entry(SPINNING) == ("1" if spins else "0")


def test_an_emulated_quota_takes_the_place_of_the_cgroup_one(monkeypatch):
    """The bench's Lambda sizes ask the rule about a quota this process does not have."""
    monkeypatch.delenv("MODELFN_SPINNING", raising=False)
    monkeypatch.setattr(settings, "_cgroup_quota", lambda: 1.0)
    assert settings.spinning_pays(2) is False
    assert settings.spinning_pays(2, quota=2.0) is True and settings.spinning_pays(2, quota=None) is True
    assert settings.spinning_pays(2, quota=1.7) is False
    monkeypatch.setenv("MODELFN_SPINNING", "on")
    assert settings.spinning_pays(2, quota=1.7) is True


def test_a_bad_spinning_setting_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setenv("MODELFN_SPINNING", "sometimes")
    with pytest.raises(ConfigError, match=r"MODELFN_SPINNING='sometimes' is not one of auto, on, off"):
        sessions.session_options(2)


def test_the_session_choices_are_read_when_options_are_built(monkeypatch):
    """A benchmark flips a module constant for a whole process before the model loads."""
    monkeypatch.setattr(sessions, "CPU_MEM_ARENA", not sessions.CPU_MEM_ARENA)
    for forced in (True, False):
        monkeypatch.setattr(sessions, "ALLOW_SPINNING", forced)
        assert sessions.session_options(2).get_session_config_entry(SPINNING) == ("1" if forced else "0")
    opts = sessions.session_options(1)
    assert opts.enable_cpu_mem_arena is sessions.CPU_MEM_ARENA
    assert sessions.session_options(1, cpu_mem_arena=True).enable_cpu_mem_arena is True

"""Quantization search: a deliberately sensitive node group is the one kept in fp32; fp32 fallback; determinism."""

from __future__ import annotations

import pytest

from export.exporter import export_bundle
from export.search import choose
from functions.manifest import Candidate

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def sensitive_model(tmp_path_factory):
    """A tiny embedding model whose layer-1 FFN input projection cannot survive int8.

    Input feature 0 of that projection is always zero (its LayerNorm gain and bias are zeroed), so
    a huge weight on it changes nothing in fp32 but sets every column's int8 scale, crushing the
    real weights to zero. The FFN is scaled up so that the damage reaches the output.
    """
    import torch
    from transformers import BertModel

    from tests.tinymodels import build_tiny_model

    directory = build_tiny_model(tmp_path_factory.mktemp("sensitive") / "model", "feature-extraction")
    model = BertModel.from_pretrained(directory)
    with torch.no_grad():
        layer = model.encoder.layer[1]
        layer.attention.output.LayerNorm.weight[0] = 0.0
        layer.attention.output.LayerNorm.bias[0] = 0.0
        layer.intermediate.dense.weight *= 30.0
        layer.output.dense.weight *= 30.0
        layer.intermediate.dense.weight[:, 0] = 1000.0
    model.save_pretrained(directory)
    return directory


def test_greedy_exclusion_keeps_the_sensitive_group_in_fp32(sensitive_model, tmp_path):
    events = []
    manifest = export_bundle(sensitive_model, "feature-extraction", tmp_path / "b", strategy="smallest-passing",
                             progress=events.append)
    table = {c.name: c for c in manifest.quantization.candidates}
    plain = [c for n, c in table.items() if n.startswith("int8-") and "mixed" not in n]
    assert plain and not any(c.passed for c in plain)  # every whole-graph int8 scheme breaks this model
    mixed = [c for n, c in table.items() if "mixed" in n]
    assert mixed and mixed[0].note.startswith("fp32 groups: L1.ffn-in") and mixed[0].passed
    assert manifest.quantization.chosen == mixed[0].name  # smaller than fp32, and it passes
    ranking = next(e.message for e in events if e.message.startswith("search: most sensitive"))
    assert ranking.split("most sensitive ")[1].startswith("L1.ffn-in ")
    again = export_bundle(sensitive_model, "feature-extraction", tmp_path / "c", strategy="smallest-passing")
    assert again.quantization.chosen == manifest.quantization.chosen
    assert [(c.name, c.note, c.passed) for c in again.quantization.candidates] == \
           [(c.name, c.note, c.passed) for c in manifest.quantization.candidates]


def test_falls_back_to_fp32_with_a_warning_when_no_int8_candidate_passes(sensitive_model, tmp_path):
    events = []
    manifest = export_bundle(sensitive_model, "feature-extraction", tmp_path / "b", search_budget_s=0,
                             progress=events.append)
    assert manifest.quantization.chosen == "fp32" and manifest.parity.passed
    assert "fell back to fp32" in manifest.quantization.reason
    assert any(e.state == "warn" and "fell back" in e.message for e in events)


def _cand(name, ms, size, passed=True):
    return Candidate(name=name, size_bytes=size, latency_ms=ms, metrics={}, passed=passed)


def test_choice_rules_are_deterministic_under_timing_noise():
    table = [_cand("fp32", 10.0, 100), _cand("a", 5.0, 40), _cand("b", 5.1, 30), _cand("c", 2.0, 20, passed=False)]
    # b is within the tie band of a and smaller: noise between a and b cannot flip the choice
    assert choose(table, "fastest-passing", requested="int8", timed_here=True).name == "b"
    flipped = [_cand("fp32", 10.0, 100), _cand("a", 5.1, 40), _cand("b", 5.0, 30)]
    assert choose(flipped, "fastest-passing", requested="int8", timed_here=True).name == "b"
    assert choose(table, "smallest-passing", requested="int8", timed_here=True).name == "b"
    assert choose(table, "fixed:c", requested="int8", timed_here=True).passed is False
    arm = choose(table, "fastest-passing", requested="int8", timed_here=False, preference=("c", "a", "b", "fp32"))
    assert arm.name == "a" and "cannot be measured" in arm.reason


class _SteppingClock:
    """Each reading is one 'second' later: the search's budget checks, not wall time, decide."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class _DriftByGroup:
    """Evaluator stand-in for the ranking: a group's drift is its position, so every group is scored."""

    def __init__(self):
        self.runs = 0

    def run(self, path):
        self.runs += 1
        return None, self.runs

    def drift(self, outputs) -> float:
        return float(outputs)


def test_search_stops_when_its_budget_runs_out(tiny_bundle, tmp_path):
    from export import mixed
    from functions.manifest import MODEL_FILE

    fp32 = tiny_bundle("feature-extraction", quantization="none") / MODEL_FILE
    groups = mixed.node_groups(fp32)
    assert len(groups) >= 6

    unbounded = mixed.rank_groups("int8-dynamic-per-channel-avx2", fp32, groups, _DriftByGroup(), tmp_path / "a",
                                  deadline=float("inf"))
    assert {g for g, _ in unbounded} == set(groups)

    clock, evaluator = _SteppingClock(), _DriftByGroup()
    ranked = mixed.rank_groups("int8-dynamic-per-channel-avx2", fp32, groups, evaluator, tmp_path / "b",
                               deadline=3.5, clock=clock)
    # readings 1, 2, 3 are inside the deadline, the 4th is past it: three groups scored, then stop
    assert len(ranked) == evaluator.runs == 3

    steps = mixed.greedy_exclusion("int8-dynamic-per-channel-avx2", fp32, None, groups, unbounded, evaluator,
                                   tmp_path / "c", deadline=0.5, clock=_SteppingClock())
    assert steps == []  # no exclusion is tried once the budget is spent

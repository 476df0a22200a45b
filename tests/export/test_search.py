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
    """Each reading is one 'second' later: a machine as slow as you like, without waiting for it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class _DriftByGroup:
    """Evaluator stand-in: a group's drift is a fixed function of its nodes (as a real graph's would be),
    and no exclusion step passes the gate until ``passes_at`` groups are kept in fp32."""

    def __init__(self, groups, passes_at: int = 3):
        self.groups, self.passes_at, self.runs = groups, passes_at, []

    def run(self, path, *, probe: bool = False):
        self.runs.append((path.parent.name, probe))
        return None, path.parent.name

    def drift(self, outputs, *, probe: bool = False) -> float:
        group = outputs.removeprefix("only-")
        return sum(len(n) for n in self.groups[group]) / 1000.0

    def metrics(self, outputs) -> dict[str, float]:
        return {"excluded": float(outputs.rsplit("fp32x", 1)[1])}

    def passes(self, metrics) -> bool:
        return metrics["excluded"] >= self.passes_at


def _search(fp32, groups, tmp, clock, budget_s=float("inf"), passes_at=3):
    from export import mixed

    evaluator = _DriftByGroup(groups, passes_at)
    return mixed.run_search("int8-dynamic-per-channel-avx2", fp32, evaluator, tmp, budget_s, clock=clock), evaluator


def test_search_tries_the_same_candidates_on_a_slow_machine_as_on_a_fast_one(tiny_bundle, tmp_path):
    from export import mixed
    from functions.manifest import MODEL_FILE

    fp32 = tiny_bundle("feature-extraction", quantization="none") / MODEL_FILE
    groups = mixed.node_groups(fp32)
    assert len(groups) >= 6
    fast, fast_eval = _search(fp32, groups, tmp_path / "fast", clock=lambda: 0.0, budget_s=90)
    # every reading of this clock is a second later: a machine ~100x slower than the budget was planned for
    slow, slow_eval = _search(fp32, groups, tmp_path / "slow", clock=_SteppingClock(), budget_s=600)
    assert fast.ranking == slow.ranking and len(fast.ranking) == len(groups)  # every group ranked, same order
    assert [s.excluded for s in fast.steps] == [s.excluded for s in slow.steps]
    assert len(fast.steps) == 3 and fast.steps[-1].passed and not fast.stopped and not slow.stopped
    assert all(probe for _, probe in fast_eval.runs[:len(groups)])  # ranking runs the probe subset only
    assert not any(probe for _, probe in fast_eval.runs[len(groups):])  # exclusion steps run the full gate set
    # no step passes: the search stops at its step limit, not at a deadline
    capped, _ = _search(fp32, groups, tmp_path / "capped", clock=lambda: 0.0, passes_at=99)
    assert len(capped.steps) == mixed.step_limit(len(groups)) and not capped.stopped


def test_the_safety_stop_cuts_the_search_short_and_says_so(tiny_bundle, tmp_path):
    from export import mixed
    from functions.manifest import MODEL_FILE

    fp32 = tiny_bundle("feature-extraction", quantization="none") / MODEL_FILE
    groups = mixed.node_groups(fp32)
    # the first reading starts the 3 s budget (deadline 4); readings 2, 3, 4 are inside it, the 5th is past it
    cut, evaluator = _search(fp32, groups, tmp_path / "cut", clock=_SteppingClock(), budget_s=3.0)
    assert len(cut.ranking) == len(evaluator.runs) == 3 and cut.steps == []
    assert cut.stopped == f"safety stop (3 s) after ranking 3 of {len(groups)} groups"

"""Mixed precision: keep the most sensitive node groups in fp32, the rest in int8.

Node groups are per encoder layer and per kind (attention q/k/v projection, attention output,
FFN in, FFN out) plus the embeddings. Sensitivity of a group is how far quantizing that group
alone moves the outputs on a fixed probe subset of the samples (every class represented). Greedy
exclusion keeps the most sensitive groups in fp32 one more at a time until the gate passes.

The search is bounded by counts, not by the clock, so a slow or busy machine tries exactly the
candidates a fast one does: every group is ranked, and at most ``max_steps`` exclusions are tried
(nothing timed decides when to stop; the final choice weighs each step's speed with every other
candidate's). The time budget is only a safety stop for a machine far slower than planned, and
when it cuts the search short the result says so (``Search.stopped``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import candidates as registry
from .errors import ExportError

_LAYER = re.compile(r"layers?[._/](\d+)")
MAX_STEPS = 8  # exclusions tried at most (never more than half the groups)
KINDS = ("embeddings", "attn-qkv", "attn-out", "ffn-in", "ffn-out", "other")


@dataclass(frozen=True)
class Step:
    name: str  # candidate name
    path: Path
    excluded: tuple[str, ...]  # group names kept in fp32
    metrics: dict[str, float]
    passed: bool
    ran: tuple  # (session, outputs alone on every sample): the gate's run, reused instead of repeated


@dataclass(frozen=True)
class Search:
    ranking: list[tuple[str, float]]  # (group, drift), most sensitive first
    steps: list[Step]
    stopped: str = ""  # why the safety stop cut the search short ("" when it ran to its count)


def _kind(node) -> str:
    name = node.name.lower()
    if node.op_type in ("Gather", "EmbedLayerNormalization") or "embedding" in name:
        return "embeddings"
    if node.op_type == "Attention" or re.search(r"(query|key|value|q_proj|k_proj|v_proj|qkv)", name):
        return "attn-qkv"
    if re.search(r"attention[/.]output|attn[/.]out|o_proj", name):
        return "attn-out"
    if re.search(r"intermediate|ffn[/.]lin1|fc1|up_proj", name):
        return "ffn-in"
    if re.search(r"output[/.]dense|ffn[/.]lin2|fc2|down_proj", name):
        return "ffn-out"
    return "other"


def node_groups(model_path: Path) -> dict[str, tuple[str, ...]]:
    """Group name (``L3.ffn-out``, ``embeddings``) -> quantizable node names, in graph order."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    groups: dict[str, list[str]] = {}
    attention_seen = -1
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Attention", "Gather", "EmbedLayerNormalization"):
            continue
        if node.op_type == "Gather" and not any(i.startswith(("embeddings", "onnx::")) or "embedding" in i
                                                for i in node.input[:1]):
            continue  # shape plumbing, not a weight lookup
        kind = _kind(node)
        if node.op_type == "Attention":
            attention_seen += 1  # fused attention nodes lose the layer path in their name
            layer = str(attention_seen)
        else:
            match = _LAYER.search(node.name)
            layer = match.group(1) if match else None
        group = kind if kind == "embeddings" or layer is None else f"L{layer}.{kind}"
        groups.setdefault(group, []).append(node.name)
    return {g: tuple(n) for g, n in groups.items()}


def rank_groups(base: str, fp32: Path, groups: dict[str, tuple[str, ...]], evaluator, workdir: Path,
                deadline: float = float("inf"), clock=time.monotonic) -> list[tuple[str, float]]:
    """Groups by how much quantizing each alone (with ``base``'s scheme) drifts the outputs on the
    evaluator's probe subset, worst first. Every group is scored unless ``deadline`` (a safety stop)
    passes first: then fewer come back than were given."""
    scores: list[tuple[str, float]] = []
    for group, nodes in groups.items():
        if clock() > deadline:
            break
        ctx = registry.BuildContext(workdir=workdir / "sensitivity", nodes_to_quantize=nodes)
        path = registry.build(base, fp32, ctx, as_name=f"only-{group}")
        _, outputs = evaluator.run(path, probe=True)
        scores.append((group, evaluator.drift(outputs, probe=True)))
        path.unlink(missing_ok=True)
    # ties (e.g. groups that quantize to nothing) keep graph order, so the ranking is deterministic
    order = {g: i for i, g in enumerate(groups)}
    return sorted(scores, key=lambda gs: (-round(gs[1], 9), order[gs[0]]))


def step_limit(groups: int, max_steps: int = MAX_STEPS) -> int:
    """How many exclusions the greedy search tries at most for ``groups`` ranked groups."""
    return max(1, min(max_steps, groups // 2))


def greedy_exclusion(base: str, fp32: Path, groups: dict[str, tuple[str, ...]], ranking: list[tuple[str, float]],
                     evaluator, workdir: Path, deadline: float = float("inf"), max_steps: int = MAX_STEPS,
                     clock=time.monotonic) -> list[Step]:
    """Exclude the most sensitive groups one more at a time until a step passes the gate, at most
    ``step_limit(len(ranking), max_steps)`` steps; ``deadline`` is a safety stop checked before each."""
    steps: list[Step] = []
    excluded: list[str] = []
    for group, _ in ranking[:step_limit(len(ranking), max_steps)]:
        if clock() > deadline:
            break
        excluded.append(group)
        name = f"{base.replace('int8-dynamic-', 'int8-mixed-')}-fp32x{len(excluded)}"
        nodes = tuple(n for g in excluded for n in groups[g])
        path = registry.build(base, fp32, registry.BuildContext(workdir=workdir, nodes_to_exclude=nodes), as_name=name)
        session, outputs = evaluator.run(path)
        metrics = evaluator.metrics(outputs)
        steps.append(Step(name, path, tuple(excluded), metrics, evaluator.passes(metrics), (session, outputs)))
        if steps[-1].passed:
            break
    return steps


def run_search(base: str, fp32: Path, evaluator, workdir: Path, budget_s: float, *, max_steps: int = MAX_STEPS,
               clock=time.monotonic) -> Search:
    """Sensitivity ranking of every group, then greedy exclusion for ``base``; ``budget_s`` is only a
    safety stop (reported in ``Search.stopped``), never what decides how far the search goes."""
    if not base.startswith("int8-dynamic-"):
        raise ExportError(f"mixed precision starts from a dynamic int8 candidate, not {base}")
    deadline = clock() + budget_s
    groups = node_groups(fp32)
    ranking = rank_groups(base, fp32, groups, evaluator, workdir, deadline, clock)
    stopped = ""
    if len(ranking) < len(groups):
        stopped = f"safety stop ({budget_s:.0f} s) after ranking {len(ranking)} of {len(groups)} groups"
        return Search(ranking, [], stopped)
    steps = greedy_exclusion(base, fp32, groups, ranking, evaluator, workdir / "mixed", deadline, max_steps, clock)
    limit = step_limit(len(ranking), max_steps)
    if not (steps and steps[-1].passed) and len(steps) < limit:
        stopped = f"safety stop ({budget_s:.0f} s) after {len(steps)} of at most {limit} exclusion steps"
    return Search(ranking, steps, stopped)


__all__ = ["KINDS", "MAX_STEPS", "Search", "Step", "greedy_exclusion", "node_groups", "rank_groups", "run_search",
           "step_limit"]

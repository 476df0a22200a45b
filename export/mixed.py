"""Mixed precision: keep the most sensitive node groups in fp32, the rest in int8.

Node groups are per encoder layer and per kind (attention q/k/v projection, attention output,
FFN in, FFN out) plus the embeddings. Sensitivity of a group is how far quantizing that group
alone moves the outputs on the sample set. Greedy exclusion keeps the most sensitive groups in
fp32 one at a time until the gate passes, timing each step against fp32 because every fp32
island costs conversions: once a step is no faster than fp32, more exclusion cannot help.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import candidates as registry
from .errors import ExportError

_LAYER = re.compile(r"layers?[._/](\d+)")
RANKING_SHARE = 0.7
KINDS = ("embeddings", "attn-qkv", "attn-out", "ffn-in", "ffn-out", "other")


@dataclass(frozen=True)
class Step:
    name: str  # candidate name
    path: Path
    excluded: tuple[str, ...]  # group names kept in fp32
    metrics: dict[str, float]
    passed: bool
    latency_ms: float
    fp32_latency_ms: float


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
                deadline: float, clock=time.monotonic) -> list[tuple[str, float]]:
    """Groups by how much quantizing each alone (with ``base``'s scheme) drifts the outputs, worst first."""
    scores: list[tuple[str, float]] = []
    for group, nodes in groups.items():
        if clock() > deadline:
            break
        ctx = registry.BuildContext(workdir=workdir / "sensitivity", nodes_to_quantize=nodes)
        path = registry.build(base, fp32, ctx, as_name=f"only-{group}")
        _, outputs = evaluator.run(path)
        scores.append((group, evaluator.drift(outputs)))
        path.unlink(missing_ok=True)
    # ties (e.g. groups that quantize to nothing) keep graph order, so the ranking is deterministic
    order = {g: i for i, g in enumerate(groups)}
    return sorted(scores, key=lambda gs: (-round(gs[1], 9), order[gs[0]]))


def greedy_exclusion(base: str, fp32: Path, fp32_session, groups: dict[str, tuple[str, ...]],
                     ranking: list[tuple[str, float]], evaluator, workdir: Path, deadline: float,
                     max_steps: int | None = None, clock=time.monotonic) -> list[Step]:
    """Exclude the most sensitive groups one more at a time until a step passes the gate (or stops paying)."""
    steps: list[Step] = []
    excluded: list[str] = []
    limit = max_steps if max_steps is not None else max(1, len(ranking) // 2)
    for group, _ in ranking[:limit]:
        if clock() > deadline:
            break
        excluded.append(group)
        name = f"{base.replace('int8-dynamic-', 'int8-mixed-')}-fp32x{len(excluded)}"
        nodes = tuple(n for g in excluded for n in groups[g])
        path = registry.build(base, fp32, registry.BuildContext(workdir=workdir, nodes_to_exclude=nodes), as_name=name)
        session, outputs = evaluator.run(path)
        metrics = evaluator.metrics(outputs)
        latency = evaluator.latency({"fp32": fp32_session, name: session}, budget_s=3.0, rounds=5)
        step = Step(name, path, tuple(excluded), metrics, evaluator.passes(metrics), latency[name], latency["fp32"])
        steps.append(step)
        if step.passed or step.latency_ms >= step.fp32_latency_ms:
            break
    return steps


def run_search(base: str, fp32: Path, fp32_session, evaluator, workdir: Path, budget_s: float,
               clock=time.monotonic) -> tuple[list[tuple[str, float]], list[Step]]:
    """Sensitivity ranking then greedy exclusion for ``base``, both within ``budget_s``."""
    if not base.startswith("int8-dynamic-"):
        raise ExportError(f"mixed precision starts from a dynamic int8 candidate, not {base}")
    start = clock()
    deadline = start + budget_s
    groups = node_groups(fp32)
    # the ranking may use most of the budget, but some must remain to try exclusions
    ranking = rank_groups(base, fp32, groups, evaluator, workdir, start + RANKING_SHARE * budget_s, clock)
    steps = greedy_exclusion(base, fp32, fp32_session, groups, ranking, evaluator, workdir / "mixed", deadline,
                             clock=clock)
    return ranking, steps


__all__ = ["KINDS", "Step", "greedy_exclusion", "node_groups", "rank_groups", "run_search"]

"""Plain-text tables for the candidate list, shared by the gate error and the CLI summary."""

from __future__ import annotations

from functions.manifest import Candidate

from .search import ranked_ms


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def candidates_table(candidates: tuple[Candidate, ...] | list[Candidate], *, chosen: str = "",
                     thresholds: dict[str, float] | None = None, worst: int = 3) -> str:
    """One row per candidate: size, batch-1 latency with its spread (wall time), batch-1 CPU time (what
    the choice ranks on), batch-of-8 latency as served, speed-up over fp32 (by CPU time where measured),
    each metric (a threshold shown on the value it is judged by: a mean's lower
    bound), gate result; then each candidate's ``worst`` inputs with their class."""
    thresholds = thresholds or {}
    names = {m for c in candidates for m in c.metrics}

    def judged_by(m: str) -> str | None:  # which threshold this column is held to
        base = m.removesuffix("_lcb95")
        if base in thresholds and (m.endswith("_lcb95") or base + "_lcb95" not in names):
            return base
        return None

    metrics = sorted(names, key=lambda m: (judged_by(m) is None, m))
    fp32 = next((ranked_ms(c) for c in candidates if c.name == "fp32"), 0.0)
    header = ["", "candidate", "size", "ms@b1", "±", "cpu ms@b1", "ms@b8", "vs fp32"] + [
        # max_* thresholds (max_kl_mean, max_wer) are maxima; every other one a minimum
        f"{m}{'<=' if m.startswith('max_') else '>='}{thresholds[judged_by(m)]:g}" if judged_by(m) else m
        for m in metrics] + ["gate", "note"]
    rows = [header]
    for c in candidates:
        speed = f"{fp32 / ranked_ms(c):.2f}x" if fp32 and ranked_ms(c) > 0 else "-"
        rows.append(["*" if c.name == chosen else "", c.name, human_size(c.size_bytes),
                     f"{c.latency_ms:.3f}" if c.latency_ms > 0 else "-",
                     f"{c.latency_spread_ms:.3f}" if c.latency_ms > 0 else "-",
                     f"{c.cpu_ms:.3f}" if c.cpu_ms > 0 else "-",
                     (f"{c.batch_latency_ms:.2f}" + ("r" if c.one_row_per_run else "")) if c.batch_latency_ms > 0 else "-",
                     speed]
                    + [f"{c.metrics[m]:.4f}" if m in c.metrics else "-" for m in metrics]
                    + ["pass" if c.passed else "FAIL", c.note])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    if any(c.one_row_per_run for c in candidates):
        lines.append("(ms@b8 r: served one row per call, because the rows depend on their batch-mates)")
    listed = [c for c in candidates if c.worst]
    if listed and worst:
        lines.append("")
        lines.append("worst inputs per candidate (score: the task's per-input parity, lowest first; [class]):")
        width = max(len(c.name) for c in listed)
        for c in listed:
            for i, w in enumerate(c.worst[:worst]):
                lines.append(f"  {c.name if i == 0 else '':<{width}}  {w['score']:.4f}  [{w['kind']}]  {w['text']}")
    return "\n".join(lines)


__all__ = ["candidates_table", "human_size"]

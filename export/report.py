"""Plain-text tables for the candidate list, shared by the gate error and the CLI summary."""

from __future__ import annotations

from functions.manifest import Candidate


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def candidates_table(candidates: tuple[Candidate, ...] | list[Candidate], *, chosen: str = "",
                     thresholds: dict[str, float] | None = None) -> str:
    """One row per candidate: size, batch-1 latency, speed-up over fp32, each metric, gate result."""
    thresholds = thresholds or {}
    metrics = sorted({m for c in candidates for m in c.metrics}, key=lambda m: (m not in thresholds, m))
    fp32 = next((c.latency_ms for c in candidates if c.name == "fp32"), 0.0)
    header = ["", "candidate", "size", "ms@b1", "vs fp32"] + [
        f"{m}>={thresholds[m]:g}" if m in thresholds else m for m in metrics] + ["gate", "note"]
    rows = [header]
    for c in candidates:
        speed = f"{fp32 / c.latency_ms:.2f}x" if fp32 and c.latency_ms > 0 else "-"
        rows.append(["*" if c.name == chosen else "", c.name, human_size(c.size_bytes),
                     f"{c.latency_ms:.3f}" if c.latency_ms > 0 else "-", speed]
                    + [f"{c.metrics[m]:.4f}" if m in c.metrics else "-" for m in metrics]
                    + ["pass" if c.passed else "FAIL", c.note])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


__all__ = ["candidates_table", "human_size"]

"""The modelfn-vs-transformers-pipeline comparison shared by the per-task benches (image_bench.py,
speech_bench.py): medians of cold starts and warm requests, the ratio table, and the results file
with one section per configuration (a rerun replaces its own section, keeps the others)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_probe(script: str, args: list[str], env: dict, *, timeout_s: float = 600) -> dict:
    """Run ``script`` in a fresh interpreter (so its cold start is real); its last stderr line is its
    JSON result. A failed probe stops the bench with its error."""
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stderr.strip().splitlines()[-1])


def medians(results: dict[str, list[dict]], *, skip_warm: int) -> dict[str, tuple[float, float]]:
    """name -> (median process-start-to-first-answer s, median warm request s), leaving out the first
    ``skip_warm`` warm requests of each run (allocations and caches still settling)."""
    return {name: (statistics.median(r["first_s"] for r in runs),
                   statistics.median(w for r in runs for w in r["warm"][skip_warm:]))
            for name, runs in results.items()}


def ratio_rows(rows: dict[str, tuple[float, float]]) -> list[str]:
    """The markdown table: modelfn handler against the transformers pipeline, cold and warm."""
    (m_cold, m_warm), (p_cold, p_warm) = rows["modelfn"], rows["pipeline"]
    return [
        "| | modelfn handler | transformers pipeline | ratio |",
        "|---|---|---|---|",
        f"| process start -> first answer | {m_cold:.2f} s | {p_cold:.2f} s | {p_cold / m_cold:.1f}x |",
        f"| warm request | {m_warm * 1000:.1f} ms | {p_warm * 1000:.1f} ms | {p_warm / m_warm:.1f}x |",
    ]


def write_section(out: Path, header: str, key: str, text: str) -> None:
    """Write ``text`` (a section starting ``## key:``) into ``out``, replacing the section of the same key."""
    sections = out.read_text().split("\n## ")[1:] if out.is_file() else []
    kept = ["## " + s.rstrip() + "\n" for s in sections if not s.startswith(f"{key}:")]
    out.write_text(header + "\n".join(kept + [text]))

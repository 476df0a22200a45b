"""Run the measured children (infra/bench/probe.py): cold starts in fresh interpreters, interleaved
round-robin across the ways, and warm turns: each way in a fresh process of its own, round-robin.

A "way" is one way of answering a request: the modelfn handler on the bundle, bare onnxruntime +
tokenizers on the same model.onnx (the floor) or on the fp32 export, and transformers + torch on
the source model. Ratios between ways are measured side by side in one run, so load from other
processes on a shared machine affects all of them alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SHORT = "Lambda functions should start fast."
# ~310 words: truncated to the model's max_tokens (256 for MiniLM), the "256-token" input.
LONG = " ".join(["serverless inference keeps cold starts short by loading only what it needs"] * 24)
ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT_S = 900


class ChildFailed(RuntimeError):
    """A measured child exited non-zero (its stderr tail is the message)."""


@dataclass(frozen=True)
class Way:
    """One way of answering a request; ``config`` is what probe.py needs to load it."""
    label: str
    config: dict
    env: dict


def machine_facts() -> dict:
    """The machine a result was measured on: usable CPUs, Python, platform, load average at the end."""
    from functions.settings import available_cpus

    return {"cpus": available_cpus(), "python": sys.version.split()[0], "platform": platform.platform(),
            "machine": platform.machine(), "load_average": list(os.getloadavg())}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (q in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict:
    """p50, p99, mean and count of a list of milliseconds."""
    return {"p50_ms": statistics.median(values), "p99_ms": percentile(values, 0.99),
            "mean_ms": statistics.fmean(values), "n": len(values)}


def merged_samples(runs) -> dict[str, list[float]]:
    """Several runs' samples ({case: [ms, ...]} each) joined per case, in run order."""
    samples: dict[str, list[float]] = {}
    for run in runs:
        for case, values in run.items():
            samples.setdefault(case, []).extend(values)
    return samples


def host_spinning(threads: int) -> dict:
    """The environment that gives a bare-onnxruntime baseline (probe.py's floor) the spinning the
    runtime chooses on this host for ``threads`` threads (functions.settings.spinning_pays), so
    the floor and the handler run the same session options."""
    from functions.constants import SPINNING
    from functions.settings import spinning_pays

    return {SPINNING: "on" if spinning_pays(threads) else "off"}


def child_environment(extra: dict) -> dict:
    """This process's environment plus ``extra``, with the repository first on PYTHONPATH (the
    children import functions/ and infra/ from here)."""
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_child(mode: str, config: dict, env: dict, *, cpus: set[int] | None = None,
              govern: Callable[[int], Callable[[], None]] | None = None) -> tuple[float, dict]:
    """Run probe.py MODE in a fresh interpreter; return (monotonic time of the spawn, its result).

    ``cpus`` pins the child (before exec, so every thread it starts inherits it); ``govern(pid)``
    starts a CPU-share governor on the child and returns the function that stops it.
    """
    with tempfile.TemporaryDirectory(prefix="modelfn-bench-") as tmp:
        config_path, result_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        environment = child_environment(env)
        preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        spawn = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "infra.bench.probe", mode, str(result_path), str(config_path)],
                                 cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 preexec_fn=preexec)
        stop = govern(child.pid) if govern else None
        try:
            _, stderr = child.communicate(timeout=CHILD_TIMEOUT_S)
        finally:
            if stop:
                stop()
            if child.poll() is None:
                child.kill()
        if child.returncode != 0 or not result_path.is_file():
            tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ChildFailed(f"bench child ({mode}, {config.get('way', {}).get('kind', 'warm')}) failed: {tail[0]}")
        return spawn, json.loads(result_path.read_text(encoding="utf-8"))


def phases(spawn: float, result: dict) -> dict:
    """Seconds of each cold-start phase: interpreter start, imports, model load, first inference."""
    return {"interpreter_s": result["t0"] - spawn, "import_s": result["t_import"] - result["t0"],
            "load_s": result["t_load"] - result["t_import"], "first_s": result["t_first"] - result["t_load"],
            "total_s": result["t_first"] - spawn, "rss_mib": result["rss_mib"]}


def cold_starts(ways: list[Way], reps: int, *, torch_reps: int, progress: Callable[[str], None],
                mode: str = "cold", config: dict | None = None) -> dict:
    """``reps`` fresh interpreters per way (``torch_reps`` for torch, which takes ~20x longer),
    interleaved round-robin; the median of each phase and the largest peak RSS per way. ``mode`` and
    ``config`` (merged into each child's) are probe.py's (text-generation models: "gencold")."""
    runs: dict[str, list[dict]] = {w.label: [] for w in ways}
    for rep in range(reps):
        for way in ways:
            if way.config["kind"] == "torch" and rep >= torch_reps:
                continue
            spawn, result = run_child(mode, {"way": way.config, "short": SHORT, **(config or {})}, way.env)
            runs[way.label].append(phases(spawn, result))
        progress(f"cold start round {rep + 1}/{reps}: " + ", ".join(
            f"{label} {runs[label][-1]['total_s']:.2f} s" for label in runs if runs[label]))
    out = {}
    for label, items in runs.items():
        out[label] = {key: statistics.median(i[key] for i in items) for key in items[0] if key != "rss_mib"}
        out[label]["rss_mib"] = max(i["rss_mib"] for i in items)
        out[label]["n"] = len(items)
    return out


# Warm turns per way: each way runs in a fresh process per turn, the turns taken round-robin.
WARM_TURNS = 5


def in_turns(ways: list[Way], reps: int, *, mode: str, config: dict, env: dict, progress: Callable[[str], None],
             what: str, turns: int = WARM_TURNS) -> tuple[dict, int | None, dict]:
    """probe.py MODE for every way in a process of its own, as a function's process holds one model,
    in ``turns`` round-robin turns of about reps/turns rounds each (a fresh process per turn, which
    warms up first): load from other processes falls on all ways alike, and no way's weights evict
    another's from the caches between calls. (All ways in one process, in turn, measured MiniLM's
    handler 31% and torch 14% slower than each alone.) The child answers ``samples`` {way: {case:
    [...]}}, ``rss_mib`` and ``torch_threads``. Returns ({way: {case: samples of every turn}}, the
    torch thread count used or None, {way: peak RSS MiB of its processes})."""
    turns = max(1, min(turns, reps))
    per_turn = -(-reps // turns)
    runs: dict[str, list[dict]] = {w.label: [] for w in ways}  # each turn's samples, per way
    rss: dict[str, float] = {}
    torch_threads = None
    for turn in range(turns):
        for way in ways:
            _, result = run_child(mode, {**config, "ways": {way.label: way.config}, "reps": per_turn},
                                  {**env, **way.env})
            runs[way.label].append(result["samples"][way.label])
            rss[way.label] = max(rss.get(way.label, 0.0), result["rss_mib"])
            torch_threads = result["torch_threads"] or torch_threads
        progress(f"{what} turn {turn + 1}/{turns}")
    return {label: merged_samples(r) for label, r in runs.items()}, torch_threads, rss


def warm_latency(ways: list[Way], reps: int, *, env: dict, progress: Callable[[str], None],
                 turns: int = WARM_TURNS) -> tuple[dict, int | None]:
    """Warm latency of every way (:func:`in_turns`), batch 1 and 8, short and long texts. Returns
    ({way: {case: summary}} in ms, the torch thread count used or None)."""
    progress(f"warm latency: {len(ways)} ways x {reps} rounds in {max(1, min(turns, reps))} turns of a fresh "
             "process each (batch 8 every 4th round)")
    samples, torch_threads, _ = in_turns(ways, reps, mode="warm", config={"short": SHORT, "long": LONG, "warmup": 3},
                                         env=env, progress=progress, what="warm latency", turns=turns)
    if torch_threads:
        progress(f"warm latency: torch ran at its fastest thread count here, {torch_threads}")
    return ({label: {case: summary(values) for case, values in cases.items()} for label, cases in samples.items()},
            torch_threads)

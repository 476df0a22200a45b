"""Lambda memory sizes on this machine, and what the image and bundle weigh.

Lambda gives a function CPU in proportion to its memory (1,769 MB = one vCPU). Without container
engine CPU limits, a size is emulated on the measured process itself:

* whole CPUs: sched_setaffinity to ceil(vCPU) CPUs (capped at the CPUs this process may use) and
  MODELFN_THREADS set to that count, as the runtime would see on Lambda, with MODELFN_SPINNING as
  the runtime would decide it under that quota (off where the vCPU share is under one per thread);
* the fraction: a CPU bandwidth limit like cgroup ``cpu.max`` (quota = vCPU x 100 ms of CPU time
  per 100 ms period, the kernel's default period). The parent polls the child's on-CPU time
  (/proc/PID/task/*/schedstat, nanoseconds) every POLL_S and SIGSTOPs it once the period's quota
  is used, SIGCONTing it at the next period: cpulimit's method, with up to one poll of overshoot.
"""

from __future__ import annotations

import importlib.metadata as metadata
import math
import os
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from functions.constants import SPINNING
from functions.settings import spinning_pays

from . import cost
from .measure import LONG, SHORT, Way, merged_samples, run_child, summary

PERIOD_S = 0.1
POLL_S = 0.002
METHOD = ("CPU share emulated per size: affinity to ceil(vCPU) CPUs + MODELFN_THREADS=ceil(vCPU) (threads spin "
          "only with a whole vCPU each, as the runtime decides under a cgroup quota); the "
          "fraction as a cpu.max-like bandwidth limit (quota vCPU x 100 ms per 100 ms period) enforced "
          "by SIGSTOP/SIGCONT from the parent polling the child's on-CPU time every 2 ms; short requests "
          "back to back for at least 0.3 s per process (a sustained stream, so a throttled size's stalls show)")


@dataclass(frozen=True)
class CpuShare:
    memory_mb: int
    vcpus: float
    cpus: int  # whole CPUs the process may run on
    capped: bool  # the host has fewer CPUs than the size would get

    @property
    def throttled(self) -> bool:
        return self.vcpus < self.cpus


def cpu_share(memory_mb: int, host_cpus: int) -> CpuShare:
    """How a size is emulated on a host with ``host_cpus`` usable CPUs."""
    share = cost.vcpus(memory_mb)
    whole = math.ceil(share - 1e-9)
    capped = whole > host_cpus
    return CpuShare(memory_mb, min(share, float(host_cpus)), min(whole, host_cpus), capped)


def _cpu_time_s(pid: int) -> float:
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between listdir and open
    return total / 1e9


def bandwidth_governor(vcpus: float) -> Callable[[int], Callable[[], None]]:
    """A ``govern(pid)`` for measure.run_child that holds the child to ``vcpus`` CPUs of time."""
    quota = vcpus * PERIOD_S

    def govern(pid: int) -> Callable[[], None]:
        done = threading.Event()

        def loop() -> None:
            period_start, used_at_start = time.monotonic(), _cpu_time_s(pid)
            while not done.is_set():
                now = time.monotonic()
                if now - period_start >= PERIOD_S:
                    period_start, used_at_start = now, _cpu_time_s(pid)
                elif _cpu_time_s(pid) - used_at_start >= quota:
                    try:
                        os.kill(pid, signal.SIGSTOP)
                        done.wait(max(0.0, period_start + PERIOD_S - time.monotonic()))
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        return
                    period_start, used_at_start = time.monotonic(), _cpu_time_s(pid)
                    continue
                done.wait(POLL_S)

        thread = threading.Thread(target=loop, name=f"cpu-governor-{pid}", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join()
            try:
                os.kill(pid, signal.SIGCONT)  # never leave a child stopped
            except ProcessLookupError:
                pass
        return stop
    return govern


def run_sizes(handler: Way, sizes: list[int], rounds: int, mode: str, config: dict, *,
              progress: Callable[[str], None]) -> dict[int, list[tuple[float, dict]]]:
    """``rounds`` fresh probe.py MODE children per size under its emulated CPU share, round-robin
    across the sizes: {memory_mb: [(spawn time, result), ...]}."""
    usable = sorted(os.sched_getaffinity(0))
    runs: dict[int, list[tuple[float, dict]]] = {mb: [] for mb in sizes}
    for round_ in range(rounds):
        for memory_mb in sizes:
            share = cpu_share(memory_mb, len(usable))
            # The size's CPU count, or fewer where the handler's environment caps its threads (--threads).
            threads = min(share.cpus, int(handler.env.get("MODELFN_THREADS") or share.cpus))
            # Spinning as the runtime decides it under this size's quota (a fractional share: off).
            spin = "on" if spinning_pays(threads, quota=share.vcpus) else "off"
            env = {**handler.env, SPINNING: spin, "MODELFN_THREADS": str(threads)}
            govern = bandwidth_governor(share.vcpus) if share.throttled else None
            runs[memory_mb].append(run_child(mode, {"way": handler.config, **config}, env,
                                             cpus=set(usable[:share.cpus]), govern=govern))
        progress(f"Lambda sizes, round {round_ + 1}/{rounds}: " + ", ".join(
            f"{mb} MB ({cpu_share(mb, len(usable)).vcpus:.2f} vCPU"
            + (", capped at this host's CPUs" if cpu_share(mb, len(usable)).capped else "") + ")" for mb in sizes))
    return runs


def size_runs(handler: Way, sizes: list[int], reps: int, *, rounds: int = 3,
              progress: Callable[[str], None]) -> list[dict]:
    """Fresh handler processes under each size's emulated CPU share, ``rounds`` per size taken
    round-robin across the sizes (so load from other processes hits all sizes alike): cold start
    phases (median), warm batch-1 latency over all rounds (short and long), and the peak RSS after a
    batch of 8 long texts (largest)."""
    usable = sorted(os.sched_getaffinity(0))
    per_round = max(1, math.ceil(reps / rounds))
    runs = run_sizes(handler, sizes, rounds, "size", {"short": SHORT, "long": LONG, "reps": per_round},
                     progress=progress)
    rows = []
    for memory_mb in sizes:
        share = cpu_share(memory_mb, len(usable))
        results = runs[memory_mb]
        samples = merged_samples(result["samples_ms"] for _, result in results)
        rows.append({"memory_mb": memory_mb, "vcpus": round(share.vcpus, 3), "cpus": share.cpus,
                     "capped": share.capped, "rounds": len(results),
                     "init_s": statistics.median(r["t_load"] - spawn for spawn, r in results),
                     "cold_start_s": statistics.median(r["t_first"] - spawn for spawn, r in results),
                     "rss_mib": max(r["rss_mib"] for _, r in results),
                     "durations_ms": samples["b1 short"],
                     **{case: summary(values) for case, values in samples.items()}})
        rows[-1]["fits"] = rows[-1]["rss_mib"] <= memory_mb
    return rows


def price_sizes(rows: list[dict], cold_rate: float) -> None:
    """Add p50/p99 (batch 1, short text) and cost per million requests per architecture to each row.
    arm64 is priced on the durations measured here (this host is x86_64)."""
    for row in rows:
        row["p50_ms"], row["p99_ms"] = row["b1 short"]["p50_ms"], row["b1 short"]["p99_ms"]
        for arch in ("x86_64", "arm64"):
            row[f"cost_per_million_{arch}"] = cost.cost_per_million(
                row["memory_mb"], row["durations_ms"], row["init_s"] * 1000, architecture=arch, cold_rate=cold_rate)


# --- sizes on disk ---------------------------------------------------------------------------------

def directory_mb(path: Path) -> float:
    """MB (10^6 bytes) of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def installed_mb(requirement: str, trim: tuple[str, ...] = ()) -> float:
    """MB of a distribution as installed here: the files its RECORD lists (bytecode included), less
    those an image build removes (``trim``: infra/build/context.trim_for)."""
    from infra.build.budget import trimmed

    name = requirement.split("==")[0]
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return 0.0
    total = 0
    for entry in dist.files or []:
        path = Path(dist.locate_file(entry))
        if path.is_file() and not trimmed(entry.as_posix(), trim):
            total += path.stat().st_size
    return total / 1e6


def _stripped_mb(pin: str, trim: tuple[str, ...], architecture: str, python: str) -> float | None:
    """MB of a package the image installs stripped (infra/build/strip.py: onnxruntime-genai), from the
    stripped wheel of `modelfn build`'s wheelhouse; 0 when it is not such a package, None when it is but
    the wheelhouse has no wheel of it yet (the host's unstripped install is then the figure, and the
    method says so)."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    from infra import defaults
    from infra.build.budget import installed_bytes
    from infra.build.strip import STRIP_PACKAGES, STRIPPED_DIR, image_wheel
    from infra.build.wheelhouse import wheelhouse_dir

    name, _, version = pin.partition("==")
    if canonicalize_name(name) not in STRIP_PACKAGES:
        return 0.0
    folder = wheelhouse_dir(defaults.WHEELHOUSE, architecture, python)
    # A stripped copy of this version is the figure (an older wheelhouse may hold the copy without the wheel).
    for wheel in [*(folder / STRIPPED_DIR).glob("*.whl"), *folder.glob("*.whl")]:
        wheel_name, wheel_version, _, _ = parse_wheel_filename(wheel.name)
        if wheel_name == canonicalize_name(name) and str(wheel_version) == version:
            return installed_bytes(image_wheel(wheel) if wheel.parent == folder else wheel, trim) / 1e6
    return None


def image_contents(task: str, architecture: str, bundle_mb: float) -> dict:
    """What the function image adds over its base: the pinned runtime closure `modelfn build`
    installs (infra/build/requirements.py), sized as installed on this host, plus the bundle; and the
    same for a torch handler (the closure with torch + transformers instead of onnxruntime)."""
    from infra import defaults
    from infra.build.context import trim_for
    from infra.build.requirements import pinned_requirements, task_requirements

    python = defaults.image_python()
    pins = pinned_requirements(python, architecture, extra=task_requirements(task))
    trim = trim_for(pins)
    stripped = {p: _stripped_mb(p, trim, architecture, python) for p in pins}
    packages = {p: stripped[p] or installed_mb(p, trim) for p in pins}
    unstripped = [p for p in pins if stripped[p] is None]
    torch_pins = pinned_requirements(python, architecture, extra=("torch", "transformers"))
    torch_packages = {p: installed_mb(p) for p in torch_pins if not p.startswith("onnxruntime==")}
    return {
        "method": "installed size on this host (RECORD files, less what the image build trims; onnxruntime-genai "
                  "as its stripped wheel in the wheelhouse goes in) of the pinned closure `modelfn build` installs "
                  f"(Python {python} markers, {architecture}), plus the bundle; torch handler: the same "
                  "closure with torch + transformers added and onnxruntime removed, plus the source model"
                  + (f"; counted unstripped, as no stripped wheel is in the wheelhouse yet (`modelfn build` puts it "
                     f"there): {', '.join(unstripped)}" if unstripped else ""),
        "site_packages_mb": sum(packages.values()), "bundle_mb": bundle_mb,
        "total_mb": sum(packages.values()) + bundle_mb,
        "largest": sorted(((p, round(mb, 1)) for p, mb in packages.items()), key=lambda x: -x[1])[:5],
        "torch_site_packages_mb": sum(torch_packages.values()),
        "torch_largest": sorted(((p, round(mb, 1)) for p, mb in torch_packages.items()), key=lambda x: -x[1])[:5],
    }

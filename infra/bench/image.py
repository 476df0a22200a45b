"""`modelfn bench` inside the built image: cold start, warm latency and Lambda sizes of the model's
function image (image_build.py), run by the container engine (Docker, or podman behind its Docker API).

Each measurement runs a fresh container of the image's own entry point, the Lambda Runtime Interface
Emulator in front of `python -m awslambdaric`, and invokes it over the RIE's HTTP API with an API
Gateway event, as the container tests and `docker run -p 9000:8080` do:

* cold start: from the engine's create call to the first answer; split into the engine's create +
  start, the runtime's init (the RIE's ``INIT REPORT``: interpreter, imports, model load, what Lambda
  bills as Init Duration), the first invoke (the RIE's ``INVOKE RTDONE``) and the rest (the RIE and
  the HTTP round trip). Imports and model load are split by probe.py's ``cold`` mode run in the same
  image (mounted read-only), whose times share CLOCK_MONOTONIC with this process;
* warm: batch-1 short requests through the RIE, HTTP included;
* a Lambda size: the same container under the engine's ``--cpus`` (the size's vCPU share, capped at
  this host's CPUs) and ``--memory`` (swap off) limits; fits = the runtime was not killed.

The bundle is always baked in: a deployed image whose bundle is over the bake limit fetches it at cold
start instead, a download not measured here. This module imports nothing heavy at import time; docker
(the Docker SDK) only when it runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from functions.errors import ConfigError

from .container import limits_enforced, probe_in_image, run_container
from .image_build import ImageRunFailed, build_image, engine_problem
from .measure import LONG, SHORT, merged_samples, summary

METHOD = ("the function image (`modelfn build`'s context, built by the container engine) in fresh containers of "
          "its own entry point (Runtime Interface Emulator + awslambdaric), invoked over the RIE's HTTP API with "
          "API Gateway events from this host; Lambda sizes under the engine's --cpus (vCPU share, capped at this "
          "host's CPUs) and --memory (no swap) limits")



# --- aggregation -----------------------------------------------------------------------------------

PHASES = ("engine_s", "init_s", "first_s", "rest_s", "total_s")


def cold_summary(runs: list[dict]) -> dict:
    """The median of each phase over the containers that answered, their count and the peak RSS."""
    good = [r for r in runs if not r["failed"]]
    if not good:
        return {"n": 0, "failed": runs[0]["failed"] if runs else "no run"}
    out = {key: statistics.median(r[key] for r in good) for key in PHASES}
    rss = [r["rss_mib"] for r in good if r.get("rss_mib")]
    out.update(n=len(good), rss_mib=max(rss) if rss else None)
    return out


def size_row(memory_mb: int, share, runs: list[dict]) -> dict:
    """One Lambda size's row, with sizing.size_runs' keys (so cost.py prices it the same way)."""
    failed = next((r["failed"] for r in runs if r["failed"]), None)
    cold = cold_summary(runs)
    samples = merged_samples(r["samples_ms"] for r in runs if not r["failed"])
    row = {"memory_mb": memory_mb, "vcpus": round(share.vcpus, 3), "cpus": share.cpus, "capped": share.capped,
           "rounds": len(runs), "fits": failed is None, "failed": failed,
           "init_s": cold.get("init_s"), "cold_start_s": cold.get("total_s"), "rss_mib": cold.get("rss_mib"),
           "durations_ms": samples.get("b1 short", [])}
    row.update({case: summary(values) for case, values in samples.items() if values})
    return row


# --- the whole image part of a bench run -----------------------------------------------------------

def measure_image(spec, bundle: Path, handler_env: dict, *, cold_reps: int, reps: int, sizes: list[int],
                  size_reps: int, rounds: int = 2, progress: Callable[[str], None], host=None, **build) -> dict:
    """Build (or reuse) the image (``build``: build_image's roots), then cold starts, warm latency
    and the Lambda sizes in it. ``host`` (a measure.Way: the handler on this host) runs a fresh
    process in every cold round, so the image's figures have an in-process twin measured under the
    same load. Raises ConfigError when no engine is usable, ImageRunFailed when the image cannot be
    built or does not answer."""
    import docker

    problem = engine_problem(spec.architecture)
    if problem:
        raise ConfigError(f"cannot measure the built image: {problem}",
                          hint='eval "$(bash scripts/containers-env.sh)" sets up podman here; or pass --no-image')
    started = time.monotonic()
    try:
        result = _measure(docker.from_env(timeout=600), spec, bundle, handler_env, cold_reps=cold_reps, reps=reps,
                          sizes=sizes, size_reps=size_reps, rounds=rounds, progress=progress, host=host, **build)
    except docker.errors.DockerException as exc:  # the engine refused a call: one line, not a traceback
        line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ImageRunFailed(f"the container engine failed: {line[:300]}") from None
    result["wall_s"] = time.monotonic() - started
    return result


def _measure(client, spec, bundle: Path, handler_env: dict, *, cold_reps: int, reps: int, sizes: list[int],
             size_reps: int, rounds: int, progress: Callable[[str], None], host, **build) -> dict:
    import os

    from .measure import phases, run_child
    from .sizing import cpu_share

    env = {k: v for k, v in handler_env.items() if k.startswith("MODELFN_") and k != "MODELFN_BUNDLE_DIR"}
    built = build_image(client, spec, bundle, progress=progress, **build)
    tag = built["tag"]
    progress(f"built image: {tag} ({'reused' if built['reused'] else 'built'}, {built['size_mb']:.0f} MB)")

    per_container = max(1, reps // max(1, cold_reps))
    warm = {"b1 short": ([SHORT], per_container)}
    cold_runs, split_runs, host_runs = [], [], []
    for rep in range(cold_reps):
        cold_runs.append(run_container(client, tag, spec.name, env, warm=warm))
        split_runs.append(probe_in_image(client, tag, spec.name, env))
        if host is not None:  # probe.py's size mode: a cold start, then warm batch-1 requests
            spawn, done = run_child("size", {"way": host.config, "short": SHORT, "long": LONG,
                                             "reps": per_container}, host.env)
            host_runs.append({**phases(spawn, done), "samples_ms": {"b1 short": done["samples_ms"]["b1 short"]}})
        progress(f"image cold start {rep + 1}/{cold_reps}: RIE {cold_runs[-1]['total_s']:.2f} s, "
                 f"probe {split_runs[-1]['total_s']:.2f} s"
                 + (f", in-process {host_runs[-1]['total_s']:.2f} s" if host_runs else ""))
    failed = next((r["failed"] for r in cold_runs if r["failed"]), None)
    if failed:
        raise ImageRunFailed(f"the function image did not answer: {failed}")
    split = {key: statistics.median(r[key] for r in split_runs) for key in split_runs[0] if key != "rss_mib"}
    split.update(rss_mib=max(r["rss_mib"] for r in split_runs), n=len(split_runs))

    enforced = limits_enforced(client, tag) if sizes else None
    if sizes and not (enforced["cpu"] and enforced["memory"]):
        progress(f"the engine does not enforce --cpus/--memory here ({enforced}): Lambda sizes stay emulated "
                 "in-process only")
        sizes = []
    host_cpus = len(os.sched_getaffinity(0))
    per_round = max(1, -(-size_reps // rounds))
    size_warm = {"b1 short": ([SHORT], per_round), "b1 long": ([LONG], max(1, per_round // 3)),
                 "b8 long": ([LONG] * 8, 1)}
    runs: dict[int, list[dict]] = {mb: [] for mb in sizes}
    for round_ in range(rounds):
        for memory_mb in sizes:
            share = cpu_share(memory_mb, host_cpus)
            runs[memory_mb].append(run_container(client, tag, spec.name, env, memory_mb=memory_mb,
                                                 vcpus=share.vcpus, warm=size_warm))
        progress(f"image Lambda sizes, round {round_ + 1}/{rounds}: " + ", ".join(
            f"{mb} MB {'ok' if not runs[mb][-1]['failed'] else runs[mb][-1]['failed']}" for mb in sizes))
    rows = [size_row(mb, cpu_share(mb, host_cpus), runs[mb]) for mb in sizes]
    warm_ms = merged_samples(r["samples_ms"] for r in cold_runs)
    result = {"method": METHOD, "image": built, "cold_start": cold_summary(cold_runs), "cold_split": split,
              "warm": {case: summary(values) for case, values in warm_ms.items()},
              "sizes": rows, "limits_enforced": enforced}
    if host_runs:
        # No peak RSS: probe.py's size mode ends with a batch of 8 long texts, which the image runs do not send.
        result["host"] = {"cold_start": {**{key: statistics.median(r[key] for r in host_runs)
                                            for key in ("interpreter_s", "import_s", "load_s", "first_s", "total_s")},
                                         "n": len(host_runs)},
                          "warm": {"b1 short": summary(merged_samples(r["samples_ms"] for r in host_runs)["b1 short"])}}
    return result

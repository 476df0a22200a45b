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

import json
import re
import shutil
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from functions.errors import ConfigError

from . import probe
from .image_build import ImageRunFailed, build_image, engine_problem
from .measure import LONG, SHORT, merged_samples, summary

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
RIE_PORT = "8080/tcp"  # the image's RIE listens here (the Lambda base images' contract)
PROBE_MOUNT = "/opt/modelfn-bench"
START_TIMEOUT_S = 120
# Unmeasured requests after the cold one, before a container's warm samples: none, as probe.py's size
# mode, which the in-process twin and the emulated sizes run, so the figures compare like for like.
WARMUP = 0
METHOD = ("the function image (`modelfn build`'s context, built by the container engine) in fresh containers of "
          "its own entry point (Runtime Interface Emulator + awslambdaric), invoked over the RIE's HTTP API with "
          "API Gateway events from this host; Lambda sizes under the engine's --cpus (vCPU share, capped at this "
          "host's CPUs) and --memory (no swap) limits")

_INIT = re.compile(r"INIT REPORT\(durationMs: ([0-9.]+)\)")
_INVOKE = re.compile(r"INVOKE RTDONE\(status: (\w+)[^)]*?duration: ([0-9.]+)ms\)")


# --- one container ---------------------------------------------------------------------------------

def parse_rie_log(log: str) -> dict:
    """The RIE's own timings from a container log: the runtime's init and the first invoke (ms)."""
    init, invoke = _INIT.search(log), _INVOKE.search(log)
    return {"init_ms": float(init.group(1)) if init else None,
            "first_invoke_ms": float(invoke.group(2)) if invoke else None,
            "first_status": invoke.group(1) if invoke else None}


def _limits(memory_mb: int | None, vcpus: float | None) -> dict:
    kwargs: dict = {}
    if memory_mb:
        kwargs.update(mem_limit=f"{memory_mb}m", memswap_limit=f"{memory_mb}m")  # Lambda has no swap
    if vcpus:
        kwargs["nano_cpus"] = round(vcpus * 1e9)
    return kwargs


def _invoke(url: str, body: bytes, timeout_s: float) -> dict:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # the RIE answers a runtime failure (e.g. killed) with an error
        return {"errorType": "HTTP", "errorMessage": exc.read().decode(errors="replace")[:300]}


def _answered(answer: dict) -> bool:
    return answer.get("statusCode") == 200


def _runtime_peak_rss_mib(container) -> float | None:
    """VmHWM of the runtime (the awslambdaric Python process, not the RIE whose arguments also name it),
    read inside the container: the figure the in-process bench reports (peak RSS), not the cgroup's,
    which also counts the page cache."""
    script = ("import os\n"
              "peaks = []\n"
              "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
              "    try:\n"
              "        argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
              "        status = open(f'/proc/{pid}/status').read()\n"
              "    except OSError:\n"
              "        continue\n"
              "    if int(pid) != os.getpid() and b'python' in argv[0] and b'awslambdaric' in argv:\n"
              "        peaks += [int(l.split()[1]) for l in status.splitlines() if l.startswith('VmHWM')]\n"
              "print(max(peaks) if peaks else '')\n")
    try:
        code, out = container.exec_run(["python3", "-c", script])
        return int(out.decode().split()[0]) / 1024 if code == 0 and out.strip() else None
    except Exception:  # noqa: BLE001 - no exec support: the figure is left out
        return None


def run_container(client, tag: str, name: str, env: dict, *, memory_mb: int | None = None,
                  vcpus: float | None = None, warm: dict[str, tuple[list[str], int]] | None = None,
                  warmup: int = WARMUP) -> dict:
    """One fresh container: cold start to the first answer (batch 1, short text), ``warmup`` more
    unmeasured, then ``warm`` ({case: (texts, count)}) requests in turn, then its runtime's peak RSS.
    Phases in seconds; a runtime killed (OOM) or failing is reported in "failed", not raised."""
    from infra.emulator import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}{INVOKE_PATH}"
    first_body = json.dumps(probe.api_event(name, SHORT)).encode()
    spawn = time.monotonic()
    container = client.containers.run(tag, detach=True, ports={RIE_PORT: ("127.0.0.1", port)},
                                      environment={**env, **({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb)}
                                                             if memory_mb else {})},
                                      **_limits(memory_mb, vcpus))
    started = time.monotonic()
    out: dict = {"failed": None, "samples_ms": {}}
    try:
        deadline = started + START_TIMEOUT_S
        while True:
            try:
                answer = _invoke(url, first_body, START_TIMEOUT_S)
                break
            except OSError:  # the RIE is not listening yet, or the container is gone
                container.reload()
                if container.status == "exited":
                    raise ImageRunFailed(f"{tag}: the container exited before answering: {_tail(container)}") from None
                if time.monotonic() > deadline:
                    raise ImageRunFailed(f"{tag}: no answer within {START_TIMEOUT_S} s: "
                                         f"{_tail(container)}") from None
                time.sleep(0.01)
        answered = time.monotonic()
        if not _answered(answer):
            out["failed"] = _failure(answer, container)
        elif warm:
            for _ in range(warmup):
                _invoke(url, first_body, START_TIMEOUT_S)
            for case, (texts, count) in warm.items():
                body = json.dumps(probe.api_event(name, texts if len(texts) > 1 else texts[0])).encode()
                samples = out["samples_ms"].setdefault(case, [])
                for _ in range(count):
                    t = time.perf_counter()
                    reply = _invoke(url, body, START_TIMEOUT_S)
                    samples.append((time.perf_counter() - t) * 1000)
                    if not _answered(reply):
                        out["failed"] = _failure(reply, container)
                        break
                if out["failed"]:
                    break
        out["rss_mib"] = _runtime_peak_rss_mib(container)
        log = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    rie = parse_rie_log(log)
    init_s = (rie["init_ms"] or 0.0) / 1000
    first_s = (rie["first_invoke_ms"] or 0.0) / 1000
    total = answered - spawn
    out.update(engine_s=started - spawn, init_s=init_s, first_s=first_s,
               rest_s=max(0.0, total - (started - spawn) - init_s - first_s), total_s=total)
    return out


def _failure(answer: dict, container) -> str:
    text = answer.get("errorMessage") or answer.get("body") or json.dumps(answer)[:300]
    killed = "signal: killed" in text or "signal: killed" in _tail(container)
    return "killed (out of memory)" if killed else str(text)[:300]


def _tail(container) -> str:
    try:
        return container.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")[-500:]
    except Exception:  # noqa: BLE001
        return "(no log)"


def probe_in_image(client, tag: str, name: str, env: dict) -> dict:
    """probe.py ``cold`` (the handler way) as the container's command: spawn -> imports -> model load ->
    first answer, with the container's create + start counted in the interpreter phase."""
    from .measure import phases

    with tempfile.TemporaryDirectory(prefix="modelfn-bench-image-") as tmp:
        work = Path(tmp)
        shutil.copy2(Path(probe.__file__), work / "probe.py")
        (work / "config.json").write_text(json.dumps({"way": {"kind": "handler", "name": name}, "short": SHORT}))
        work.chmod(0o777)  # the image's user writes the result
        spawn = time.monotonic()
        container = client.containers.run(
            tag, detach=True, entrypoint=["python3", f"{PROBE_MOUNT}/probe.py"],
            command=["cold", f"{PROBE_MOUNT}/result.json", f"{PROBE_MOUNT}/config.json"],
            volumes={str(work): {"bind": PROBE_MOUNT, "mode": "rw"}}, working_dir="/var/task",
            environment={**env, "PYTHONPATH": "/var/task"})
        try:
            status = container.wait(timeout=START_TIMEOUT_S).get("StatusCode")
            result_path = work / "result.json"
            if status != 0 or not result_path.is_file():
                raise ImageRunFailed(f"the cold probe in {tag} exited with {status}: {_tail(container)}")
            result = json.loads(result_path.read_text())
        finally:
            container.remove(force=True)
    return phases(spawn, result)


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


def limits_enforced(client, tag: str) -> dict:
    """Whether the engine applies --cpus and --memory here: the CPU quota and memory limit a
    container started with --cpus=0.5 --memory=1024m sees in its cgroup (v2 or v1)."""
    script = ("import json, pathlib\n"
              "def read(*names):\n"
              "    for n in names:\n"
              "        f = pathlib.Path('/sys/fs/cgroup') / n\n"
              "        if f.is_file(): return f.read_text().split()\n"
              "    return []\n"
              "cpu = read('cpu.max') or read('cpu/cpu.cfs_quota_us') + read('cpu/cpu.cfs_period_us')\n"
              "mem = read('memory.max') or read('memory/memory.limit_in_bytes')\n"
              "ok = len(cpu) == 2 and cpu[0].lstrip('-').isdigit() and int(cpu[0]) > 0\n"
              "print(json.dumps({'cpus': int(cpu[0]) / int(cpu[1]) if ok else None,\n"
              "                  'memory_mb': int(mem[0]) / 2**20 if mem and mem[0].isdigit() else None}))\n")
    try:
        out = client.containers.run(tag, entrypoint=["python3", "-c", script], remove=True, **_limits(1024, 0.5))
        seen = json.loads(out.decode().strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001 - the engine refused the limits or the check could not run
        return {"cpu": False, "memory": False, "seen": None, "note": f"{exc.__class__.__name__}: {str(exc)[:200]}"}
    return {"cpu": seen["cpus"] is not None and abs(seen["cpus"] - 0.5) < 0.01,
            "memory": seen["memory_mb"] is not None and abs(seen["memory_mb"] - 1024) < 1, "seen": seen}

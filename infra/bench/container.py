"""One container of a model's function image, for `modelfn bench`'s image part (image.py): run it
with the engine's Lambda-size limits, invoke it through its Runtime Interface Emulator with API
Gateway events, read the RIE's timings from its log and the runtime's peak RSS from inside it; the
cold probe (probe.py) as the container's command; whether the engine enforces --cpus/--memory here.
docker (the Docker SDK) objects come from the caller; nothing heavy is imported here.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import probe
from .image_build import ImageRunFailed
from .measure import SHORT

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
RIE_PORT = "8080/tcp"  # the image's RIE listens here (the Lambda base images' contract)
PROBE_MOUNT = "/opt/modelfn-bench"
START_TIMEOUT_S = 120
# Unmeasured requests after the cold one, before a container's warm samples: none, as probe.py's size
# mode, which the in-process twin and the emulated sizes run, so the figures compare like for like.
WARMUP = 0
_INIT = re.compile(r"INIT REPORT\(durationMs: ([0-9.]+)\)")
_INVOKE = re.compile(r"INVOKE RTDONE\(status: (\w+)[^)]*?duration: ([0-9.]+)ms\)")


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

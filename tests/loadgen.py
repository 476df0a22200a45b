"""A bounded loopback load test: N concurrent clients, a fixed number of requests each, every answer
checked; the percentiles are recorded in bench/load.md (one row per target, replaced on each run).

Used by tests/functions/test_load.py (the served app) and tests/integration/test_sam_local.py
(`sam local start-api`). Latencies are recorded, never asserted: the tests assert zero errors.
"""

from __future__ import annotations

import asyncio
import json
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "bench" / "load.md"


@dataclass
class LoadResult:
    clients: int
    requests: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict:
        return {"clients": self.clients, "requests": self.requests, "errors": len(self.errors),
                "p50_ms": round(self.percentile(50), 1), "p90_ms": round(self.percentile(90), 1),
                "p99_ms": round(self.percentile(99), 1), "max_ms": round(max(self.latencies_ms, default=0.0), 1),
                "mean_ms": round(statistics.fmean(self.latencies_ms), 1) if self.latencies_ms else 0.0,
                "requests_per_s": round(self.requests / self.wall_s, 1) if self.wall_s else 0.0}


def run_load(url: str, body: dict, *, clients: int = 64, per_client: int = 4, timeout_s: float = 300,
             check: Callable[[dict], bool] = lambda payload: True) -> LoadResult:
    """``clients`` concurrent clients each POST ``body`` to ``url`` ``per_client`` times, one after the
    other; a request counts as an error unless it answers 200 with a JSON body that ``check`` accepts."""
    import httpx

    result = LoadResult(clients=clients, requests=clients * per_client)
    content = json.dumps(body).encode()

    async def client(http: httpx.AsyncClient) -> None:
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                response = await http.post(url, content=content, headers={"content-type": "application/json"})
                ok = response.status_code == 200 and check(response.json())
                if not ok:
                    result.errors.append(f"{response.status_code}: {response.text[:200]}")
            except Exception as exc:  # noqa: BLE001 - every failure is an error of the run, with its reason
                result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            result.latencies_ms.append((time.perf_counter() - started) * 1000)

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as http:
            await asyncio.gather(*(client(http) for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    result.wall_s = time.perf_counter() - started
    return result


def record(target: str, result: LoadResult, *, note: str = "") -> None:
    """Replace ``target``'s row in bench/load.md (other targets' rows are kept)."""
    header = ("| target | clients | requests | errors | p50 ms | p90 ms | p99 ms | max ms | req/s | run | note |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows: dict[str, str] = {}
    if REPORT.is_file():
        for line in REPORT.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\| (.+?) \| \d+ \|", line)
            if match:
                rows[match.group(1)] = line
    s = result.summary()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows[target] = (f"| {target} | {s['clients']} | {s['requests']} | {s['errors']} | {s['p50_ms']} | {s['p90_ms']} | "
                    f"{s['p99_ms']} | {s['max_ms']} | {s['requests_per_s']} | {when} | {note} |")
    REPORT.write_text(
        "# Loopback load tests\n\n"
        "Written by the tests that run them (`tests/functions/test_load.py`, and "
        "`tests/integration/test_sam_local.py` where a container engine exists), each client sending its "
        "requests one after the other; a request is an error unless it answers 200 with a correct body. "
        f"Host: {platform.machine()}, shared with the rest of the test run, so latencies are indicative; "
        "the tests assert zero errors only.\n\n" + header + "\n".join(rows[k] for k in sorted(rows)) + "\n",
        encoding="utf-8")


__all__ = ["LoadResult", "record", "run_load"]

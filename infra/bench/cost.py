"""Prices and cost arithmetic: Lambda cost per million requests, the cheapest size for a p99 goal,
and the monthly break-even between Lambda and an always-on GPU endpoint.

Every price lives in PRICES, with its source and the date it was read; nothing else in modelfn
hard-codes a price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Lambda's CPU share grows with memory: 1,769 MB is one full vCPU (AWS Lambda developer guide,
# "Configuring Lambda function memory"), up to 6 vCPUs at 10,240 MB.
MB_PER_VCPU = 1769
DEFAULT_SIZES = (512, 1024, 1769, 3008, 5307)
DEFAULT_COLD_RATE = 0.01  # share of requests that start a new execution environment
HOURS_PER_MONTH = 730

# name -> (value, unit, source). us-east-1, first pricing tier, read 2026-12-05.
PRICES = {
    "lambda_request": (0.20 / 1e6, "USD per request",
                       "https://aws.amazon.com/lambda/pricing/ ($0.20 per 1M requests)"),
    "lambda_gb_s_x86_64": (0.0000166667, "USD per GB-second",
                           "https://aws.amazon.com/lambda/pricing/ (x86_64, first 6 billion GB-s/month)"),
    "lambda_gb_s_arm64": (0.0000133334, "USD per GB-second",
                          "https://aws.amazon.com/lambda/pricing/ (arm64, first 7.5 billion GB-s/month)"),
    "ml.g6.xlarge": (1.0064, "USD per instance-hour",
                     "https://aws.amazon.com/sagemaker/pricing/ (real-time inference, on-demand, ml.g6.xlarge)"),
}
PRICES_READ = "2026-12-05"


def price(name: str) -> float:
    """The value of one entry of PRICES."""
    return PRICES[name][0]


def vcpus(memory_mb: int) -> float:
    """The vCPU share Lambda gives a function of ``memory_mb``."""
    return memory_mb / MB_PER_VCPU


def billed_ms(duration_ms: float) -> int:
    """Lambda bills duration rounded up to the next millisecond (at least 1 ms)."""
    return max(1, math.ceil(duration_ms - 1e-9))


def cost_per_million(memory_mb: int, durations_ms: list[float], init_ms: float, *, architecture: str = "x86_64",
                     cold_rate: float = DEFAULT_COLD_RATE) -> float:
    """USD per million requests: the request fee, the billed duration of each warm request (mean of
    the per-request rounded-up milliseconds) and, on the ``cold_rate`` share of requests that start
    an environment, the billed init duration (container images are billed for init)."""
    if not durations_ms:
        raise ValueError("no durations")
    gb = memory_mb / 1024
    rate = price(f"lambda_gb_s_{architecture}")
    mean_billed_s = sum(billed_ms(d) for d in durations_ms) / len(durations_ms) / 1000
    init_s = billed_ms(init_ms) / 1000
    per_request = price("lambda_request") + gb * rate * (mean_billed_s + cold_rate * init_s)
    return per_request * 1e6


@dataclass(frozen=True)
class SizeChoice:
    memory_mb: int
    p99_ms: float
    cost_per_million: float


def pick_size(rows: list[dict], p99_ms: float) -> SizeChoice | None:
    """The cheapest size (x86_64 cost per million) whose measured p99 meets ``p99_ms`` and whose
    peak RSS fits its memory; None when no size does. Each row has memory_mb, p99_ms, fits and
    cost_per_million_x86_64."""
    meeting = [r for r in rows if r["fits"] and r["p99_ms"] <= p99_ms]
    if not meeting:
        return None
    best = min(meeting, key=lambda r: (r["cost_per_million_x86_64"], r["memory_mb"]))
    return SizeChoice(best["memory_mb"], best["p99_ms"], best["cost_per_million_x86_64"])


def choice_facts(rows: list[dict], p99_ms: float) -> dict:
    """The result's ``choice`` entry for ``--p99-ms``: the goal and the size :func:`pick_size` picks."""
    choice = pick_size(rows, p99_ms)
    return {"p99_ms_goal": p99_ms, **({"memory_mb": choice.memory_mb, "p99_ms": choice.p99_ms,
                                      "cost_per_million": choice.cost_per_million} if choice else {"memory_mb": None})}


def price_facts() -> dict:
    """The prices the costs used, with their sources, for the result (``prices``, ``prices_read``)."""
    return {"prices": {k: {"value": v, "unit": u, "source": s} for k, (v, u, s) in PRICES.items()},
            "prices_read": PRICES_READ}


def gpu_monthly(hourly: float, requests_per_month: float, capacity_rps: float | None, *,
                min_instances: int = 1) -> float:
    """Monthly cost of an always-on endpoint: enough instances for the average request rate (when
    the per-instance capacity is known), never fewer than ``min_instances``."""
    instances = min_instances
    if capacity_rps:
        needed = math.ceil(requests_per_month / (HOURS_PER_MONTH * 3600) / capacity_rps)
        instances = max(instances, needed)
    return instances * hourly * HOURS_PER_MONTH


def break_even_requests(lambda_cost_per_million: float, hourly: float, *, min_instances: int = 1) -> float:
    """Requests per month above which one always-on endpoint of ``min_instances`` costs less than
    Lambda at ``lambda_cost_per_million`` (capacity permitting)."""
    return min_instances * hourly * HOURS_PER_MONTH / lambda_cost_per_million * 1e6

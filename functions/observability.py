"""Logs, metrics and traces through aws-lambda-powertools.

JSON log lines carry the Lambda request id, the API Gateway request id (as correlation id) and the
cold-start flag; request text is logged only with MODELFN_LOG_INPUTS=1 because requests may carry
personal data. Metrics go out as CloudWatch EMF in namespace ``modelfn``: Latency, BatchSize,
Tokens per request and ColdStart. X-Ray tracing stays off unless POWERTOOLS_TRACE_DISABLED is
set to a false value, since the X-Ray SDK alone costs cold-start time.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

NAMESPACE = "modelfn"
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "modelfn"
_MAX_LOGGED_INPUT = 4096

class _Stdout:
    """Writes to whatever sys.stdout is at the time, so redirected output (tests, wrappers) sees logs."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


logger = Logger(service=SERVICE, stream=_Stdout())
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def tracing_enabled() -> bool:
    raw = os.environ.get("POWERTOOLS_TRACE_DISABLED")
    return raw is not None and raw.strip().lower() in ("0", "false", "no", "off")


def set_model(name: str, version: str | None) -> None:
    """Every log line and metric names the model it is about."""
    logger.append_keys(model=name, model_version=version)
    # Re-creating the app in one process (tests, a reload) must not stack dimensions.
    metrics.clear_default_dimensions()
    metrics.clear_metrics()
    metrics.set_default_dimensions(model=name)


def record_request(*, method: str, path: str, status: int, started: float, state: dict[str, Any],
                   body: bytes | None, log_inputs: bool) -> None:
    latency_ms = (time.perf_counter() - started) * 1000.0
    fields: dict[str, Any] = {"method": method, "path": path, "status": status, "latency_ms": round(latency_ms, 3)}
    for key in ("batch_size", "tokens", "error_code"):
        if key in state:
            fields[key] = state[key]
    if log_inputs and body:
        fields["request_body"] = body[:_MAX_LOGGED_INPUT].decode("utf-8", "replace")
    if status >= 500:
        logger.error("request failed", extra=fields)
    else:
        logger.info("request", extra=fields)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=latency_ms)
    if "batch_size" in state:
        metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=state["batch_size"])
        metrics.add_metric(name="Tokens", unit=MetricUnit.Count, value=state["tokens"])
    if status >= 400:
        metrics.add_metric(name="ClientErrors" if status < 500 else "ServerErrors", unit=MetricUnit.Count, value=1)

"""JSON logs and CloudWatch EMF metrics, one stdout line per request, built with the stdlib only.

Each request writes ONE JSON line that is both the access log (level, message "request", request
ids, cold-start flag, model, status, batch size, tokens) and a CloudWatch Embedded Metric Format
record (``_aws`` metadata; Latency, BatchSize, Tokens, ColdStart and ClientErrors/ServerErrors in
namespace ``modelfn``, dimensions service + model). Field names follow aws-lambda-powertools'
Logger (``function_request_id``, ``correlation_id``, ``cold_start``...), so queries written for it
keep working. powertools' Logger + Metrics are not used on the request path: they cost ~25 ms of
import and ~0.15-0.2 ms per request here, about as much as the whole handler overhead budget
(numbers in bench/runtime.md). X-Ray tracing stays powertools' Tracer, imported only when enabled.

Request text is logged only with MODELFN_LOG_INPUTS=1 because requests may carry personal data.
Other lines (faults, load errors) honour POWERTOOLS_LOG_LEVEL / LOG_LEVEL (default INFO); the
request line is always written because it carries the metrics.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

from . import constants as env

NAMESPACE = os.environ.get(env.METRICS_NAMESPACE) or "modelfn"
SERVICE = os.environ.get(env.SERVICE_NAME) or "modelfn"
_MAX_LOGGED_INPUT = 4096
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode

try:  # see functions/http.py: the log line is the second JSON document of every request
    import orjson

    def _encode(record: dict) -> str:
        return orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
except ImportError:  # pragma: no cover
    _encode = _json_encode

# Fields on every line; the model is added once it is known.
_base: dict[str, Any] = {"service": SERVICE}
_dimensions: list[list[str]] = [["service"]]
_cold = True
_directives: dict[tuple, list] = {}  # metric set -> its EMF directive, built once per shape


def _threshold() -> int:
    raw = os.environ.get(env.LOG_LEVEL) or os.environ.get(env.GENERIC_LOG_LEVEL) or "INFO"
    return _LEVELS.get(raw.strip().upper(), 20)


_min_level = _threshold()


def tracing_enabled() -> bool:
    raw = os.environ.get(env.TRACE_DISABLED)
    return raw is not None and raw.strip().lower() in ("0", "false", "no", "off")


def set_model(name: str, version: str | None) -> None:
    """Every log line and metric names the model it is about (a reload replaces, never stacks)."""
    _base.update(model=name, model_version=version)
    _dimensions[:] = [["service", "model"]]
    _directives.clear()


def begin(context: Any = None, correlation_id: str | None = None) -> dict[str, Any]:
    """The fields that tie this invocation's lines together: cold start, Lambda and API Gateway ids."""
    global _cold
    fields: dict[str, Any] = {"cold_start": _cold}
    _cold = False
    if context is not None:
        fields["function_name"] = _clip(getattr(context, "function_name", None))
        fields["function_request_id"] = _clip(getattr(context, "aws_request_id", None))
    if correlation_id is not None:
        fields["correlation_id"] = _clip(correlation_id)
    return fields


_second: list = [-1, ""]  # the last whole second formatted, as strftime costs more than the rest of a line


def _now() -> tuple[str, int]:
    ms = int(time.time() * 1000)
    second = ms // 1000
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{ms % 1000:03d}Z", ms


_MAX_FIELD = 1024  # a logged path, method or id is cut here: callers choose them, log lines must stay lines
_safe_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, default=repr).encode


def _clip(value: Any, limit: int = _MAX_FIELD) -> Any:
    """A caller-chosen value as a bounded string (None stays None); never raises."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = f"<{type(value).__name__}>"
    return value if len(value) <= limit else value[:limit] + "..."


def _write(record: dict) -> None:
    try:
        line = _encode(record)
    except Exception:  # noqa: BLE001 - lone surrogates, huge ints: ASCII escapes always encode
        line = _safe_encode(record)
    out = sys.stdout  # looked up per call so redirected output (tests, wrappers) sees the lines
    out.write(line + "\n")
    out.flush()  # the environment may be frozen right after the response


def log(level: str, message: str, fields: dict | None = None, **extra: Any) -> None:
    """A JSON log line (``fields``: the invocation's, from :func:`begin`)."""
    if _LEVELS[level] < _min_level:
        return
    stamp, _ = _now()
    _write({"level": level, "message": message, "timestamp": stamp, **_base, **(fields or {}), **extra})


def exception(message: str, fields: dict | None = None, **extra: Any) -> None:
    """An ERROR line with the current exception's traceback (logs only, never a response)."""
    log("ERROR", message, fields, exception=traceback.format_exc(), **extra)


def _directive(has_batch: bool, errors: str | None) -> list:
    key = (has_batch, errors, len(_dimensions[0]))
    found = _directives.get(key)
    if found is None:
        metrics = [{"Name": "Latency", "Unit": "Milliseconds"}, {"Name": "ColdStart", "Unit": "Count"}]
        if has_batch:
            metrics += [{"Name": "BatchSize", "Unit": "Count"}, {"Name": "Tokens", "Unit": "Count"}]
        if errors:
            metrics.append({"Name": errors, "Unit": "Count"})
        found = _directives[key] = [{"Namespace": NAMESPACE, "Dimensions": [list(d) for d in _dimensions],
                                     "Metrics": metrics}]
    return found


def record_request(*, method: str, path: str, status: int, started: float, fields: dict | None,
                   batch: int | None = None, tokens: int | None = None, error_code: str | None = None,
                   body: bytes | None = None) -> None:
    """The request's one line: access log + EMF metrics. ``body`` only when MODELFN_LOG_INPUTS is on."""
    latency_ms = (time.perf_counter() - started) * 1000.0
    errors = None if status < 400 else ("ClientErrors" if status < 500 else "ServerErrors")
    stamp, ms = _now()
    record = {"level": "ERROR" if status >= 500 else "INFO", "message": "request", "timestamp": stamp, **_base}
    if fields:
        record.update(fields)
    record.update(method=_clip(method, 32), path=_clip(path), status=status, latency_ms=round(latency_ms, 3))
    if batch is not None:
        record["batch_size"], record["tokens"] = batch, tokens
    if error_code is not None:
        record["error_code"] = error_code
    if body:
        record["request_body"] = body[:_MAX_LOGGED_INPUT].decode("utf-8", "replace")
    record["_aws"] = {"Timestamp": ms, "CloudWatchMetrics": _directive(batch is not None, errors)}
    record["Latency"] = latency_ms
    record["ColdStart"] = 1 if record.get("cold_start") else 0
    if batch is not None:
        record["BatchSize"], record["Tokens"] = batch, tokens
    if errors:
        record[errors] = 1
    _write(record)


__all__ = ["NAMESPACE", "SERVICE", "tracing_enabled", "set_model", "begin", "log", "exception", "record_request"]

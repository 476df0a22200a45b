"""The Lambda entry point: ``functions.handler.handler`` (API Gateway REST v1 and HTTP API v2 events).

The app (ONNX session, tokenizer) is built when this module is imported, i.e. in the Lambda init
phase, which SAM local and the Runtime Interface Emulator also run at start; see bench/runtime.md
for the measurement behind that choice. A bundle that cannot be loaded does not fail the import:
every request is answered with the error (a 500 in the usual shape) and loading is retried, so a
broken image is diagnosable from its responses and logs.

If the bundle directory does not exist and MODELFN_REGISTRY_URI is set, the bundle is fetched from
the registry (MODELFN_MODEL_NAME, MODELFN_MODEL_VERSION) into MODELFN_FETCH_DIR first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mangum import Mangum

from . import constants as env
from . import observability
from .errors import BundleError, ConfigError, ModelfnError
from .observability import MetricUnit, logger, metrics
from .settings import default_bundle_dir

_adapter: Mangum | None = None
_load_error: ModelfnError | None = None


def _bundle_dir() -> Path:
    bundle = default_bundle_dir()
    registry = os.environ.get(env.REGISTRY_URI)
    if bundle.exists() or not registry:
        return bundle
    name, version = os.environ.get(env.MODEL_NAME), os.environ.get(env.MODEL_VERSION)
    if not name or not version or not version.isdigit():
        raise ConfigError(f"{env.REGISTRY_URI} is set but {env.MODEL_NAME} / {env.MODEL_VERSION} are not",
                          hint="the generated template sets both")
    from .fetch import fetch_bundle  # only functions that fetch at cold start pay for boto3

    dest = Path(os.environ.get(env.FETCH_DIR) or "/tmp/modelfn") / name / version
    return fetch_bundle(registry, name, int(version), dest)


def _load() -> Mangum | None:
    global _adapter, _load_error
    if _adapter is None:
        try:
            from .app import create_app

            _adapter = Mangum(create_app(_bundle_dir()), lifespan="off")
            _load_error = None
        except ModelfnError as exc:
            _load_error = exc
            logger.error("model bundle could not be loaded", extra={"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - keep the environment alive to report it
            _load_error = BundleError(f"model could not be loaded: {type(exc).__name__}: {exc}")
            logger.exception("model bundle could not be loaded")
    return _adapter


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    metrics.add_metric(name="ClientErrors" if status < 500 else "ServerErrors", unit=MetricUnit.Count, value=1)
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "isBase64Encoded": False,
            "body": json.dumps({"error": {"code": code, "message": message}})}


def _handle(event: dict, context: Any) -> dict[str, Any]:
    adapter = _load()
    if adapter is None:
        return _error(500, "model_unavailable", str(_load_error))
    if not isinstance(event, dict) or "requestContext" not in event:
        return _error(400, "bad_request", "not an API Gateway proxy event; invoke this function through API Gateway")
    return adapter(event, context)


def _wrap():
    wrapped = metrics.log_metrics(capture_cold_start_metric=True)(_handle)
    wrapped = logger.inject_lambda_context(correlation_id_path="requestContext.requestId",
                                           clear_state=False)(wrapped)
    if observability.tracing_enabled():
        from aws_lambda_powertools import Tracer  # the X-Ray SDK is heavy: only when tracing is on

        wrapped = Tracer(service=observability.SERVICE).capture_lambda_handler(wrapped)
    return wrapped


handler = _wrap()
_load()

__all__ = ["handler"]

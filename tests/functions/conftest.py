"""Fixtures for the runtime: served tiny bundles, a Lambda context, and handler invocation."""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "modelfn")


@dataclass
class FakeLambdaContext:
    function_name: str = "modelfn-test"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:modelfn-test"
    aws_request_id: str = "11111111-2222-3333-4444-555555555555"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture
def load_handler(monkeypatch):
    """Factory: bundle dir (+ env) -> the functions.handler module freshly imported against it."""

    def load(bundle_dir, **env):
        monkeypatch.setenv("MODELFN_BUNDLE_DIR", str(bundle_dir))
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        # The handler loads its bundle when imported: the first import in a process is the load,
        # later ones reload; importing and then reloading would load twice (order-dependent tests).
        if "functions.handler" not in sys.modules:
            return importlib.import_module("functions.handler")
        return importlib.reload(sys.modules["functions.handler"])

    return load


def call(handler, event, context=None) -> tuple[int, object, dict]:
    """Invoke a Lambda handler with an API Gateway event; (status, parsed JSON body, headers)."""
    response = handler(event, context or FakeLambdaContext())
    body = response.get("body")
    parsed = json.loads(body) if body else None
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    return response["statusCode"], parsed, headers

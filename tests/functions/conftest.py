"""Fixtures for the runtime: served tiny bundles, a Lambda context, and handler invocation."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "modelfn")

# Imported here, at collection: importing it makes the entry point's init-phase load attempt (from
# this process's environment), which must not land inside a test that counts load attempts.
import functions.handler as handler_module


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
def load_handler(monkeypatch, request):
    """Factory: bundle dir (+ env) -> a LambdaHandler that loads it as the Lambda image does (from the
    environment, first attempt now, as in the init phase), installed behind functions.handler.handler
    for this test (the streaming loop serves it too)."""
    def load(bundle_dir, **env):
        monkeypatch.setenv("MODELFN_BUNDLE_DIR", str(bundle_dir))
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        lambda_handler = handler_module.LambdaHandler.from_environment()
        lambda_handler.load()
        previous = handler_module.use(lambda_handler)
        request.addfinalizer(lambda: handler_module.use(previous))
        return lambda_handler

    return load


def call(handler, event, context=None) -> tuple[int, object, dict]:
    """Invoke a Lambda handler with an API Gateway event; (status, parsed JSON body, headers)."""
    response = handler(event, context or FakeLambdaContext())
    body = response.get("body")
    parsed = json.loads(body) if body else None
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    return response["statusCode"], parsed, headers

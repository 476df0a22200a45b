"""Importing the runtime and answering a request loads none of the build-time stack, and the Lambda
path loads no web framework (FastAPI/pydantic alone cost more than the whole cold-start floor)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from functions.handler import handler
from tests.functions.eventfiles import load_event
class Context:
    function_name, memory_limit_in_mb, aws_request_id = "lean", 2048, "req-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:lean"
response = handler(load_event("minilm-predict-v2"), Context())
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum", "sentence_transformers"))
frameworks = sorted({m.split(".")[0] for m in sys.modules} & {"fastapi", "starlette", "pydantic", "pydantic_core", "mangum", "aws_lambda_powertools"})
embeddings = handler(load_event("minilm-embeddings-v2"), Context())["statusCode"]
missing = handler(load_event("minilm-health-v2", path="/nowhere"), Context())["statusCode"]
print("RESULT " + json.dumps({"status": response["statusCode"], "heavy": heavy, "body": json.loads(response["body"]),
                              "frameworks": frameworks, "after": [embeddings, missing],
                              "frameworks_after": sorted({m.split(".")[0] for m in sys.modules} & {"fastapi", "pydantic"})}))
"""


@pytest.fixture(scope="module")
def lean_run(tiny_bundle) -> dict:
    """Serve requests in a fresh interpreter; what it answered and which modules it loaded."""
    bundle = tiny_bundle("feature-extraction")
    env = {**os.environ, "MODELFN_BUNDLE_DIR": str(bundle), "MODELFN_MODEL_NAME": "minilm", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))[7:])


def test_handler_loads_no_torch_transformers_or_optimum(lean_run):
    result = lean_run
    assert result["status"] == 200 and len(result["body"]) == 2
    assert result["heavy"] == []


def test_lambda_path_loads_no_web_framework(lean_run):
    result = lean_run
    assert result["status"] == 200 and result["after"] == [200, 404]
    assert result["frameworks"] == [] and result["frameworks_after"] == []

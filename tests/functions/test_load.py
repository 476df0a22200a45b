"""Load: 64 concurrent clients against the served app (uvicorn, the FastAPI adapter) on loopback, a fixed
number of requests each; zero errors, every answer the right shape; percentiles in bench/load.md."""

from __future__ import annotations

from functions.app import create_app
from tests.functions.servers import serving
from tests.loadgen import record, run_load

TEXTS = ["modelfn serves models as functions", "a second, somewhat longer sentence to embed under load"]


def test_64_clients_against_the_served_app_get_no_errors(tiny_bundle):
    app = create_app(tiny_bundle("feature-extraction"), name="tiny")
    with serving(app) as url:
        result = run_load(url + "/models/tiny/predict", {"inputs": TEXTS}, clients=64, per_client=4,
                          check=lambda payload: isinstance(payload, list) and len(payload) == len(TEXTS))
    assert result.errors == [], result.errors[:5]
    assert len(result.latencies_ms) == result.requests == 256
    record("served app (uvicorn, tiny BERT int8, 2 texts)", result)

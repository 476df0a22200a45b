"""Numpy processing against hand-made arrays, settings resolution, and the embeddings API details."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from functions.app import create_app
from functions.errors import ConfigError
from functions.settings import Settings, available_cpus
from functions.tasks import get_task
from functions.tasks.classification import sigmoid, softmax
from functions.tasks.embeddings import l2_normalize, pool

HIDDEN = np.array([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]],
                   [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]], dtype=np.float32)
MASK = np.array([[1, 1, 0], [1, 1, 1]])


def test_pooling_ignores_padding():
    np.testing.assert_allclose(pool(HIDDEN, MASK, "mean"), [[2.0, -1.0], [2.0, 3.0]])
    np.testing.assert_allclose(pool(HIDDEN, MASK, "max"), [[3.0, 2.0], [4.0, 5.0]])
    np.testing.assert_allclose(pool(HIDDEN, MASK, "cls"), [[1.0, 2.0], [0.0, 1.0]])


def test_normalize_and_activations():
    np.testing.assert_allclose(l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_allclose(softmax(np.array([[0.0, np.log(3.0)]])), [[0.25, 0.75]], rtol=1e-6)
    np.testing.assert_allclose(sigmoid(np.array([0.0, 100.0])), [0.5, 1.0])


def test_unknown_task_lists_the_served_ones():
    with pytest.raises(ConfigError, match="supported tasks"):
        get_task("translation")
    assert get_task("ner").name == "token-classification"


def test_settings_resolve_argument_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.delenv("MODELFN_BUNDLE_DIR", raising=False)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    monkeypatch.setenv("MODELFN_MAX_BATCH", "8")
    monkeypatch.setenv("MODELFN_TRUNCATE", "false")
    s = Settings.resolve()
    assert s.bundle_dir == tmp_path / "model" and s.max_batch == 8 and s.truncate is False
    assert s.threads == available_cpus() >= 1
    assert Settings.resolve(max_batch=2, truncate=True).max_batch == 2
    monkeypatch.setenv("MODELFN_MAX_BATCH", "lots")
    with pytest.raises(ConfigError, match="MODELFN_MAX_BATCH"):
        Settings.resolve()


@pytest.fixture(scope="module")
def client(tiny_bundle):
    return TestClient(create_app(tiny_bundle("feature-extraction"), name="embed", max_batch=3))


def embeddings(client, **body):
    return client.post("/v1/embeddings", json=body)


def test_embeddings_base64_decodes_to_the_float_vectors(client):
    floats = embeddings(client, input=["the city", "paris"]).json()
    packed = embeddings(client, input=["the city", "paris"], encoding_format="base64").json()
    for f, p in zip(floats["data"], packed["data"]):
        np.testing.assert_allclose(np.frombuffer(base64.b64decode(p["embedding"]), dtype="<f4"), f["embedding"],
                                   rtol=1e-6)
    assert floats["usage"]["prompt_tokens"] == 7  # [CLS] the city [SEP] + [CLS] paris [SEP]


@pytest.mark.parametrize("body, status", [
    ({"input": "x", "dimensions": 33}, 400),
    ({"input": "x", "dimensions": 0}, 400),
    ({"input": [[1, 2, 3]]}, 400),
    ({"input": "x", "encoding_format": "int8"}, 400),
    ({"input": "x", "model": "other"}, 404),
    ({"input": ["a", "b", "c", "d"]}, 413),
    ({"input": ""}, 400),
])
def test_embeddings_rejects_bad_requests(client, body, status):
    response = embeddings(client, **body)
    assert response.status_code == status and response.json()["error"]["message"]


def test_embeddings_dimensions_truncate_and_renormalize(client):
    full = np.array(embeddings(client, input="hello world").json()["data"][0]["embedding"])
    short = np.array(embeddings(client, input="hello world", dimensions=8).json()["data"][0]["embedding"])
    np.testing.assert_allclose(short, full[:8] / np.linalg.norm(full[:8]), rtol=1e-5)


def test_predict_normalize_parameter(client):
    raw = np.array(client.post("/models/embed/predict", json={"inputs": "hello", "parameters": {"normalize": False}}).json())
    unit = np.array(client.post("/models/embed/predict", json={"inputs": "hello"}).json())
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw), rtol=1e-5)
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3


def test_whole_numbers_are_integers_as_json_schema_counts_them():
    from functions.errors import BadRequest
    from functions.inputs import whole_number
    from functions.tasks.params import get_int

    # JSON Schema's "integer" takes 17.0 (schemathesis sent one), so the parsers take it as 17.
    assert [whole_number(v) for v in (17, 17.0, -3.0, 2.5, True, "17", None)] == [17, 17, -3, None, None, None, None]
    assert get_int({"top_k": 2.0}, "top_k", 1) == 2 and isinstance(get_int({"top_k": 2.0}, "top_k", 1), int)
    with pytest.raises(BadRequest, match="must be an integer"):
        get_int({"top_k": 2.5}, "top_k", 1)

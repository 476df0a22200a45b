"""image-classification served: tiny random ViT and ConvNeXt bundles answer as transformers' pipeline
does, through the Lambda handler (REST and HTTP API events, binary bodies base64 as API Gateway
sends them) and the ASGI app alike; bad images get the same clear 4xx from both."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from export.vision import builtin_samples
from functions.app import build_app
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event
from tests.functions.test_adapters import _check_alike
from tests.functions.test_images import _png_header

VIT, CONVNEXT = "/models/tiny-vit/predict", "/models/tiny-convnext/predict"
SAMPLES = {s.name: s.data for s in builtin_samples()}
PNG, JPEG = SAMPLES["shapes"], SAMPLES["shapes-jpeg"]
B64 = base64.b64encode(PNG).decode()
RAW = {"content_type": "image/png", "base64_body": True}  # how API Gateway delivers a binary media type

CASES = [
    ("raw-png", "POST", VIT, PNG, RAW),
    ("raw-jpeg", "POST", VIT, JPEG, {"content_type": "image/jpeg", "base64_body": True}),
    ("octet-stream", "POST", VIT, PNG, {"content_type": "application/octet-stream", "base64_body": True}),
    ("json-base64", "POST", VIT, {"inputs": B64}, {}),
    ("json-data-url", "POST", VIT, {"inputs": "data:image/png;base64," + B64}, {}),
    ("json-list-top-k", "POST", VIT, {"inputs": [B64, base64.b64encode(JPEG).decode()], "parameters": {"top_k": 2}},
     {}),
    ("top-k-over-labels", "POST", VIT, {"inputs": B64, "parameters": {"top_k": 100}}, {}),
    ("sigmoid", "POST", VIT, {"inputs": B64, "parameters": {"function_to_apply": "sigmoid"}}, {}),
    ("info", "GET", "/models/tiny-vit", None, {}),
    ("openapi", "GET", "/openapi.json", None, {}),
    # the caller's mistakes
    ("truncated", "POST", VIT, SAMPLES["noise"][:20_000], RAW),
    ("text-as-png", "POST", VIT, b"hello, not an image", RAW),
    ("empty-raw", "POST", VIT, b"", RAW),
    ("pixel-bomb", "POST", VIT, _png_header(100_000, 100_000), RAW),
    ("over-pixel-limit", "POST", VIT, _png_header(400, 400), RAW),
    ("over-byte-limit", "POST", VIT, SAMPLES["shapes-large"], {"content_type": "image/jpeg", "base64_body": True}),
    ("bad-base64", "POST", VIT, {"inputs": "%%% not base64 %%%"}, {}),
    ("inputs-number", "POST", VIT, {"inputs": 7}, {}),
    ("inputs-object", "POST", VIT, {"inputs": {"image": B64}}, {}),
    ("too-many", "POST", VIT, {"inputs": [B64] * 5}, {}),
    ("unknown-parameter", "POST", VIT, {"inputs": B64, "parameters": {"threshold": 0.5}}, {}),
    ("top-k-null", "POST", VIT, {"inputs": B64, "parameters": {"top_k": None}}, {}),
    ("xml-type", "POST", VIT, b"<x/>", {"content_type": "application/xml"}),
    ("text-plain", "POST", VIT, b"hello", {"content_type": "text/plain"}),
    ("json-not-json", "POST", VIT, b"{", {}),
]
STATUS = {"raw-png": 200, "raw-jpeg": 200, "octet-stream": 200, "json-base64": 200, "json-data-url": 200,
          "json-list-top-k": 200, "top-k-over-labels": 200, "sigmoid": 200, "info": 200, "openapi": 200,
          "truncated": 400, "text-as-png": 400, "empty-raw": 400, "pixel-bomb": 413, "over-pixel-limit": 413,
          "over-byte-limit": 413, "bad-base64": 400, "inputs-number": 400, "inputs-object": 400, "too-many": 413,
          "unknown-parameter": 400, "top-k-null": 400, "xml-type": 415, "text-plain": 415, "json-not-json": 400}


@pytest.fixture(scope="module")
def vit_bundle(tiny_image_bundle):
    return tiny_image_bundle("vit", quantization="none")


@pytest.fixture
def vit(load_handler, vit_bundle):
    return load_handler(vit_bundle, MODELFN_MAX_BATCH=4, MODELFN_MAX_IMAGE_PIXELS=100_000,
                        MODELFN_MAX_IMAGE_BYTES=20_000)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_image_classifier_answers_alike(vit, case, version):
    assert _check_alike(vit, case, version) == STATUS[case[0]]


def test_openapi_documents_raw_image_bodies(vit):
    status, schema, _ = call(vit, make_event("GET", "/openapi.json", None))
    content = schema["paths"]["/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert status == 200 and {"application/json", "image/*", "application/octet-stream"} <= set(content)


def _pipeline(source):
    from transformers import pipeline

    return pipeline("image-classification", model=str(source), device="cpu")


@pytest.mark.parametrize("architecture, path", [("vit", VIT), ("convnext", CONVNEXT)])
def test_answers_equal_the_transformers_pipeline(architecture, path, tiny_image_model_dir, tiny_image_bundle,
                                                 load_handler):
    module = load_handler(tiny_image_bundle(architecture, quantization="none"), MODELFN_MAX_BATCH=32)
    client = TestClient(build_app(module.load()), raise_server_exceptions=False)
    classify = _pipeline(tiny_image_model_dir(architecture))
    for name, data in SAMPLES.items():
        expected = classify(Image.open(io.BytesIO(data)), top_k=3)
        kind = "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"
        for version in (1, 2):
            status, lam, _ = call(module, make_event("POST", path, data, version=version, content_type=kind,
                                                             base64_body=True) if version == 1 else
                                  make_event("POST", path, {"inputs": base64.b64encode(data).decode(),
                                                            "parameters": {"top_k": 3}}, version=version))
            if version == 1:  # a raw body takes the default top_k (5): compare its first three
                lam = lam[:3]
            assert status == 200, lam
            _assert_pipeline_alike(lam, expected, name)
        response = client.post(path, content=data, headers={"content-type": kind})
        assert response.status_code == 200
        _assert_pipeline_alike(response.json()[:3], expected, name)
    # a list of images: one ranked list per image, in order
    batch = [base64.b64encode(d).decode() for d in list(SAMPLES.values())[:4]]
    status, answers, _ = call(module, make_event("POST", path, {"inputs": batch}))
    expected = [classify(Image.open(io.BytesIO(d))) for d in list(SAMPLES.values())[:4]]
    assert status == 200 and len(answers) == 4
    for got, want in zip(answers, expected):
        _assert_pipeline_alike(got, want, "batch")


def _assert_pipeline_alike(got: list[dict], expected: list[dict], where: str) -> None:
    assert [a["label"] for a in got] == [e["label"] for e in expected], where
    for a, e in zip(got, expected):
        assert a["score"] == pytest.approx(e["score"], abs=1e-5), where

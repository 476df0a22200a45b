"""zero-shot-image-classification: a tiny random CLIP bundle (tokenizer.json and the image processor's
steps together) answers as transformers' pipeline through both adapters, with the same 4xx for bad
parameters."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from export.vision import builtin_samples
from functions.manifest import (MANIFEST_FILE, PREPROCESSOR_FILE, TEXT_MODEL_FILE, TOKENIZER_FILE, VISION_MODEL_FILE,
                                verify_bundle)
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event
from tests.functions.test_adapters import _check_alike
from tests.functions.test_image_adapters import _assert_pipeline_alike

CLIP = "/models/tiny-clip/predict"
SAMPLES = {s.name: s.data for s in builtin_samples()}
B64 = base64.b64encode(SAMPLES["shapes"]).decode()
LABELS = ["cat", "dog", "car", "red and yellow shapes"]

CASES = [
    ("single", "POST", CLIP, {"inputs": B64, "parameters": {"candidate_labels": LABELS}}, {}),
    ("list", "POST", CLIP, {"inputs": [B64, base64.b64encode(SAMPLES["noise"]).decode()],
                            "parameters": {"candidate_labels": LABELS[:2]}}, {}),
    ("template", "POST", CLIP, {"inputs": B64, "parameters": {"candidate_labels": LABELS,
                                                              "hypothesis_template": "a picture of {}"}}, {}),
    ("no-labels", "POST", CLIP, {"inputs": B64}, {}),
    ("empty-labels", "POST", CLIP, {"inputs": B64, "parameters": {"candidate_labels": []}}, {}),
    ("labels-not-strings", "POST", CLIP, {"inputs": B64, "parameters": {"candidate_labels": [1, 2]}}, {}),
    ("template-without-slot", "POST", CLIP, {"inputs": B64, "parameters": {"candidate_labels": LABELS,
                                                                           "hypothesis_template": "a photo"}}, {}),
    ("raw-body-has-no-labels", "POST", CLIP, SAMPLES["shapes"], {"content_type": "image/png", "base64_body": True}),
    ("truncated", "POST", CLIP, {"inputs": base64.b64encode(SAMPLES["noise"][:20_000]).decode(),
                                 "parameters": {"candidate_labels": LABELS}}, {}),
]
STATUS = {"single": 200, "list": 200, "template": 200, "no-labels": 400, "empty-labels": 400,
          "labels-not-strings": 400, "template-without-slot": 400, "raw-body-has-no-labels": 400, "truncated": 400}


@pytest.fixture(scope="module")
def clip_bundle(tiny_image_bundle):
    return tiny_image_bundle("clip", quantization="none")


@pytest.fixture
def clip(load_handler, clip_bundle):
    return load_handler(clip_bundle, MODELFN_MAX_BATCH=4)


def test_bundle_ships_tokenizer_and_processor(clip_bundle):
    names = sorted(p.name for p in clip_bundle.iterdir())
    assert names == sorted([MANIFEST_FILE, TEXT_MODEL_FILE, VISION_MODEL_FILE, PREPROCESSOR_FILE, TOKENIZER_FILE])
    manifest = verify_bundle(clip_bundle)  # each tower's graph listed with its sha256
    assert {TEXT_MODEL_FILE, VISION_MODEL_FILE} <= set(manifest.files)
    assert manifest.runtime.image.processor == "CLIPImageProcessor" and manifest.parity.passed
    assert set(manifest.inputs) == {"input_ids", "attention_mask", "pixel_values"}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_zero_shot_answers_alike(clip, case, version):
    assert _check_alike(clip, case, version) == STATUS[case[0]]


def test_answers_equal_the_transformers_pipeline(clip, tiny_image_model_dir):
    from transformers import pipeline

    classify = pipeline("zero-shot-image-classification", model=str(tiny_image_model_dir("clip")), device="cpu")
    for name, data in SAMPLES.items():
        body = {"inputs": base64.b64encode(data).decode(), "parameters": {"candidate_labels": LABELS}}
        status, got, _ = call(clip, make_event("POST", CLIP, body))
        assert status == 200, got
        _assert_pipeline_alike(got, classify(Image.open(io.BytesIO(data)), candidate_labels=LABELS), name)

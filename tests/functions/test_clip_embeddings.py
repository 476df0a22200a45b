"""CLIP embeddings: a tiny random CLIP exported as image-feature-extraction (and as zero-shot image
classification) answers PyTorch's get_image_features / get_text_features on predict and on
/v1/embeddings (texts, data: URL images), identically through the Lambda handler and the ASGI app,
and through the official openai client; bad images and URLs that would need fetching get a 4xx."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from export.vision import ZERO_SHOT_TEXTS, builtin_samples
from functions.app import build_app
from functions.manifest import read_manifest
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event
from tests.functions.servers import serving
from tests.functions.test_adapters import _check_alike

NAME = "tiny-clip"
PREDICT = f"/models/{NAME}/predict"
SAMPLES = {s.name: s.data for s in builtin_samples()}
B64 = {name: base64.b64encode(data).decode() for name, data in SAMPLES.items()}
URL = {name: "data:image/png;base64," + b for name, b in B64.items()}  # the runtime sniffs the format
COSINE = 0.9999  # fp32 ONNX vs PyTorch

CASES = [
    ("one", "POST", PREDICT, {"inputs": B64["shapes"]}, {}),
    ("list", "POST", PREDICT, {"inputs": [B64["shapes"], B64["noise"], B64["tiny"]]}, {}),
    ("normalized", "POST", PREDICT, {"inputs": B64["gradient"], "parameters": {"normalize": True, "pool": True}}, {}),
    ("raw-png", "POST", PREDICT, SAMPLES["shapes"], {"content_type": "image/png", "base64_body": True}),
    ("pool-false", "POST", PREDICT, {"inputs": B64["shapes"], "parameters": {"pool": False}}, {}),
    ("unknown-param", "POST", PREDICT, {"inputs": B64["shapes"], "parameters": {"top_k": 3}}, {}),
    ("truncated", "POST", PREDICT, {"inputs": B64["noise"][:2000]}, {}),
    ("not-an-image", "POST", PREDICT, {"inputs": base64.b64encode(b"just text").decode()}, {}),
    ("emb-texts", "POST", "/v1/embeddings", {"input": ["a cat", "a diagram of shapes"]}, {}),
    ("emb-mixed", "POST", "/v1/embeddings", {"input": [
        "a cat", URL["shapes"], {"type": "image_url", "image_url": {"url": URL["noise"]}},
        {"type": "image_url", "image_url": URL["tiny"]}]}, {}),
    ("emb-text-part", "POST", "/v1/embeddings", {"input": [{"type": "text", "text": "noise"}]}, {}),
    ("emb-base64-dims", "POST", "/v1/embeddings", {"input": [URL["shapes"], "a cat"], "encoding_format": "base64",
                                                   "dimensions": 8}, {}),
    ("emb-http-url", "POST", "/v1/embeddings", {"input": [{"type": "image_url",
                                                           "image_url": {"url": "https://example.com/cat.png"}}]}, {}),
    ("emb-bad-image", "POST", "/v1/embeddings", {"input": ["a cat", "data:image/png;base64," + B64["noise"][:2000]]}, {}),
    ("emb-not-base64", "POST", "/v1/embeddings", {"input": "data:image/png;base64,%%%"}, {}),
    ("emb-data-not-base64", "POST", "/v1/embeddings", {"input": "data:image/png,rawbytes"}, {}),
    ("emb-unknown-type", "POST", "/v1/embeddings", {"input": [{"type": "video_url", "video_url": "x"}]}, {}),
    ("emb-token-ids", "POST", "/v1/embeddings", {"input": [1, 2, 3]}, {}),
    ("emb-too-many", "POST", "/v1/embeddings", {"input": ["a"] * 5}, {}),
    ("emb-dims-too-wide", "POST", "/v1/embeddings", {"input": "a cat", "dimensions": 17}, {}),
]
STATUS = {"one": 200, "list": 200, "normalized": 200, "raw-png": 200, "emb-texts": 200, "emb-mixed": 200,
          "emb-text-part": 200, "emb-base64-dims": 200, "emb-too-many": 413}


@pytest.fixture(scope="module")
def features_bundle(tiny_image_bundle):
    return tiny_image_bundle("clip", task="image-feature-extraction", quantization="none")


@pytest.fixture(scope="module")
def zero_shot_bundle(tiny_image_bundle):
    return tiny_image_bundle("clip", quantization="none")


@pytest.fixture
def clip(load_handler, features_bundle):
    return load_handler(features_bundle, MODELFN_MAX_BATCH=4, MODELFN_MODEL_NAME=NAME)


@pytest.fixture(scope="module")
def torch_clip(tiny_image_model_dir):
    """PyTorch's embeddings: get_image_features on the checkpoint's own image processor's pixels,
    get_text_features on its own tokenizer's ids."""
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    root = str(tiny_image_model_dir("clip"))
    model, processor = CLIPModel.from_pretrained(root).eval(), CLIPImageProcessor.from_pretrained(root)
    tokenizer = AutoTokenizer.from_pretrained(root)

    def image(data: bytes) -> np.ndarray:
        pixels = processor(Image.open(io.BytesIO(data)).convert("RGB"), return_tensors="pt").pixel_values
        with torch.inference_mode():
            return model.get_image_features(pixel_values=pixels)[0].numpy()

    def text(value: str) -> np.ndarray:
        enc = tokenizer([value], return_tensors="pt")
        with torch.inference_mode():
            return model.get_text_features(input_ids=enc.input_ids, attention_mask=enc.attention_mask)[0].numpy()

    return image, text


def _cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_bundle_exposes_both_towers_and_is_gated_by_cosine(features_bundle):
    manifest = read_manifest(features_bundle)
    assert manifest.task == "image-feature-extraction" and manifest.parity.passed
    assert {"text_features", "image_features", "text_embeds", "image_embeds"} <= set(manifest.outputs)
    assert set(manifest.parity.thresholds) == {"mean_cosine", "min_cosine"}
    fp32 = next(c for c in manifest.quantization.candidates if c.name == "fp32")
    assert fp32.metrics["image_min_cosine"] >= COSINE and fp32.metrics["text_min_cosine"] >= COSINE


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_handler_and_app_answer_alike(clip, case, version):
    status = _check_alike(clip, case, version)
    assert status == STATUS.get(case[0], 400), case[0]


def test_predict_answers_get_image_features_nested_as_the_pipeline(clip, torch_clip):
    image, _ = torch_clip
    for name, data in SAMPLES.items():
        status, got, _ = call(clip, make_event("POST", PREDICT, {"inputs": B64[name]}))
        assert status == 200 and len(got) == 1, got  # one image: [[...]], a (1, dim) tensor's tolist()
        want = image(data)
        assert _cosine(got[0], want) >= COSINE, name
        np.testing.assert_allclose(got[0], want, rtol=1e-3, atol=1e-4, err_msg=name)
    batch = [B64[n] for n in ("shapes", "noise", "palette")]
    status, got, _ = call(clip, make_event("POST", PREDICT, {"inputs": batch, "parameters": {"normalize": True}}))
    assert status == 200 and [np.asarray(g).shape for g in got] == [(1, 16)] * 3
    for answer, name in zip(got, ("shapes", "noise", "palette")):
        assert np.linalg.norm(answer[0]) == pytest.approx(1.0, abs=1e-5)
        assert _cosine(answer[0], image(SAMPLES[name])) >= COSINE


def test_predict_equals_the_transformers_image_feature_extraction_pipeline(clip, tiny_image_model_dir):
    """The pipeline cannot run a whole CLIPModel (its forward needs input_ids): it is given the same
    checkpoint's image tower with its projection (CLIPVisionModelWithProjection), as CLIP image
    embeddings are served by transformers. Same nesting, same numbers."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPVisionModelWithProjection, pipeline

    root = str(tiny_image_model_dir("clip"))
    full = CLIPModel.from_pretrained(root)
    vision = CLIPVisionModelWithProjection(type(full.config.vision_config)(
        **{**full.config.vision_config.to_dict(), "projection_dim": full.config.projection_dim}))
    vision.vision_model.load_state_dict(full.vision_model.state_dict())
    vision.visual_projection.load_state_dict(full.visual_projection.state_dict())
    extract = pipeline("image-feature-extraction", model=vision.eval(), image_processor=CLIPImageProcessor.from_pretrained(root),
                       device="cpu")
    names = ["shapes", "rgba", "palette"]
    images = [Image.open(io.BytesIO(SAMPLES[n])) for n in names]
    for body, want in (({"inputs": B64["shapes"]}, extract(images[0])),
                       ({"inputs": [B64[n] for n in names]}, extract(images))):
        status, got, _ = call(clip, make_event("POST", PREDICT, body))
        assert status == 200 and np.asarray(got).shape == np.asarray(want).shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("which", ["features", "zero-shot"])
def test_embeddings_answer_normalized_get_text_and_image_features(load_handler, features_bundle, zero_shot_bundle,
                                                                   torch_clip, which):
    """Both CLIP bundles serve /v1/embeddings (a zero-shot bundle from its normalized outputs), with the
    order of a mixed input kept (texts run the text tower, images the image tower)."""
    image, text = torch_clip
    bundle = features_bundle if which == "features" else zero_shot_bundle
    module = load_handler(bundle, MODELFN_MAX_BATCH=6, MODELFN_MODEL_NAME=NAME)
    items = [ZERO_SHOT_TEXTS[0], URL["shapes"], {"type": "image_url", "image_url": {"url": URL["gradient"]}},
             ZERO_SHOT_TEXTS[3], URL["rgba"], ZERO_SHOT_TEXTS[5]]
    status, got, _ = call(module, make_event("POST", "/v1/embeddings", {"input": items}))
    assert status == 200, got
    wants = [text(ZERO_SHOT_TEXTS[0]), image(SAMPLES["shapes"]), image(SAMPLES["gradient"]), text(ZERO_SHOT_TEXTS[3]),
             image(SAMPLES["rgba"]), text(ZERO_SHOT_TEXTS[5])]
    assert [d["index"] for d in got["data"]] == list(range(len(items)))
    for d, want in zip(got["data"], wants):
        assert np.linalg.norm(d["embedding"]) == pytest.approx(1.0, abs=1e-5)
        assert _cosine(d["embedding"], want) >= COSINE
        np.testing.assert_allclose(d["embedding"], _unit(want), atol=1e-4)
    assert got["usage"]["prompt_tokens"] > 0  # the texts' tokens; images count none
    # one tower alone gives the same vectors as a mixed request
    status, alone, _ = call(module, make_event("POST", "/v1/embeddings", {"input": URL["shapes"]}))
    np.testing.assert_allclose(alone["data"][0]["embedding"], got["data"][1]["embedding"], atol=1e-6)
    # dimensions shortens and re-normalizes, as for text models
    status, short, _ = call(module, make_event("POST", "/v1/embeddings", {"input": items[:2], "dimensions": 4}))
    for d, full in zip(short["data"], got["data"]):
        np.testing.assert_allclose(d["embedding"], _unit(full["embedding"][:4]), atol=1e-6)


def test_predict_on_a_zero_shot_bundle_still_classifies_and_embeddings_need_no_labels(load_handler, zero_shot_bundle):
    module = load_handler(zero_shot_bundle, MODELFN_MAX_BATCH=4, MODELFN_MODEL_NAME=NAME)
    status, got, _ = call(module, make_event("POST", PREDICT, {
        "inputs": B64["shapes"], "parameters": {"candidate_labels": ["a", "b"]}}))
    assert status == 200 and {g["label"] for g in got} == {"a", "b"}
    status, got, _ = call(module, make_event("GET", "/openapi.json", None))
    assert "image_url" in json.dumps(got["paths"]["/v1/embeddings"])  # the schema names the image shapes


def test_openai_client_embeds_texts_and_images(features_bundle, monkeypatch, torch_clip):
    openai = pytest.importorskip("openai")
    from functions.service import ModelService

    image, text = torch_clip
    service = ModelService.load(features_bundle, name=NAME, max_batch=8)
    with serving(build_app(service)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", http_client=httpx.Client())
        result = client.embeddings.create(model=NAME, input=list(ZERO_SHOT_TEXTS[:3]))
        assert [d.index for d in result.data] == [0, 1, 2] and result.model == NAME
        for d, value in zip(result.data, ZERO_SHOT_TEXTS):
            assert _cosine(d.embedding, text(value)) >= COSINE
        # the client's default (base64) and an image as a data: URL; its input type names strings only
        result = client.embeddings.create(model=NAME, input=[URL["shapes"]])
        assert _cosine(result.data[0].embedding, image(SAMPLES["shapes"])) >= COSINE
        with pytest.raises(openai.BadRequestError, match="not fetched"):
            client.embeddings.create(model=NAME, input=[{"type": "image_url",  # type: ignore[list-item]
                                                         "image_url": {"url": "http://example.com/a.png"}}])
    # the app and the service answer the same vectors
    direct = TestClient(build_app(service)).post("/v1/embeddings", json={"input": [URL["shapes"]]}).json()
    np.testing.assert_allclose(direct["data"][0]["embedding"], result.data[0].embedding, atol=1e-6)


def test_the_gpu_batch_scheduler_runs_clip_requests_on_their_own_feeds(features_bundle, zero_shot_bundle):
    """A CLIP request's feeds hold images and texts, not one row per encoding: the scheduler must run
    them as they are. Two images with two labels once looked like two shareable rows."""
    import asyncio

    from functions.batching import BatchLimits
    from functions.service import ModelService
    from tests.functions.test_batching import run_batched, unbatched

    for bundle, calls in ((zero_shot_bundle, [("predict", {"inputs": [B64["shapes"], B64["noise"]],
                                                           "parameters": {"candidate_labels": ["a", "b"]}})] * 3),
                          (features_bundle, [("embeddings", {"input": ["a cat", URL["shapes"]]}),
                                             ("embeddings", {"input": ["two", "texts"]}),
                                             ("predict", {"inputs": [B64["noise"], B64["tiny"]]})])):
        service = ModelService.load(bundle, max_batch=8)
        expected = [unbatched(service, kind, body) for kind, body in calls]
        answers, stats = asyncio.run(run_batched(service, calls, BatchLimits()))
        assert answers == expected and stats.batches == len(calls)


def test_export_refuses_a_checkpoint_without_both_towers(tiny_image_model_dir, tmp_path):
    from export.errors import TaskMismatchError
    from export.exporter import export_bundle

    with pytest.raises(TaskMismatchError, match="not a \\*CLIPModel"):
        export_bundle(tiny_image_model_dir("vit"), "image-feature-extraction", tmp_path / "b")
    assert not (tmp_path / "b").exists()

"""CLIP bundles hold one graph per tower: a tiny random CLIP's text_model.onnx and vision_model.onnx each
take only their tower's inputs, a feed runs only the towers it has inputs for, zero-shot logits come
from the embeddings and the manifest's logit_scale exactly as transformers computes them, export
refuses towers that do not answer as the gated graph, and a one-graph bundle exported before the
split still answers as the split bundle does."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest

from export.vision import ZERO_SHOT_TEXTS, builtin_samples
from functions.clip import ClipModel
from functions.manifest import (MODEL_FILE, PREPROCESSOR_FILE, TEXT_MODEL_FILE, TOKENIZER_FILE, VISION_MODEL_FILE,
                                describe_files, read_manifest, verify_bundle)
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event

NAME = "tiny-clip"
SAMPLES = {s.name: s.data for s in builtin_samples()}
B64 = {name: base64.b64encode(data).decode() for name, data in SAMPLES.items()}
URL = {name: "data:image/png;base64," + b for name, b in B64.items()}
LABELS = ["cat", "dog", "car", "red and yellow shapes"]


@pytest.fixture(scope="module")
def features_bundle(tiny_image_bundle):
    return tiny_image_bundle("clip", task="image-feature-extraction", quantization="none")


@pytest.fixture(scope="module")
def zero_shot_bundle(tiny_image_bundle):
    return tiny_image_bundle("clip", quantization="none")


@pytest.fixture(scope="module")
def torch_clip(tiny_image_model_dir):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(str(tiny_image_model_dir("clip"))).eval()


@pytest.fixture(scope="module")
def one_graph(tiny_image_model_dir, features_bundle, tmp_path_factory):
    """Factory: task -> a one-graph CLIP bundle as export wrote them before the towers were split
    (Optimum's two-tower model.onnx, image-feature-extraction with the unnormalized outputs, no logit_scale)."""
    from optimum.exporters.onnx import main_export

    from export.convert import FEATURE_OUTPUTS, add_unnormalized_outputs, quiet

    graph = tmp_path_factory.mktemp("clip-one-graph") / "optimum"
    with quiet():
        main_export(str(tiny_image_model_dir("clip")), output=graph, task="zero-shot-image-classification", opset=17,
                    library_name="transformers", local_files_only=True, do_validation=False, device="cpu")
    split = read_manifest(features_bundle)
    cache = {}

    def make(task: str):
        if task not in cache:
            out = tmp_path_factory.mktemp("clip-one-graph-" + task) / "bundle"
            out.mkdir()
            shutil.copyfile(graph / MODEL_FILE, out / MODEL_FILE)
            if task == "image-feature-extraction":
                add_unnormalized_outputs(out / MODEL_FILE, FEATURE_OUTPUTS)
            for name in (TOKENIZER_FILE, PREPROCESSOR_FILE):
                shutil.copyfile(features_bundle / name, out / name)
            session = ort.InferenceSession(str(out / MODEL_FILE), providers=["CPUExecutionProvider"])
            replace(split, task=task, inputs=tuple(i.name for i in session.get_inputs()),
                    outputs=tuple(o.name for o in session.get_outputs()), files=describe_files(out),
                    runtime=replace(split.runtime, logit_scale=0.0)).write(out)
            cache[task] = out
        return cache[task]

    return make


def _logit_scale(torch_clip) -> float:
    return float(torch_clip.logit_scale.detach().exp())


def test_each_tower_is_its_own_graph_with_its_own_inputs(features_bundle, torch_clip):
    manifest = verify_bundle(features_bundle)  # both graphs checked against their sha256
    assert MODEL_FILE not in manifest.files and {TEXT_MODEL_FILE, VISION_MODEL_FILE} <= set(manifest.files)
    io = {}
    for name in (TEXT_MODEL_FILE, VISION_MODEL_FILE):
        session = ort.InferenceSession(str(features_bundle / name), providers=["CPUExecutionProvider"])
        io[name] = ({i.name for i in session.get_inputs()}, {o.name for o in session.get_outputs()})
    assert io[TEXT_MODEL_FILE] == ({"input_ids", "attention_mask"}, {"text_embeds", "text_features"})
    assert io[VISION_MODEL_FILE] == ({"pixel_values"}, {"image_embeds", "image_features"})
    assert manifest.runtime.logit_scale == pytest.approx(_logit_scale(torch_clip), rel=1e-7)


def test_a_feed_runs_only_the_towers_it_has_inputs_for(features_bundle, torch_clip):
    import torch

    model = ClipModel(features_bundle, threads=1, max_batch=4, max_tokens=None, truncate=True)
    texts = model.feed(model.encode(list(ZERO_SHOT_TEXTS[:3])))
    pixels = {model.pixels: np.zeros((2, 3, 32, 32), dtype=np.float32)}
    assert set(model.run(texts)) == {"text_embeds", "text_features"}
    assert set(model.run(pixels)) == {"image_embeds", "image_features"}
    both = model.run({**texts, **pixels})
    assert set(both) == {"text_embeds", "text_features", "image_embeds", "image_features"}
    with torch.inference_mode():
        want = torch_clip.get_text_features(input_ids=torch.from_numpy(texts["input_ids"]),
                                            attention_mask=torch.from_numpy(texts["attention_mask"])).numpy()
    np.testing.assert_allclose(both["text_features"], want, rtol=1e-4, atol=1e-5)
    assert model.output_width("text_embeds") == 16


def test_zero_shot_logits_are_clip_models_own(zero_shot_bundle, torch_clip):
    """logits_per_image from the towers' embeddings and logit_scale equal CLIPModel.forward's."""
    import torch

    from functions.tasks.zero_shot_image import logits_per_image

    model = ClipModel(zero_shot_bundle, threads=1, max_batch=8, max_tokens=None, truncate=True)
    texts = model.feed(model.encode(list(ZERO_SHOT_TEXTS)))
    pixels = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    out = model.run({**texts, model.pixels: pixels})
    with torch.inference_mode():
        want = torch_clip(input_ids=torch.from_numpy(texts["input_ids"]), pixel_values=torch.from_numpy(pixels),
                          attention_mask=torch.from_numpy(texts["attention_mask"])).logits_per_image.numpy()
    got = logits_per_image(out["text_embeds"], out["image_embeds"], model.logit_scale)
    assert got.shape == want.shape == (3, len(ZERO_SHOT_TEXTS))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_the_towers_answer_as_the_two_tower_graph_they_are_cut_from(one_graph, tmp_path, torch_clip):
    """What export gates after the cut: each output of the towers, the logits from logit_scale, equals
    the two-tower graph's (fp32); a wrong scale would not."""
    from tokenizers import Tokenizer

    from export.measure import session
    from export.vision import encode, tower_files, tower_outputs

    bundle = one_graph("image-feature-extraction")
    manifest = read_manifest(bundle)
    encoded = encode(builtin_samples()[:4], manifest.runtime.image, Tokenizer.from_file(str(bundle / TOKENIZER_FILE)),
                     manifest.runtime.pad_token_id)
    files, (inputs, outputs, _) = tower_files(bundle / MODEL_FILE, tmp_path)
    assert set(files) == {TEXT_MODEL_FILE, VISION_MODEL_FILE} and "logits_per_image" not in outputs
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
    whole = session(bundle / MODEL_FILE, 1)
    wants = [whole.run(None, e.feeds) for e in encoded]
    scale = _logit_scale(torch_clip)
    for got, want in zip(tower_outputs(bundle / MODEL_FILE, files, encoded, scale, 1, "CPUExecutionProvider"), wants):
        assert len(got) == len(want) == 6
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    wrong = tower_outputs(bundle / MODEL_FILE, files, encoded[:1], scale * 1.01, 1, "CPUExecutionProvider")[0]
    assert not np.allclose(wrong[0], wants[0][0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["zero-shot-image-classification", "image-feature-extraction"])
def test_a_one_graph_bundle_still_answers_as_the_split_bundle(load_handler, one_graph, zero_shot_bundle,
                                                               features_bundle, task):
    """Bundles in registries from before the split keep serving (blank partner inputs), with the same answers."""
    old = load_handler(one_graph(task), MODELFN_MAX_BATCH=4, MODELFN_MODEL_NAME=NAME)
    assert isinstance(old.load().model, ClipModel) and not old.load().model.separate_towers
    new = load_handler(zero_shot_bundle if task.startswith("zero") else features_bundle, MODELFN_MAX_BATCH=4,
                       MODELFN_MODEL_NAME=NAME)
    predict = f"/models/{NAME}/predict"
    bodies = [("/v1/embeddings", {"input": ["a cat", URL["shapes"], ZERO_SHOT_TEXTS[2], URL["noise"]]}),
              ("/v1/embeddings", {"input": [URL["gradient"]]}), ("/v1/embeddings", {"input": "only text"})]
    if task.startswith("zero"):
        bodies.append((predict, {"inputs": [B64["shapes"], B64["rgba"]], "parameters": {"candidate_labels": LABELS}}))
    else:
        bodies.append((predict, {"inputs": [B64["shapes"], B64["palette"]]}))
    for path, body in bodies:
        (status_old, got_old, _), (status_new, got_new, _) = (call(m, make_event("POST", path, body)) for m in (old, new))
        assert status_old == status_new == 200, (got_old, got_new)
        if path == predict and task.startswith("zero"):
            for a, b in zip(got_old, got_new):
                assert [x["label"] for x in a] == [x["label"] for x in b]
                np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in b], atol=1e-5)
        elif path == predict:
            np.testing.assert_allclose(got_old, got_new, atol=1e-5)
        else:
            np.testing.assert_allclose([d["embedding"] for d in got_old["data"]],
                                       [d["embedding"] for d in got_new["data"]], atol=1e-5)


def test_memory_is_sized_from_the_image_tower(features_bundle, tiny_image_model_dir):
    from infra.build.memory import encoder_shape, estimate_bundle

    config = json.loads((tiny_image_model_dir("clip") / "config.json").read_text())["vision_config"]
    shape = encoder_shape((features_bundle / VISION_MODEL_FILE).read_bytes())
    assert (shape.hidden, shape.patch) == (config["hidden_size"], config["patch_size"])
    assert estimate_bundle(features_bundle, max_batch=4, max_tokens=64).working_mb > 0


def test_a_text_run_is_not_estimated_at_the_image_towers_rate(features_bundle):
    """Each tower's runs are timed apart (functions/deadline.RunRate kinds): one slow image run must not
    make the next texts look too slow for the request's time budget."""
    from functions import deadline
    from functions.deadline import Deadline
    from functions.service import ModelService
    from tests.functions.test_deadline import TickingClock

    service = ModelService.load(features_bundle, name=NAME, max_batch=8)
    image = json.dumps({"input": [URL["shapes"]]}).encode()
    texts = json.dumps({"input": list(ZERO_SHOT_TEXTS)}).encode()
    with deadline.scope(Deadline(100.0, TickingClock(10.0))):  # the image run is measured at 10 s an image
        assert service.embeddings("application/json", image).status == 200
    with deadline.scope(Deadline(5.0, lambda: 0.0)):  # 5 s left: six texts are not 10 s a token
        assert service.embeddings("application/json", texts).status == 200
    with deadline.scope(Deadline(5.0, lambda: 0.0)), pytest.raises(deadline.TimedOut):
        service.embeddings("application/json", image)  # the image tower's own rate still bounds an image

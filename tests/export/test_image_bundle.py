"""Exported image-classification bundles: the processor config instead of a tokenizer, the steps in the
manifest, the same candidates and gate as text, and one-line errors for what cannot be exported."""

from __future__ import annotations

import json
import shutil

import pytest

from export.errors import ExportError, SourceError, TaskMismatchError
from export.exporter import export_bundle
from export.vision import builtin_samples, load_eval_file
from functions.manifest import (MANIFEST_FILE, MODEL_FILE, PREPROCESSOR_FILE, ImageProcessing, read_manifest,
                                verify_bundle)
from export.choices import DEFAULT_THRESHOLDS
from tests.tinymodels import IMAGE_LABELS

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("architecture", ["vit", "convnext"])
def test_image_bundle_is_complete_and_gated(tiny_image_bundle, architecture):
    bundle = tiny_image_bundle(architecture)
    assert sorted(p.name for p in bundle.iterdir()) == sorted([MANIFEST_FILE, MODEL_FILE, PREPROCESSOR_FILE])
    manifest = verify_bundle(bundle)
    assert manifest.task == "image-classification" and manifest.inputs == ("pixel_values",)
    assert manifest.runtime.labels == IMAGE_LABELS and not manifest.runtime.multi_label
    names = [c.name for c in manifest.quantization.candidates]
    assert names[0] == "fp32" and "int8-dynamic-per-channel-avx2" in names and manifest.quantization.chosen in names
    parity = manifest.parity
    assert parity.passed and parity.samples == len(builtin_samples())
    assert parity.thresholds == {"agreement": DEFAULT_THRESHOLDS["agreement"]}
    fp32 = next(c for c in manifest.quantization.candidates if c.name == "fp32")
    assert fp32.metrics == {"agreement": 1.0, "max_prob_gap": 0.0}
    assert all("max_prob_gap" in c.metrics for c in manifest.quantization.candidates if c.metrics)
    assert read_manifest(bundle) == manifest


def test_manifest_records_each_processors_steps(tiny_image_bundle):
    vit = read_manifest(tiny_image_bundle("vit")).runtime.image
    assert vit == ImageProcessing(height=32, width=32, resample=2, rescale_factor=1 / 255, mean=(0.5,) * 3,
                                  std=(0.5,) * 3, processor="ViTImageProcessor")
    convnext = read_manifest(tiny_image_bundle("convnext")).runtime.image
    # shortest edge 32 < 384: resize the shorter edge to int(32 / 0.875) = 36, then crop 32x32
    assert (convnext.shortest_edge, convnext.crop_height, convnext.crop_width, convnext.height) == (36, 32, 32, 0)
    assert convnext.processor == "ConvNextImageProcessor"


def test_text_task_on_an_image_model_and_image_task_on_a_text_model_are_refused(tiny_image_model_dir,
                                                                                 tiny_model_dir, tmp_path):
    with pytest.raises(TaskMismatchError, match="ForImageClassification"):
        export_bundle(tiny_model_dir("text-classification"), "image-classification", tmp_path / "a")
    with pytest.raises(TaskMismatchError, match="ForSequenceClassification"):
        export_bundle(tiny_image_model_dir("vit"), "text-classification", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_or_unsupported_processor_is_one_line(tiny_image_model_dir, tmp_path):
    source = shutil.copytree(tiny_image_model_dir("vit"), tmp_path / "src")
    config = json.loads((source / PREPROCESSOR_FILE).read_text())
    (source / PREPROCESSOR_FILE).write_text(json.dumps({**config, "image_processor_type": "BeitImageProcessor",
                                                        "size": {"height": 32, "width": 32}}))
    with pytest.raises(ExportError, match="BeitImageProcessor is not supported"):
        export_bundle(source, "image-classification", tmp_path / "out")
    (source / PREPROCESSOR_FILE).unlink()
    with pytest.raises(SourceError, match="has no preprocessor_config.json"):
        export_bundle(source, "image-classification", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_eval_file_adds_labelled_images(tiny_image_model_dir, tmp_path):
    (tmp_path / "cat.png").write_bytes(builtin_samples()[0].data)
    (tmp_path / "eval.jsonl").write_text(json.dumps({"image": "cat.png", "label": "cat"}) + "\n")
    assert load_eval_file(tmp_path / "eval.jsonl")[0].label == "cat"
    manifest = export_bundle(tiny_image_model_dir("convnext"), "image-classification", tmp_path / "out",
                             quantization="none", eval_file=tmp_path / "eval.jsonl")
    assert manifest.parity.samples == len(builtin_samples()) + 1 and "accuracy" in manifest.parity.metrics
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "missing.png"}) + "\n")
    with pytest.raises(ExportError, match="cannot read"):
        load_eval_file(tmp_path / "bad.jsonl")

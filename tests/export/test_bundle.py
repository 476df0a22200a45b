"""Exported bundles of tiny models, one per task: files, manifest fields, digests, parity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from functions.manifest import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, read_manifest, sha256_file, verify_bundle
from export.choices import DEFAULT_THRESHOLDS
from export.measure import gate_provider
from tests.gpus import cuda_skip_reason
from tests.tinymodels import TASKS

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("task", TASKS)
def test_bundle_is_complete_and_within_thresholds(tiny_bundle, task):
    bundle = tiny_bundle(task)
    assert sorted(p.name for p in bundle.iterdir()) == sorted([MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE])
    manifest = verify_bundle(bundle)
    assert manifest.task == task
    assert manifest.name == "tiny-" + task.split("-")[0]
    assert (manifest.architecture, manifest.target) == ("x86_64", "lambda")
    for name in (MODEL_FILE, TOKENIZER_FILE):
        assert manifest.files[name].sha256 == sha256_file(bundle / name)
        assert manifest.files[name].size == (bundle / name).stat().st_size

    graph = onnx.load(str(bundle / MODEL_FILE))
    assert manifest.inputs == tuple(i.name for i in graph.graph.input)
    assert manifest.outputs == tuple(o.name for o in graph.graph.output)
    assert manifest.opset == next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)

    q = manifest.quantization
    assert q.requested == "int8"
    names = [c.name for c in q.candidates]
    assert names[0] == "fp32" and "int8-weight-only-b32-a4" in names and len(names) >= 3
    assert q.chosen in names and q.reason
    chosen = next(c for c in q.candidates if c.name == q.chosen)
    assert chosen.passed and chosen.latency_ms > 0 and chosen.metrics == manifest.parity.metrics

    p = manifest.parity
    assert p.passed and not p.allowed_drift and p.samples >= 10
    assert p.thresholds and all(p.metrics[m] >= t for m, t in p.thresholds.items())
    expected = {"feature-extraction": {"mean_cosine", "min_cosine"}}.get(task, {"agreement"})
    assert set(p.thresholds) == expected
    assert all(p.thresholds[m] == DEFAULT_THRESHOLDS[m] for m in expected)

    assert {"optimum", "onnxruntime", "onnx", "torch", "transformers"} <= set(manifest.tools)
    assert manifest.created_at.endswith("+00:00")
    assert read_manifest(bundle) == manifest


def test_runtime_config_follows_the_checkpoint(tiny_bundle, tiny_model_dir):
    fe = read_manifest(tiny_bundle("feature-extraction")).runtime
    assert (fe.pooling, fe.normalize, fe.max_length) == ("mean", True, 128)
    tc = read_manifest(tiny_bundle("text-classification")).runtime
    config = json.loads((tiny_model_dir("text-classification") / "config.json").read_text())
    assert tc.labels == tuple(config["id2label"][str(i)] for i in range(len(config["id2label"])))
    assert tc.multi_label is False
    tok = read_manifest(tiny_bundle("token-classification")).runtime
    assert tok.labels[0] == "O" and len(tok.labels) == 5


def test_multi_label_classifier(tiny_bundle):
    manifest = read_manifest(tiny_bundle("text-classification", multi_label=True))
    assert manifest.runtime.multi_label is True
    assert manifest.parity.passed


def test_tokenizer_truncates_to_max_length_and_does_not_pad(tiny_bundle):
    from tokenizers import Tokenizer

    bundle = tiny_bundle("feature-extraction")
    tok = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    manifest = read_manifest(bundle)
    assert len(tok.encode("data " * 500).ids) == manifest.runtime.max_length
    assert len(tok.encode("the").ids) == 3  # [CLS] the [SEP], no padding


def test_bundle_model_runs_with_manifest_io(tiny_bundle):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    bundle = tiny_bundle("question-answering")
    manifest = read_manifest(bundle)
    enc = Tokenizer.from_file(str(bundle / TOKENIZER_FILE)).encode("where is paris?", "paris is in france")
    feeds = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
    session = ort.InferenceSession(str(bundle / MODEL_FILE), providers=["CPUExecutionProvider"])
    outputs = session.run(list(manifest.outputs), {n: np.asarray([feeds[n]], dtype=np.int64) for n in manifest.inputs})
    assert [o.shape for o in outputs] == [(1, len(enc.ids))] * 2


@pytest.mark.parametrize("target, architecture, quantization, expected", [
    ("gpu", "x86_64", "fp16", "fp16"),
    ("lambda", "arm64", "int8", "int8-dynamic-per-channel-arm64"),
])
def test_presets_follow_the_function_hardware(tiny_model_dir, tmp_path, target, architecture, quantization, expected):
    from export.exporter import export_bundle

    manifest = export_bundle(tiny_model_dir("feature-extraction"), "feature-extraction", tmp_path / "b",
                             target=target, architecture=architecture, quantization=quantization)
    names = [c.name for c in manifest.quantization.candidates]
    assert names[0] == "fp32" and expected in names
    assert manifest.quantization.chosen == expected  # it passes on a tiny model; preset order decides
    assert "cannot be measured" in manifest.quantization.reason  # not timed on this host's hardware
    assert (manifest.target, manifest.architecture) == (target, architecture)
    if quantization == "fp16":
        graph = onnx.load(str(tmp_path / "b" / MODEL_FILE))
        assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # IO stays fp32
        weights = [t.data_type for t in graph.graph.initializer if len(t.dims) == 2]
        assert weights and all(t == onnx.TensorProto.FLOAT16 for t in weights)  # the matrices are fp16
        assert manifest.parity.passed and manifest.parity.provider == gate_provider("gpu")
    else:
        assert manifest.parity.provider == "CPUExecutionProvider"  # a lambda bundle is gated on CPU


@pytest.mark.parametrize("architecture, quantization, message", [
    ("x86_64", "int8", "int8 is not for the gpu target"),
    ("arm64", "fp16", "x86_64 only"),
])
def test_gpu_target_refuses_int8_and_arm64(tiny_model_dir, tmp_path, architecture, quantization, message):
    from export.errors import ExportError
    from export.exporter import export_bundle

    with pytest.raises(ExportError, match=message):
        export_bundle(tiny_model_dir("feature-extraction"), "feature-extraction", tmp_path / "b",
                      target="gpu", architecture=architecture, quantization=quantization)
    assert not (tmp_path / "b").exists()


# Not gate_provider alone: onnxruntime-gpu offers CUDA on a machine without a GPU too (the GPU image
# over the CPU stand-in), where the gate falls back to the CPU.
@pytest.mark.skipif(cuda_skip_reason() is not None, reason=str(cuda_skip_reason()))
def test_gpu_export_is_gated_on_cuda_where_there_is_one(tiny_model_dir, tmp_path):
    from export.exporter import export_bundle

    manifest = export_bundle(tiny_model_dir("text-classification"), "text-classification", tmp_path / "b",
                             target="gpu", quantization="fp16")
    assert manifest.parity.provider == "CUDAExecutionProvider"
    assert manifest.quantization.chosen == "fp16" and manifest.parity.passed


def test_manifests_without_a_gate_provider_read_as_cpu(tiny_bundle):
    from functions.manifest import Manifest

    data = read_manifest(tiny_bundle("feature-extraction")).to_dict()
    del data["parity"]["provider"]  # written before the field existed
    assert Manifest.from_dict(data).parity.provider == "CPUExecutionProvider"

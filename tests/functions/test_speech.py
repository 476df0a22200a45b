"""automatic-speech-recognition served: audio decoding, resampling and Whisper's log-mel features in
numpy against transformers' WhisperFeatureExtractor; a tiny random Whisper exported end to end whose
ONNX transcriptions equal transformers' pipeline (greedy generate tokens and text) through the Lambda
handler and the ASGI app; OpenAI's /v1/audio/transcriptions (multipart) from both adapters and from
the official ``openai`` client; bad audio gets the same clear 4xx from both adapters."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from functions.app import build_app
from functions.audio import audio_bytes, decode_audio, log_mel, mel_filters, resample
from functions.errors import BadRequest, PayloadTooLarge
from functions.settings import AudioLimits
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event
from tests.functions.servers import serving

PREDICT, TRANSCRIBE = "/models/tiny-whisper/predict", "/v1/audio/transcriptions"
LIMITS = AudioLimits(max_bytes=1 << 24, max_seconds=30.0)
RATE = 16_000


def _tone(seconds: float, rate: int = RATE, freq: float = 440.0, amp: float = 0.4) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _encode(samples: np.ndarray, rate: int = RATE, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def _wav_header(seconds: float, rate: int = RATE) -> bytes:
    """A 16-bit mono WAV header declaring ``seconds`` of audio, followed by only a few samples."""
    full = _encode(np.zeros(int(seconds * rate), dtype=np.float32), rate, subtype="PCM_16")
    return full[:44 + 64]


# -- features ------------------------------------------------------------------------------------------

def _extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80)


def test_mel_filters_equal_transformers():
    assert np.abs(mel_filters(400, 80, RATE) - _extractor().mel_filters).max() < 1e-12
    from transformers import WhisperFeatureExtractor

    assert np.abs(mel_filters(400, 128, RATE) - WhisperFeatureExtractor(feature_size=128).mel_filters).max() < 1e-12


@pytest.mark.parametrize("signal", ["tone", "noise", "silence", "short", "over-window", "loud-chirp"])
def test_log_mel_equals_whisper_feature_extractor(signal):
    rng = np.random.default_rng(3)
    t = np.arange(5 * RATE) / RATE
    samples = {
        "tone": _tone(3.0), "noise": rng.normal(0, 0.1, 5 * RATE), "silence": np.zeros(RATE),
        "short": _tone(0.01), "over-window": rng.normal(0, 0.3, 31 * RATE),
        "loud-chirp": 0.99 * np.sin(2 * np.pi * (50 * t + 700 * t ** 2)),
    }[signal].astype(np.float32)
    ours = log_mel(samples)
    theirs = _extractor()(samples, sampling_rate=RATE, return_tensors="np").input_features[0]
    assert ours.shape == theirs.shape == (80, 3000) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("orig", [8_000, 22_050, 44_100, 48_000])
def test_resampling_keeps_a_tone(orig):
    """Windowed-sinc resampling to 16 kHz: a 440 Hz tone stays that tone to ~2e-4 of full scale away
    from the edges, with ceil(n * 16000 / orig) samples."""
    samples = _tone(1.0, orig)
    out = resample(samples, orig, RATE)
    assert len(out) == int(np.ceil(len(samples) * RATE / orig)) and out.dtype == np.float32
    expected = _tone(len(out) / RATE)[:len(out)]
    assert np.abs(out - expected)[200:-200].max() < 1e-3
    assert resample(samples, orig, orig) is samples


def test_resampling_removes_what_the_new_rate_cannot_hold():
    """44.1 -> 16 kHz: a 5 kHz tone keeps its level (within 1%); a 12 kHz tone, which would alias
    below the new 8 kHz Nyquist frequency, is attenuated by more than 50 dB."""
    def level(freq):
        return np.sqrt(np.mean(resample(_tone(1.0, 44_100, freq), 44_100, RATE)[400:-400] ** 2)) / (0.4 / np.sqrt(2))

    assert abs(level(5_000) - 1.0) < 0.01 and level(12_000) < 10 ** (-50 / 20)


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", None), ("OGG", "VORBIS"),
                                          ("MP3", None)])
def test_decodes_containers_and_mixes_channels(fmt, subtype):
    stereo = np.stack([_tone(1.0, 22_050, 300, 0.4), _tone(1.0, 22_050, 300, 0.2)], 1)
    samples, rate = decode_audio(_encode(stereo, 22_050, fmt, subtype), "inputs", LIMITS)
    assert rate == 22_050 and samples.ndim == 1 and samples.dtype == np.float32
    # The mean of the channels: a 300 Hz tone of amplitude 0.3 (lossy codecs: within their error).
    assert abs(np.abs(samples[2000:-2000]).max() - 0.3) < (2e-3 if fmt in ("WAV", "FLAC") else 0.05)


@pytest.mark.parametrize("data, error, words", [
    (b"", BadRequest, "empty"),
    (b"hello, not a recording", BadRequest, "is not a WAV"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), BadRequest, "is not a WAV"),
    (_encode(_tone(1.0), subtype="PCM_16")[:20_000], BadRequest, "truncated"),
    (_wav_header(31.0), BadRequest, "truncated"),  # the header's length, not the bytes present
    (_encode(np.zeros(31 * RATE, dtype=np.float32), subtype="PCM_16"), PayloadTooLarge, "31.0 s long"),
    (_encode(np.zeros(RATE, dtype=np.float32), fmt="AU", subtype="PCM_16"), BadRequest, "not supported"),
])
def test_bad_audio_is_refused_clearly(data, error, words):
    with pytest.raises(error) as caught:
        decode_audio(audio_bytes(data, "inputs", LIMITS), "inputs", LIMITS)
    assert words in caught.value.message


def test_byte_and_base64_limits_come_before_decoding():
    small = AudioLimits(max_bytes=1000, max_seconds=30.0)
    with pytest.raises(PayloadTooLarge):
        audio_bytes(b"x" * 1001, "inputs", small)
    with pytest.raises(PayloadTooLarge):
        audio_bytes("QUFB" * 1000, "inputs", small)
    with pytest.raises(BadRequest, match="not valid base64"):
        audio_bytes("%%% not base64 %%%", "inputs", small)
    wav = _encode(_tone(0.01), subtype="PCM_16")
    assert audio_bytes("data:audio/wav;base64," + base64.b64encode(wav).decode(), "inputs", LIMITS) == wav


# -- the served model ----------------------------------------------------------------------------------

RECORDINGS = {
    "tone-wav": _encode(_tone(1.0), subtype="PCM_16"),
    "chirp-flac-8k": _encode(0.3 * np.sin(2 * np.pi * (100 * np.arange(16_000) / 8000
                                                         + 300 * (np.arange(16_000) / 8000) ** 2)), 8_000, "FLAC"),
    "noise-stereo-44k": _encode(np.random.default_rng(1).normal(0, 0.1, (44_100, 2)), 44_100, subtype="PCM_16"),
    "silence": _encode(np.zeros(RATE, dtype=np.float32), subtype="PCM_16"),
}


@pytest.fixture(scope="module")
def speech_bundle(tiny_speech_bundle):
    return tiny_speech_bundle(quantization="none")


@pytest.fixture
def whisper(load_handler, speech_bundle):
    return load_handler(speech_bundle, MODELFN_MAX_BATCH=4, MODELFN_MAX_AUDIO_SECONDS=20,
                        MODELFN_MAX_AUDIO_BYTES=2_000_000)


@pytest.fixture(scope="module")
def reference(tiny_whisper_dir):
    """transformers' pipeline on each recording (decoded and resampled as the pipeline's caller would),
    decoding greedily as modelfn does: the pipeline's own default for Whisper is 5 beams."""
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(tiny_whisper_dir), device="cpu")
    results = {}
    for name, data in RECORDINGS.items():
        samples, rate = decode_audio(data, name, LIMITS)
        results[name] = asr({"raw": resample(samples, rate, RATE), "sampling_rate": RATE},
                            generate_kwargs={"num_beams": 1})["text"]
    return results


def _generate_tokens(source, data: bytes, **kwargs) -> list[int]:
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(str(source)).eval()
    samples, rate = decode_audio(data, "x", LIMITS)
    features = _extractor()(resample(samples, rate, RATE), sampling_rate=RATE, return_tensors="pt").input_features
    with torch.inference_mode():
        return model.generate(features, **kwargs)[0].tolist()


def test_onnx_tokens_equal_pytorch_generate(speech_bundle, tiny_whisper_dir):
    """The decoder loop's tokens are generate's, with the language detected and with it given."""
    from functions.audio import read_features
    from functions.speech import SpeechModel

    model = SpeechModel(speech_bundle, threads=1, max_batch=1, max_tokens=None)
    for name in ("tone-wav", "noise-stereo-44k"):
        features = read_features(RECORDINGS[name], name, LIMITS)
        tokens, _ = model.generate(features, max_new_tokens=20)
        assert tokens == _generate_tokens(tiny_whisper_dir, RECORDINGS[name], max_new_tokens=20), name
        tokens, lang = model.generate(features, language="fr", max_new_tokens=12)
        assert model._language_of[lang] == "fr" and model.language_id("French") == model.language_id("<|fr|>") == lang
        assert tokens == _generate_tokens(tiny_whisper_dir, RECORDINGS[name], max_new_tokens=12, language="fr"), name


def test_answers_equal_the_transformers_pipeline(whisper, reference):
    client = TestClient(build_app(whisper.load()), raise_server_exceptions=False)
    for name, data in RECORDINGS.items():
        kind = "audio/flac" if data[:4] == b"fLaC" else "audio/wav"
        for version in (1, 2):
            status, answer, _ = call(whisper, make_event("POST", PREDICT, data, version=version,
                                                                 content_type=kind, base64_body=True))
            assert status == 200 and answer == {"text": reference[name]}, (name, answer)
        response = client.post(PREDICT, json={"inputs": base64.b64encode(data).decode()})
        assert response.status_code == 200 and response.json() == {"text": reference[name]}, name
    # a list of recordings: one answer each, in order
    names = list(RECORDINGS)[:3]
    status, answers, _ = call(whisper, make_event("POST", PREDICT, {
        "inputs": [base64.b64encode(RECORDINGS[n]).decode() for n in names]}))
    assert status == 200 and answers == [{"text": reference[n]} for n in names]


def _form(data: bytes | None, **fields) -> tuple[bytes, str]:
    # Without a file, a field sent as a file part keeps the body multipart (httpx would urlencode it).
    files = {"file": ("speech.wav", data, "audio/wav")} if data is not None else {"language": (None, "en")}
    request = httpx.Request("POST", "http://x" + TRANSCRIBE, files=files, data=fields or None)
    return request.read(), request.headers["content-type"]


B64 = base64.b64encode(RECORDINGS["tone-wav"]).decode()
_FULL_FORM = _form(RECORDINGS["tone-wav"])
CASES = [
    ("predict-json-params", PREDICT, json.dumps({"inputs": B64, "parameters": {"language": "en", "max_new_tokens": 3}}),
     "application/json", 200),
    ("form-json", TRANSCRIBE, *_form(RECORDINGS["tone-wav"], model="tiny-whisper"), 200),
    ("form-verbose", TRANSCRIBE, *_form(RECORDINGS["chirp-flac-8k"], response_format="verbose_json",
                                        language="en", temperature="0"), 200),
    # the caller's mistakes
    ("truncated", PREDICT, RECORDINGS["tone-wav"][:20_000], "audio/wav", 400),
    ("not-audio", PREDICT, b"hello, not a recording", "audio/wav", 400),
    ("too-long", PREDICT, _encode(np.zeros(21 * RATE, dtype=np.float32), fmt="FLAC"), "audio/flac", 413),
    ("too-many-bytes", PREDICT, _encode(np.zeros(32 * RATE, dtype=np.float32), subtype="FLOAT"), "audio/wav", 413),
    ("timestamps", PREDICT, json.dumps({"inputs": B64, "parameters": {"return_timestamps": True}}),
     "application/json", 200),
    ("unknown-language", PREDICT, json.dumps({"inputs": B64, "parameters": {"language": "xx"}}), "application/json",
     400),
    ("max-new-tokens-over", PREDICT, json.dumps({"inputs": B64, "parameters": {"max_new_tokens": 10_000}}),
     "application/json", 400),
    ("bad-base64", PREDICT, json.dumps({"inputs": "%%% not base64 %%%"}), "application/json", 400),
    ("form-no-file", TRANSCRIBE, *_form(None, model="tiny-whisper"), 400),
    ("form-wrong-model", TRANSCRIBE, *_form(RECORDINGS["tone-wav"], model="whisper-1"), 404),
    ("form-tsv", TRANSCRIBE, *_form(RECORDINGS["tone-wav"], response_format="tsv"), 400),
    ("form-prompt", TRANSCRIBE, *_form(RECORDINGS["tone-wav"], prompt="hello"), 400),
    ("form-temperature", TRANSCRIBE, *_form(RECORDINGS["tone-wav"], temperature="0.7"), 400),
    ("form-not-audio", TRANSCRIBE, *_form(b"RIFF nonsense"), 400),
    ("form-truncated-body", TRANSCRIBE, _FULL_FORM[0][:-30], _FULL_FORM[1], 400),
    ("form-as-json", TRANSCRIBE, json.dumps({"file": B64}), "application/json", 415),
]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_both_adapters_answer_alike(whisper, case, version):
    _, path, body, content_type, expected = case
    body = body.encode() if isinstance(body, str) else body
    client = TestClient(build_app(whisper.load()), raise_server_exceptions=False)
    status, answer, headers = call(whisper, make_event("POST", path, body, version=version,
                                                               content_type=content_type, base64_body=True))
    response = client.post(path, content=body, headers={"content-type": content_type})
    assert status == response.status_code == expected, (answer, response.text)
    assert answer == response.json() and headers["content-type"] == response.headers["content-type"]
    if status >= 400:
        assert set(answer) == {"error"} and answer["error"]["message"]


def test_transcription_formats(whisper, reference):
    client = TestClient(build_app(whisper.load()), raise_server_exceptions=False)
    body, kind = _form(RECORDINGS["tone-wav"], response_format="text")
    response = whisper(make_event("POST", TRANSCRIBE, body, content_type=kind, base64_body=True), None)
    asgi = client.post(TRANSCRIBE, content=body, headers={"content-type": kind})
    assert response["statusCode"] == asgi.status_code == 200
    assert response["body"] == asgi.text == reference["tone-wav"]
    assert response["headers"]["content-type"] == asgi.headers["content-type"] == "text/plain; charset=utf-8"
    body, kind = _form(RECORDINGS["noise-stereo-44k"], response_format="verbose_json")
    status, verbose, _ = call(whisper, make_event("POST", TRANSCRIBE, body, content_type=kind, base64_body=True))
    # verbose_json decodes with timestamps (its segments need them): the predict route's timed text.
    _, timed, _ = call(whisper, make_event("POST", PREDICT, {"inputs": base64.b64encode(
        RECORDINGS["noise-stereo-44k"]).decode(), "parameters": {"return_timestamps": True}}))
    assert status == 200 and verbose["text"] == timed["text"] and verbose["segments"]
    assert verbose["duration"] == 1.0 and verbose["language"] in ("english", "french") and verbose["task"] == "transcribe"


def test_openai_client_transcribes(whisper, reference):
    import openai

    with serving(build_app(whisper.load()), lifespan="off") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        answer = client.audio.transcriptions.create(model="tiny-whisper", file=("a.wav", RECORDINGS["tone-wav"]))
        assert answer.text == reference["tone-wav"]
        text = client.audio.transcriptions.create(model="tiny-whisper", file=("a.flac", RECORDINGS["chirp-flac-8k"]),
                                                  response_format="text")
        assert text == reference["chirp-flac-8k"]
        verbose = client.audio.transcriptions.create(model="tiny-whisper", file=("a.wav", RECORDINGS["silence"]),
                                                     response_format="verbose_json", language="en")
        assert verbose.duration == 1.0 and verbose.language == "english"
        with pytest.raises(openai.NotFoundError):
            client.audio.transcriptions.create(model="whisper-1", file=("a.wav", RECORDINGS["tone-wav"]))
        with pytest.raises(openai.BadRequestError, match="not a WAV"):
            client.audio.transcriptions.create(model="tiny-whisper", file=("a.wav", b"not audio at all"))


def test_other_models_do_not_serve_transcriptions(load_handler, tiny_bundle):
    module = load_handler(tiny_bundle("text-classification"))
    body, kind = _form(RECORDINGS["tone-wav"])
    status, answer, _ = call(module, make_event("POST", TRANSCRIBE, body, content_type=kind, base64_body=True))
    assert status == 404 and "speech-recognition" in answer["error"]["message"]


# -- multipart/form-data -------------------------------------------------------------------------------

def _multipart(parts: list[bytes], boundary: str = "b0und", close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


def _field(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"Content-Disposition: {disposition}\r\n\r\n".encode() + value


def test_multipart_keeps_bytes_exactly_and_reads_quoted_boundaries():
    from functions.multipart import parse_form

    payload = bytes(range(256)) * 4 + b"\r\n--b0un\r\n\r\n--"  # CRLFs and a near-boundary inside the file
    body = _multipart([_field("file", payload, "a.wav"), _field("model", "tiny-wh\u00efsper".encode())])
    form = parse_form('multipart/form-data; boundary="b0und"', body)
    assert form["file"].data == payload and form["file"].filename == "a.wav"
    assert form["model"].text() == "tiny-wh\u00efsper" and form["model"].filename is None


@pytest.mark.parametrize("content_type, body, words", [
    ("multipart/form-data", _multipart([_field("a", b"1")]), "boundary"),
    ("multipart/form-data; boundary=b0und", _multipart([_field("a", b"1")], close=False), "truncated"),
    ("multipart/form-data; boundary=b0und", _multipart([_field("a", b"1"), _field("a", b"2")]), "repeated"),
    ("multipart/form-data; boundary=b0und", _multipart([b"Content-Disposition: form-data\r\n\r\nx"]), "no field name"),
    ("multipart/form-data; boundary=b0und", _multipart([b"Content-Type: text/plain\r\n\r\nx"]), "Content-Disposition"),
    ("multipart/form-data; boundary=b0und", _multipart([b"no headers here"]), "headers"),
    ("multipart/form-data; boundary=b0und", _multipart([_field(f"f{i}", b"") for i in range(40)]), "more than 32"),
    ("multipart/form-data; boundary=other", _multipart([_field("a", b"1")]), "no part"),
])
def test_malformed_forms_are_refused_clearly(content_type, body, words):
    from functions.multipart import parse_form

    with pytest.raises(BadRequest) as caught:
        parse_form(content_type, body)
    assert words in caught.value.message


def test_forms_need_the_form_content_type():
    from functions.errors import UnsupportedMediaType
    from functions.multipart import parse_form

    with pytest.raises(UnsupportedMediaType):
        parse_form("application/json", b"{}")
    with pytest.raises(UnsupportedMediaType):
        parse_form(None, b"")

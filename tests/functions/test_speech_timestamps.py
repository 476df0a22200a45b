"""Whisper timestamps and recordings past 30 s, against transformers: the timestamp rules equal
WhisperTimeStampLogitsProcessor's on random logits and histories; the window-by-window decoding
equals ``generate(..., return_timestamps=True)`` (tokens and segment times) for short and long
recordings; the text and chunks equal the pipeline's (``_decode_asr``) through the Lambda handler
and the ASGI app; OpenAI's verbose_json segments, srt and vtt come from the same segments; bad
timestamp options get a clear 400.

The tiny Whisper (tests/tinymodels.py) has Whisper's 1501 timestamp tokens; each test that decodes
with timestamps asserts that timestamps were actually produced, so the rules are exercised."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from functions.app import build_app
from functions.audio import decode_audio, log_mel, read_features, resample
from functions.settings import AudioLimits
from tests.functions.conftest import call
from tests.functions.eventfiles import make_event
from tests.functions.servers import serving
from tests.functions.test_speech import RATE, _encode, _form, _tone

PREDICT, TRANSCRIBE = "/models/tiny-whisper/predict", "/v1/audio/transcriptions"
LIMITS = AudioLimits(max_bytes=1 << 24, max_seconds=120.0)
_noise = np.random.default_rng(7)
RECORDINGS = {
    "tone-5s": _encode(_tone(5.0), subtype="PCM_16"),
    "noise-stereo-44k": _encode(_noise.normal(0, 0.1, (44_100, 2)), 44_100, subtype="PCM_16"),
    # Past one window: a tone, then noise, then a chirp (two windows or more).
    "long-41s-flac": _encode(np.concatenate([_tone(12.0), _noise.normal(0, 0.1, 17 * RATE),
                                             0.3 * np.sin(2 * np.pi * (200 + 40 * np.arange(12 * RATE) / RATE)
                                                          * np.arange(12 * RATE) / RATE)]).astype(np.float32),
                             fmt="FLAC"),
}


@pytest.fixture(scope="module")
def speech_bundle(tiny_speech_bundle):
    return tiny_speech_bundle(quantization="none")


@pytest.fixture(scope="module")
def model(speech_bundle):
    from functions.speech import SpeechModel

    return SpeechModel(speech_bundle, threads=1, max_batch=1, max_tokens=None)


@pytest.fixture(scope="module")
def torch_whisper(tiny_whisper_dir):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(str(tiny_whisper_dir)).eval()


@pytest.fixture
def whisper(load_handler, speech_bundle):
    return load_handler(speech_bundle, MODELFN_MAX_AUDIO_SECONDS=60, MODELFN_MAX_AUDIO_BYTES=4_000_000)


def _samples(name: str) -> np.ndarray:
    samples, rate = decode_audio(RECORDINGS[name], name, LIMITS)
    return resample(samples, rate, RATE)


def _timestamps(model, tokens) -> list[int]:
    return [t for t in tokens if t >= model.timestamp_begin]


# -- the timestamp rules -----------------------------------------------------------------------------

def test_timestamp_rules_equal_the_logits_processor(model):
    """Random logits after random histories (text, specials, single and paired timestamps, the first
    step): the masked logits are WhisperTimeStampLogitsProcessor's, -inf for -inf."""
    import torch
    from transformers import GenerationConfig
    from transformers.generation.logits_process import WhisperTimeStampLogitsProcessor

    config = model.config
    begin, vocab = model.timestamp_begin, model.tokenizer.get_vocab_size()
    prompt = model.prompt_ids("en", timestamps=True)
    processor = WhisperTimeStampLogitsProcessor(GenerationConfig(
        no_timestamps_token_id=config.no_timestamps_token_id, eos_token_id=model.eot,
        max_initial_timestamp_index=config.max_initial_timestamp_index), begin_index=len(prompt))
    rng = np.random.default_rng(11)
    kinds = {"masked-text": 0, "masked-stamps": 0}
    for case in range(300):
        history = []
        for _ in range(int(rng.integers(0, 8))):
            history.append(int(rng.integers(begin, vocab)) if rng.random() < 0.5 else int(rng.integers(0, begin)))
        if case % 3 == 0 and history:  # timestamps that never decrease, as decoding makes them
            stamps = iter(sorted(t for t in history if t >= begin))
            history = [next(stamps) if t >= begin else t for t in history]
        # Scales from flat to peaked, so each side of the summed-probability rule wins sometimes.
        logits = (rng.normal(0, [0.1, 1.0, 5.0][case % 3], vocab)).astype(np.float32)
        ours = logits.copy()
        model._timestamp_rules(ours, history)
        theirs = processor(torch.tensor([prompt + history]), torch.from_numpy(logits[None].copy()))[0].numpy()
        np.testing.assert_array_equal(ours, theirs, err_msg=f"history {history}")
        kinds["masked-text"] += bool(np.isneginf(ours[:begin]).all())
        kinds["masked-stamps"] += bool(np.isneginf(ours[begin:]).all())
    assert min(kinds.values()) > 10, kinds  # both branches of the rules ran


# -- decoding against generate -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tone-5s", "noise-stereo-44k"])
def test_timestamp_tokens_and_segments_equal_generate(model, torch_whisper, name):
    """Within 30 s: generate(return_timestamps=True)'s tokens and segment times, with the language
    detected and given; timestamps do appear."""
    import torch

    features = read_features(RECORDINGS[name], name, LIMITS)
    for language in (None, "fr"):
        segments, lang = model.transcribe(features, language=language, timestamps=True)
        tokens = [t for s in segments for t in s.tokens]
        with torch.inference_mode():
            ref = torch_whisper.generate(torch.from_numpy(features[None]), return_timestamps=True,
                                         return_segments=True, language=language)
        assert tokens == ref["sequences"][0].tolist(), (name, language)
        assert [t for s in segments for t in (s.start, s.end)] == pytest.approx(
            [float(r[k]) for r in ref["segments"][0] for k in ("start", "end")], abs=1e-9)
        assert len(_timestamps(model, tokens)) >= 4 and any(t < model.timestamp_begin for t in tokens)
        if language:
            assert model._language_of[lang] == language


def test_without_timestamps_no_timestamp_is_decoded(model, torch_whisper):
    """The default stays text without timestamps (<|notimestamps|> in the prompt), equal to generate."""
    import torch

    features = read_features(RECORDINGS["tone-5s"], "tone", LIMITS)
    segments, _ = model.transcribe(features, max_new_tokens=16, timestamps=False)
    tokens = [t for s in segments for t in s.tokens]
    with torch.inference_mode():
        ref = torch_whisper.generate(torch.from_numpy(features[None]), max_new_tokens=16)[0].tolist()
    assert tokens == ref and len(tokens) == 16 and not _timestamps(model, tokens)


def test_long_recording_equals_generate_long_form(model, torch_whisper):
    """Past 30 s: features over the whole recording equal the extractor's (padding="longest",
    truncation=False), and the window-by-window tokens and segments equal generate's long form."""
    import torch
    from transformers import WhisperFeatureExtractor

    samples = _samples("long-41s-flac")
    features = log_mel(samples, n_samples=len(samples))
    extractor = WhisperFeatureExtractor(feature_size=80)
    theirs = extractor(samples, sampling_rate=RATE, truncation=False, padding="longest",
                       return_tensors="np").input_features[0]
    assert features.shape == theirs.shape == (80, len(samples) // 160)
    np.testing.assert_allclose(features, theirs, atol=1e-4, rtol=0)
    segments, _ = model.transcribe(features, timestamps=False)  # forced on past one window
    with torch.inference_mode():
        ref = torch_whisper.generate(torch.from_numpy(features[None]), return_timestamps=True, return_segments=True)
    tokens = [t for s in segments for t in s.tokens]
    assert tokens == ref["sequences"][0].tolist()
    assert [t for s in segments for t in (s.start, s.end)] == pytest.approx(
        [float(r[k]) for r in ref["segments"][0] for k in ("start", "end")], abs=1e-9)
    assert max(s.seek for s in segments) > 0 and len(_timestamps(model, tokens)) >= 4


def test_a_long_recording_stops_with_a_504_when_the_next_window_would_not_fit(model):
    """Past one window, each next window is checked against the request's deadline (here one that is
    spent once the first window is done): a clear TimedOut, not a Lambda killed mid-decode."""
    from functions.deadline import Deadline, scope
    from functions.errors import TimedOut

    ticks = iter([0.0])
    deadline = Deadline(100.0, clock=lambda: next(ticks, 1e9))  # 100 s, then time jumps past it
    samples = _samples("long-41s-flac")
    with scope(deadline), pytest.raises(TimedOut, match="transcribing from"):
        model.transcribe(log_mel(samples, n_samples=len(samples)))
    ticks = iter([0.0])
    with scope(Deadline(100.0, clock=lambda: next(ticks, 1e9))):  # one window: nothing left to check
        assert model.transcribe(read_features(RECORDINGS["tone-5s"], "tone", LIMITS), timestamps=False)[0]


# -- the pipeline's answers through both adapters ----------------------------------------------------

@pytest.fixture(scope="module")
def pipeline_answers(tiny_whisper_dir):
    """The pipeline (greedy, as modelfn decodes) on each recording, with and without timestamps;
    the long one as the pipeline takes it without chunk_length_s (long-form generate)."""
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(tiny_whisper_dir), device="cpu")
    answers = {}
    for name in ("tone-5s", "long-41s-flac"):
        samples = _samples(name)
        for timestamps in (False, True):
            out = asr({"raw": samples, "sampling_rate": RATE}, return_timestamps=timestamps,
                      generate_kwargs={"num_beams": 1})
            if timestamps:  # JSON has lists, not tuples
                out = {"text": out["text"], "chunks": [{"text": c["text"], "timestamp": list(c["timestamp"])}
                                                       for c in out["chunks"]]}
            answers[name, timestamps] = out
    return answers


@pytest.mark.parametrize("name", ["tone-5s", "long-41s-flac"])
def test_predict_answers_equal_the_pipeline(whisper, pipeline_answers, name):
    client = TestClient(build_app(whisper.load()), raise_server_exceptions=False)
    data = RECORDINGS[name]
    kind = "audio/flac" if data[:4] == b"fLaC" else "audio/wav"
    body = json.dumps({"inputs": base64.b64encode(data).decode(), "parameters": {"return_timestamps": True}})
    status, answer, _ = call(whisper, make_event("POST", PREDICT, body, version=2))
    response = client.post(PREDICT, content=body, headers={"content-type": "application/json"})
    expected = pipeline_answers[name, True]
    assert status == response.status_code == 200 and answer == response.json() == expected, answer
    assert len(expected["chunks"]) >= 2 and all(c["timestamp"][0] is not None for c in expected["chunks"])
    # Without timestamps: the raw body, the text only (a long recording is still decoded with them).
    status, answer, _ = call(whisper, make_event("POST", PREDICT, data, version=1, content_type=kind,
                                                 base64_body=True))
    assert status == 200 and answer == pipeline_answers[name, False]


def test_pipeline_text_equals_decode_asr_on_crafted_tokens(model, tiny_whisper_dir):
    """The state machine on token runs a short recording rarely produces: a window restart after a
    single-timestamp ending, a repeated start, a language token, text after the last timestamp."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_whisper_dir))
    b, en, fr = model.timestamp_begin, model.language_id("en"), model.language_id("fr")
    runs = [
        [b, 72, 105, b + 50, b + 50, 33, b + 80],  # pair, then a single ending
        [b + 5, 72, b + 40, b + 40, 105, b + 90, b + 3, 65, b + 9],  # a new window after a single ending
        [b + 5, 72, b + 40, b + 40, 105, b + 90, b + 90, b + 2, 65, b + 9],  # after a pair
        [b, 72, b, 73, b + 10, en, 74, fr, 75],  # a repeated start, languages, leftover text
        [72, 73, fr, en, 74],  # no timestamps at all
    ]
    for tokens in runs:
        for timestamps in (False, True):
            text, chunks = model.pipeline_text(tokens, timestamps=timestamps)
            their_text, optional = tok._decode_asr([{"tokens": np.array([tokens])}], return_timestamps=timestamps,
                                                   return_language=False, time_precision=0.02)
            assert text == their_text, tokens
            if timestamps:
                assert [(c["text"], tuple(c["timestamp"])) for c in chunks] == \
                    [(c["text"], c["timestamp"]) for c in optional["chunks"]], tokens


# -- OpenAI's timed formats --------------------------------------------------------------------------

def test_verbose_json_srt_and_vtt_from_the_openai_client(whisper, model):
    import openai

    features = read_features(RECORDINGS["tone-5s"], "tone", LIMITS)
    segments, _ = model.transcribe(features, timestamps=True)
    text, _ = model.pipeline_text([t for s in segments for t in s.tokens], timestamps=True)
    with serving(build_app(whisper.load()), lifespan="off") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
        verbose = client.audio.transcriptions.create(model="tiny-whisper", file=("a.wav", RECORDINGS["tone-5s"]),
                                                     response_format="verbose_json",
                                                     timestamp_granularities=["segment"])
        assert verbose.text == text and verbose.duration == 5.0
        got = [(s.start, s.end, s.seek, list(s.tokens)) for s in verbose.segments]
        assert got == [(round(s.start, 3), round(s.end, 3), s.seek, list(s.tokens)) for s in segments]
        assert [s.text for s in verbose.segments] == [model.decode(list(s.tokens)) for s in segments]
        srt = client.audio.transcriptions.create(model="tiny-whisper", file=("a.wav", RECORDINGS["tone-5s"]),
                                                 response_format="srt")
        vtt = client.audio.transcriptions.create(model="tiny-whisper", file=("a.wav", RECORDINGS["tone-5s"]),
                                                 response_format="vtt")
        with pytest.raises(openai.BadRequestError, match="word"):
            client.audio.transcriptions.create(model="tiny-whisper", file=("a.wav", RECORDINGS["tone-5s"]),
                                               response_format="verbose_json", timestamp_granularities=["word"])
    blocks = srt.strip("\n").split("\n\n")
    assert len(blocks) == len(segments)
    first = segments[0]
    assert blocks[0].split("\n")[:2] == ["1", f"{_srt_clock(first.start)} --> {_srt_clock(first.end)}"]
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(segments)
    assert f"{_srt_clock(first.start).replace(',', '.')} --> {_srt_clock(first.end).replace(',', '.')}" in vtt


def _srt_clock(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


# -- the caller's mistakes ---------------------------------------------------------------------------

B64 = base64.b64encode(RECORDINGS["tone-5s"]).decode()
BAD = [
    ("word-timestamps", PREDICT, json.dumps({"inputs": B64, "parameters": {"return_timestamps": "word"}}),
     "application/json", 400, "word"),
    ("char-timestamps", PREDICT, json.dumps({"inputs": B64, "parameters": {"return_timestamps": "char"}}),
     "application/json", 400, "true or false"),
    ("too-long", PREDICT, _encode(np.zeros(61 * RATE, dtype=np.float32), fmt="FLAC"), "audio/flac", 413, "61.0 s"),
    ("word-granularity", TRANSCRIBE, *_form(RECORDINGS["tone-5s"], response_format="verbose_json",
                                            **{"timestamp_granularities[]": "word"}), 400, "word"),
    ("granularity-without-verbose", TRANSCRIBE, *_form(RECORDINGS["tone-5s"],
                                                       **{"timestamp_granularities[]": "segment"}), 400,
     "verbose_json"),
    ("unknown-granularity", TRANSCRIBE, *_form(RECORDINGS["tone-5s"], response_format="verbose_json",
                                               **{"timestamp_granularities[]": "sentence"}), 400, "segment"),
    ("unknown-format", TRANSCRIBE, *_form(RECORDINGS["tone-5s"], response_format="tsv"), 400, "response_format"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_timestamp_options_are_refused_by_both_adapters(whisper, case):
    _, path, body, content_type, expected, words = case
    body = body.encode() if isinstance(body, str) else body
    client = TestClient(build_app(whisper.load()), raise_server_exceptions=False)
    status, answer, _ = call(whisper, make_event("POST", path, body, version=2, content_type=content_type,
                                                 base64_body=True))
    response = client.post(path, content=body, headers={"content-type": content_type})
    assert status == response.status_code == expected and answer == response.json()
    assert words in answer["error"]["message"], answer

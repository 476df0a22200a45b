"""automatic-speech-recognition: Whisper-style encoder-decoder models, in transformers' pipeline shape.

A recording comes as the raw request body (``audio/*``) or as base64 in ``{"inputs": ...}``; each is
checked, decoded, resampled and turned into log-mel features by functions/audio.py, then decoded
greedily by functions/speech.SpeechModel. Each recording is answered ``{"text": ...}`` as the
pipeline answers it (a list of recordings with a list). Parameters: ``max_new_tokens`` (per 30 s
window), ``language`` (a code such as ``en`` or a name such as ``english``; default: the model's, or
detected), ``task`` (``transcribe`` or ``translate``), ``return_timestamps`` (``true``: segment-level
``"chunks": [{"text", "timestamp": [start, end]}]`` as the pipeline gives them; ``"word"`` (which
needs cross-attention alignment) is refused with a 400).

A recording longer than 30 s is transcribed as the pipeline does without ``chunk_length_s``:
Whisper's sequential long-form decoding (functions/speech.py), window after window from timestamps,
its features computed over the whole recording. Chosen over the pipeline's ``chunk_length_s``
chunking (overlapping windows merged by token overlap, which transformers itself calls experimental
for seq2seq models) because it is Whisper's own algorithm, decodes each stretch of audio once, and
equals ``generate``. The duration limit (``MODELFN_MAX_AUDIO_SECONDS``) is checked from the header
before anything is decoded.
/v1/audio/transcriptions (functions/transcriptions.py) serves the same model in OpenAI's shape.
"""

from __future__ import annotations

from ..errors import BadRequest
from ..settings import AudioLimits
from ..tasknames import AUTOMATIC_SPEECH_RECOGNITION
from . import AUDIO, TRANSCRIPTIONS_ROUTE, Prepared, register
from .params import check_known, get_int

TASKS = ("transcribe", "translate")

# A synthetic 25 ms 440 Hz tone, 8 kHz 16-bit mono WAV (made with soundfile from numpy), base64: the sample request.
SAMPLE_WAV = ("UklGRrQBAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YZABAAAAAAENehgNIbgl7SWmIWQZIg40ASL0duiT34ba59nJ3bbl"
              "v/CW/bYKkhbCHzElOia+IicbWRCdA3P2aurv4B/brNnC3AHkke4v+2AIkxRXHoUkYSa0I80cfxIBBs34c+xp4t7bmdne22nic+zN+AEG"
              "fxLNHLQjYSaFJFcekxRgCC/7ke4B5MLcrNkf2+/gaupz9p0DWRAnG74iOiYxJcIfkha2Cpb9v/C25cnd59mG2pPfdugi9DQBIg5kGaYh"
              "7SW4JQ0hehgBDQAA/vKF5/LeR9oS2lnem+bd8cv+3QuJF2wgeSUYJjYiSRpAD2kCSfVt6T3gztrF2UHd2OSm72L8jAmVFRAf4CRTJj0j"
              "/htuEdAEn/ds66jhetue2UvcMuOA7f75MgeME5YdISRmJiEklh2MEzIH/vmA7TLjS9ye2XrbqOFs65/30ARuEf4bPSNTJuAkEB+VFYwJ"
              "Yvym79jkQd3F2c7aPeBt6Un1aQJAD0kaNiIYJnklbCCJF90Ly/7d8ZvmWd4S2kfa8t6F5/7y")


def parse_params(raw: dict) -> dict:
    """The pipeline's parameters: max_new_tokens, language, task, return_timestamps (true or false)."""
    check_known(raw, ("max_new_tokens", "language", "task", "return_timestamps"))
    timestamps = raw.get("return_timestamps")
    if timestamps == "word":
        raise BadRequest("parameters.return_timestamps \"word\" is not supported: modelfn times segments, "
                         "not words (that needs the decoder's cross-attention)", hint="use return_timestamps: true")
    if timestamps is not None and not isinstance(timestamps, bool):
        raise BadRequest("parameters.return_timestamps must be true or false")
    language = raw.get("language")
    if language is not None and (not isinstance(language, str) or not language.strip()):
        raise BadRequest("parameters.language must be a language code such as \"en\" (or a name)")
    task = raw.get("task")
    if task is not None and task not in TASKS:
        raise BadRequest(f"parameters.task must be one of {', '.join(TASKS)}")
    return {"max_new_tokens": get_int(raw, "max_new_tokens", None, lo=1, hi=100_000), "language": language,
            "task": task, "return_timestamps": bool(timestamps)}


def check_options(model, params: dict) -> None:
    """Refuse, before any audio is decoded, options this bundle cannot honour."""
    if params["language"] is not None:
        model.language_id(params["language"])
    if params["task"] is not None and params["task"] not in model.config.task_to_id:
        raise BadRequest(f"this model does not {params['task']}", hint="leave parameters.task out")
    most = model.limits.max_tokens
    if params["max_new_tokens"] is not None and params["max_new_tokens"] > most:
        raise BadRequest(f"parameters.max_new_tokens must be at most {most} for this model")
    if params.get("return_timestamps") and not model.has_timestamps:
        raise BadRequest("this model has no timestamp tokens", hint="leave return_timestamps out")


def features(model, item, limits: AudioLimits):
    """(input features, seconds of audio) of one request recording (functions/audio.py, with the bundle's
    settings): one 30 s window, or the whole recording when it is longer (the pipeline's long-form input)."""
    from ..audio import audio_bytes, decode_audio, log_mel, resample  # soundfile: speech models' images only

    c = model.config
    samples, rate = decode_audio(audio_bytes(item.data, item.where, limits), item.where, limits)
    seconds = len(samples) / rate
    samples = resample(samples, rate, c.sampling_rate)
    if len(samples) > c.n_samples and not model.has_timestamps:
        raise BadRequest(f"{item.where} is {seconds:.1f} s long; this model has no timestamp tokens, so it takes "
                         f"at most {c.n_samples / c.sampling_rate:g} s", hint="split the recording")
    return log_mel(samples, n_mels=c.n_mels, n_fft=c.n_fft, hop_length=c.hop_length,
                   n_samples=max(c.n_samples, len(samples)), sampling_rate=c.sampling_rate), seconds


def prepare(model, items: list, params: dict) -> Prepared:
    """Each recording's feed for SpeechModel.run (its features and the request's decoding options);
    ``extra`` holds each recording's seconds."""
    check_options(model, params)
    limits = AudioLimits.resolve()
    # Per window; without one, generate's bound (max_length less the prompt) unless models.yaml caps it.
    max_new = params["max_new_tokens"] or model.token_cap
    feeds, seconds = [], []
    # One recording per feed, decoded one at a time: only its features are held, never the samples.
    for item in items:
        feed, duration = features(model, item, limits)
        feeds.append({"input_features": feed, "language": params["language"], "task": params["task"],
                      "max_new_tokens": max_new, "return_timestamps": params.get("return_timestamps", False)})
        seconds.append(duration)
    return Prepared(feeds=feeds, tokens=0, extra=seconds)


def _openai_routes(runtime) -> tuple[str, ...]:
    return (TRANSCRIPTIONS_ROUTE,)


@register(AUTOMATIC_SPEECH_RECOGNITION, inputs=AUDIO, parse_params=parse_params, preprocess=prepare,
          synonyms=("asr", "speech-recognition", "speech-to-text", "transcription"),
          params_schema={"max_new_tokens": {"type": "integer", "minimum": 1},
                         "language": {"type": "string", "description": "a language code such as \"en\""},
                         "task": {"enum": list(TASKS)},
                         "return_timestamps": {"type": "boolean"}},
          openai_routes=_openai_routes, sample={"inputs": SAMPLE_WAV})
def postprocess(model, prepared: Prepared, outputs: list[dict], params: dict) -> list:
    """{"text"} per recording, with {"chunks"} when timestamps were asked for (the pipeline's answer)."""
    answers = []
    for out in outputs:
        text, chunks = model.pipeline_text(out["tokens"], timestamps=params.get("return_timestamps", False))
        answers.append({"text": text, "chunks": chunks} if params.get("return_timestamps") else {"text": text})
    return answers

"""POST /v1/audio/transcriptions: OpenAI's transcription API as an adapter over the
automatic-speech-recognition task.

The body is multipart/form-data (functions/multipart.py): ``file`` (the recording), ``model``,
and optionally ``language`` (a code such as ``en``, or a name), ``response_format`` (``json``: ``{"text"}``;
``text``: the bare text; ``verbose_json``: adds ``task``, ``language`` (its name, e.g. ``english``),
``duration`` and ``segments``; ``srt`` and ``vtt``: the segments as subtitles),
``timestamp_granularities[]`` (``segment`` only, with verbose_json; ``word`` is a 400: word timing
needs the decoder's cross-attention, which modelfn does not align) and ``temperature`` (0 only:
decoding is greedy). Other OpenAI fields (``prompt``, ``stream``) are refused with a 400 rather
than ignored. The task (functions/tasks/speech_recognition.py) decodes and transcribes; json and
text answers are the predict route's text for the same recording. The timed formats decode with
timestamps, as Whisper does for them, and their segments are Whisper's own (generate's, start and
end from each window's position), as OpenAI's are; a segment's text is its text tokens' decoding.
"""

from __future__ import annotations

from typing import Callable

from .errors import BadRequest, NotFound
from .inputs import AudioInput, shown
from .multipart import FormPart
from .tasknames import AUTOMATIC_SPEECH_RECOGNITION
from .tasks import Prepared, get_task

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
_TIMED = ("verbose_json", "srt", "vtt")
_GRANULARITIES = ("timestamp_granularities[]", "timestamp_granularities")
_FIELDS = ("file", "model", "language", "response_format", "temperature", *_GRANULARITIES)
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
VTT_MEDIA_TYPE = "text/vtt; charset=utf-8"


def _clock(seconds: float, separator: str) -> str:
    """hh:mm:ss,mmm (SRT) or hh:mm:ss.mmm (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}{separator}{millis % 1000:03d}"


def subtitles(segments: list[dict], fmt: str) -> str:
    """SRT or WebVTT text of verbose_json segments (start, end, text)."""
    if fmt == "srt":
        return "".join(f"{i}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{s['text'].strip()}\n\n"
                       for i, s in enumerate(segments, 1))
    return "WEBVTT\n\n" + "".join(f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{s['text'].strip()}\n\n"
                                   for s in segments)


class OpenAITranscriptions:
    """The /v1/audio/transcriptions route of one loaded speech-recognition model."""

    def __init__(self, model, served_name: str):
        self.model = model
        self.name = served_name
        self.task = get_task(AUTOMATIC_SPEECH_RECOGNITION)

    def begin(self, form: dict[str, FormPart]) -> tuple[Prepared, Callable[[Prepared, list[dict]], tuple[object, str | None]]]:
        """The form validated and its recording featurized, and the function that answers it from the
        outputs: (payload, media type; None for JSON)."""
        unknown = sorted(set(form) - set(_FIELDS))
        if unknown:
            raise BadRequest(f"unsupported field {shown(unknown[0])}", hint="fields: " + ", ".join(_FIELDS))
        if "file" not in form:
            raise BadRequest("\"file\" is required: the recording to transcribe")
        requested = form["model"].text() if "model" in form else None
        if requested is not None and requested != self.name:
            raise NotFound(f"no model named {shown(requested)} here", hint=f"this function serves {self.name!r}")
        fmt = form["response_format"].text() if "response_format" in form else "json"
        if fmt not in FORMATS:
            raise BadRequest(f"response_format must be one of {', '.join(FORMATS)}, got {shown(fmt)}")
        if "temperature" in form:
            try:
                temperature = float(form["temperature"].text())
            except ValueError:
                raise BadRequest(f"temperature must be a number, got {shown(form['temperature'].text())}") from None
            if temperature != 0.0:
                raise BadRequest("temperature must be 0: transcription here is greedy")
        for name in _GRANULARITIES:
            if name in form:
                granularity = form[name].text()
                if granularity == "word":
                    raise BadRequest("timestamp_granularities word is not supported: modelfn times segments, not "
                                     "words (that needs the decoder's cross-attention)", hint="use segment")
                if granularity != "segment":
                    raise BadRequest(f"{name} must be segment, got {shown(granularity)}")
                if fmt != "verbose_json":
                    raise BadRequest(f"{name} needs response_format verbose_json")
        language = form["language"].text() if "language" in form else None
        raw = {"return_timestamps": True} if fmt in _TIMED else {}
        params = self.task.parse_params(raw if language is None else {**raw, "language": language})
        recording = form["file"].data
        if not recording:
            raise BadRequest("\"file\" is empty", hint="send a WAV, FLAC, OGG or MP3 recording")
        prepared = self.task.preprocess(self.model, [AudioInput(recording, "file")], params)

        def finish(prepared: Prepared, outputs: list[dict]) -> tuple[object, str | None]:
            text = self.task.postprocess(self.model, prepared, outputs, params)[0]["text"]
            if fmt == "text":
                return text, TEXT_MEDIA_TYPE
            if fmt in _TIMED:
                segments = [{"id": i, "seek": s.seek, "start": round(s.start, 3), "end": round(s.end, 3),
                             "text": self.model.decode(list(s.tokens)), "tokens": list(s.tokens), "temperature": 0.0}
                            for i, s in enumerate(outputs[0]["segments"])]
                if fmt != "verbose_json":
                    return subtitles(segments, fmt), TEXT_MEDIA_TYPE if fmt == "srt" else VTT_MEDIA_TYPE
                code = outputs[0].get("language") or ""
                # OpenAI names the language ("english"), as Whisper's tokenizer does.
                return {"task": "transcribe", "language": self.model.config.language_names.get(code, code),
                        "duration": round(float(prepared.extra[0]), 3), "text": text, "segments": segments}, None
            return {"text": text}, None

        return prepared, finish


__all__ = ["FORMATS", "OpenAITranscriptions", "TEXT_MEDIA_TYPE", "VTT_MEDIA_TYPE", "subtitles"]

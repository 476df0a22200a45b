"""POST /v1/audio/transcriptions: OpenAI's transcription API as an adapter over the
automatic-speech-recognition task.

The body is multipart/form-data (functions/multipart.py): ``file`` (the recording), ``model``,
and optionally ``language`` (a code such as ``en``, or a name), ``response_format`` (``json``: ``{"text"}``;
``text``: the bare text; ``verbose_json``: adds ``task``, ``language`` (its name, e.g. ``english``) and
``duration``, without
segments, as modelfn does not decode timestamps) and ``temperature`` (0 only: decoding is greedy).
Other OpenAI fields (``prompt``, ``timestamp_granularities[]``, ``stream``, other formats) are refused
with a 400 rather than ignored. The task (functions/tasks/speech_recognition.py) decodes and
transcribes; the answer text is the predict route's for the same recording.
"""

from __future__ import annotations

from typing import Callable

from .errors import BadRequest, NotFound
from .inputs import AudioInput, shown
from .multipart import FormPart
from .tasknames import AUTOMATIC_SPEECH_RECOGNITION
from .tasks import Prepared, get_task

FORMATS = ("json", "text", "verbose_json")
_FIELDS = ("file", "model", "language", "response_format", "temperature")
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"


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
        language = form["language"].text() if "language" in form else None
        params = self.task.parse_params({} if language is None else {"language": language})
        recording = form["file"].data
        if not recording:
            raise BadRequest("\"file\" is empty", hint="send a WAV, FLAC, OGG or MP3 recording")
        prepared = self.task.preprocess(self.model, [AudioInput(recording, "file")], params)

        def finish(prepared: Prepared, outputs: list[dict]) -> tuple[object, str | None]:
            text = self.task.postprocess(self.model, prepared, outputs, params)[0]["text"]
            if fmt == "text":
                return text, TEXT_MEDIA_TYPE
            if fmt == "verbose_json":
                code = outputs[0].get("language") or ""
                # OpenAI names the language ("english"), as Whisper's tokenizer does.
                return {"task": "transcribe", "language": self.model.config.language_names.get(code, code),
                        "duration": round(float(prepared.extra[0]), 3), "text": text, "segments": []}, None
            return {"text": text}, None

        return prepared, finish


__all__ = ["FORMATS", "OpenAITranscriptions", "TEXT_MEDIA_TYPE"]

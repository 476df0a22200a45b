"""The HTTP API of one model, free of any web framework: built once, called per request.

    POST /models/{name}/predict   -> ModelService.predict(name, content_type, body)
    POST /v1/embeddings           -> ModelService.embeddings(content_type, body)
    GET  /models/{name}           -> ModelService.info(name)
    GET  /health                  -> ModelService.health()
    GET  /v1/models               -> ModelService.models()
    POST /v1/chat/completions     -> ModelService.chat_completions(content_type, body)   (text-generation)
    POST /v1/completions          -> ModelService.completions(content_type, body)        (text-generation)
    POST /v1/audio/transcriptions -> ModelService.transcriptions(content_type, body)     (speech recognition)
    /models/{name}/v1/...         -> the /v1/... operation above, after ModelService.check_name(name)

Each method takes what the route carries (path parameter, Content-Type header, raw body bytes) and
returns an :class:`Answer`, or raises a RequestError that functions.http.render_error turns into
the error body. An answer with ``stream`` set (``stream: true`` on the generation routes) is
served as ``text/event-stream``: each string it yields is one server-sent event. The adapters
(functions/handler.py for API Gateway events, functions/app.py for ASGI) only route, call and
encode, so both answer identically; tests/functions/test_adapters.py and
tests/functions/test_generation_adapters.py hold them to that. A text-generation bundle is served
by a functions.generation.GenerationModel (onnxruntime-genai) in place of the encoder LoadedModel.
predict and embeddings are also split at the session for the GPU server's batch scheduler
(functions/batching.py): ``begin_predict`` / ``begin_embeddings`` parse, validate and tokenize into
a :class:`Pending`; ``Pending.finish`` post-processes the outputs of its run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from .deadline import UNBOUNDED, Deadline, RunRate, current, request_scope
from .errors import NotFound
from .inputs import (check_body_size, check_content_type, check_model_name, parse_items, parse_json, parse_predict,
                     read_predict_body)
from .manifest import read_manifest
from .clip import CLIP_TASKS, ClipModel
from .model import LoadedModel
from .settings import Settings
from .tasknames import AUTOMATIC_SPEECH_RECOGNITION, TEXT_GENERATION
from .openai import OpenAIEmbeddings
from .tasks import CHAT_ROUTE, COMPLETIONS_ROUTE, EMBEDDINGS_ROUTE, TRANSCRIPTIONS_ROUTE, Prepared, get_task


class Answer(NamedTuple):
    """A successful answer, and what it cost (batch size, token count) for the metrics."""

    status: int
    payload: Any
    batch: int | None = None
    tokens: int | None = None
    stream: Iterator[str] | None = None  # server-sent events, sent as they are produced
    media_type: str | None = None  # a payload that is already text of this type (None: JSON)


@dataclass
class Pending:
    """A request parsed and tokenized, waiting for the session: what a batch scheduler queues.

    ``prepared.feeds`` are the request's own feeds; a scheduler that ran its rows inside larger
    batches passes the feeds it actually ran (the request's rows of each batch) to :meth:`finish`
    with the matching outputs, so post-processing sees a consistent (feed, output) pair either way.
    """

    prepared: Prepared
    _finish: Callable[[Prepared, list[dict]], Answer]
    # The request's time budget (functions/deadline.py) and the model's measured run rate, which
    # :meth:`run` checks before each session run; a batch scheduler keeps its own limits.
    deadline: Deadline = field(default=UNBOUNDED)
    rate: RunRate | None = None

    def finish(self, outputs: list[dict], feeds: list[dict] | None = None) -> Answer:
        """Post-process the outputs of ``feeds`` (default: the request's own feeds) into the answer."""
        prepared = self.prepared if feeds is None else replace(self.prepared, feeds=feeds)
        return self._finish(prepared, outputs)

    def run(self, model: LoadedModel) -> Answer:
        """Run the request's own feeds inline and answer (Lambda and the plain ASGI app).

        Before each run its time is estimated from the last measured rate; a run that would not
        finish within the request's deadline is refused with a 504 instead of being started.
        """
        outputs, clock = [], self.deadline.clock
        for feed in self.prepared.feeds:
            units, kind = _units(feed), tuple(feed)
            if self.rate is not None:
                self.deadline.check(self.rate.estimate(units, kind), f"running the model on {units} tokens")
            started = clock()
            outputs.append(model.run(feed))
            if self.rate is not None:
                self.rate.observe(units, clock() - started, kind)
        return self.finish(outputs)


def _units(feed: dict) -> int:
    """The work in one feed: its padded token count (rows x length), else its rows (images)."""
    ids = feed.get("input_ids")
    if ids is not None:
        return int(ids.size)
    first = next(iter(feed.values()), None)
    shape = getattr(first, "shape", None)
    return int(shape[0]) if shape else 1


class ModelService:
    """A loaded model bundle and the four operations of the API over it."""

    def __init__(self, model: LoadedModel, settings: Settings):
        self.model = model
        self.settings = settings
        self.task = get_task(model.manifest.task)
        self.name: str = settings.name or model.manifest.name
        self.version = settings.version
        self.openai_routes = self.task.openai_routes(model.manifest.runtime)
        self.rate = RunRate()  # seconds per token of the last session run: what a new run is estimated at
        self._embeddings = OpenAIEmbeddings(model, self.name) if EMBEDDINGS_ROUTE in self.openai_routes else None
        self._generation = None
        self._transcriptions = None
        if TRANSCRIPTIONS_ROUTE in self.openai_routes:
            from .transcriptions import OpenAITranscriptions

            self._transcriptions = OpenAITranscriptions(model, self.name)
        if CHAT_ROUTE in self.openai_routes or COMPLETIONS_ROUTE in self.openai_routes:
            from .generation import OpenAIGeneration  # onnxruntime-genai and jinja2: generation images only

            self._generation = OpenAIGeneration(model, self.name)
        self._models = Answer(200, {"object": "list", "data": [{
            "id": self.name, "object": "model", "created": _epoch(model.manifest.created_at), "owned_by": "modelfn"}]})
        self._info = Answer(200, _model_info(model, self.name, settings))
        self._health = Answer(200, {"status": "ok", "model": self.name, "version": settings.version})

    @classmethod
    def load(cls, bundle_dir: str | Path | None = None, *, name: str | None = None, version: str | None = None,
             max_batch: int | None = None, max_tokens: int | None = None,
             truncate: bool | None = None, provider: str = "cpu", max_rows: int | None = None) -> "ModelService":
        """Load the bundle (session + tokenizer) once.

        Each setting resolves as: this argument, then its MODELFN_* environment variable, then the
        default (bundle: $LAMBDA_TASK_ROOT/model or ./model; name: the manifest's; max_batch 32;
        max_tokens: the bundle's max_length; truncate: true). ``provider`` and ``max_rows``: see
        LoadedModel (Lambda keeps the defaults). Raises BundleError for a bad bundle.
        """
        settings = Settings.resolve(bundle_dir, name=name, version=version, max_batch=max_batch,
                                    max_tokens=max_tokens, truncate=truncate)
        manifest = read_manifest(settings.bundle_dir)
        if manifest.task == TEXT_GENERATION:  # onnxruntime-genai's model, not an encoder session
            from .generation import GenerationModel

            model = GenerationModel(settings.bundle_dir, threads=settings.threads, max_batch=settings.max_batch,
                                    max_tokens=settings.max_tokens, manifest=manifest, provider=provider)
            return cls(model, settings)
        if manifest.task == AUTOMATIC_SPEECH_RECOGNITION:  # an encoder and a decoder loop, not one session
            from .speech import SpeechModel

            model = SpeechModel(settings.bundle_dir, threads=settings.threads, max_batch=settings.max_batch,
                                max_tokens=settings.max_tokens, manifest=manifest, provider=provider)
            return cls(model, settings)
        # CLIP: one session per tower (functions/clip.py)
        loader = ClipModel if manifest.task in CLIP_TASKS else LoadedModel
        model = loader(settings.bundle_dir, threads=settings.threads, max_batch=settings.max_batch,
                       max_tokens=settings.max_tokens, truncate=settings.truncate, provider=provider,
                       max_rows=max_rows, manifest=manifest)
        return cls(model, settings)

    @property
    def log_inputs(self) -> bool:
        return self.settings.log_inputs

    @property
    def max_body_bytes(self) -> int:
        """Adapters refuse a larger body (413) before reading or decoding it; predict and embeddings check again."""
        return self.settings.max_body_bytes

    def predict(self, name: str, content_type: str | None, body: bytes) -> Answer:
        with request_scope(self.settings.time_budget_ms):
            return self.begin_predict(name, content_type, body).run(self.model)

    def begin_predict(self, name: str, content_type: str | None, body: bytes) -> Pending:
        """predict up to the session: parsed, validated and tokenized. The body is JSON, or for a task
        whose input kind takes raw media (an image model), the media itself."""
        check_model_name(name, self.name)
        check_body_size(len(body), self.max_body_bytes)
        return self._begin_predict(*read_predict_body(self.task.inputs, content_type, body))

    def begin_predict_json(self, data: dict) -> Pending:
        """:meth:`begin_predict` for a body already decoded (and its route already checked)."""
        return self._begin_predict(*parse_predict(data))

    def _begin_predict(self, inputs: Any, raw_params: dict) -> Pending:
        task, model = self.task, self.model
        params = task.parse_params(raw_params)
        items, single = parse_items(inputs, task.inputs, model.limits.max_batch)
        prepared = task.preprocess(model, items, params)

        def finish(prepared: Prepared, outputs: list[dict]) -> Answer:
            results = task.postprocess(model, prepared, outputs, params)
            shaped = task.shape(results, single, params) if task.shape else (results[0] if single else results)
            return Answer(200, shaped, len(items), prepared.tokens)

        return Pending(prepared, finish, current(), self.rate)

    def embeddings(self, content_type: str | None, body: bytes) -> Answer:
        with request_scope(self.settings.time_budget_ms):
            return self.begin_embeddings(content_type, body).run(self.model)

    def begin_embeddings(self, content_type: str | None, body: bytes) -> Pending:
        """embeddings up to the session: parsed, validated and tokenized."""
        self._check_embeddings()
        check_content_type(content_type)
        check_body_size(len(body), self.max_body_bytes)
        return self.begin_embeddings_json(parse_json(body))

    def begin_embeddings_json(self, data: dict) -> Pending:
        """:meth:`begin_embeddings` for a body already decoded."""
        self._check_embeddings()
        prepared, finish = self._embeddings.begin(data)

        def answer(prepared: Prepared, outputs: list[dict]) -> Answer:
            payload, batch, tokens = finish(prepared, outputs)
            return Answer(200, payload, batch, tokens)

        return Pending(prepared, answer, current(), self.rate)

    @property
    def embedding_width(self) -> int | None:
        """The width of /v1/embeddings vectors (the largest ``dimensions``), when the graph declares it."""
        return self._embeddings.dimension if self._embeddings is not None else None

    def _check_embeddings(self) -> None:
        if self._embeddings is None:
            raise NotFound(f"model {self.name!r} is a {self.task.name} model; /v1/embeddings serves embedding models",
                           hint=f"use POST /models/{self.name}/predict")

    def chat_completions(self, content_type: str | None, body: bytes) -> Answer:
        """OpenAI chat completions (text-generation models with a chat template)."""
        generation = self._generation_routes("/v1/chat/completions")
        check_content_type(content_type)
        check_body_size(len(body), self.max_body_bytes)
        with request_scope(self.settings.time_budget_ms):  # the generation keeps the deadline it starts under
            return _generated(generation.chat(parse_json(body)))

    def completions(self, content_type: str | None, body: bytes) -> Answer:
        """OpenAI (legacy) completions of a raw prompt (text-generation models)."""
        generation = self._generation_routes("/v1/completions")
        check_content_type(content_type)
        check_body_size(len(body), self.max_body_bytes)
        with request_scope(self.settings.time_budget_ms):
            return _generated(generation.completions(parse_json(body)))

    def transcriptions(self, content_type: str | None, body: bytes) -> Answer:
        """OpenAI audio transcriptions (speech-recognition models): a multipart/form-data body."""
        from .multipart import parse_form

        if self._transcriptions is None:
            raise NotFound(f"model {self.name!r} is a {self.task.name} model; /v1/audio/transcriptions serves "
                           "speech-recognition models", hint=f"use POST /models/{self.name}/predict")
        check_body_size(len(body), self.max_body_bytes)
        prepared, finish = self._transcriptions.begin(parse_form(content_type, body))
        payload, media_type = finish(prepared, [self.model.run(feed) for feed in prepared.feeds])
        return Answer(200, payload, 1, 0, media_type=media_type)

    def models(self) -> Answer:
        """OpenAI's model list: the one model this function serves."""
        return self._models

    def _generation_routes(self, route: str):
        if self._generation is None:
            raise NotFound(f"model {self.name!r} is a {self.task.name} model; {route} serves text-generation models",
                           hint=f"use POST /models/{self.name}/predict" + (
                               " or POST /v1/embeddings" if self._embeddings is not None else ""))
        return self._generation

    def info(self, name: str) -> Answer:
        self.check_name(name)
        return self._info

    def check_name(self, name: str) -> None:
        """404 unless ``name`` (a route's path) names this model: /models/{name}/... of another model."""
        check_model_name(name, self.name)

    def health(self) -> Answer:
        return self._health


def _generated(reply) -> Answer:
    tokens = reply.prompt_tokens + (reply.completion_tokens or 0)
    if reply.stream is not None:
        return Answer(200, None, 1, tokens, stream=reply.stream)
    return Answer(200, reply.payload, 1, tokens)


def _epoch(created_at: str) -> int:
    try:
        return int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _model_info(model: LoadedModel, served: str, settings: Settings) -> dict:
    manifest, runtime = model.manifest, model.manifest.runtime
    info = {
        "name": served,
        "version": settings.version,
        "task": manifest.task,
        "source": manifest.source,
        "labels": list(runtime.labels),
        "architecture": manifest.architecture,
        "quantization": {"requested": manifest.quantization.requested, "chosen": manifest.quantization.chosen},
        "limits": {"max_batch": model.limits.max_batch, "max_tokens": model.limits.max_tokens,
                   "truncate": model.limits.truncate},
        "parity": {"passed": manifest.parity.passed, "samples": manifest.parity.samples,
                   "metrics": manifest.parity.metrics, "thresholds": manifest.parity.thresholds,
                   "allowed_drift": manifest.parity.allowed_drift},
        "threads": settings.threads,
        "provider": model.provider,
    }
    if manifest.task == "feature-extraction":
        info["pooling"], info["normalize"] = runtime.pooling, runtime.normalize
    if manifest.task == TEXT_GENERATION:
        info["context_length"], info["chat"] = model.context_length, model.chat_template is not None
    return info


__all__ = ["Answer", "ModelService", "Pending"]

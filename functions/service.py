"""The HTTP API of one model, free of any web framework: built once, called per request.

    POST /models/{name}/predict   -> ModelService.predict(name, content_type, body)
    POST /v1/embeddings           -> ModelService.embeddings(content_type, body)
    GET  /models/{name}           -> ModelService.info(name)
    GET  /health                  -> ModelService.health()

Each method takes what the route carries (path parameter, Content-Type header, raw body bytes) and
returns an :class:`Answer`, or raises a RequestError that functions.http.render_error turns into
the error body. The adapters (functions/handler.py for API Gateway events, functions/app.py for
ASGI) only route, call and encode, so both answer identically; tests/functions/test_adapters.py
holds them to that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from .embeddings import EmbeddingsService
from .errors import NotFound
from .inputs import check_body_size, check_content_type, check_model_name, parse_items, parse_json, parse_predict
from .model import LoadedModel
from .settings import Settings
from .tasks import get_task


class Answer(NamedTuple):
    """A successful answer, and what it cost (batch size, token count) for the metrics."""

    status: int
    payload: Any
    batch: int | None = None
    tokens: int | None = None


class ModelService:
    """A loaded model bundle and the four operations of the API over it."""

    def __init__(self, model: LoadedModel, settings: Settings):
        self.model = model
        self.settings = settings
        self.task = get_task(model.manifest.task)
        self.name: str = settings.name or model.manifest.name
        self.version = settings.version
        self._embeddings = EmbeddingsService(model, self.name) if EmbeddingsService.serves(model) else None
        self._info = Answer(200, _model_info(model, self.name, settings))
        self._health = Answer(200, {"status": "ok", "model": self.name, "version": settings.version})

    @classmethod
    def load(cls, bundle_dir: str | Path | None = None, *, name: str | None = None, version: str | None = None,
             max_batch: int | None = None, max_tokens: int | None = None,
             truncate: bool | None = None) -> "ModelService":
        """Load the bundle (session + tokenizer) once.

        Each setting resolves as: this argument, then its MODELFN_* environment variable, then the
        default (bundle: $LAMBDA_TASK_ROOT/model or ./model; name: the manifest's; max_batch 32;
        max_tokens: the bundle's max_length; truncate: true). Raises BundleError for a bad bundle.
        """
        settings = Settings.resolve(bundle_dir, name=name, version=version, max_batch=max_batch,
                                    max_tokens=max_tokens, truncate=truncate)
        model = LoadedModel(settings.bundle_dir, threads=settings.threads, max_batch=settings.max_batch,
                            max_tokens=settings.max_tokens, truncate=settings.truncate)
        return cls(model, settings)

    @property
    def log_inputs(self) -> bool:
        return self.settings.log_inputs

    @property
    def max_body_bytes(self) -> int:
        """Adapters refuse a larger body (413) before reading or decoding it; predict and embeddings check again."""
        return self.settings.max_body_bytes

    def predict(self, name: str, content_type: str | None, body: bytes) -> Answer:
        check_model_name(name, self.name)
        check_content_type(content_type)
        check_body_size(len(body), self.max_body_bytes)
        task, model = self.task, self.model
        inputs, raw_params = parse_predict(parse_json(body))
        params = task.parse_params(raw_params)
        items, single = parse_items(inputs, task.inputs, model.limits.max_batch)
        prepared = task.preprocess(model, items, params)
        outputs = [model.run(feed) for feed in prepared.feeds]
        results = task.postprocess(model, prepared, outputs, params)
        shaped = task.shape(results, single, params) if task.shape else (results[0] if single else results)
        return Answer(200, shaped, len(items), prepared.tokens)

    def embeddings(self, content_type: str | None, body: bytes) -> Answer:
        if self._embeddings is None:
            raise NotFound(f"model {self.name!r} is a {self.task.name} model; /v1/embeddings serves embedding models",
                           hint=f"use POST /models/{self.name}/predict")
        check_content_type(content_type)
        check_body_size(len(body), self.max_body_bytes)
        payload, batch, tokens = self._embeddings.create(parse_json(body))
        return Answer(200, payload, batch, tokens)

    def info(self, name: str) -> Answer:
        check_model_name(name, self.name)
        return self._info

    def health(self) -> Answer:
        return self._health


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
    }
    if manifest.task == "feature-extraction":
        info["pooling"], info["normalize"] = runtime.pooling, runtime.normalize
    return info


__all__ = ["Answer", "ModelService"]

"""The HTTP API of one model: a FastAPI app built once per execution environment from its bundle.

    POST /models/{name}/predict   Hugging Face inference shape {"inputs": ..., "parameters": {...}}
    POST /v1/embeddings           OpenAI-compatible embeddings (embedding models only)
    GET  /models/{name}           what is served: version, task, labels, quantization, limits, parity
    GET  /health                  liveness
    GET  /openapi.json            the schema

Handlers only decode, run and encode; processing lives in functions/tasks, errors are rendered in
functions/http. Compute runs inline on the event loop: a Lambda environment serves one request at
a time, and a thread hop would cost more than it buys.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request

from . import observability, schemas
from .embeddings import EmbeddingsService
from .errors import NotFound
from .http import install_error_handling, json_response
from .inputs import check_content_type, check_model_name, parse_items, parse_json, parse_predict
from .model import LoadedModel
from .settings import Settings
from .tasks import get_task


def create_app(bundle_dir: str | Path | None = None, *, name: str | None = None, version: str | None = None,
               max_batch: int | None = None, max_tokens: int | None = None,
               truncate: bool | None = None) -> FastAPI:
    """Load the bundle (session + tokenizer) and return the app serving it.

    Each setting resolves as: this argument, then its MODELFN_* environment variable, then the
    default (bundle: $LAMBDA_TASK_ROOT/model or ./model; name: the manifest's; max_batch 32;
    max_tokens: the bundle's max_length; truncate: true). Raises BundleError for a bad bundle.
    """
    settings = Settings.resolve(bundle_dir, name=name, version=version, max_batch=max_batch,
                                max_tokens=max_tokens, truncate=truncate)
    model = LoadedModel(settings.bundle_dir, threads=settings.threads, max_batch=settings.max_batch,
                        max_tokens=settings.max_tokens, truncate=settings.truncate)
    manifest = model.manifest
    task = get_task(manifest.task)
    served = settings.name or manifest.name
    observability.set_model(served, settings.version)
    embeddings = EmbeddingsService(model, served) if EmbeddingsService.serves(model) else None

    app = FastAPI(title=f"modelfn: {served}", version=settings.version or "unversioned",
                  description=f"{task.name} model {served!r} served by modelfn.", redoc_url=None)
    app.state.model = model
    app.state.settings = settings
    install_error_handling(app, log_inputs=settings.log_inputs)
    info = _model_info(model, served, settings)

    @app.post("/models/{name}/predict", summary="Run the model (Hugging Face inference request shape)",
              openapi_extra=schemas.predict(task.name))
    async def predict(name: str, request: Request):
        check_model_name(name, served)
        check_content_type(request.headers.get("content-type"))
        inputs, raw_params = parse_predict(parse_json(await request.body()))
        params = task.parse_params(raw_params)
        items, single = parse_items(inputs, task.inputs, model.limits.max_batch)
        prepared = task.preprocess(model, items, params)
        outputs = [model.run(feed) for feed in prepared.feeds]
        results = task.postprocess(model, prepared, outputs, params)
        _note(request, len(items), prepared.tokens)
        shaped = task.shape(results, single, params) if task.shape else (results[0] if single else results)
        return json_response(shaped)

    @app.post("/v1/embeddings", summary="OpenAI-compatible embeddings", openapi_extra=schemas.EMBEDDINGS)
    async def create_embeddings(request: Request):
        if embeddings is None:
            raise NotFound(f"model {served!r} is a {task.name} model; /v1/embeddings serves embedding models",
                           hint=f"use POST /models/{served}/predict")
        check_content_type(request.headers.get("content-type"))
        answer, batch, tokens = embeddings.create(parse_json(await request.body()))
        _note(request, batch, tokens)
        return json_response(answer)

    @app.get("/models/{name}", summary="What this function serves", openapi_extra=schemas.INFO)
    async def model_info(name: str):
        check_model_name(name, served)
        return json_response(info)

    @app.get("/health", summary="Liveness", openapi_extra=schemas.HEALTH)
    async def health():
        return json_response({"status": "ok", "model": served, "version": settings.version})

    return app


def _note(request: Request, batch: int, tokens: int) -> None:
    state = request.scope.setdefault("modelfn", {})
    state["batch_size"], state["tokens"] = batch, tokens


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

"""The SageMaker container contract over the same service and routes as every other tier.

    GET  /ping          503 until the model is loaded and warmed (one inference), then 200
    POST /invocations   the route a ``modelfn-route=PATH`` custom attribute names (API Gateway's
                        integration sends it), else predict for a raw body of the task's media (an
                        image), else the one its body shape names (INVOCATION_ROUTES):
                        {"inputs": ...} -> /models/{name}/predict, {"input": ...} -> /v1/embeddings,
                        {"messages": ...} -> /v1/chat/completions, {"prompt": ...} -> /v1/completions
    everything else     functions/app.py's routes (the route table's, and openapi), with the
                        table's batched routes (predict, embeddings) run through functions.batching.Batcher;
                        for a text-generation model its routes (predict, chat, completions) run on
                        functions.generation.scheduler's bounded pool of generators instead

The server starts listening before the model is loaded (SageMaker polls /ping while it loads);
until then every other route answers 503 ``not_ready`` with Retry-After. A bundle that cannot be
loaded keeps /ping at 503 and answers the load error (503 ``model_unavailable``), as the Lambda
handler does, so the failure is visible in responses and logs. Shutdown (SIGTERM) is uvicorn's:
it stops accepting, lets in-flight requests finish within the drain timeout, then the lifespan
shutdown stops the batcher (functions/serve.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from starlette.requests import ClientDisconnect, Request

from .. import observability
from ..app import build_app, read_body
from ..batching import Batcher, BatchLimits
from ..generation.scheduler import GenerationLimits, GenerationScheduler
from ..errors import BadRequest, BundleError, ModelfnError, NotReady, RequestError
from ..http import JSON_MEDIA_TYPE, dumps, error_headers, no_route, render_error, wrong_method
from ..inputs import INPUT_KINDS, check_content_type, is_raw_media, parse_json
from ..routes import ROUTES
from ..service import ModelService
from ..tasknames import TEXT_GENERATION

# Body key -> the route an /invocations body of that shape stands for, first match wins (the table's order).
INVOCATION_ROUTES: list[tuple[str, str]] = [(r.invocation_key, r.path) for r in ROUTES if r.invocation_key]
PREDICT_PATH = next(r.path for r in ROUTES if r.method == "POST" and r.operation == "predict" and not r.scoped)
# API Gateway's InvokeEndpoint integration names the route it was called on (infra/template/_api.py):
# X-Amzn-SageMaker-Custom-Attributes: modelfn-route=/models/NAME (an info GET sends the body {}).
CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"
ROUTE_ATTRIBUTE = "modelfn-route"
# While loading: SageMaker polls /ping every few seconds; a client may retry as soon.
LOADING_RETRY_AFTER_S = 5


class SageMakerApp:
    """ASGI application: the contract's two routes in front of build_app's routes.

    ``load`` builds the ModelService (in a thread, after the server is listening); ``run``
    (default the model's session call) is handed to the Batcher.
    """

    def __init__(self, load: Callable[[], ModelService], limits: BatchLimits | None = None, *,
                 run: Callable[[dict], dict] | None = None,
                 generation_slots: Callable[[str], int] = lambda provider: 1):
        self._load = load
        self._limits = limits or BatchLimits()
        self._run = run
        self._generation_slots = generation_slots  # provider -> generators at once (text-generation)
        self.service: ModelService | None = None
        self.batcher: Batcher | GenerationScheduler | None = None
        self.app: Any = None  # build_app(...) once ready
        self.ready = False
        self.error: ModelfnError | None = None
        self._starting: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            path = scope["path"]
            if path == "/ping":
                await self._ping(scope, send)
            elif not self.ready:
                await self._error(scope, send, self.error or NotReady(
                    "the model is loading", retry_after=LOADING_RETRY_AFTER_S, hint="GET /ping answers 200 when ready"))
            elif path == "/invocations":
                await self._invoke(scope, receive, send)
            else:
                await self.app(scope, receive, send)

    # -- start and stop ----------------------------------------------------------------------
    async def start(self) -> None:
        """Load the service off the event loop, start the batcher, warm up; then /ping answers 200."""
        try:
            service = await asyncio.to_thread(self._load)
            if service.task.name == TEXT_GENERATION:
                # A generative answer is a loop of runs: a generator per request, several at once.
                batcher = GenerationScheduler(GenerationLimits(
                    max_concurrent_generations=self._generation_slots(service.model.provider),
                    max_concurrent_requests=self._limits.max_concurrent_requests))
                app = build_app(service, generations=batcher)
                await batcher.warm_up(service)
            else:
                batcher = Batcher(service.model, self._limits, run=self._run)
                app = build_app(service, batcher=batcher)
                await batcher.start()
                await batcher.warm_up(service)
        except Exception as exc:  # noqa: BLE001 - keep serving, to report it (as the Lambda handler does)
            self.error = exc if isinstance(exc, ModelfnError) else BundleError(
                f"model could not be loaded: {type(exc).__name__}: {exc}")
            observability.log("ERROR", "model could not be loaded", error=str(self.error))
            return
        self.service, self.batcher, self.app = service, batcher, app
        self.ready = True
        observability.log("INFO", "ready", provider=service.model.provider, **batcher.limits.__dict__)

    async def stop(self) -> None:
        """Stop loading (if still under way) and the batcher; called after in-flight requests drained."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Startup completes at once so the server listens (and answers /ping 503) while loading.
                self._starting = asyncio.get_running_loop().create_task(self.start(), name="modelfn-load")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- the two routes ------------------------------------------------------------------------
    async def _ping(self, scope, send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await self._error(scope, send, wrong_method(), allow="GET")
        elif self.ready:
            await _send(send, 200, {"status": "ok"})
        else:
            await _send(send, 503, {"status": "failed" if self.error else "loading"})

    async def _invoke(self, scope, receive, send) -> None:
        if scope["method"] != "POST":
            await self._error(scope, send, wrong_method(), allow="POST")
            return
        method = "POST"
        try:
            # Refused by its Content-Length before reading, else while reading (413), as on every route.
            body = await read_body(Request(scope, receive), self.service.max_body_bytes)
        except ClientDisconnect:
            return
        except RequestError as exc:
            await self._error(scope, send, exc)
            return
        try:
            named = routed_by_attribute(_header(scope, CUSTOM_ATTRIBUTES))
            if named is not None:
                method, path = named
            else:
                path = self.route_for(_header(scope, b"content-type"), body)
        except RequestError as exc:
            await self._error(scope, send, exc)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "method": method, "path": path, "raw_path": path.encode()}, replay, send)

    def route_for(self, content_type: str | None, body: bytes) -> str:
        """The regular route an /invocations body stands for; a RequestError (400, 415) if it names none.
        A raw body of the task's media (an image model's image/png) is a predict body, as on that route."""
        raw_media = INPUT_KINDS[self.service.task.inputs].raw_media
        if is_raw_media(content_type, raw_media):
            return PREDICT_PATH.format(name=self.service.name)
        check_content_type(content_type, raw_media=raw_media)
        data = parse_json(body)
        for key, route in INVOCATION_ROUTES:
            if key in data:
                return route.format(name=self.service.name)
        shapes = ", ".join(f'"{key}"' for key, _ in INVOCATION_ROUTES)
        raise BadRequest(f"an /invocations body must carry one of {shapes}",
                         hint='{"inputs": ...} runs predict, {"input": ...} embeddings, {"messages": ...} chat')

    async def _error(self, scope, send, exc: Exception, allow: str | None = None) -> None:
        started, fields = time.perf_counter(), observability.begin()
        status, payload = render_error(exc)
        headers = error_headers(exc) or {}
        if allow:
            headers["allow"] = allow
        await _send(send, status, payload, headers)
        observability.record_request(method=scope["method"], path=scope["path"], status=status, started=started,
                                     fields=fields, error_code=payload["error"]["code"])


async def _send(send, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    body = dumps(payload).encode("utf-8")
    raw = [(b"content-type", JSON_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


__all__ = ["SageMakerApp", "INVOCATION_ROUTES", "routed_by_attribute"]


def routed_by_attribute(attributes: str | None) -> tuple[str, str] | None:
    """(method, path) of the route a ``modelfn-route=PATH`` custom attribute names, from the route table;
    None without one. A path that is no route of the API is a 404."""
    if not attributes:
        return None
    for part in attributes.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == ROUTE_ATTRIBUTE:
            path = value.strip()
            for route in ROUTES:
                if route.pattern.fullmatch(path):
                    return route.method, path
            raise no_route()
    return None

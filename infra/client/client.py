"""A Python client for a modelfn API, deployed or local. Needs httpx (and boto3/botocore for IAM
auth and stack look-ups), never torch or transformers.

    client = Client(stack_name="modelfn")                 # URL and auth mode from the stack
    client = Client("http://127.0.0.1:3000")              # a local server, no auth
    client.predict("minilm", ["a text", "another"])       # POST /models/{name}/predict
    client.embed(["a text"], model="minilm")              # POST /models/{name}/v1/embeddings -> vectors
    for piece in client.chat("Hi!", model="smollm"):      # POST /models/{name}/v1/chat/completions, streamed
        print(piece, end="")
    client.info("minilm")                                 # GET /models/{name}

Every request retries on 429, 502, 503 and 504 with exponential backoff and jitter, waiting what
``Retry-After`` says when the answer has one. Failures raise infra.client.errors types carrying the
API's error code and message. A call naming its ``model`` goes to that model's own OpenAI routes
(``/models/{name}/v1/...``): a multi-model stack answers its stack-wide ``/v1/...`` for one model only.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

import httpx

from functions.errors import ConfigError
from functions.routes import openai_base

from .. import defaults
from .endpoints import Endpoints, default_stack_name, stack_api_key, stack_endpoints
from .errors import (APIError, AuthError, CallTimeoutError, NotFoundError, ThrottledError, UnreachableError,
                     api_error_class, error_fields, one_line)
from .sigv4 import SigV4Auth, infer_service_region
from .streaming import ChatStream

RETRY_STATUSES = frozenset({429, 502, 503, 504})
AUTH_CHOICES = ("auto", "iam", "api-key", "none")


class ApiKeyAuth(httpx.Auth):
    """Sends an API Gateway API key as ``x-api-key`` (the stack's AuthMode API_KEY)."""

    def __init__(self, key: str):
        self.key = key

    def auth_flow(self, request: httpx.Request):
        request.headers["x-api-key"] = self.key
        yield request


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before retry ``attempt`` (0-based): ``Retry-After`` when the answer has one
    (giving up when it asks for more than ``max_retry_after_s``), else ``backoff_s * 2**attempt``
    capped at ``max_backoff_s``, half of it jittered so that throttled callers spread out."""

    retries: int = defaults.CALL_RETRIES
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: Callable[[], float] = random.random) -> float | None:
        """Seconds to wait before the next try, or None to stop retrying."""
        if attempt >= self.retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        base = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
        return base / 2 + rng() * base / 2


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds: a number of seconds (fractions accepted) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError, IndexError):
        return None


class Client:
    """A modelfn API. ``base_url`` (``http://127.0.0.1:3000``, a stage URL), else ``stack_name`` (the
    CloudFormation stack's ApiUrl output), else ``$MODELFN_URL``, else the stack named in
    samconfig.toml.

    ``auth``: ``"auto"`` (an API key if one is given or in ``$MODELFN_API_KEY``, else the stack's
    AuthMode, else SigV4 for ``*.execute-api.*.amazonaws.com`` URLs and nothing for others),
    ``"iam"`` (SigV4 from the AWS credential chain), ``"api-key"``, ``"none"``, or any ``httpx.Auth``.
    ``timeout`` is per request in seconds; ``retries`` how many times 429/502/503/504 are retried.
    ``transport``, ``sleep`` and ``rng`` are for tests and special set-ups.
    """

    def __init__(self, base_url: str | None = None, *, stack_name: str | None = None,
                 auth: str | httpx.Auth | None = "auto", api_key: str | None = None, region: str | None = None,
                 endpoint_url: str | None = None, timeout: float = defaults.CALL_TIMEOUT_S,
                 retries: int = defaults.CALL_RETRIES, retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random):
        self.endpoints: Endpoints | None = None
        if base_url is None and stack_name is None:
            base_url = os.environ.get(defaults.URL_ENV) or None
        if base_url is None:
            self.endpoints = stack_endpoints(stack_name or default_stack_name(), region=region,
                                             endpoint_url=endpoint_url)
            base_url = self.endpoints.base_url
            region = region or self.endpoints.region
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy(retries=retries)
        self.auth_mode, auth_object = self._resolve_auth(auth, api_key, region)
        self._sleep, self._rng = sleep, rng
        self.http = httpx.Client(auth=auth_object, timeout=timeout, transport=transport,
                                 headers={"user-agent": "modelfn-client"})

    # -- the API -----------------------------------------------------------------------------------

    def predict(self, model: str, inputs: Any, parameters: dict | None = None) -> Any:
        """POST /models/{model}/predict: the Hugging Face inference shape, answered as the model's
        task answers (labels with scores, entities, answers with spans, vectors, generated text)."""
        body: dict[str, Any] = {"inputs": inputs}
        if parameters:
            body["parameters"] = parameters
        return self.request("POST", f"/models/{_segment(model)}/predict", body)

    def embed(self, input: str | list[str], *, model: str | None = None,
              dimensions: int | None = None) -> list[list[float]]:
        """POST /v1/embeddings (the model's own, when named): one vector per input, in input order."""
        body: dict[str, Any] = {"input": input}
        if model:
            body["model"] = model
        if dimensions is not None:
            body["dimensions"] = dimensions
        answer = self.request("POST", _openai_path("/v1/embeddings", model), body)
        return [item["embedding"] for item in sorted(answer["data"], key=lambda d: d["index"])]

    def chat(self, messages: str | list[dict], *, model: str | None = None, **params: Any) -> "ChatStream":
        """POST /v1/chat/completions (the model's own, when named) with ``stream: true``: an iterator
        over the text as it is generated. ``messages`` is OpenAI's list, or a string for one user
        message; ``params`` are the OpenAI ones (max_tokens, temperature, top_p, stop, seed, ...).
        The request is sent now; errors before the first piece raise here."""
        body = chat_body(messages, model=model, stream=True, **params)
        return ChatStream(self._send("POST", _openai_path("/v1/chat/completions", model), body, stream=True))

    def info(self, model: str) -> dict:
        """GET /models/{model}: version, task, labels, quantization, parity and limits."""
        return self.request("GET", f"/models/{_segment(model)}")

    def health(self) -> dict:
        """GET /health."""
        return self.request("GET", "/health")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Any route: the answer's JSON (retried and checked like every call)."""
        response = self._send(method, path, body)
        try:
            return response.json()
        except ValueError:
            raise APIError(response.status_code, "invalid_response",
                           f"the answer is not JSON: {one_line(response.text, 120)!r}",
                           method=method, url=str(response.request.url)) from None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def _resolve_auth(self, auth, api_key: str | None, region: str | None) -> tuple[str, httpx.Auth | None]:
        if isinstance(auth, httpx.Auth):
            return "custom", auth
        mode = "auto" if auth is None else str(auth)
        if mode not in AUTH_CHOICES:
            raise ConfigError(f"unknown auth {auth!r}", hint="choose " + ", ".join(AUTH_CHOICES))
        key = api_key or os.environ.get(defaults.API_KEY_ENV) or None
        if mode == "auto":
            stack_mode = self.endpoints.auth_mode if self.endpoints else None
            if key:
                mode = "api-key"
            elif stack_mode:
                mode = {"AWS_IAM": "iam", "API_KEY": "api-key", "NONE": "none"}[stack_mode]
            else:
                mode = "iam" if infer_service_region(self.base_url)[0] else "none"
        if mode == "iam":
            return mode, SigV4Auth(region=region)
        if mode == "api-key":
            if not key:
                if self.endpoints is None:
                    raise ConfigError("auth api-key needs a key", hint=f"pass api_key= or set {defaults.API_KEY_ENV}")
                key = stack_api_key(self.endpoints)
            return mode, ApiKeyAuth(key)
        return mode, None

    def _send(self, method: str, path: str, body: Any = None, *, stream: bool = False) -> httpx.Response:
        url = self.base_url + path
        attempt = 0
        while True:
            request = self.http.build_request(method, url, json=body) if body is not None else \
                self.http.build_request(method, url)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TimeoutException:
                raise CallTimeoutError(f"no answer from {method} {url} within {self.timeout:g} s",
                                       hint="raise the timeout; a cold start of a large model takes tens of "
                                            "seconds") from None
            except httpx.TransportError as exc:
                raise UnreachableError(f"cannot connect to {url}: {one_line(exc) or type(exc).__name__}",
                                       hint="is the server running, and the URL right? "
                                            "`modelfn endpoints` lists the URLs") from None
            if response.status_code < 400:
                return response
            response.read()
            response.close()
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            if response.status_code in RETRY_STATUSES:
                delay = self.retry.delay(attempt, retry_after, self._rng)
                if delay is not None:
                    self._sleep(delay)
                    attempt += 1
                    continue
            raise self._error(response, method, url, attempt + 1, retry_after)

    def _error(self, response: httpx.Response, method: str, url: str, attempts: int,
               retry_after: float | None) -> APIError:
        status = response.status_code
        code, message = parse_error(response)
        kind = api_error_class(status)
        return kind(status, code, message, method=method, url=url, attempts=attempts, retry_after=retry_after,
                    hint=self._hint(kind, code))

    def _hint(self, kind: type[APIError], code: str) -> str | None:
        if kind is AuthError:
            if code == "MISSING_AUTHENTICATION_TOKEN" and self.auth_mode == "iam":
                return "API Gateway answers this for a route it does not have: check the model name " \
                       "with `modelfn endpoints`"
            if self.auth_mode == "none":
                return "the API wants SigV4-signed requests (auth iam) or an API key (--api-key)"
            if self.auth_mode == "iam":
                return "check the AWS credentials (`aws sts get-caller-identity`) and that they may call " \
                       "execute-api:Invoke on this API"
            return "check the API key"
        if kind is NotFoundError:
            return "`modelfn endpoints` lists the models and routes"
        if kind is ThrottledError:
            return "the API is throttling (the stage's ThrottlingRateLimit/BurstLimit, or a full GPU queue); " \
                   "retry later"
        return None


def chat_body(messages: str | list[dict], *, model: str | None = None, stream: bool = True, **params: Any) -> dict:
    """An OpenAI chat completions request body; a string is one user message."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    body: dict[str, Any] = {"messages": list(messages), "stream": stream}
    if model:
        body["model"] = model
    body.update({k: v for k, v in params.items() if v is not None})
    return body


def parse_error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of an error answer: modelfn's and API Gateway's ``{"error": {"code",
    "message"}}``, API Gateway's bare ``{"message"}``, OpenAI's ``{"error": {"type", "message"}}``,
    or the status and the start of the body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        code, message = error_fields(data)
        if message:
            return code or _status_code(response), message
    text = one_line(response.text, 200) or response.reason_phrase or "no body"
    return _status_code(response), text


def _status_code(response: httpx.Response) -> str:
    return (response.reason_phrase or f"http {response.status_code}").lower().replace(" ", "_")


def _segment(name: str) -> str:
    return quote(str(name), safe="")


def _openai_path(path: str, model: str | None) -> str:
    """A stack-wide OpenAI path (``/v1/...``), moved under the named model's own base (functions/routes.py)."""
    return openai_base(_segment(model)) + path.removeprefix("/v1") if model else path


__all__ = ["Client", "ChatStream", "ApiKeyAuth", "RetryPolicy", "RETRY_STATUSES", "AUTH_CHOICES", "chat_body",
           "parse_error", "retry_after_seconds"]

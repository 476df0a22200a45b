"""The stream relay: streamed answers from a GPU endpoint through the same API Gateway.

API Gateway's InvokeEndpoint integration (infra/template/_api.py) answers whole, so a gpu
text-generation model's streaming routes (POST /v1/chat/completions, /v1/completions) go to this
small Lambda function instead, through the STREAM (response-streaming) Lambda integration the
Lambda tier's generative models use. Per request it calls ``InvokeEndpointWithResponseStream`` on
the model's endpoint (SageMaker sends the body to the container's /invocations, which answers SSE
chunked as it decodes, functions/adapters/sagemaker.py) and writes each ``PayloadPart``'s bytes
through functions/response_stream.py's Runtime API loop as it arrives. A body without
``stream: true`` comes back as one JSON part: the same answer, through the same path.

Errors keep the API's shapes and statuses (``{"error": {"code", "message"}}``):
    the container's own 4xx/5xx (ModelError)   its status and body, as the Lambda tier answers them
    endpoint scaling from zero (429)           503 model_not_ready, Retry-After: 60
    SageMaker unavailable (503)                503 unavailable, Retry-After: 5
    ValidationError (400)                      400 bad_request, or 429 throttled when throttled
    an error event before any payload          502 endpoint_error (InternalStreamFailure: 503, retry)
    an error event mid-stream                  an SSE ``data: {"error": ...}`` event, then
                                               ``data: [DONE]``, as the Lambda tier's streams end
    anything else from the endpoint            502 endpoint_error
The InvokeEndpoint integration maps the same runtime statuses with the same table (RUNTIME_ERRORS).

Packaging: the function is a zip of this package on the managed Python runtime (its boto3 has the
call; nothing here imports numpy, onnxruntime or a model), started by the ``relay-bootstrap``
wrapper (AWS_LAMBDA_EXEC_WRAPPER) in place of the buffered runtime; ``handler`` is the buffered
entry point for runners that ignore the wrapper (``sam local``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from . import constants, observability, proxy_event
from .errors import RequestError
from .http import (
    EVENT_STREAM_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    SSE_DONE,
    dumps,
    error_headers,
    render_error,
    sse_event,
    wrong_method,
)

# InvokeEndpointWithResponseStream takes at most 6 MB: a larger body is a 413 here, before the call.
MAX_PAYLOAD_BYTES = 6 * 2**20
# functions/adapters/sagemaker.py answers the route this custom attribute names.
ROUTE_ATTRIBUTE = "modelfn-route"
# Per socket read: a long prompt's prefill on a busy endpoint may take a while before the first part.
READ_TIMEOUT_S = 300


class Failure(NamedTuple):
    """What the API answers for a failure of the endpoint or of SageMaker in front of it."""

    status: int
    code: str
    message: str
    retry_after: int | None = None


# SageMaker runtime status -> the API's answer; the InvokeEndpoint integration's table is built from it.
NOT_READY = Failure(503, "model_not_ready", "the GPU endpoint is starting; retry in a minute", 60)
UNAVAILABLE = Failure(503, "unavailable", "the GPU endpoint is unavailable; retry shortly", 5)
ENDPOINT_FAILED = Failure(502, "endpoint_error", "the GPU endpoint failed to answer")
RUNTIME_ERRORS = {429: NOT_READY, 503: UNAVAILABLE}  # 429: ModelNotReadyException (scaled to zero)
# A 400 of the runtime is one of three things, told apart by its message (the API Gateway integration
# sees only the body; infra/template/_api.py's _REJECTED reads it the same way):
#   ThrottlingException  the endpoint's concurrency limit: its body is {"message": null}
#   ValidationError      "... Value at 'body' failed to satisfy constraint: Member must have length less
#                        than or equal to 6291456" (the 6 MB limit), or "Endpoint X of account Y not found."
THROTTLED = Failure(429, "throttled", "SageMaker throttled the call (the endpoint's concurrency limit); retry shortly")
TOO_LARGE = Failure(413, "payload_too_large", "the request body is over SageMaker's 6 MB limit for an endpoint call")
SIZE_MESSAGE = "Value at 'body'"
THROTTLE_MESSAGES = ("throttl", "rate exceeded")


class EndpointError(RequestError):
    """An answer of the endpoint (or of SageMaker) that is no stream: rendered like every other error."""

    def __init__(self, failure: Failure, body: bytes | None = None):
        super().__init__(failure.message)
        self.status, self.code, self.retry_after = failure.status, failure.code, failure.retry_after
        self.body = body  # the container's own error body, passed through as it is


def runtime_failure(error: dict, status: int, extra: dict) -> EndpointError:
    """The API's answer for a SageMaker runtime error (botocore's ``response``: Error, status, members)."""
    code, message = error.get("Code", ""), error.get("Message") or ""
    if code == "ModelError" or status == 424:
        original, body = extra.get("OriginalStatusCode"), extra.get("OriginalMessage") or ""
        # The container answered an error of its own: its status and body are the API's answer.
        passed = body.encode("utf-8") if body.lstrip().startswith('{"error"') else None
        return EndpointError(Failure(int(original) if original else 502, "model_error", message), passed)
    if status == 400 or code in ("ValidationError", "ThrottlingException"):
        lowered = (code + " " + message).lower()
        if not message or any(word in lowered for word in THROTTLE_MESSAGES):
            return EndpointError(THROTTLED)
        if SIZE_MESSAGE in message:
            return EndpointError(TOO_LARGE)
        if message.startswith("Endpoint ") and message.rstrip(".").endswith(" not found"):
            # The stack's endpoint is gone or misnamed: the deployment's fault, not the caller's.
            return EndpointError(ENDPOINT_FAILED._replace(message=f"the GPU endpoint is not there: {message}"))
        return EndpointError(Failure(400, "bad_request", message))
    if code == "InternalStreamFailure":
        return EndpointError(UNAVAILABLE._replace(message=f"the GPU endpoint's stream failed: {message}"))
    if code == "ModelStreamError":
        return EndpointError(ENDPOINT_FAILED._replace(message=f"the GPU endpoint's stream failed: {message}"))
    return EndpointError(RUNTIME_ERRORS.get(status, ENDPOINT_FAILED))


def _endpoint_error(exc: Exception) -> Exception:
    """botocore's exceptions as the API's errors; anything else as it is (rendered as a 500)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        response = exc.response
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return runtime_failure(response.get("Error", {}), status, response)
    if isinstance(exc, BotoCoreError):  # no connection, a read timeout: the endpoint did not answer
        return EndpointError(ENDPOINT_FAILED._replace(message=f"the GPU endpoint did not answer: {exc}"))
    return exc


class Relay:
    """``relay(event, context) -> (prelude, chunks)`` for functions.response_stream.serve: one request
    relayed from API Gateway to the endpoint's stream. ``client`` is a boto3 sagemaker-runtime client."""

    def __init__(self, client: Any, endpoint: str, inference_component: str | None = None):
        self.client, self.endpoint, self.inference_component = client, endpoint, inference_component or None

    @classmethod
    def from_environment(cls) -> Relay:
        """The relay the function runs: its endpoint from MODELFN_ENDPOINT_NAME (set by the template)."""
        import boto3
        from botocore.config import Config

        # No retries: a 503 while the endpoint scales from zero is answered at once, with its Retry-After.
        config = Config(retries={"total_max_attempts": 1}, read_timeout=READ_TIMEOUT_S, connect_timeout=10)
        return cls(boto3.client("sagemaker-runtime", config=config), os.environ[constants.ENDPOINT_NAME],
                   os.environ.get(constants.INFERENCE_COMPONENT))

    def __call__(self, event: Any, context: Any = None) -> tuple[dict, Iterator[bytes]]:
        started = time.perf_counter()
        is_proxy = proxy_event.is_proxy(event)
        fields = observability.begin(context, event["requestContext"].get("requestId") if is_proxy else None)
        method = path = "-"
        stream = None
        try:
            request = proxy_event.parse(event)
            method, path = request.method, request.path
            if method != "POST":
                raise wrong_method()
            stream, content_type = self._invoke(request.path, request.header("content-type"),
                                                request.body(MAX_PAYLOAD_BYTES))
            parts = self._parts(stream)
            first = next(parts, b"")  # an error before any payload still gets its own status
        except Exception as exc:  # noqa: BLE001 - every fault becomes the error shape, never a traceback
            if stream is not None:
                stream.close()
            return self._error(exc, method, path, started, fields)

        sse = content_type.startswith("text/event-stream")

        def body() -> Iterator[bytes]:
            status, error_code = 200, None
            try:
                yield first
                yield from parts
            except Exception as exc:
                error = _endpoint_error(exc)
                status, payload = render_error(error)
                error_code = payload["error"]["code"]
                observability.log("ERROR", "endpoint stream failed", error=str(error))
                if not sse:
                    raise  # a JSON body cannot carry it: the Runtime API's error trailers do
                yield (sse_event(payload) + SSE_DONE).encode("utf-8")
            finally:
                stream.close()  # a client that left (or an error) stops the endpoint's stream too
                observability.record_request(method=method, path=path, status=status, started=started,
                                             fields=fields, error_code=error_code)

        return {"statusCode": 200, "headers": {"content-type": content_type}}, body()

    def _invoke(self, path: str, content_type: str | None, body: bytes) -> tuple[Any, str]:
        kwargs = {"EndpointName": self.endpoint, "Body": body, "ContentType": content_type or JSON_MEDIA_TYPE,
                  "Accept": f"{EVENT_STREAM_MEDIA_TYPE}, {JSON_MEDIA_TYPE}",
                  "CustomAttributes": f"{ROUTE_ATTRIBUTE}={path}"}
        if self.inference_component:
            kwargs["InferenceComponentName"] = self.inference_component
        response = self.client.invoke_endpoint_with_response_stream(**kwargs)
        return response["Body"], response.get("ContentType") or JSON_MEDIA_TYPE

    @staticmethod
    def _parts(stream: Any) -> Iterator[bytes]:
        for event in stream:
            data = event.get("PayloadPart", {}).get("Bytes")
            if data:
                yield data

    @staticmethod
    def _error(exc: Exception, method: str, path: str, started: float, fields: dict) -> tuple[dict, Iterator[bytes]]:
        error = _endpoint_error(exc)
        if not isinstance(error, RequestError):
            observability.exception("relay failed", fields, path=path)
        status, payload = render_error(error)
        body = getattr(error, "body", None) or dumps(payload).encode("utf-8")
        headers = {"content-type": JSON_MEDIA_TYPE, **error_headers(error)}
        if status == 405:
            headers["allow"] = "POST"
        observability.record_request(method=method, path=path, status=status, started=started, fields=fields,
                                     error_code=payload["error"]["code"])
        return {"statusCode": status, "headers": headers}, iter([body])


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The buffered entry point (runners that ignore the wrapper, e.g. ``sam local``): the same answer,
    as one proxy response."""
    prelude, chunks = _relay()(event, context)
    return {**prelude, "body": b"".join(chunks).decode("utf-8"), "isBase64Encoded": False}


_current: Relay | None = None


def _relay() -> Relay:
    global _current
    if _current is None:
        _current = Relay.from_environment()
    return _current


def main() -> None:
    """The function's streaming entry point (``python -m functions.relay``, from relay-bootstrap)."""
    from . import response_stream

    response_stream.serve(answer=_relay())


__all__ = ["RUNTIME_ERRORS", "EndpointError", "Failure", "Relay", "handler", "main", "runtime_failure"]

if __name__ == "__main__":  # pragma: no cover - the function's entry point
    main()

"""An API Gateway stand-in that routes by a generated template (infra/template): the stack's routes,
integrations and auth as template.yaml declares them, in front of the real tiers of each model.

Each operation of the API's DefinitionBody is served as its integration says:

    aws_proxy -> ${<Id>Function.Arn}   the Lambda model: a REST (payload 1.0) proxy event through the
                                       real Lambda handler (functions/handler.py); a STREAM integration's
                                       answer comes whole, as the buffered handler writes it
    aws_proxy -> ${<Id>Relay.Arn}      a gpu model's stream relay: the real Relay (functions/relay.py)
                                       through boto3 and the SageMaker runtime stand-in to the model's
                                       GPU server, streamed as the relay reads it
    aws (InvokeEndpoint)               the gpu model's server: POST /invocations with the integration's
                                       headers (the modelfn-route custom attribute) and body ($input.body,
                                       or {} for a GET); a container error comes back as the
                                       runtime's ModelError, mapped by the integration's own response
                                       templates (tests/infra/vtl.py renders them)

The operation's ``security`` is resolved for ``auth_mode``: API_KEY checks ``x-api-key`` (403
otherwise, as API Gateway answers); NONE lets every request through. A method and path the template
does not declare is API Gateway's 403 MISSING_AUTHENTICATION_TOKEN.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Callable

import httpx

from functions.inputs import is_raw_media
from tests.functions.eventfiles import make_event
from tests.functions.sagemaker_runtime import model_error
from tests.infra.servers import read_body
from tests.infra.vtl import integration_response

_LAMBDA = re.compile(r"\$\{(?P<id>\w+?)(?P<kind>Function|Relay)\.Arn\}")


def resolve(value: Any, conditions: dict[str, bool]) -> Any:
    """``value`` with its Fn::If resolved for ``conditions`` and AWS::NoValue dropped."""
    if isinstance(value, dict):
        if "Fn::If" in value:
            condition, yes, no = value["Fn::If"]
            return resolve(yes if conditions[condition] else no, conditions)
        return {k: resolve(v, conditions) for k, v in value.items()}
    if isinstance(value, list):
        return [v for v in (resolve(item, conditions) for item in value) if v != {"Ref": "AWS::NoValue"}]
    return value


async def _send(send, status: int, content_type: str, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type.encode())]})
    await send({"type": "http.response.body", "body": body})


class Gateway:
    """ASGI app: the template's API. ``lambdas``: logical id -> a Lambda handler (``handler(event, None)``);
    ``relays``: logical id -> a functions.relay.Relay; ``endpoints``: model name -> its GPU server's URL."""

    def __init__(self, template: dict, *, lambdas: dict[str, Callable], relays: dict[str, Callable],
                 endpoints: dict[str, str], auth_mode: str = "API_KEY", api_key: str = "test-key"):
        conditions = {"UseIamAuth": auth_mode == "AWS_IAM", "UseApiKeyAuth": auth_mode == "API_KEY"}
        body = template["Resources"]["Api"]["Properties"]["DefinitionBody"]
        paths = body["paths"]
        # Bodies of these types reach a Lambda proxy integration base64-encoded, as API Gateway sends them.
        self.binary = tuple(body.get("x-amazon-apigateway-binary-media-types", ()))
        self.operations = {(method.upper(), path): resolve(operation, conditions)
                           for path, methods in paths.items() for method, operation in methods.items()}
        self.lambdas, self.relays, self.endpoints, self.api_key = lambdas, relays, endpoints, api_key
        self.calls: list[tuple[str, str, str]] = []  # (method, path, the integration that answered)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await read_body(receive)
        operation = self.operations.get((method, path))
        if operation is None:
            return await _send(send, 403, "application/json", json.dumps({"error": {
                "code": "MISSING_AUTHENTICATION_TOKEN", "message": "Missing Authentication Token"}}).encode())
        for requirement in operation["security"]:
            if "api_key" in requirement and headers.get("x-api-key") != self.api_key:
                return await _send(send, 403, "application/json",
                                   b'{"error": {"code": "INVALID_API_KEY", "message": "Forbidden"}}')
            assert "sigv4" not in requirement, "this stand-in checks API keys; tests/infra/servers.py checks SigV4"
        integration = operation["x-amazon-apigateway-integration"]
        if integration["type"] == "aws":
            self.calls.append((method, path, "InvokeEndpoint"))
            return await self._invoke_endpoint(send, method, integration, body, headers)
        found = _LAMBDA.search(integration["uri"]["Fn::Sub"])
        event = make_event(method, path, body if method == "POST" else None, version=1,
                           content_type=headers.get("content-type"),
                           base64_body=is_raw_media(headers.get("content-type"), self.binary))
        if found["kind"] == "Relay":
            self.calls.append((method, path, "Relay"))
            return await self._relay(send, self.relays[found["id"]], event)
        self.calls.append((method, path, "Lambda"))
        response = await asyncio.to_thread(self.lambdas[found["id"]], event, None)
        await _send(send, response["statusCode"], response["headers"]["content-type"], response["body"].encode())

    async def _invoke_endpoint(self, send, method: str, integration: dict, body: bytes,
                               received: dict[str, str]) -> None:
        prefix, from_caller = "integration.request.header.", "method.request.header."
        headers = {}
        for key, value in integration["requestParameters"].items():
            if not isinstance(value, str):
                continue
            if value.startswith(from_caller):  # the caller's header, when it sent one
                if value[len(from_caller):].lower() in received:
                    headers[key[len(prefix):]] = received[value[len(from_caller):].lower()]
            else:
                headers[key[len(prefix):]] = value.strip("'")
        model = re.search(r"endpoints/\$\{AWS::StackName\}-([a-z0-9-]+)/invocations",
                          integration["uri"]["Fn::Sub"]).group(1)
        sent = body if method == "POST" else b"{}"
        async with httpx.AsyncClient(timeout=120) as client:
            answer = await client.post(self.endpoints[model] + "/invocations", content=sent, headers=headers)
        if answer.status_code < 300:
            return await _send(send, 200, "application/json", answer.content)
        # The runtime wraps a container's error in a ModelError (424), which the integration's responses map.
        error = model_error(answer.status_code, answer.content.decode("utf-8", "replace"))
        status, _, text = integration_response(integration, 424, json.dumps(error))
        await _send(send, status, "application/json", text.encode("utf-8"))

    @staticmethod
    async def _relay(send, relay: Callable, event: dict) -> None:
        prelude, chunks = await asyncio.to_thread(relay, event, None)
        await send({"type": "http.response.start", "status": prelude["statusCode"],
                    "headers": [(k.encode(), v.encode()) for k, v in prelude["headers"].items()]})
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

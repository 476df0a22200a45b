"""Where a modelfn API is and which routes it has: from a deployed stack's CloudFormation outputs, or
from models.yaml for a local server (`modelfn serve`, `sam local start-api`).

    stack_endpoints(stack_name, region=None, endpoint_url=None) -> Endpoints
    local_endpoints(base_url, models_file) -> Endpoints
    default_stack_name(samconfig) -> str            samconfig.toml's stack_name, else "modelfn"
    stack_api_key(endpoints) -> str                 the stack's API key value (AuthMode API_KEY)

The stack's outputs are the ones infra/template writes: ``ApiUrl``, ``HealthUrl``, one
``{Model}PredictUrl`` and ``{Model}InfoUrl`` per model, ``EmbeddingsUrl`` and whatever OpenAI routes
the template adds; each URL's path says its route and model, so new outputs of the same form are
listed without a change here. ``{Model}OpenAIBaseUrl`` (``/models/{name}/v1``) is no route but the
base URL an OpenAI client takes for that model (``openai_base_urls``). The ``AuthMode`` parameter
says how callers authenticate.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from functions.routes import ROUTES, model_routes, openai_base

from .. import defaults
from .errors import CredentialsError, StackError, UnreachableError, one_line

AUTH_MODES = ("AWS_IAM", "API_KEY", "NONE")
_GET_PATHS = tuple(r.path for r in ROUTES if r.method == "GET" and not r.model_path) + ("/openapi.json",)
_MODEL_PATH = re.compile(r"^/models/(?P<name>[^/]+)(?P<predict>/predict)?$")
_SERVES = re.compile(r"\((?P<name>[a-z0-9-]+)\)\s*$")
_OPENAI_BASE = re.compile("^" + re.escape(openai_base("{name}")).replace(re.escape("{name}"), "(?P<name>[^/]+)") + "$")


@dataclass(frozen=True)
class Route:
    """One route: ``model`` is None for routes that answer for the whole API (``/health``)."""

    method: str
    path: str
    url: str
    model: str | None = None


@dataclass(frozen=True)
class Endpoints:
    """A modelfn API: its base URL, how callers authenticate, and its routes."""

    base_url: str
    auth_mode: str | None  # AWS_IAM | API_KEY | NONE; None when the source does not say
    source: str  # "stack modelfn (us-east-1)" or "local"
    routes: tuple[Route, ...] = ()
    # (model, URL) of each model's own OpenAI API: OpenAI(base_url=URL) reaches that model on a multi-model stack.
    openai_base_urls: tuple[tuple[str, str], ...] = ()
    api_key_id: str | None = None
    region: str | None = None
    # The boto3 session and endpoint the stack was read with, to read its API key the same way.
    session: object = field(default=None, repr=False, compare=False)
    endpoint_url: str | None = field(default=None, repr=False, compare=False)

    def models(self) -> list[str]:
        """Model names, in the order their routes were listed."""
        return list(dict.fromkeys(r.model for r in self.routes if r.model))

    def to_dict(self) -> dict:
        """Plain data for ``--json``: the API, its routes, and each model's routes by path."""
        return {"base_url": self.base_url, "auth_mode": self.auth_mode, "source": self.source,
                "region": self.region, "api_key_id": self.api_key_id,
                "routes": [asdict(r) for r in self.routes],
                "openai_base_urls": dict(self.openai_base_urls),
                "models": {name: {f"{r.method} {r.path}": r.url for r in self.routes if r.model == name}
                           for name in self.models()}}


def route_method(path: str) -> str:
    """The HTTP method of a modelfn route: GET for info, health, schema and model lists, else POST."""
    if path in _GET_PATHS:
        return "GET"
    return next((r.method for r in ROUTES if r.pattern.fullmatch(path)), "POST")


def default_stack_name(samconfig: str | os.PathLike[str] = defaults.SAMCONFIG) -> str:
    """The stack `sam deploy` deploys: samconfig.toml's default stack_name, else ``modelfn``."""
    import tomllib

    path = Path(samconfig)
    if not path.is_file():
        return defaults.STACK_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StackError(f"{path}: cannot read it: {one_line(exc)}") from None
    default = data.get("default", {})
    for command in ("global", "deploy"):
        name = default.get(command, {}).get("parameters", {}).get("stack_name")
        if name:
            return str(name)
    return defaults.STACK_NAME


def stack_endpoints(stack_name: str, *, region: str | None = None, endpoint_url: str | None = None,
                    session=None) -> Endpoints:
    """The API of a deployed modelfn stack, read from its outputs and AuthMode parameter."""
    import boto3
    import botocore.exceptions as bex

    session = session or boto3.session.Session(region_name=region)
    try:
        cfn = session.client("cloudformation", endpoint_url=endpoint_url)
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except bex.NoRegionError:
        raise StackError(f"cannot look up stack {stack_name!r}: no AWS region configured",
                         hint="pass --region or set AWS_REGION") from None
    except bex.NoCredentialsError:
        raise CredentialsError(f"no AWS credentials found to read stack {stack_name!r}",
                               hint="run `aws configure`, set AWS_PROFILE, or pass --url for a local server") from None
    except bex.EndpointConnectionError as exc:
        raise UnreachableError(f"cannot reach CloudFormation: {one_line(exc)}") from None
    except bex.ClientError as exc:
        error = exc.response.get("Error", {})
        raise StackError(f"cannot read stack {stack_name!r}: {one_line(error.get('Message') or exc)}",
                         hint="deploy with `sam deploy`, or pass --stack-name / --region") from None
    stack = stacks[0]
    region = session.region_name
    outputs = {o["OutputKey"]: o for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters", [])}
    if "ApiUrl" not in outputs:
        raise StackError(f"stack {stack_name!r} ({stack.get('StackStatus', 'unknown status')}) has no ApiUrl output",
                         hint="is it a modelfn stack, and has it finished deploying?")
    base = outputs["ApiUrl"]["OutputValue"].rstrip("/")
    routes, model_paths, openai_bases = [], set(), []
    for output in outputs.values():
        value = str(output.get("OutputValue", ""))
        if not value.startswith(base + "/"):
            continue
        path = value[len(base):]
        own = _OPENAI_BASE.match(path)
        if own:
            openai_bases.append((own.group("name"), value))
            continue
        match = _MODEL_PATH.match(path)
        model = match.group("name") if match else None
        routes.append(Route(route_method(path), path, value, model))
        if model:
            model_paths.add(model)
    # A shared OpenAI route names the model it serves at the end of its description: "... (minilm)".
    described = {}
    for output in outputs.values():
        found = _SERVES.search(output.get("Description", ""))
        if found and found.group("name") in model_paths:
            described[output.get("OutputValue")] = found.group("name")
    routes = [Route(r.method, r.path, r.url, r.model or described.get(r.url)) for r in routes]
    auth = parameters.get("AuthMode")
    api_key_id = outputs.get("ApiKeyId", {}).get("OutputValue")
    return Endpoints(base_url=base, auth_mode=auth if auth in AUTH_MODES else None,
                     source=f"stack {stack_name} ({region})", routes=tuple(_ordered(routes)),
                     openai_base_urls=tuple(openai_bases),
                     api_key_id=api_key_id, region=region, session=session, endpoint_url=endpoint_url)


def local_endpoints(base_url: str, models_file: str | os.PathLike[str] = defaults.MODELS_FILE) -> Endpoints:
    """The routes a local server has for the models of ``models_file``, as the task registry says."""
    from infra.spec import load_models_file
    from functions.tasks import get_task

    base = base_url.rstrip("/")
    routes: list[Route] = []
    openai_bases: list[tuple[str, str]] = []
    for spec in load_models_file(models_file).models:
        openai_routes = get_task(spec.task).openai_routes(None)
        for route, path in model_routes(spec.name, openai_routes):
            if route.openai is not None or route.model_path:
                routes.append(Route(route.method, path, base + path, spec.name))
        if openai_routes:
            openai_bases.append((spec.name, base + openai_base(spec.name)))
    for path in ("/health", "/openapi.json"):
        routes.append(Route("GET", path, base + path, None))
    return Endpoints(base_url=base, auth_mode=None, source="local", routes=tuple(routes),
                     openai_base_urls=tuple(openai_bases))


def stack_api_key(endpoints: Endpoints) -> str:
    """The value of the stack's API key (AuthMode API_KEY), read through API Gateway."""
    if not endpoints.api_key_id:
        raise StackError(f"{endpoints.source} uses API keys but has no ApiKeyId output",
                         hint="pass --api-key or set MODELFN_API_KEY")
    import botocore.exceptions as bex

    try:
        import boto3

        session = endpoints.session or boto3.session.Session(region_name=endpoints.region)
        apigw = session.client("apigateway", endpoint_url=endpoints.endpoint_url)
        return apigw.get_api_key(apiKey=endpoints.api_key_id, includeValue=True)["value"]
    except (bex.BotoCoreError, bex.ClientError, KeyError) as exc:
        raise StackError(f"cannot read API key {endpoints.api_key_id} of {endpoints.source}: {one_line(exc)}",
                         hint="pass --api-key or set MODELFN_API_KEY") from None


def _ordered(routes: list[Route]) -> list[Route]:
    """Model routes grouped by model (predict first), then the API-wide ones."""
    models = list(dict.fromkeys(r.model for r in routes if r.model))
    rank = {name: i for i, name in enumerate(models)}
    return sorted(routes, key=lambda r: (r.model is None, rank.get(r.model, 0),
                                         not r.path.startswith("/models/"), not r.path.endswith("/predict"), r.path))


__all__ = ["Endpoints", "Route", "stack_endpoints", "local_endpoints", "default_stack_name", "stack_api_key",
           "route_method", "AUTH_MODES"]

"""template.yaml from models.yaml: plain data, dumped to YAML once.

Intrinsic functions are plain dicts (``{"Ref": ...}``, ``{"Fn::Sub": ...}``), never YAML tags, so
the template is data any YAML or JSON tool reads.

    generate_template(models_file, deployments, registry_uri) -> dict
    dump_template(template) -> str
    committed_deployments(models_file) -> list[Deployment]   # what the committed template.yaml assumes
"""

from __future__ import annotations

from pathlib import Path

import yaml

from functions.errors import ConfigError
from functions.routes import ROUTES, find_route, openai_base
from infra.spec import ModelsFile

from .. import defaults
from ._api import api_resources, routes
from ._bucket import BUCKET_ID, bucket_resources
from ._function import function_resources, request_limits
from ._names import FUNCTION_ALIAS, Deployment, api_url, get_att, ref
from ._sagemaker import PARAMETERS as GPU_PARAMETERS
from ._relay import relay_resources
from ._sagemaker import endpoint_resources, server_limits

__all__ = ["Deployment", "committed_deployments", "dump_template", "generate_template", "served_limits",
           "write_template"]


def served_limits(spec) -> dict[str, str]:
    """The environment a deployed model's limits travel in (request limits, and the GPU server's for a
    gpu model), as the template sets it: `modelfn serve` applies it where the caller set none."""
    return {**request_limits(spec), **server_limits(spec)}

DEPLOYMENT_TYPES = [
    "Canary10Percent5Minutes", "Canary10Percent10Minutes", "Canary10Percent15Minutes",
    "Canary10Percent30Minutes", "Linear10PercentEvery1Minute", "Linear10PercentEvery2Minutes",
    "Linear10PercentEvery3Minutes", "Linear10PercentEvery10Minutes", "AllAtOnce",
]

_PARAMETERS = {
    "AuthMode": {
        "Type": "String", "Default": "AWS_IAM", "AllowedValues": ["AWS_IAM", "API_KEY", "NONE"],
        "Description": "How callers authenticate: SigV4-signed IAM requests, an API key (x-api-key) with "
                       "a usage plan, or none (public; only for tests)",
    },
    "DeploymentType": {
        "Type": "String", "Default": "Canary10Percent5Minutes", "AllowedValues": DEPLOYMENT_TYPES,
        "Description": "CodeDeploy traffic shift for new function versions; the errors alarm rolls back",
    },
    "ThrottlingRateLimit": {"Type": "Number", "Default": 50, "MinValue": 1,
                            "Description": "Steady-state requests per second across the stage"},
    "ThrottlingBurstLimit": {"Type": "Number", "Default": 100, "MinValue": 1,
                             "Description": "Burst of requests the stage accepts"},
    "LogRetentionDays": {"Type": "Number", "Default": 30,
                         "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 180, 365, 731, 1827, 3653],
                         "Description": "Retention of the API access logs and the functions' logs"},
    "CreateRegistryBucket": {"Type": "String", "Default": "false", "AllowedValues": ["true", "false"],
                             "Description": "Create a versioned, encrypted, TLS-only S3 bucket for the model registry"},
    "CreateApiGatewayAccount": {
        "Type": "String", "Default": "true", "AllowedValues": ["true", "false"],
        "Description": "Set the account-wide API Gateway CloudWatch role access logging needs "
                       "(false when the account already has one)",
    },
    "ReservedConcurrency": {
        "Type": "Number", "Default": 0, "MinValue": 0,
        "Description": "Concurrent executions reserved for (and capping) each model function; 0 leaves them "
                       "unreserved, in the account's shared pool",
    },
    "Tracing": {"Type": "String", "Default": "false", "AllowedValues": ["true", "false"],
                "Description": "X-Ray tracing of the API stage and the functions (billed per traced request)"},
    "KmsKeyArn": {
        "Type": "String", "Default": "",
        "Description": "ARN of a KMS key for the functions' environment and the log groups (its key policy must "
                       "allow logs.<region>.amazonaws.com); empty: AWS-managed encryption",
    },
    "RegistryAccessLogBucket": {
        "Type": "String", "Default": "",
        "Description": "Bucket that receives S3 server access logs of the registry bucket (with "
                       "CreateRegistryBucket); empty: no access logs",
    },
}
_CONDITIONS = {
    "UseIamAuth": {"Fn::Equals": [ref("AuthMode"), "AWS_IAM"]},
    "UseApiKeyAuth": {"Fn::Equals": [ref("AuthMode"), "API_KEY"]},
    "CreateRegistryBucket": {"Fn::Equals": [ref("CreateRegistryBucket"), "true"]},
    "CreateApiGatewayAccount": {"Fn::Equals": [ref("CreateApiGatewayAccount"), "true"]},
    "ReserveConcurrency": {"Fn::Not": [{"Fn::Equals": [ref("ReservedConcurrency"), 0]}]},
    "UseTracing": {"Fn::Equals": [ref("Tracing"), "true"]},
    "UseKmsKey": {"Fn::Not": [{"Fn::Equals": [ref("KmsKeyArn"), ""]}]},
    "LogRegistryAccess": {"Fn::Not": [{"Fn::Equals": [ref("RegistryAccessLogBucket"), ""]}]},
}


def committed_deployments(models_file: ModelsFile, build_dir: str = defaults.BUILD_DIR.as_posix()) -> list[Deployment]:
    """The deployments the committed template.yaml describes: every model at version 1 (what a
    fresh registry holds after the first push), baked into its image, built under ``build_dir``."""
    return [Deployment(spec=s, version=1, context=f"{build_dir}/{s.name}") for s in models_file.models]


def _description(models_file: ModelsFile, deployments: list[Deployment]) -> str:
    served = ", ".join(f"{d.spec.name} v{d.version}" + (" (fetched at cold start)" if d.fetch else "")
                       for d in deployments if not d.is_gpu)
    text = (f"modelfn: one container-image Lambda function per model, generated from {Path(models_file.path).name} "
            f"by `modelfn build` (do not edit). Models: {served or 'none'}.")
    gpu = [f"{d.spec.name} v{d.version} ({d.spec.instance_type})" for d in deployments if d.is_gpu]
    if gpu:
        text += f" GPU endpoints (SageMaker): {', '.join(gpu)}."
    for method, path, deployment in routes(deployments):
        if path.startswith("/v1/") and method == "post":
            text += f" POST {path} serves {deployment.spec.name} (the first model in {Path(models_file.path).name} " \
                    "that serves it)."
    return text[:1024]


def _openai_output(path: str) -> tuple[str, str] | None:
    """(what, output name) of a stack-wide OpenAI route, from the route table: ``/v1/chat/completions``
    -> ("chat completions", "ChatCompletionsUrl"); None for other paths. The client reads the model
    from the "(name)" at the end of the output's description."""
    route = next((r for r in ROUTES if r.path == path and r.stack_wide and r.openai is not None), None)
    if route is None:
        return None
    words = route.operation.split("_")
    return " ".join(words), "".join(w.capitalize() for w in words) + "Url"


def _outputs(deployments: list[Deployment]) -> dict:
    outputs: dict = {
        "ApiUrl": {"Description": "Base URL of the model API", "Value": api_url()},
        "HealthUrl": {"Description": "GET: liveness", "Value": api_url("/health")},
    }
    for method, path, deployment in routes(deployments):
        if find_route(method, path).scoped:
            continue  # one base URL per model below, not an output per route
        if path.startswith("/models/"):
            kind = "Predict" if path.endswith("/predict") else "Info"
            outputs[f"{deployment.logical_id}{kind}Url"] = {
                "Description": f"{method.upper()}: model {deployment.spec.name} {kind.lower()}",
                "Value": api_url(path),
            }
        elif _openai_output(path) is not None:
            what, output = _openai_output(path)
            outputs[output] = {"Description": f"{method.upper()}: OpenAI-style {what} ({deployment.spec.name})",
                               "Value": api_url(path)}
    for deployment in deployments:
        if deployment.openai_routes:
            outputs[f"{deployment.logical_id}OpenAIBaseUrl"] = {
                "Description": f"OpenAI client base_url of model {deployment.spec.name}: its own /v1 routes",
                "Value": api_url(openai_base(deployment.spec.name)),
            }
        if deployment.is_gpu:
            outputs[f"{deployment.logical_id}EndpointName"] = {
                "Description": f"SageMaker endpoint of model {deployment.spec.name}",
                "Value": get_att(f"{deployment.logical_id}Endpoint", "EndpointName"),
            }
            continue
        outputs[f"{deployment.logical_id}FunctionAlias"] = {
            "Description": f"Alias {FUNCTION_ALIAS} of model {deployment.spec.name}'s function",
            "Value": ref(f"{deployment.function_id}.Alias"),
        }
    outputs["ApiKeyId"] = {"Condition": "UseApiKeyAuth", "Description": "Id of the API key (value: aws apigateway get-api-key --include-value)",
                           "Value": ref("ApiKey")}
    outputs["RegistryBucketName"] = {"Condition": "CreateRegistryBucket", "Description": "Model registry bucket",
                                     "Value": ref(BUCKET_ID)}
    outputs["RegistryBucketArn"] = {"Condition": "CreateRegistryBucket", "Value": get_att(BUCKET_ID, "Arn")}
    return outputs


def generate_template(models_file: ModelsFile, deployments: list[Deployment], registry_uri: str) -> dict:
    """The SAM template for ``deployments`` (in models.yaml order): a function per Lambda model, an
    endpoint per gpu model, one API in front of both."""
    if not deployments:
        raise ConfigError(f"{models_file.path}: no model; nothing to put in template.yaml")
    ids: dict[str, str] = {}
    for deployment in deployments:
        other = ids.setdefault(deployment.logical_id, deployment.spec.name)
        if other != deployment.spec.name:
            raise ConfigError(f"{models_file.path}: models {other!r} and {deployment.spec.name!r} map to the same "
                              f"CloudFormation id {deployment.logical_id}; rename one")
        if deployment.fetch and not registry_uri.startswith("s3://"):
            raise ConfigError(
                f"model {deployment.spec.name!r} is fetched at cold start, which needs an s3:// registry, "
                f"not {registry_uri}", hint="push it to an S3 registry or raise the bake threshold")
    resources: dict[str, dict] = {}
    for deployment in deployments:
        if deployment.is_gpu:
            resources.update(endpoint_resources(deployment, registry_uri))
            if deployment.relays:
                resources.update(relay_resources(deployment))
        else:
            resources.update(function_resources(deployment, registry_uri))
    resources.update(api_resources(deployments))
    resources.update(bucket_resources())
    parameters, conditions = dict(_PARAMETERS), dict(_CONDITIONS)
    if any(d.is_gpu for d in deployments):
        parameters.update(GPU_PARAMETERS)
    if all(d.is_gpu and not d.relays for d in deployments):  # no function to reserve concurrency for
        del parameters["ReservedConcurrency"], conditions["ReserveConcurrency"]

    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": _description(models_file, deployments),
        "Parameters": parameters,
        "Conditions": conditions,
        "Resources": resources,
        "Outputs": _outputs(deployments),
    }


class _Dumper(yaml.SafeDumper):
    """Block style, keys in insertion order, no anchors for repeated dicts."""

    def ignore_aliases(self, data) -> bool:
        return True


def dump_template(template: dict) -> str:
    header = "# Generated by `modelfn build` from models.yaml. Do not edit; rerun `modelfn build`.\n"
    return header + yaml.dump(template, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                              width=120, allow_unicode=True)


def write_template(template: dict, path: Path) -> Path:
    """Write atomically, so a failed build never leaves half a template."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dump_template(template), encoding="utf-8")
    tmp.replace(path)
    return path

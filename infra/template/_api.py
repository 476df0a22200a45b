"""The REST API in front of the model functions: routes, auth mode, throttling, access logs.

Routes are written as an OpenAPI body rather than function events so the auth mode can follow the
``AuthMode`` parameter through a condition (SAM's Auth block takes no conditions), while
``sam local start-api`` still finds every route from the integrations.
"""

from __future__ import annotations

from functions.inputs import INPUT_KINDS
from functions.tasks import get_task

from ._names import API_ID, FUNCTION_ALIAS, NO_VALUE, STAGE_NAME, Deployment, get_att, if_, ref, sub

ACCESS_LOG_ID = "ApiAccessLogGroup"
_ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
    '"caller":"$context.identity.caller","user":"$context.identity.user",'
    '"apiKeyId":"$context.identity.apiKeyId","time":"$context.requestTime",'
    '"method":"$context.httpMethod","path":"$context.path","status":"$context.status",'
    '"latencyMs":"$context.responseLatency","integrationLatencyMs":"$context.integrationLatency",'
    '"error":"$context.error.message"}'
)
# API Gateway's own rejections (auth, throttling) answer in the same error shape as the functions.
_ERROR_TEMPLATE = '{"error": {"code": "$context.error.responseType", "message": $context.error.messageString}}'


def routes(deployments: list[Deployment]) -> list[tuple[str, str, Deployment]]:
    """(method, path, deployment): each model's own routes; ``GET /health`` on the first model;
    ``POST /v1/embeddings`` on the first embedding model in models.yaml order (one OpenAI-style
    endpoint per stack; other embedding models answer on their own predict route)."""
    found = [(m, p, d) for d in deployments for m, p in
             (("post", f"/models/{d.spec.name}/predict"), ("get", f"/models/{d.spec.name}"))]
    found.append(("get", "/health", deployments[0]))
    embedders = [d for d in deployments if d.is_embedding]
    if embedders:
        found.append(("post", "/v1/embeddings", embedders[0]))
    return found


def _operation(deployment: Deployment) -> dict:
    return {
        "x-amazon-apigateway-integration": {
            "type": "aws_proxy",
            "httpMethod": "POST",
            "passthroughBehavior": "when_no_match",
            "uri": sub("arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
                       f"${{{deployment.function_id}.Arn}}:{FUNCTION_ALIAS}/invocations"),
        },
        # One requirement or none (AuthMode NONE drops the element); kept inside a list so
        # `sam local start-api`, which reads the body unresolved, still sees a list.
        "security": [if_("UseIamAuth", {"sigv4": []}, if_("UseApiKeyAuth", {"api_key": []}, NO_VALUE))],
        "responses": {},
    }


def binary_media_types(deployments: list[Deployment]) -> list[str]:
    """Media types the REST API passes through as bytes (base64 in the event, which the handler
    decodes): the raw bodies the deployed tasks' input kinds take, e.g. image/* for image models.
    Without them API Gateway would read an image body as UTF-8 text and corrupt it."""
    found: list[str] = []
    for deployment in deployments:
        for media in INPUT_KINDS[get_task(deployment.spec.task).inputs].raw_media:
            if media not in found:
                found.append(media)
    return found


def definition_body(deployments: list[Deployment]) -> dict:
    paths: dict[str, dict] = {}
    for method, path, deployment in routes(deployments):
        paths.setdefault(path, {})[method] = _operation(deployment)
    binary = binary_media_types(deployments)
    return {**({"x-amazon-apigateway-binary-media-types": binary} if binary else {}),
        "openapi": "3.0.1",
        "info": {"title": sub("${AWS::StackName}-modelfn"), "version": "1.0"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "sigv4": {"type": "apiKey", "name": "Authorization", "in": "header",
                          "x-amazon-apigateway-authtype": "awsSigv4"},
                "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"},
            },
        },
        "x-amazon-apigateway-gateway-responses": {
            kind: {"responseTemplates": {"application/json": _ERROR_TEMPLATE}}
            for kind in ("DEFAULT_4XX", "DEFAULT_5XX")
        },
    }


def permissions(deployments: list[Deployment]) -> dict[str, dict]:
    """API Gateway may invoke each function's live alias, on that function's routes only."""
    resources: dict[str, dict] = {}
    for index, (method, path, deployment) in enumerate(routes(deployments)):
        resources[f"{deployment.logical_id}InvokePermission{index}"] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": ref(f"{deployment.function_id}.Alias"),
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": sub(f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:"
                                 f"${{{API_ID}}}/*/{method.upper()}{path}"),
            },
        }
    return resources


def api_resources(deployments: list[Deployment]) -> dict[str, dict]:
    resources: dict[str, dict] = {
        ACCESS_LOG_ID: {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "LogGroupName": sub("/aws/apigateway/${AWS::StackName}-access"),
                "RetentionInDays": ref("LogRetentionDays"),
            },
        },
        API_ID: {
            "Type": "AWS::Serverless::Api",
            "DependsOn": ["ApiGatewayAccountReady"],
            "Properties": {
                "StageName": STAGE_NAME,
                "OpenApiVersion": "3.0.1",
                "EndpointConfiguration": {"Type": "REGIONAL"},
                "DefinitionBody": definition_body(deployments),
                "AccessLogSetting": {
                    "DestinationArn": get_att(ACCESS_LOG_ID, "Arn"),
                    "Format": _ACCESS_LOG_FORMAT,
                },
                "MethodSettings": [{
                    "ResourcePath": "/*",
                    "HttpMethod": "*",
                    "ThrottlingRateLimit": ref("ThrottlingRateLimit"),
                    "ThrottlingBurstLimit": ref("ThrottlingBurstLimit"),
                    "MetricsEnabled": True,
                }],
            },
        },
        # Access logging needs the account-wide API Gateway CloudWatch role; the stack sets it unless
        # told the account already has one.
        "ApiGatewayCloudWatchRole": {
            "Type": "AWS::IAM::Role",
            "Condition": "CreateApiGatewayAccount",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "apigateway.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}],
                },
                "ManagedPolicyArns": [sub(
                    "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs")],
            },
        },
        "ApiGatewayAccount": {
            "Type": "AWS::ApiGateway::Account",
            "Condition": "CreateApiGatewayAccount",
            "Properties": {"CloudWatchRoleArn": get_att("ApiGatewayCloudWatchRole", "Arn")},
        },
        # A DependsOn cannot name a conditional resource; this handle depends on it only when it exists.
        "ApiGatewayAccountReady": {
            "Type": "AWS::CloudFormation::WaitConditionHandle",
            "Metadata": {"AccountSettings": if_("CreateApiGatewayAccount", ref("ApiGatewayAccount"), "")},
        },
        "ApiUsagePlan": {
            "Type": "AWS::ApiGateway::UsagePlan",
            "Condition": "UseApiKeyAuth",
            "Properties": {
                "Description": sub("${AWS::StackName}: callers holding the modelfn API key"),
                "ApiStages": [{"ApiId": ref(API_ID), "Stage": ref(f"{API_ID}.Stage")}],
                "Throttle": {"RateLimit": ref("ThrottlingRateLimit"), "BurstLimit": ref("ThrottlingBurstLimit")},
            },
        },
        "ApiKey": {
            "Type": "AWS::ApiGateway::ApiKey",
            "Condition": "UseApiKeyAuth",
            "DependsOn": ["ApiUsagePlan"],
            "Properties": {"Enabled": True, "Description": sub("${AWS::StackName} modelfn API key")},
        },
        "ApiUsagePlanKey": {
            "Type": "AWS::ApiGateway::UsagePlanKey",
            "Condition": "UseApiKeyAuth",
            "Properties": {"KeyId": ref("ApiKey"), "KeyType": "API_KEY", "UsagePlanId": ref("ApiUsagePlan")},
        },
    }
    resources.update(permissions(deployments))
    return resources

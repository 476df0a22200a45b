"""The REST API in front of the model functions and GPU endpoints: routes, auth mode, throttling, logs.

Routes are written as an OpenAPI body rather than function events so the auth mode can follow the
``AuthMode`` parameter through a condition (SAM's Auth block takes no conditions), while
``sam local start-api`` still finds every route from the integrations. A Lambda model's routes
proxy to its function's live alias; a gpu model's routes call its SageMaker endpoint directly
(an AWS service integration with InvokeEndpoint, no function in between), under the same auth,
except a gpu text-generation model's chat and completions routes, which stream through its relay
function (functions/relay.py, _relay.py) unless models.yaml or `modelfn build --no-stream` says not to.
Each model's own OpenAI routes (``/models/{name}/v1/...``) take the same integration as the
stack-wide ones would for that model, under the same auth.
"""

from __future__ import annotations

from functions.inputs import INPUT_KINDS
from functions.relay import (ENDPOINT_FAILED, NOT_READY, SIZE_MESSAGE, THROTTLE_MESSAGES, THROTTLED, TOO_LARGE,
                             UNAVAILABLE, Failure)
from functions.routes import ROUTES, find_route, model_routes
from functions.tasks import CHAT_ROUTE, COMPLETIONS_ROUTE, TRANSCRIPTIONS_ROUTE, get_task

from ._checkov import skips
from ._names import API_ID, FUNCTION_ALIAS, NO_VALUE, STAGE_NAME, Deployment, get_att, if_, ref, sub
from ._sagemaker import endpoint_name, inference_component_name, invoke_role_id

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
    """(method, path, deployment), from the route table (functions/routes.py): each model's own routes;
    ``GET /health`` on the first Lambda model (the first model when all are gpu); each OpenAI route
    (``/v1/embeddings``, ``/v1/chat/completions``, ...) on the first model in models.yaml order whose
    task serves it, on either tier (one OpenAI-style endpoint per stack); then every model's own
    OpenAI routes (``/models/{name}/v1/...``, the table's scoped twins), so a client reaches any
    model as ``OpenAI(base_url=.../models/{name}/v1)``."""
    found = [(route.method.lower(), path, d) for d in deployments
             for route, path in model_routes(d.spec.name, d.openai_routes) if not route.stack_wide and not route.scoped]
    # /health first, then the OpenAI routes: the order keeps the permissions' logical ids stable.
    for route in sorted(ROUTES, key=lambda r: r.openai is not None):
        if not route.stack_wide:
            continue
        if route.openai is None:
            owner = next((d for d in deployments if not d.is_gpu), deployments[0])
        else:
            owner = next((d for d in deployments if route.openai in d.openai_routes), None)
        if owner is not None:
            found.append((route.method.lower(), route.path, owner))
    # Last, so the routes above keep their index (and their permissions their logical ids).
    found += [(route.method.lower(), path, d) for d in deployments
              for route, path in model_routes(d.spec.name, d.openai_routes) if route.scoped]
    return found


def security() -> list:
    """The auth requirement of every route, Lambda or gpu: one requirement or none (AuthMode NONE
    drops the element), kept inside a list so `sam local start-api`, which reads the body unresolved,
    still sees a list."""
    return [if_("UseIamAuth", {"sigv4": []}, if_("UseApiKeyAuth", {"api_key": []}, NO_VALUE))]


def _error(code: str, message: str) -> str:
    return '{"error": {"code": "%s", "message": "%s"}}' % (code, message)


def _failure(failure: Failure) -> str:
    """A Failure's status (as an override of the integration response's) and its error body."""
    return f"#set($context.responseOverride.status = {failure.status}){_error(failure.code, failure.message)}"


# A string of the runtime's answer as the inside of a JSON string. API Gateway's escapeJavaScript
# also escapes ' as \', which is no JSON escape: its documentation's fix is this replaceAll.
def _json_text(reference: str) -> str:
    return f'$util.escapeJavaScript({reference}).replaceAll("\\\\\'","\'")'


# SageMaker runtime answers -> the API's error shape, as functions/relay.py's runtime_failure maps them
# for the stream relay (tests/infra/test_error_mapping.py runs both on the same answers). A container's
# own 4xx/5xx comes back as ModelError (424) carrying its status and body: both are passed through, so
# a caller sees exactly what the Lambda tier would answer. Retry-After headers do not cross InvokeEndpoint.
_MODEL_ERROR = (
    "#set($status = $input.path('$.OriginalStatusCode'))"
    "#set($original = \"$!input.path('$.OriginalMessage')\")"
    "#if(\"$!status\" != \"\")#set($context.responseOverride.status = $status)#end"
    "#if($original.startsWith('{\"error\"'))$original#else"
    "{\"error\": {\"code\": \"model_error\", \"message\": \""
    + _json_text("\"$!input.path('$.Message')\"") + "\"}}#end"
)
# 400 from the runtime: throttling (its body is {"message": null}), the 6 MB limit, an endpoint that is
# not there, or another ValidationError.
_REJECTED = (
    "#set($message = \"$!input.path('$.message')$!input.path('$.Message')\")"
    "#set($lowered = $message.toLowerCase())"
    "#if($message == \"\"" + "".join(f" || $lowered.contains('{w}')" for w in THROTTLE_MESSAGES) + ")"
    + _failure(THROTTLED)
    + f"#elseif($message.contains(\"{SIZE_MESSAGE}\"))" + _failure(TOO_LARGE)
    + "#elseif($message.startsWith('Endpoint ') && $message.contains(' not found'))"
    f"#set($context.responseOverride.status = {ENDPOINT_FAILED.status})"
    f"{{\"error\": {{\"code\": \"{ENDPOINT_FAILED.code}\", \"message\": \"the GPU endpoint is not there: "
    + _json_text("$message") + "\"}}"
    "#else{\"error\": {\"code\": \"bad_request\", \"message\": \"" + _json_text("$message") + "\"}}#end"
)


# (selection pattern on the runtime's status, method status, body template, Retry-After seconds); the
# stream relay (functions/relay.py) answers the same runtime statuses with the same Failures.
_SAGEMAKER_ERRORS = (
    ("424", "502", _MODEL_ERROR, None),
    ("400", "400", _REJECTED, None),
    # ModelNotReadyException: scaled to zero, or the endpoint is (re)starting.
    ("429", str(NOT_READY.status), _error(NOT_READY.code, NOT_READY.message), NOT_READY.retry_after),
    ("503", str(UNAVAILABLE.status), _error(UNAVAILABLE.code, UNAVAILABLE.message), UNAVAILABLE.retry_after),
    # everything else but 2xx; the patterns are disjoint, since which of two matches wins is undefined
    ("4(0[1-9]|[13-9]\\d|2[0-35-8])|5(0[0-24-9]|[1-9]\\d)", str(ENDPOINT_FAILED.status),
     _error(ENDPOINT_FAILED.code, ENDPOINT_FAILED.message), None),
)
# The OpenAI routes that answer SSE with stream: true (stack-wide and model-scoped): a relaying gpu
# model's STREAM routes.
STREAMING_ROUTES = frozenset(r for r in ROUTES if r.openai in (CHAT_ROUTE, COMPLETIONS_ROUTE) and r.method == "POST")


def takes_raw_media(method: str, path: str, deployment: Deployment) -> bool:
    """Whether this route takes a raw body of the task's media (an image/png predict body, as on
    Lambda), so the caller's Content-Type must reach the server; every other route's body is JSON."""
    route = find_route(method, path)
    return route is not None and route.operation == "predict" and \
        bool(INPUT_KINDS[get_task(deployment.spec.task).inputs].raw_media)


def _sagemaker_operation(method: str, path: str, deployment: Deployment) -> dict:
    """InvokeEndpoint on the model's endpoint with the caller's body; ``path`` travels as a custom
    attribute so the server answers the route that was called (an info GET sends ``{}``)."""
    raw_media = takes_raw_media(method, path, deployment)
    headers = {
        # A raw image passes through as the binary media type it is (binary_media_types), with its type.
        "integration.request.header.Content-Type":
            "method.request.header.Content-Type" if raw_media else "'application/json'",
        "integration.request.header.Accept": "'application/json'",
        "integration.request.header.X-Amzn-SageMaker-Custom-Attributes": f"'modelfn-route={path}'",
    }
    component = inference_component_name(deployment)
    if component is not None:
        headers["integration.request.header.X-Amzn-SageMaker-Inference-Component"] = \
            sub(f"'${{AWS::StackName}}-{deployment.spec.name}'")
    responses: dict = {"default": {"statusCode": "200"}}
    for pattern, status, template, retry in _SAGEMAKER_ERRORS:
        response = {"statusCode": status, "responseTemplates": {"application/json": template}}
        if retry:
            response["responseParameters"] = {"method.response.header.Retry-After": f"'{retry}'"}
        responses[pattern] = response
    method_responses = {"200": {"description": "the model's answer"}}
    for _, status, _, retry in _SAGEMAKER_ERRORS:
        entry = method_responses.setdefault(status, {"description": "error: {\"error\": {\"code\", \"message\"}}"})
        if retry:
            entry["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    operation: dict = {}
    if raw_media:
        operation["parameters"] = [{"name": "Content-Type", "in": "header", "required": False,
                                    "schema": {"type": "string"}}]
    return {
        **operation,
        "x-amazon-apigateway-integration": {
            "type": "aws",
            "httpMethod": "POST",
            "uri": sub("arn:${AWS::Partition}:apigateway:${AWS::Region}:runtime.sagemaker:path//endpoints/"
                       f"{endpoint_name(deployment)['Fn::Sub']}/invocations"),
            "credentials": get_att(invoke_role_id(deployment), "Arn"),
            "passthroughBehavior": "when_no_match",
            "requestParameters": headers,
            "requestTemplates": {"application/json": "$input.body" if method == "post" else "{}"},
            "timeoutInMillis": 29000,
            "responses": responses,
        },
        "security": security(),
        "responses": method_responses,
    }


def binary_media_types(deployments: list[Deployment]) -> list[str]:
    """Media types the REST API passes through as bytes (base64 in the event, which the handler
    decodes): the raw bodies the deployed tasks' input kinds take, e.g. image/* for image models.
    Without them API Gateway would read an image body as UTF-8 text and corrupt it. A task serving
    OpenAI's /v1/audio/transcriptions adds multipart/form-data: the recording travels inside the form."""
    found: list[str] = []
    for deployment in deployments:
        task = get_task(deployment.spec.task)
        forms = ("multipart/form-data",) if TRANSCRIPTIONS_ROUTE in task.openai_routes(None) else ()
        for media in INPUT_KINDS[task.inputs].raw_media + forms:
            if media not in found:
                found.append(media)
    return found


def relayed(method: str, path: str, deployment: Deployment) -> bool:
    """Whether this route of a gpu model goes through its stream relay (functions/relay.py) rather than
    straight to InvokeEndpoint. API Gateway routes by method and path, never by body, so a relayed
    route carries its ``stream: false`` requests through the relay too (the same answer, one part)."""
    return deployment.relays and find_route(method, path) in STREAMING_ROUTES


def _streaming_integration(function: str) -> dict:
    """STREAM transfer mode calls InvokeWithResponseStream; the function then writes the prelude,
    the delimiter and the body as it is made (functions/response_stream.py), and the 29 s
    integration timeout no longer cuts long answers."""
    return {"type": "aws_proxy", "httpMethod": "POST", "passthroughBehavior": "when_no_match",
            "uri": sub(f"arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}:lambda:path/2021-11-15/"
                       f"functions/{function}/response-streaming-invocations"),
            "responseTransferMode": "STREAM", "timeoutInMillis": 900000}


def _operation(method: str, path: str, deployment: Deployment) -> dict:
    if relayed(method, path, deployment):
        integration = _streaming_integration(f"${{{deployment.relay_id}.Arn}}")
        return {"x-amazon-apigateway-integration": integration, "security": security(), "responses": {}}
    if deployment.is_gpu:
        return _sagemaker_operation(method, path, deployment)
    function = f"${{{deployment.function_id}.Arn}}:{FUNCTION_ALIAS}"
    integration = {
        "type": "aws_proxy",
        "httpMethod": "POST",
        "passthroughBehavior": "when_no_match",
        "uri": sub(f"arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/"
                   f"{function}/invocations"),
    }
    if deployment.streams and method == "post":
        integration = _streaming_integration(function)
    return {"x-amazon-apigateway-integration": integration, "security": security(), "responses": {}}


def definition_body(deployments: list[Deployment]) -> dict:
    paths: dict[str, dict] = {}
    for method, path, deployment in routes(deployments):
        paths.setdefault(path, {})[method] = _operation(method, path, deployment)
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
    """API Gateway may invoke each function's live alias (a gpu model's stream relay), on that function's
    routes only."""
    resources: dict[str, dict] = {}
    for index, (method, path, deployment) in enumerate(routes(deployments)):
        if relayed(method, path, deployment):
            function = ref(deployment.relay_id)  # the relay has no alias: its code is not the model's
        elif deployment.is_gpu:
            continue  # called with its invoke role's credentials, not through a function permission
        else:
            function = ref(f"{deployment.function_id}.Alias")
        resources[f"{deployment.logical_id}InvokePermission{index}"] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": function,
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
                "KmsKeyId": if_("UseKmsKey", ref("KmsKeyArn"), NO_VALUE),
            },
        },
        API_ID: {
            "Type": "AWS::Serverless::Api",
            "DependsOn": ["ApiGatewayAccountReady"],
            "Metadata": skips("CKV_AWS_120", "CKV_AWS_73"),
            "Properties": {
                "StageName": STAGE_NAME,
                "TracingEnabled": if_("UseTracing", True, False),
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

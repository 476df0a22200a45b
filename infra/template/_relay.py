"""The stream relay in front of a gpu text-generation model's endpoint (functions/relay.py).

    <Id>Relay           a zip function on the managed Python runtime: functions/ and relay-bootstrap
                        (RELAY_DIR, written by `modelfn build`), started through AWS_LAMBDA_EXEC_WRAPPER so
                        that its streaming Runtime API loop runs instead of the buffered one; boto3 comes
                        with the runtime, so the package holds no wheels, no model, no onnxruntime
    <Id>RelayLogGroup   its logs, with the stack's retention

Why a zip and not an image: the relay runs no model, and the managed runtime already has everything
it imports; a zip needs no ECR repository or image build, and cold-starts faster than an image.
Its role may call its own endpoint and nothing else. The API's STREAM integrations and their
invoke permissions are in _api.py.
"""

from __future__ import annotations

from functions import constants

from ._checkov import skips
from ._function import retained_log_group
from ._names import NO_VALUE, Deployment, if_, ref
from ._sagemaker import endpoint_name, inference_component_name

RELAY_RUNTIME = "python3.12"
# The managed runtime starts this instead of its own loop (the file is written by `modelfn build`).
RELAY_BOOTSTRAP = "relay-bootstrap"
RELAY_BOOTSTRAP_SCRIPT = """#!/bin/sh
# AWS_LAMBDA_EXEC_WRAPPER: the managed Python runtime passes its own (buffered) loop as "$@"; the
# relay streams, so modelfn's Runtime API loop (functions/response_stream.py) runs instead.
cd "${LAMBDA_TASK_ROOT:-/var/task}" || exit 1
exec python3 -m functions.relay
"""
# It waits on the endpoint, never computes: the least memory that imports boto3 quickly.
RELAY_MEMORY_MB = 256
# As long as a STREAM integration may run (15 minutes): a long answer is not cut at 29 s.
RELAY_TIMEOUT_S = 900


def relay_resources(deployment: Deployment) -> dict[str, dict]:
    """The relay function of one gpu model and its log group."""
    spec = deployment.spec
    log_id = f"{deployment.relay_id}LogGroup"
    env = {
        constants.ENDPOINT_NAME: endpoint_name(deployment),
        "AWS_LAMBDA_EXEC_WRAPPER": f"/var/task/{RELAY_BOOTSTRAP}",
        constants.SERVICE_NAME: f"modelfn-{spec.name}-relay",
    }
    component = inference_component_name(deployment)
    if component is not None:
        env[constants.INFERENCE_COMPONENT] = component
    function = {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Description": f"modelfn stream relay: API Gateway -> model {spec.name}'s GPU endpoint, streamed",
            "Runtime": RELAY_RUNTIME,
            "Handler": "functions.relay.handler",  # the buffered entry, for runners without the wrapper
            "CodeUri": deployment.relay_code,
            "Architectures": ["arm64"],  # pure Python: the cheaper architecture
            "MemorySize": RELAY_MEMORY_MB,
            "Timeout": RELAY_TIMEOUT_S,
            "Environment": {"Variables": env},
            "KmsKeyArn": if_("UseKmsKey", ref("KmsKeyArn"), NO_VALUE),
            "ReservedConcurrentExecutions": if_("ReserveConcurrency", ref("ReservedConcurrency"), NO_VALUE),
            "Tracing": if_("UseTracing", "Active", NO_VALUE),
            "LoggingConfig": {"LogGroup": ref(log_id)},
            "Policies": [{"Statement": [{
                # AWS authorizes InvokeEndpointWithResponseStream as sagemaker:InvokeEndpoint (API
                # reference); the IAM action list also names the streaming action: both, this endpoint only.
                "Effect": "Allow",
                "Action": ["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"],
                "Resource": ref(f"{deployment.logical_id}Endpoint"),  # Ref of an endpoint is its ARN
            }]}],
        },
        "Metadata": skips("CKV_AWS_116", "CKV_AWS_117"),
    }
    log_group = retained_log_group()
    return {deployment.relay_id: function, log_id: log_group}


__all__ = ["RELAY_BOOTSTRAP", "RELAY_BOOTSTRAP_SCRIPT", "relay_resources"]

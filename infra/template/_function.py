"""One container-image Lambda function per model, with its safe-rollout alias and error alarm."""

from __future__ import annotations

import math

from functions import constants

from ._checkov import skips
from ._names import FUNCTION_ALIAS, NO_VALUE, Deployment, if_, ref, sub

# /tmp must hold the fetched bundle plus what ONNX Runtime and Python write; Lambda allows 512-10240 MB.
_EPHEMERAL_HEADROOM_MB = 512


def s3_location(registry_uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes)."""
    rest = registry_uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def ephemeral_need_mb(bundle_bytes: int) -> int:
    """/tmp a fetched bundle needs: the bundle plus headroom (`modelfn build` refuses over 10240)."""
    return math.ceil(bundle_bytes / 2**20) + _EPHEMERAL_HEADROOM_MB


def ephemeral_storage_mb(bundle_bytes: int) -> int:
    return max(512, min(10240, ephemeral_need_mb(bundle_bytes)))




def request_limits(spec) -> dict[str, str]:
    """models.yaml's request limits as the runtime reads them (functions/settings.py), on every tier and
    under `modelfn serve`."""
    return {
        constants.MAX_BATCH: str(spec.max_batch),
        constants.MAX_TOKENS: str(spec.max_tokens),
        constants.TRUNCATE: "true" if spec.truncate else "false",
    }


def environment(deployment: Deployment, registry_uri: str) -> dict:
    spec = deployment.spec
    env = {
        constants.MODEL_NAME: spec.name,
        constants.MODEL_VERSION: str(deployment.version),
        **request_limits(spec),
        "POWERTOOLS_SERVICE_NAME": f"modelfn-{spec.name}",
    }
    if deployment.fetch:
        env[constants.REGISTRY_URI] = registry_uri
    if deployment.streams:
        # The image's entry point runs modelfn's streaming Runtime API loop when this is true, and the
        # managed (buffered) runtime otherwise (`modelfn build --no-stream`, for sam local).
        env[constants.RESPONSE_STREAMING] = "true"
    return env


def fetch_policy(deployment: Deployment, registry_uri: str) -> dict:
    """Read-only access to exactly the model version this function version pins."""
    bucket, prefix = s3_location(registry_uri)
    key = "/".join(p for p in (prefix, "models", deployment.spec.name, "versions", str(deployment.version)) if p)
    return {
        "Statement": [{
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": sub(f"arn:${{AWS::Partition}}:s3:::{bucket}/{key}/*"),
        }],
    }


def function_resources(deployment: Deployment, registry_uri: str) -> dict[str, dict]:
    """The function, its log group (with the stack's retention) and the alarm that rolls a bad
    version back during its canary."""
    spec = deployment.spec
    fn_id = deployment.function_id
    alarm_id = f"{deployment.logical_id}ErrorsAlarm"
    log_id = f"{deployment.logical_id}LogGroup"
    properties: dict = {
        "PackageType": "Image",
        "Description": f"modelfn model {spec.name} ({spec.task}) version {deployment.version}",
        "Architectures": [spec.architecture],
        "MemorySize": deployment.memory_size,
        "Timeout": spec.timeout_s,
        "Environment": {"Variables": environment(deployment, registry_uri)},
        "KmsKeyArn": if_("UseKmsKey", ref("KmsKeyArn"), NO_VALUE),
        "ReservedConcurrentExecutions": if_("ReserveConcurrency", ref("ReservedConcurrency"), NO_VALUE),
        "Tracing": if_("UseTracing", "Active", NO_VALUE),
        # Its own log group, so the logs expire (Lambda's default group keeps them forever).
        "LoggingConfig": {"LogGroup": ref(log_id)},
        "AutoPublishAlias": FUNCTION_ALIAS,
        "DeploymentPreference": {
            "Type": ref("DeploymentType"),
            "Alarms": [ref(alarm_id)],
        },
    }
    if deployment.fetch:
        properties["EphemeralStorage"] = {"Size": ephemeral_storage_mb(deployment.bundle_bytes)}
        properties["Policies"] = [fetch_policy(deployment, registry_uri)]
    function = {
        "Type": "AWS::Serverless::Function",
        "Properties": properties,
        "Metadata": {
            "Dockerfile": "Dockerfile",
            "DockerContext": deployment.context,
            "DockerTag": deployment.docker_tag,
            **skips("CKV_AWS_116", "CKV_AWS_117"),
        },
    }
    log_group = retained_log_group()
    alarm = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": sub(
                f"${{AWS::StackName}}: errors of model {spec.name} on alias {FUNCTION_ALIAS}; "
                "during a deployment it rolls the new version back"),
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Dimensions": [
                {"Name": "Resource", "Value": sub(f"${{{fn_id}}}:{FUNCTION_ALIAS}")},
                {"Name": "FunctionName", "Value": ref(fn_id)},
            ],
            "Statistic": "Sum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
    }
    return {fn_id: function, log_id: log_group, alarm_id: alarm}


def retained_log_group() -> dict:
    """A function's log group: kept when the stack goes, retention and encryption from the parameters."""
    return {
        "Type": "AWS::Logs::LogGroup",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "RetentionInDays": ref("LogRetentionDays"),
            "KmsKeyId": if_("UseKmsKey", ref("KmsKeyArn"), NO_VALUE),
        },
    }

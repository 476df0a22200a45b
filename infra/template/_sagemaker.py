"""One GPU-backed SageMaker endpoint per gpu model: model, endpoint config, endpoint, autoscaling, roles.

    <Id>ExecutionRole       what the container may do: pull its image from ECR, write its own logs,
                            read its own registry version (only when the bundle is not baked in)
    <Id>Model               the image (GpuImageRepository:<name>-v<version>), its environment and,
                            for a bundle over the bake limit, the registry version as model data
    <Id>EndpointConfig      instance type, count; scale to zero: managed instance scaling from 0
    <Id>Endpoint            named <stack>-<name>, the name the API's integration calls
    <Id>InferenceComponent  scale to zero only: the model placed on the endpoint, 0..max copies
    <Id>ScalableTarget      Application Auto Scaling, min..max instances (or copies)
    <Id>ScalingPolicy       target tracking on invocations per instance (or per copy)
    <Id>ScaleFromZero*      scale to zero only: a request that finds no copy adds one
    <Id>InvokeRole          API Gateway's credentials: sagemaker:InvokeEndpoint on this endpoint only

Scale to zero is only possible with an inference component (a plain production variant keeps at
least one instance), so an opted-in model is placed as one; the first request after an idle period
is answered 503 while an instance starts and the model loads (minutes), see README "GPU endpoints".
"""

from __future__ import annotations

from functions import constants

from functions.fetch import version_prefix

from ._function import environment, fetch_policy, s3_location
from ._names import Deployment, get_att, ref, sub

IMAGE_REPOSITORY = "GpuImageRepository"
VARIANT = "AllTraffic"
SCALE_IN_COOLDOWN_S = 300
SCALE_OUT_COOLDOWN_S = 60
# Loading a large bundle and warming CUDA kernels takes a while; SageMaker's default is far lower
# for some instance types, and /ping answers 503 until the model is warm.
STARTUP_HEALTH_CHECK_S = 600

PARAMETERS = {
    IMAGE_REPOSITORY: {
        "Type": "String", "Default": "modelfn", "AllowedPattern": "[a-z0-9][a-z0-9._/-]{1,255}",
        "Description": "ECR repository (in this account and region) holding the GPU images that `modelfn build` "
                       "prepares; each is tagged <model>-v<version>",
    },
}


def endpoint_name(deployment: Deployment) -> dict:
    """The endpoint's name (fixed, so the API integration and the role's log group can name it)."""
    return sub(f"${{AWS::StackName}}-{deployment.spec.name}")


def image_uri(deployment: Deployment) -> dict:
    return sub(f"${{AWS::AccountId}}.dkr.ecr.${{AWS::Region}}.${{AWS::URLSuffix}}/${{{IMAGE_REPOSITORY}}}:"
               f"{deployment.docker_tag}")


def invoke_role_id(deployment: Deployment) -> str:
    return f"{deployment.logical_id}InvokeRole"


def inference_component_name(deployment: Deployment) -> dict | None:
    """The component API calls must name (scale to zero only), else None."""
    return endpoint_name(deployment) if deployment.spec.scale_to_zero else None


def _log_groups(deployment: Deployment) -> list[dict]:
    """The log groups the container writes to: the endpoint's, and a scale-to-zero model's inference
    component's (SageMaker sends a component's container output to /aws/sagemaker/InferenceComponents/NAME)."""
    named = [("Endpoints", endpoint_name(deployment)), ("InferenceComponents", inference_component_name(deployment))]
    return [sub(f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:/aws/sagemaker/"
                f"{kind}/{name['Fn::Sub']}:*") for kind, name in named if name is not None]


def _execution_role(deployment: Deployment, registry_uri: str) -> dict:
    groups = _log_groups(deployment)
    statements = [
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},  # not resource-scoped
        {"Effect": "Allow",
         "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
         "Resource": sub(f"arn:${{AWS::Partition}}:ecr:${{AWS::Region}}:${{AWS::AccountId}}:repository/"
                         f"${{{IMAGE_REPOSITORY}}}")},
        {"Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": groups[0] if len(groups) == 1 else groups},
    ]
    if deployment.fetch:
        # SageMaker copies the version's prefix to /opt/ml/model with this role: list it, read it.
        statements += fetch_policy(deployment, registry_uri)["Statement"]
        bucket, key = _version_location(deployment, registry_uri)
        statements.append({"Effect": "Allow", "Action": "s3:ListBucket",
                           "Resource": sub(f"arn:${{AWS::Partition}}:s3:::{bucket}"),
                           "Condition": {"StringLike": {"s3:prefix": f"{key}/*"}}})
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": f"modelfn GPU endpoint of model {deployment.spec.name}: image pull, own logs, "
                           "own registry version",
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            },
            "Policies": [{"PolicyName": "endpoint", "PolicyDocument": {"Version": "2012-10-17",
                                                                         "Statement": statements}}],
        },
    }


def _invoke_role(deployment: Deployment) -> dict:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": f"API Gateway calls model {deployment.spec.name}'s GPU endpoint, nothing else",
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "apigateway.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            },
            "Policies": [{"PolicyName": "invoke", "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "sagemaker:InvokeEndpoint",
                "Resource": ref(f"{deployment.logical_id}Endpoint"),  # Ref of an endpoint is its ARN
            }]}}],
        },
    }


# The GPU server's batching limits (functions/serve.py reads them from these variables), passed on
# when models.yaml declares them for the model.
_BATCHING_ENV = (("max_batch_tokens", "MODELFN_MAX_BATCH_TOKENS"), ("max_batch_requests", "MODELFN_MAX_BATCH_REQUESTS"),
                 ("max_concurrent_requests", "MODELFN_MAX_CONCURRENT_REQUESTS"))


def _version_location(deployment: Deployment, registry_uri: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes) of the registry version this endpoint serves."""
    bucket, prefix = s3_location(registry_uri)
    key = version_prefix(deployment.spec.name, deployment.version).strip("/")
    return bucket, f"{prefix}/{key}" if prefix else key


def _model_environment(deployment: Deployment, registry_uri: str) -> dict[str, str]:
    env = environment(deployment, registry_uri)  # the same request limits and names as on Lambda
    env.pop("POWERTOOLS_SERVICE_NAME", None)
    # Not baked in: SageMaker puts the version at /opt/ml/model as model data (and the server checks
    # every sha256 there), so the container needs no S3 client and runs network-isolated.
    env.pop(constants.REGISTRY_URI, None)
    env[constants.BUNDLE_DIR] = "/opt/ml/model"
    # models.yaml's generations, else the most that fit the GPU as `modelfn build` derived them
    env.update(server_limits(deployment.spec, deployment.max_concurrent_generations))
    return env


def server_limits(spec, derived_generations: int | None = None) -> dict[str, str]:
    """The GPU server's limits models.yaml sets (functions/settings.py ServerSettings reads them); a limit
    left unset is the server's default. ``derived_generations``: when models.yaml sets none."""
    env = {variable: str(getattr(spec, field)) for field, variable in _BATCHING_ENV
           if getattr(spec, field, None) is not None}
    generations = getattr(spec, "max_concurrent_generations", None) or derived_generations
    if generations:
        env[constants.MAX_CONCURRENT_GENERATIONS] = str(generations)
    return env


def _autoscaling(deployment: Deployment, resource_id: dict, dimension: str, metric: str, depends_on: str) -> dict:
    spec = deployment.spec
    ident = deployment.logical_id
    target = {
        "Type": "AWS::ApplicationAutoScaling::ScalableTarget",
        "DependsOn": [depends_on],
        "Properties": {
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id,
            "ScalableDimension": dimension,
            "MinCapacity": spec.min_instances,
            "MaxCapacity": spec.max_instances,
        },
    }
    policy = {
        "Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
        "Properties": {
            "PolicyName": sub(f"${{AWS::StackName}}-{spec.name}-invocations"),
            "PolicyType": "TargetTrackingScaling",
            "ScalingTargetId": ref(f"{ident}ScalableTarget"),
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": float(spec.target_invocations),
                "PredefinedMetricSpecification": {"PredefinedMetricType": metric},
                "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
                "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
            },
        },
    }
    return {f"{ident}ScalableTarget": target, f"{ident}ScalingPolicy": policy}


def _scale_from_zero(deployment: Deployment) -> dict:
    """Target tracking never leaves zero (no copy, no invocations to track): a request that found no
    capacity raises this alarm, whose step policy adds the first copy."""
    ident = deployment.logical_id
    return {
        f"{ident}ScaleFromZeroPolicy": {
            "Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
            "Properties": {
                "PolicyName": sub(f"${{AWS::StackName}}-{deployment.spec.name}-from-zero"),
                "PolicyType": "StepScaling",
                "ScalingTargetId": ref(f"{ident}ScalableTarget"),
                "StepScalingPolicyConfiguration": {
                    "AdjustmentType": "ChangeInCapacity",
                    "MetricAggregationType": "Maximum",
                    "Cooldown": SCALE_OUT_COOLDOWN_S,
                    "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
                },
            },
        },
        f"{ident}ScaleFromZeroAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": sub(f"${{AWS::StackName}}: model {deployment.spec.name} got a request while "
                                        "scaled to zero; adds the first copy"),
                "Namespace": "AWS/SageMaker",
                "MetricName": "NoCapacityInvocationFailures",
                "Dimensions": [{"Name": "InferenceComponentName", "Value": inference_component_name(deployment)}],
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 1,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": "missing",
                "AlarmActions": [ref(f"{ident}ScaleFromZeroPolicy")],
            },
        },
    }


def endpoint_resources(deployment: Deployment, registry_uri: str) -> dict[str, dict]:
    """Every resource of one gpu model's endpoint (the API's routes to it live in _api.py)."""
    spec = deployment.spec
    ident = deployment.logical_id
    role = get_att(f"{ident}ExecutionRole", "Arn")
    container: dict = {"Image": image_uri(deployment), "Environment": _model_environment(deployment, registry_uri)}
    if deployment.fetch:
        bucket, key = _version_location(deployment, registry_uri)
        container["ModelDataSource"] = {"S3DataSource": {
            "S3Uri": f"s3://{bucket}/{key}/", "S3DataType": "S3Prefix", "CompressionType": "None"}}
    model = {
        "Type": "AWS::SageMaker::Model",
        "Properties": {
            "ExecutionRoleArn": role,
            "PrimaryContainer": container,
            "EnableNetworkIsolation": True,  # the container reaches nothing; SageMaker brings the bundle
        },
    }
    variant: dict = {
        "VariantName": VARIANT,
        "InstanceType": spec.instance_type,
        "InitialInstanceCount": max(spec.min_instances, 1),
    }
    config_props: dict = {"ProductionVariants": [variant]}
    resources: dict[str, dict] = {f"{ident}ExecutionRole": _execution_role(deployment, registry_uri),
                                  f"{ident}Model": model}
    if spec.scale_to_zero:
        variant["ManagedInstanceScaling"] = {"Status": "ENABLED", "MinInstanceCount": 0,
                                             "MaxInstanceCount": spec.max_instances}
        variant["RoutingConfig"] = {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
        config_props["ExecutionRoleArn"] = role
        resources[f"{ident}InferenceComponent"] = {
            "Type": "AWS::SageMaker::InferenceComponent",
            "Properties": {
                "InferenceComponentName": inference_component_name(deployment),
                "EndpointName": get_att(f"{ident}Endpoint", "EndpointName"),
                "VariantName": VARIANT,
                "Specification": {
                    "ModelName": get_att(f"{ident}Model", "ModelName"),
                    "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 1,
                                                    "MinMemoryRequiredInMb": 1024},
                    # the container is the component's here, so its start-up settings are too
                    "StartupParameters": {"ContainerStartupHealthCheckTimeoutInSeconds": STARTUP_HEALTH_CHECK_S},
                },
                "RuntimeConfig": {"CopyCount": max(spec.min_instances, 1)},
            },
        }
        resources.update(_autoscaling(
            deployment, sub(f"inference-component/${{AWS::StackName}}-{spec.name}"),
            "sagemaker:inference-component:DesiredCopyCount", "SageMakerInferenceComponentInvocationsPerCopy",
            f"{ident}InferenceComponent"))
        resources.update(_scale_from_zero(deployment))
    else:
        variant["ModelName"] = get_att(f"{ident}Model", "ModelName")
        variant["InitialVariantWeight"] = 1.0
        variant["ContainerStartupHealthCheckTimeoutInSeconds"] = STARTUP_HEALTH_CHECK_S
        resources.update(_autoscaling(
            deployment, sub(f"endpoint/${{AWS::StackName}}-{spec.name}/variant/{VARIANT}"),
            "sagemaker:variant:DesiredInstanceCount", "SageMakerVariantInvocationsPerInstance", f"{ident}Endpoint"))
    resources[f"{ident}EndpointConfig"] = {"Type": "AWS::SageMaker::EndpointConfig", "Properties": config_props}
    resources[f"{ident}Endpoint"] = {
        "Type": "AWS::SageMaker::Endpoint",
        "Properties": {"EndpointName": endpoint_name(deployment),
                       "EndpointConfigName": get_att(f"{ident}EndpointConfig", "EndpointConfigName")},
    }
    resources[invoke_role_id(deployment)] = _invoke_role(deployment)
    return resources


__all__ = ["IMAGE_REPOSITORY", "PARAMETERS", "endpoint_name", "endpoint_resources", "inference_component_name",
           "invoke_role_id"]

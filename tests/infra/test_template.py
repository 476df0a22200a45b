"""template.yaml: structure, validity under cfn-lint and `sam validate --lint`, and freshness."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from functions.errors import ConfigError
from infra.spec import load_models_file, parse_models_file
from infra.template import Deployment, committed_deployments, dump_template, generate_template, write_template

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LINT_ENV = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}

MODELS = parse_models_file({
    "registry": "s3://models-bucket/team",
    "models": [
        {"name": "minilm", "source": "x", "task": "feature-extraction"},
        {"name": "sentiment", "source": "x", "task": "text-classification", "architecture": "arm64",
         "memory_mb": 3008, "timeout_s": 60},
        {"name": "e5-large", "source": "x", "task": "feature-extraction"},
        {"name": "big-llm", "source": "x", "task": "text-classification", "target": "gpu",
         "instance_type": "ml.g6.2xlarge", "min_instances": 2, "max_instances": 6, "target_invocations": 40},
        {"name": "gpu-embed", "source": "x", "task": "feature-extraction", "target": "gpu", "scale_to_zero": True,
         "max_instances": 3},
    ],
})
GPU_ROUTES = {"/models/big-llm/predict", "/models/big-llm", "/models/gpu-embed/predict", "/models/gpu-embed",
              "/models/gpu-embed/v1/embeddings", "/models/gpu-embed/v1/models"}


def deployments(fetch_large: bool = True) -> list[Deployment]:
    specs = MODELS.models
    return [
        Deployment(spec=specs[0], version=3, bundle_bytes=23 * 2**20, context=".modelfn/build/minilm"),
        Deployment(spec=specs[1], version=1, bundle_bytes=60 * 2**20, context=".modelfn/build/sentiment"),
        Deployment(spec=specs[2], version=7, bundle_bytes=1300 * 2**20, fetch=fetch_large,
                   context=".modelfn/build/e5-large"),
        Deployment(spec=specs[3], version=4, bundle_bytes=2600 * 2**20, fetch=fetch_large,
                   context=".modelfn/build/big-llm"),
        Deployment(spec=specs[4], version=1, bundle_bytes=90 * 2**20, context=".modelfn/build/gpu-embed"),
    ]


@pytest.fixture(scope="module")
def template() -> dict:
    return generate_template(MODELS, deployments(), MODELS.registry)


def functions_of(template: dict) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}


def test_one_image_function_per_lambda_model(template):
    fns = functions_of(template)
    assert sorted(fns) == ["E5LargeFunction", "MinilmFunction", "SentimentFunction"]
    sentiment = fns["SentimentFunction"]
    assert sentiment["Properties"]["PackageType"] == "Image"
    assert sentiment["Properties"]["Architectures"] == ["arm64"]
    assert (sentiment["Properties"]["MemorySize"], sentiment["Properties"]["Timeout"]) == (3008, 60)
    docker = {k: v for k, v in sentiment["Metadata"].items() if k != "checkov"}  # checkov: its own test
    assert docker == {"Dockerfile": "Dockerfile", "DockerContext": ".modelfn/build/sentiment",
                      "DockerTag": "sentiment-v1"}
    env = fns["MinilmFunction"]["Properties"]["Environment"]["Variables"]
    assert env["MODELFN_MODEL_NAME"] == "minilm" and env["MODELFN_MODEL_VERSION"] == "3"
    assert "v3" in fns["MinilmFunction"]["Metadata"]["DockerTag"]
    assert "big-llm v4 (ml.g6.2xlarge)" in template["Description"] and "not in this stack" not in template["Description"].lower()


def test_alias_canary_and_rollback_alarm(template):
    assert template["Parameters"]["DeploymentType"]["Default"] == "Canary10Percent5Minutes"
    for fn_id, fn in functions_of(template).items():
        props = fn["Properties"]
        assert props["AutoPublishAlias"] == "live"
        assert props["DeploymentPreference"]["Type"] == {"Ref": "DeploymentType"}
        (alarm_ref,) = props["DeploymentPreference"]["Alarms"]
        alarm = template["Resources"][alarm_ref["Ref"]]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dims == {"Resource": {"Fn::Sub": f"${{{fn_id}}}:live"}, "FunctionName": {"Ref": fn_id}}


def test_auth_defaults_to_iam_with_api_key_and_none_options(template):
    param = template["Parameters"]["AuthMode"]
    assert param["Default"] == "AWS_IAM" and param["AllowedValues"] == ["AWS_IAM", "API_KEY", "NONE"]
    api = template["Resources"]["Api"]["Properties"]
    paths = api["DefinitionBody"]["paths"]
    assert set(paths) == {"/models/minilm/predict", "/models/minilm", "/models/sentiment/predict",
                          "/models/sentiment", "/models/e5-large/predict", "/models/e5-large", "/health",
                          "/v1/embeddings", "/models/minilm/v1/embeddings", "/models/e5-large/v1/embeddings",
                          "/models/minilm/v1/models", "/models/e5-large/v1/models"} | GPU_ROUTES
    for path, methods in paths.items():
        for operation in methods.values():
            (requirement,) = operation["security"]
            condition, iam, otherwise = requirement["Fn::If"]
            assert (condition, iam) == ("UseIamAuth", {"sigv4": []}), path
            assert otherwise["Fn::If"] == ["UseApiKeyAuth", {"api_key": []}, {"Ref": "AWS::NoValue"}]
    # The first embedding model in models.yaml order owns the OpenAI-style route.
    uri = paths["/v1/embeddings"]["post"]["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
    assert "${MinilmFunction.Arn}:live" in uri
    for key in ("ApiUsagePlan", "ApiKey", "ApiUsagePlanKey"):
        assert template["Resources"][key]["Condition"] == "UseApiKeyAuth"
    assert api["MethodSettings"][0]["ThrottlingRateLimit"] == {"Ref": "ThrottlingRateLimit"}
    assert api["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}


def test_invoke_permissions_are_per_route_on_the_alias(template):
    perms = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Permission"]
    # 3 models x (predict, info), /health, /v1/embeddings, 2 models' own /v1/embeddings and /v1/models
    assert len(perms) == 12
    assert all(p["FunctionName"]["Ref"].endswith("Function.Alias") for p in perms)
    assert all("/*/*" not in p["SourceArn"]["Fn::Sub"] for p in perms)


def test_least_privilege_s3_only_for_fetched_models(template):
    fns = functions_of(template)
    assert "Policies" not in fns["MinilmFunction"]["Properties"]
    assert "EphemeralStorage" not in fns["MinilmFunction"]["Properties"]
    fetched = fns["E5LargeFunction"]["Properties"]
    assert fetched["EphemeralStorage"]["Size"] >= 1300 + 512
    (statement,) = fetched["Policies"][0]["Statement"]
    assert statement["Action"] == ["s3:GetObject"]
    assert statement["Resource"]["Fn::Sub"].endswith(":s3:::models-bucket/team/models/e5-large/versions/7/*")
    assert fetched["Environment"]["Variables"]["MODELFN_REGISTRY_URI"] == "s3://models-bucket/team"


def test_registry_bucket_is_private_encrypted_versioned_tls_only(template):
    bucket = template["Resources"]["RegistryBucket"]
    assert bucket["Condition"] == "CreateRegistryBucket"
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    (statement,) = template["Resources"]["RegistryBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_outputs_name_every_endpoint(template):
    outputs = template["Outputs"]
    for model in ("Minilm", "Sentiment", "E5Large"):
        assert "/models/" in outputs[f"{model}PredictUrl"]["Value"]["Fn::Sub"]
    assert outputs["EmbeddingsUrl"]["Value"]["Fn::Sub"].endswith("/prod/v1/embeddings")
    # Each embedding model's own OpenAI base URL, on either tier; the classifiers serve no OpenAI route.
    for model, name in (("Minilm", "minilm"), ("E5Large", "e5-large"), ("GpuEmbed", "gpu-embed")):
        assert outputs[f"{model}OpenAIBaseUrl"]["Value"]["Fn::Sub"].endswith(f"/prod/models/{name}/v1")
    assert "SentimentOpenAIBaseUrl" not in outputs and "BigLlmOpenAIBaseUrl" not in outputs
    assert {k for k in outputs if k.endswith("InfoUrl")} == {"MinilmInfoUrl", "SentimentInfoUrl", "E5LargeInfoUrl",
                                                             "BigLlmInfoUrl", "GpuEmbedInfoUrl"}
    assert outputs["ApiUrl"]["Value"]["Fn::Sub"].startswith("https://${Api}.execute-api.")


def test_yaml_has_no_tags_and_round_trips(template):
    text = dump_template(template)
    assert "!Ref" not in text and "!Sub" not in text and "&id" not in text
    assert yaml.safe_load(text) == template


def test_every_gpu_route_requires_the_same_auth_as_the_lambda_routes(template):
    paths = template["Resources"]["Api"]["Properties"]["DefinitionBody"]["paths"]
    operations = [(path, op) for path, methods in paths.items() for op in methods.values()]
    kinds = {op["x-amazon-apigateway-integration"]["type"] for _, op in operations}
    assert kinds == {"aws_proxy", "aws"}
    lambda_security = [op["security"] for _, op in operations
                       if op["x-amazon-apigateway-integration"]["type"] == "aws_proxy"]
    gpu_ops = [(path, op) for path, op in operations if op["x-amazon-apigateway-integration"]["type"] == "aws"]
    assert {path for path, _ in gpu_ops} == GPU_ROUTES
    for path, op in gpu_ops:
        assert op["security"] == lambda_security[0], path  # IAM / API key / none by the AuthMode parameter
    assert all(sec == lambda_security[0] for sec in lambda_security)


def test_gpu_routes_call_the_sagemaker_runtime_with_a_role_limited_to_their_endpoint(template):
    resources = template["Resources"]
    paths = resources["Api"]["Properties"]["DefinitionBody"]["paths"]
    predict = paths["/models/big-llm/predict"]["post"]["x-amazon-apigateway-integration"]
    assert predict["uri"]["Fn::Sub"] == ("arn:${AWS::Partition}:apigateway:${AWS::Region}:runtime.sagemaker:"
                                         "path//endpoints/${AWS::StackName}-big-llm/invocations")
    assert predict["httpMethod"] == "POST" and predict["timeoutInMillis"] <= 29000
    assert predict["credentials"] == {"Fn::GetAtt": ["BigLlmInvokeRole", "Arn"]}
    assert predict["requestParameters"]["integration.request.header.X-Amzn-SageMaker-Custom-Attributes"] == \
        "'modelfn-route=/models/big-llm/predict'"
    info = paths["/models/big-llm"]["get"]["x-amazon-apigateway-integration"]
    assert info["httpMethod"] == "POST" and info["requestTemplates"]["application/json"] == "{}"
    (statement,) = resources["BigLlmInvokeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement == {"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": {"Ref": "BigLlmEndpoint"}}
    assert resources["BigLlmInvokeRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == \
        {"Service": "apigateway.amazonaws.com"}
    # Endpoint errors keep the API's shape: a container's {"error": ...} and status pass through ModelError.
    responses = predict["responses"]
    assert responses["default"]["statusCode"] == "200"
    assert "OriginalStatusCode" in responses["424"]["responseTemplates"]["application/json"]
    assert "OriginalMessage" in responses["424"]["responseTemplates"]["application/json"]
    assert responses["429"]["statusCode"] == "503" and '"model_not_ready"' in responses["429"]["responseTemplates"]["application/json"]
    assert "throttled" in responses["400"]["responseTemplates"]["application/json"]
    # No Lambda permission and no function for a gpu model.
    assert not any(k.startswith(("BigLlmInvokePermission", "BigLlmFunction", "GpuEmbedFunction")) for k in resources)
    # The component header goes only to the scale-to-zero model.
    embed = paths["/models/gpu-embed/predict"]["post"]["x-amazon-apigateway-integration"]["requestParameters"]
    assert embed["integration.request.header.X-Amzn-SageMaker-Inference-Component"] == \
        {"Fn::Sub": "'${AWS::StackName}-gpu-embed'"}
    assert "integration.request.header.X-Amzn-SageMaker-Inference-Component" not in predict["requestParameters"]


def test_gpu_endpoint_instance_type_autoscaling_and_least_privilege_role(template):
    resources = template["Resources"]
    (variant,) = resources["BigLlmEndpointConfig"]["Properties"]["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.g6.2xlarge", 2)
    assert variant["ModelName"] == {"Fn::GetAtt": ["BigLlmModel", "ModelName"]}
    model = resources["BigLlmModel"]["Properties"]
    assert model["PrimaryContainer"]["Image"]["Fn::Sub"].endswith("/${GpuImageRepository}:big-llm-v4")
    env = model["PrimaryContainer"]["Environment"]
    assert env["MODELFN_MODEL_VERSION"] == "4" and env["MODELFN_BUNDLE_DIR"] == "/opt/ml/model"
    # Over the bake limit: SageMaker copies the registry version to /opt/ml/model; the container
    # itself reaches nothing, baked in or not.
    assert "MODELFN_REGISTRY_URI" not in env
    assert model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"] == {
        "S3Uri": "s3://models-bucket/team/models/big-llm/versions/4/", "S3DataType": "S3Prefix",
        "CompressionType": "None"}
    assert "ModelDataSource" not in resources["GpuEmbedModel"]["Properties"]["PrimaryContainer"]
    assert model["EnableNetworkIsolation"] is True
    assert resources["GpuEmbedModel"]["Properties"]["EnableNetworkIsolation"] is True
    target = resources["BigLlmScalableTarget"]["Properties"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert target["ResourceId"] == {"Fn::Sub": "endpoint/${AWS::StackName}-big-llm/variant/AllTraffic"}
    tracking = resources["BigLlmScalingPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 40.0
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert resources["BigLlmEndpoint"]["Properties"]["EndpointName"] == {"Fn::Sub": "${AWS::StackName}-big-llm"}

    statements = resources["BigLlmExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    by_action = {str(s["Action"]): s for s in statements}
    assert all(s["Effect"] == "Allow" for s in statements)
    assert by_action["ecr:GetAuthorizationToken"]["Resource"] == "*"  # the one action with no resource scope
    pull = next(s for s in statements if "ecr:BatchGetImage" in s["Action"])
    assert pull["Resource"]["Fn::Sub"].endswith(":repository/${GpuImageRepository}")
    logs = next(s for s in statements if "logs:PutLogEvents" in s["Action"])
    assert logs["Resource"]["Fn::Sub"].endswith(":log-group:/aws/sagemaker/Endpoints/${AWS::StackName}-big-llm:*")
    s3 = next(s for s in statements if s["Action"] == ["s3:GetObject"])  # read-only, its own version
    assert s3["Resource"]["Fn::Sub"].endswith(":s3:::models-bucket/team/models/big-llm/versions/4/*")
    listing = next(s for s in statements if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "team/models/big-llm/versions/4/*"}}
    assert len(statements) == 5
    baked = resources["GpuEmbedExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert not any("s3:" in str(s["Action"]) for s in baked)
    assert template["Parameters"]["GpuImageRepository"]["Default"]
    assert template["Outputs"]["BigLlmEndpointName"]["Value"] == {"Fn::GetAtt": ["BigLlmEndpoint", "EndpointName"]}


def test_scale_to_zero_is_an_inference_component_that_starts_again_on_demand(template):
    resources = template["Resources"]
    config = resources["GpuEmbedEndpointConfig"]["Properties"]
    (variant,) = config["ProductionVariants"]
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 3}
    assert "ModelName" not in variant and config["ExecutionRoleArn"] == {"Fn::GetAtt": ["GpuEmbedExecutionRole", "Arn"]}
    component = resources["GpuEmbedInferenceComponent"]["Properties"]
    assert component["Specification"]["ModelName"] == {"Fn::GetAtt": ["GpuEmbedModel", "ModelName"]}
    target = resources["GpuEmbedScalableTarget"]["Properties"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 3)
    assert target["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
    alarm = resources["GpuEmbedScaleFromZeroAlarm"]["Properties"]
    assert alarm["MetricName"] == "NoCapacityInvocationFailures"
    assert alarm["AlarmActions"] == [{"Ref": "GpuEmbedScaleFromZeroPolicy"}]
    # Without the opt-in, no model can reach zero.
    assert resources["BigLlmScalableTarget"]["Properties"]["MinCapacity"] >= 1
    assert "BigLlmInferenceComponent" not in resources
    # A component's container logs to its own group: the role may write there as well as the endpoint's.

    def log_resources(role: str):
        statements = resources[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        found = next(st["Resource"] for st in statements if "logs:PutLogEvents" in st["Action"])
        return [r["Fn::Sub"] for r in (found if isinstance(found, list) else [found])]

    prefix = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/sagemaker/"
    assert log_resources("GpuEmbedExecutionRole") == [
        prefix + "Endpoints/${AWS::StackName}-gpu-embed:*", prefix + "InferenceComponents/${AWS::StackName}-gpu-embed:*"]
    assert component["InferenceComponentName"] == {"Fn::Sub": "${AWS::StackName}-gpu-embed"}
    assert log_resources("BigLlmExecutionRole") == [prefix + "Endpoints/${AWS::StackName}-big-llm:*"]


def _checkov(path: Path) -> dict:
    """checkov's CloudFormation report on ``path``: failed check ids, and the summary counts."""
    # scripts/bootstrap.sh installs it in its own environment inside .venv (it pins an older boto3).
    own = BIN.parent / "tools" / "checkov" / "bin" / "checkov"
    checkov = os.environ.get("MODELFN_CHECKOV") or next(
        (str(c) for c in (own, BIN / "checkov") if c.exists()), None) or shutil.which("checkov")
    if checkov is None:
        pytest.skip("checkov is not installed (scripts/bootstrap.sh puts it in .venv/tools/checkov; or "
                    "`pipx install checkov`, or set MODELFN_CHECKOV to its executable)")
    proc = subprocess.run([str(checkov), "-f", str(path), "--framework", "cloudformation", "--quiet", "--compact",
                           "-o", "json"], capture_output=True, text=True, timeout=600)
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failures = {(c["check_id"], c["resource"]) for r in reports
                for c in r.get("results", {}).get("failed_checks", [])}
    summary = {key: sum(r.get("summary", {}).get(key, 0) for r in reports) for key in ("passed", "failed", "skipped")}
    return {"failures": failures, **summary}


def test_committed_template_has_no_checkov_failures():
    report = _checkov(ROOT / "template.yaml")
    assert report["failures"] == set() and report["failed"] == 0 and report["passed"] > 0, report


def test_template_with_gpu_and_fetched_models_has_no_checkov_failures(tmp_path, template):
    report = _checkov(write_template(template, tmp_path / "template.yaml"))
    assert report["failures"] == set() and report["failed"] == 0 and report["passed"] > 0, report


def test_every_checkov_skip_is_a_known_check_with_its_reason(template):
    from infra.template._checkov import REASONS

    skipped = [skip for resource in template["Resources"].values()
               for skip in (resource.get("Metadata") or {}).get("checkov", {}).get("skip", [])]
    assert skipped, "the functions and the API skip the checks that do not apply"
    for skip in skipped:
        assert skip["id"] in REASONS and skip["comment"] == REASONS[skip["id"]] and len(skip["comment"]) > 40


def test_security_options_are_parameters_off_by_default(template):
    params, conditions = template["Parameters"], template["Conditions"]
    assert (params["ReservedConcurrency"]["Default"], params["Tracing"]["Default"]) == (0, "false")
    assert params["KmsKeyArn"]["Default"] == params["RegistryAccessLogBucket"]["Default"] == ""
    assert {"ReserveConcurrency", "UseTracing", "UseKmsKey", "LogRegistryAccess"} <= set(conditions)
    for fn_id, function in functions_of(template).items():
        props = function["Properties"]
        assert props["ReservedConcurrentExecutions"]["Fn::If"][0] == "ReserveConcurrency"
        assert props["KmsKeyArn"]["Fn::If"][0] == "UseKmsKey" and props["Tracing"]["Fn::If"][0] == "UseTracing"
        log_group = template["Resources"][props["LoggingConfig"]["LogGroup"]["Ref"]]
        assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    api = template["Resources"]["Api"]["Properties"]
    assert api["TracingEnabled"]["Fn::If"][0] == "UseTracing"
    bucket = template["Resources"]["RegistryBucket"]["Properties"]
    assert bucket["LoggingConfiguration"]["Fn::If"][0] == "LogRegistryAccess"


def test_a_stack_of_gpu_models_only_has_routes_and_health(tmp_path):
    models = parse_models_file({"registry": "s3://b/p", "models": [
        {"name": "only-gpu", "source": "x", "task": "feature-extraction", "target": "gpu"}]})
    template = generate_template(models, committed_deployments(models), models.registry)
    paths = template["Resources"]["Api"]["Properties"]["DefinitionBody"]["paths"]
    assert set(paths) == {"/models/only-gpu/predict", "/models/only-gpu", "/health", "/v1/embeddings",
                          "/models/only-gpu/v1/embeddings", "/models/only-gpu/v1/models"}
    health = paths["/health"]["get"]["x-amazon-apigateway-integration"]
    assert health["requestParameters"]["integration.request.header.X-Amzn-SageMaker-Custom-Attributes"] == \
        "'modelfn-route=/health'"
    assert not functions_of(template)
    _lint(write_template(template, tmp_path / "template.yaml"))


def test_fetched_model_needs_an_s3_registry():
    with pytest.raises(ConfigError, match="s3:// registry"):
        generate_template(MODELS, deployments(), "./.modelfn/registry")


def test_colliding_logical_ids_are_refused():
    models = parse_models_file({"models": [{"name": "a-1", "source": "x", "task": "feature-extraction"},
                                           {"name": "a1", "source": "x", "task": "feature-extraction"}]})
    deps = [Deployment(spec=s, version=1) for s in models.models]
    with pytest.raises(ConfigError, match="same CloudFormation id"):
        generate_template(models, deps, models.registry)


def test_committed_template_is_what_the_generator_writes():
    models = load_models_file(ROOT / "models.yaml")
    expected = dump_template(generate_template(models, committed_deployments(models), models.registry))
    assert (ROOT / "template.yaml").read_text() == expected, \
        "template.yaml is stale: run `python -m infra.template` and commit it"


def _lint(path: Path) -> None:
    for cmd in ([str(BIN / "cfn-lint"), str(path)],
                [str(BIN / "sam"), "validate", "--lint", "--template-file", str(path)]):
        if not Path(cmd[0]).exists() and shutil.which(Path(cmd[0]).name) is None:
            pytest.fail(f"{cmd[0]} is missing: install the dev extra")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=LINT_ENV, cwd=path.parent, timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd[:2])} failed:\n{proc.stdout}\n{proc.stderr}"


def test_committed_template_passes_cfn_lint_and_sam_validate():
    _lint(ROOT / "template.yaml")


def test_multi_model_template_with_fetched_model_passes_linters(tmp_path, template):
    _lint(write_template(template, tmp_path / "template.yaml"))


@pytest.mark.parametrize("stream", [True, False])
def test_a_generative_model_gets_the_openai_routes_and_streams_unless_told_not_to(tmp_path, stream):
    models = parse_models_file({"registry": "s3://b/p", "models": [
        {"name": "minilm", "source": "x", "task": "feature-extraction"},
        {"name": "smollm", "source": "x", "task": "text-generation", "quantization": "none",
         "memory_mb": 3008, "timeout_s": 300}]})
    deps = [Deployment(spec=s, version=1, context=f".modelfn/build/{s.name}", stream=stream) for s in models.models]
    template = generate_template(models, deps, models.registry)
    paths = template["Resources"]["Api"]["Properties"]["DefinitionBody"]["paths"]
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/embeddings"} <= set(paths)
    chat = paths["/v1/chat/completions"]["post"]["x-amazon-apigateway-integration"]
    assert "SmollmFunction" in str(chat["uri"])
    assert "MinilmFunction" in str(paths["/v1/embeddings"]["post"]["x-amazon-apigateway-integration"]["uri"])
    env = template["Resources"]["SmollmFunction"]["Properties"]["Environment"]["Variables"]
    if stream:
        assert chat["responseTransferMode"] == "STREAM"
        assert "response-streaming-invocations" in chat["uri"]["Fn::Sub"]
        assert env["MODELFN_RESPONSE_STREAMING"] == "true"
    else:
        assert "responseTransferMode" not in chat and chat["uri"]["Fn::Sub"].endswith("/invocations")
        assert "MODELFN_RESPONSE_STREAMING" not in env
    # The embedding model never streams: its routes stay buffered either way.
    embeddings = paths["/v1/embeddings"]["post"]["x-amazon-apigateway-integration"]
    assert "responseTransferMode" not in embeddings
    assert all(p.get("get", p.get("post"))["security"] == paths["/health"]["get"]["security"] for p in paths.values())
    _lint(write_template(template, tmp_path / "template.yaml"))


def test_a_gpu_chat_model_gets_the_openai_routes_on_its_endpoint_buffered():
    models = parse_models_file({"models": [
        {"name": "gpu-chat", "source": "x", "task": "text-generation", "target": "gpu"}]})
    (spec,) = models.models
    assert spec.quantization == "fp16"
    # Streaming off (`modelfn build --no-stream`): no relay, every route on InvokeEndpoint (test_relay_template.py).
    built = generate_template(models, [Deployment(spec=spec, version=1, bundle_bytes=300 * 2**20,
                                                  context=".modelfn/build/gpu-chat", stream=False)], models.registry)
    paths = built["Resources"]["Api"]["Properties"]["DefinitionBody"]["paths"]
    for path in ("/v1/chat/completions", "/v1/completions", "/models/gpu-chat/predict"):
        integration = paths[path]["post"]["x-amazon-apigateway-integration"]
        assert integration["uri"]["Fn::Sub"].endswith("endpoints/${AWS::StackName}-gpu-chat/invocations")
        # InvokeEndpoint answers whole: a stream: true request gets its SSE events in one body.
        assert "responseTransferMode" not in integration
        assert integration["requestParameters"]["integration.request.header.X-Amzn-SageMaker-Custom-Attributes"] \
            == f"'modelfn-route={path}'"

"""An image model on a GPU endpoint answers a raw image body through the template's API as the same
model on Lambda does: the InvokeEndpoint integration passes the caller's Content-Type on the predict
route of a task that takes raw media (and JSON everywhere else), and the server runs an image body
that reaches /invocations without a route attribute as predict."""

from __future__ import annotations

import base64

import httpx
import pytest

from functions.adapters.sagemaker import SageMakerApp
from functions.handler import handler_for
from functions.service import ModelService
from functions.tasks.image_classification import SAMPLE_PNG
from infra.spec import parse_models_file
from infra.template import Deployment, generate_template
from tests.functions.servers import serving, wait_until_ready
from tests.infra.gateway import Gateway

KEY = "stack-key"
MODELS = parse_models_file({"registry": "s3://bucket/prefix", "models": [
    {"name": "vit-lambda", "source": "x", "task": "image-classification"},
    {"name": "vit-gpu", "source": "x", "task": "image-classification", "target": "gpu"},
]})
PNG = base64.b64decode(SAMPLE_PNG)


@pytest.fixture(scope="module")
def template() -> dict:
    deployments = [Deployment(spec=s, version=1, context=f".modelfn/build/{s.name}") for s in MODELS.models]
    return generate_template(MODELS, deployments, MODELS.registry)


@pytest.fixture(scope="module")
def stack(template, tiny_image_bundle):
    bundle = tiny_image_bundle("vit", quantization="none")
    lambdas = {"VitLambda": handler_for(ModelService.load(bundle, name="vit-lambda"))}
    gpu = SageMakerApp(lambda: ModelService.load(bundle, name="vit-gpu", provider="cpu"))
    with serving(gpu) as gpu_url:
        wait_until_ready(gpu_url)
        gateway = Gateway(template, lambdas=lambdas, relays={}, endpoints={"vit-gpu": gpu_url}, api_key=KEY)
        with serving(gateway, lifespan="off") as url:
            yield url, gpu_url, gateway


def test_only_the_raw_media_predict_route_forwards_the_callers_content_type(template):
    paths = template["Resources"]["Api"]["Properties"]["DefinitionBody"]["paths"]
    predict = paths["/models/vit-gpu/predict"]["post"]
    assert predict["x-amazon-apigateway-integration"]["requestParameters"][
        "integration.request.header.Content-Type"] == "method.request.header.Content-Type"
    assert predict["parameters"] == [{"name": "Content-Type", "in": "header", "required": False,
                                      "schema": {"type": "string"}}]
    info = paths["/models/vit-gpu"]["get"]
    assert info["x-amazon-apigateway-integration"]["requestParameters"][
        "integration.request.header.Content-Type"] == "'application/json'" and "parameters" not in info
    assert "image/*" in template["Resources"]["Api"]["Properties"]["DefinitionBody"][
        "x-amazon-apigateway-binary-media-types"]


@pytest.mark.parametrize("content_type, body", [
    ("image/png", PNG),
    ("application/json", b'{"inputs": "' + SAMPLE_PNG.encode() + b'", "parameters": {"top_k": 2}}'),
])
def test_a_gpu_image_model_answers_as_the_lambda_one(stack, content_type, body):
    url, _, gateway = stack
    headers = {"x-api-key": KEY, "content-type": content_type}
    on_gpu = httpx.post(url + "/models/vit-gpu/predict", content=body, headers=headers)
    on_lambda = httpx.post(url + "/models/vit-lambda/predict", content=body, headers=headers)
    assert on_gpu.status_code == on_lambda.status_code == 200, on_gpu.text
    assert on_gpu.json() == on_lambda.json()
    assert gateway.calls[-2:] == [("POST", "/models/vit-gpu/predict", "InvokeEndpoint"),
                                  ("POST", "/models/vit-lambda/predict", "Lambda")]


def test_an_unsupported_type_is_the_same_415_on_both_tiers(stack):
    url, _, _ = stack
    headers = {"x-api-key": KEY, "content-type": "text/plain"}
    on_gpu = httpx.post(url + "/models/vit-gpu/predict", content=b"hello", headers=headers)
    on_lambda = httpx.post(url + "/models/vit-lambda/predict", content=b"hello", headers=headers)
    assert on_gpu.status_code == on_lambda.status_code == 415
    assert on_gpu.json() == on_lambda.json()


def test_a_raw_image_on_invocations_without_a_route_is_predict(stack):
    _, gpu_url, _ = stack
    direct = httpx.post(gpu_url + "/invocations", content=PNG, headers={"content-type": "image/png"})
    assert direct.status_code == 200
    assert direct.json() == httpx.post(gpu_url + "/models/vit-gpu/predict", content=PNG,
                                       headers={"content-type": "image/png"}).json()


def test_the_template_with_a_gpu_image_model_passes_the_linters(template, tmp_path):
    from infra.template import write_template
    from tests.infra.test_template import _checkov, _lint

    path = write_template(template, tmp_path / "template.yaml")
    _lint(path)
    report = _checkov(path)
    assert report["failures"] == set() and report["failed"] == 0 and report["passed"] > 0, report

"""Image models in the template and images: binary media types on the REST API exactly when a deployed
task takes raw bodies (so image bytes reach the function intact, base64 in the event, and JSON-only
APIs are left as they were), and Pillow pinned only into image models' function images."""

from __future__ import annotations

from infra.spec import parse_models_file
from infra.build import pinned_requirements
from infra.build.requirements import takes_images, task_requirements
from infra.template import Deployment, generate_template, write_template
from tests.infra.test_template import _lint

MODELS = parse_models_file({
    "registry": "s3://models-bucket/team",
    "models": [
        {"name": "minilm", "source": "x", "task": "feature-extraction"},
        {"name": "vit", "source": "x", "task": "image-classification"},
    ],
})
KEY = "x-amazon-apigateway-binary-media-types"


def _body(models) -> dict:
    deployments = [Deployment(spec=s, version=1, context=f".modelfn/build/{s.name}") for s in models]
    return generate_template(MODELS, deployments, MODELS.registry)


def test_image_model_turns_on_binary_media_types(tmp_path):
    template = _body(MODELS.models)
    body = template["Resources"]["Api"]["Properties"]["DefinitionBody"]
    assert body[KEY] == ["image/*", "application/octet-stream"]
    assert "/models/vit/predict" in body["paths"]
    _lint(write_template(template, tmp_path / "template.yaml"))


def test_text_only_stack_has_no_binary_media_types():
    body = _body(MODELS.models[:1])["Resources"]["Api"]["Properties"]["DefinitionBody"]
    assert KEY not in body


def test_only_image_models_ship_pillow():
    assert takes_images("image-classification") and not takes_images("feature-extraction")
    text = {p.split("==")[0] for p in pinned_requirements("3.12", "x86_64")}
    image = {p.split("==")[0] for p in pinned_requirements(
        "3.12", "x86_64", extra=task_requirements("image-classification"))}
    assert "pillow" not in text and image - text == {"pillow"}

"""The task registry is the one home of what a task is: a task registered in one place is known to
name resolution, the OpenAPI schema, the routes and the event fixtures."""

from __future__ import annotations

import pytest

from events.generate import routes as event_routes
from functions import schemas, tasks
from functions.errors import UnknownTaskError
from functions.inputs import INPUT_KINDS, TEXT
from functions.manifest import RuntimeConfig
from infra.spec import ModelSpec
from functions.tasknames import resolve_task
from infra.template._names import Deployment


@pytest.fixture
def fake_task():
    """A task registered the way a task module registers one, removed again afterwards."""
    tasks.task_names()  # the built-in tasks first, so the fake one does not stop their loading

    def parse(raw: dict) -> dict:
        return {}

    @tasks.register("reverse-text", inputs=TEXT, parse_params=parse, preprocess=tasks.encode_texts,
                    synonyms=("backwards",), params_schema={"keep_case": {"type": "boolean"}},
                    openai_routes=lambda runtime: (tasks.EMBEDDINGS_ROUTE,),
                    sample={"inputs": "modelfn"})
    def postprocess(model, prepared, outputs, params):
        return []

    yield tasks.get_task("reverse-text")
    tasks.TASKS.pop("reverse-text")
    tasks._SYNONYMS.pop("backwards")


def test_a_task_registered_in_one_place_is_known_everywhere(fake_task):
    assert resolve_task("Backwards") == "reverse-text"
    assert "reverse-text" in tasks.task_names()
    body = schemas.predict(fake_task)["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["inputs"] == INPUT_KINDS[TEXT].schema
    assert body["properties"]["parameters"]["properties"] == {"keep_case": {"type": "boolean"}}
    found = event_routes("rev", "reverse-text")
    assert found["predict"] == ("POST", "/models/rev/predict", {"inputs": "modelfn"})
    assert "embeddings" in found
    spec = ModelSpec(name="rev", source=".", task="reverse-text")
    assert Deployment(spec=spec, version=1).is_embedding


def test_unknown_task_lists_the_registered_ones():
    with pytest.raises(UnknownTaskError) as err:
        resolve_task("summarize-everything")
    for name in ("feature-extraction", "text-classification", "token-classification", "question-answering"):
        assert name in str(err.value)


@pytest.mark.parametrize("synonym, canonical", [
    ("sentiment-analysis", "text-classification"), ("NER", "token-classification"),
    ("qa", "question-answering"), ("sentence_embeddings", "feature-extraction"),
])
def test_synonyms_are_declared_by_their_task(synonym, canonical):
    assert resolve_task(synonym) == canonical
    assert synonym.lower().replace("_", "-") in tasks.get_task(canonical).synonyms


def test_embeddings_route_only_for_pooled_bundles():
    """One decision, asked by the service and the template alike: a pooling-none bundle answers token
    vectors, so it gets no /v1/embeddings route."""
    spec = ModelSpec(name="tok", source=".", task="feature-extraction")
    assert Deployment(spec=spec, version=1, runtime=RuntimeConfig(pooling="mean")).is_embedding
    assert not Deployment(spec=spec, version=1, runtime=RuntimeConfig(pooling="none")).is_embedding
    # Only models.yaml known (the committed template): the task's default, a pooled model.
    assert Deployment(spec=spec, version=1).is_embedding


def test_pooling_none_service_has_no_embeddings_route(tiny_bundle, tmp_path):
    import dataclasses
    import shutil

    from functions.errors import NotFound
    from functions.manifest import read_manifest
    from functions.service import ModelService

    bundle = shutil.copytree(tiny_bundle("feature-extraction"), tmp_path / "bundle")
    manifest = read_manifest(bundle)
    dataclasses.replace(manifest, runtime=dataclasses.replace(manifest.runtime, pooling="none")).write(bundle)
    service = ModelService.load(bundle)
    assert service.openai_routes == ()
    with pytest.raises(NotFound):
        service.embeddings("application/json", b'{"input": "hi"}')

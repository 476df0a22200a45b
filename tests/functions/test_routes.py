"""The FastAPI app serves the route table (functions/routes.py): a route is one table entry plus the
ModelService method it names, served and documented without editing functions/app.py."""

from __future__ import annotations

import json

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

import functions.app as app_module
from functions.app import build_app
from functions.routes import ROUTES, Route
from functions.service import Answer, ModelService


@pytest.fixture(scope="module")
def embed_service(tiny_bundle):
    return ModelService.load(tiny_bundle("feature-extraction"), max_batch=4)


def test_the_app_serves_exactly_the_route_table(embed_service):
    app = build_app(embed_service)
    served = [(r.path, set(r.methods), r.summary) for r in app.routes if isinstance(r, APIRoute)]
    assert served == [(r.path, {r.method}, r.summary) for r in ROUTES]
    paths = app.openapi()["paths"]
    for route in ROUTES:
        operation = paths[route.path][route.method.lower()]
        assert operation["summary"] == route.summary
        extra = route.openapi_extra(embed_service.task, embed_service.embedding_width)
        if "requestBody" in extra:
            assert operation["requestBody"] == extra["requestBody"]
        if route.model_path:  # FastAPI documents the path parameter from the endpoint's signature
            assert [p["name"] for p in operation["parameters"]] == ["name"]


class EchoService(ModelService):
    """A service with one more operation, as a helper adding a route would write it."""

    def echo(self, content_type: str | None, body: bytes) -> Answer:
        return Answer(200, {"content_type": content_type, "length": len(body), "model": self.name})


ECHO = Route("POST", "/v1/echo", "echo", "Echo the body's length",
             openapi={"requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}}})


def test_a_route_added_to_the_table_is_served_and_documented(tiny_bundle, monkeypatch):
    monkeypatch.setattr(app_module, "ROUTES", (*ROUTES, ECHO))
    service = EchoService.load(tiny_bundle("feature-extraction"), max_batch=4)
    app = build_app(service)
    client = TestClient(app, raise_server_exceptions=False)
    response = client.post("/v1/echo", content=b"hello", headers={"content-type": "text/plain"})
    assert response.status_code == 200
    assert response.json() == {"content_type": "text/plain", "length": 5, "model": service.name}
    wrong = client.get("/v1/echo")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    operation = app.openapi()["paths"]["/v1/echo"]["post"]
    assert operation["summary"] == "Echo the body's length"
    assert operation["requestBody"] == ECHO.openapi["requestBody"]
    # The body limit holds for a table route as for every other: refused before the service runs.
    over = client.post("/v1/echo", content=b"x" * (service.max_body_bytes + 1))
    assert over.status_code == 413, json.dumps(over.json())

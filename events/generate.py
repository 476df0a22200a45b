"""Write API Gateway proxy event fixtures for every route of every model in models.yaml.

    python events/generate.py [models.yaml]

One file per model, route and API Gateway flavour: ``<model>-<route>-v1.json`` (REST API,
payload 1.0) and ``<model>-<route>-v2.json`` (HTTP API, payload 2.0); a model's own OpenAI route
(``/models/<model>/v1/...``, functions/routes.py's scoped twins) is ``<model>-<route>-scoped-v1.json``. Use them with
``sam local invoke <Function> -e events/<file>``; tests load them with
tests/functions/eventfiles.load_event. A test checks the committed files match this script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Request bodies of the OpenAI routes (the predict body is the task's own sample).
OPENAI_BODIES = {
    "embeddings": lambda name: {"input": ["modelfn serves models as functions"], "model": name},
    "chat_completions": lambda name: {"model": name, "temperature": 0, "max_tokens": 32,
                                      "messages": [{"role": "user", "content": "What is the capital of France?"}]},
    "completions": lambda name: {"model": name, "prompt": "The capital of France is", "max_tokens": 8,
                                 "temperature": 0},
}
_NAMES = {"chat_completions": "chat", "models": "models"}
# Routes whose body is multipart/form-data get no fixture: the predict event carries the same recording.
MULTIPART = ("transcriptions",)


def routes(name: str, task_name: str) -> dict[str, tuple[str, str, dict | None]]:
    """Route name -> (method, path, body) for every route a model answers (functions/routes.py)."""
    from functions.routes import model_routes
    from functions.tasks import get_task

    task = get_task(task_name)
    found = {}
    for route, path in model_routes(name, task.openai_routes(None)):
        if route.operation in MULTIPART:
            continue
        if route.operation == "predict":
            body = task.sample
        elif route.method == "POST":
            body = OPENAI_BODIES[route.operation](name)
        else:
            body = None
        found[_NAMES.get(route.operation, route.operation) + ("-scoped" if route.scoped else "")] = \
            (route.method, path, body)
    return found


def rest_event(method: str, path: str, body: dict | None) -> dict:
    """API Gateway REST API (payload format 1.0) proxy event."""
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", "User-Agent": "curl/8.5.0",
               "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": "/Prod" + path, "stage": "Prod",
            "accountId": "123456789012", "apiId": "abc123", "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "requestTimeEpoch": 1700000000000,
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def http_event(method: str, path: str, body: dict | None) -> dict:
    """API Gateway HTTP API (payload format 2.0) proxy event."""
    headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "curl/8.5.0",
               "accept": "application/json"}
    if body is not None:
        headers["content-type"] = "application/json"
    event = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": headers["host"],
            "domainPrefix": "abc123", "requestId": "JKJaXmPLvHcESHA=", "routeKey": "$default",
            "stage": "$default", "time": "14/Nov/2023:22:13:20 +0000", "timeEpoch": 1700000000000,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                     "userAgent": "curl/8.5.0"},
        },
        "isBase64Encoded": False,
    }
    if body is not None:
        event["body"] = json.dumps(body)
    return event


def build_events(models_file: str | Path = ROOT / "models.yaml") -> dict[str, dict]:
    """File name -> event, for every model and route."""
    sys.path.insert(0, str(ROOT))
    from infra.spec import load_models_file

    events = {}
    for spec in load_models_file(models_file).models:
        for route, (method, path, body) in routes(spec.name, spec.task).items():
            events[f"{spec.name}-{route}-v1.json"] = rest_event(method, path, body)
            events[f"{spec.name}-{route}-v2.json"] = http_event(method, path, body)
    return events


def render(event: dict) -> str:
    return json.dumps(event, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    models_file = argv[0] if argv else ROOT / "models.yaml"
    for name, event in build_events(models_file).items():
        (HERE / name).write_text(render(event), encoding="utf-8")
        print(f"wrote events/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The one helper tests use to load API Gateway event fixtures (events/*.json) or build new ones."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from events.generate import http_event, rest_event

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"


def event_names() -> list[str]:
    return sorted(p.name for p in EVENTS_DIR.glob("*.json"))


def load_event(name: str, *, path: str | None = None) -> dict:
    """An event from events/ (``name`` with or without .json); ``path`` rewrites the request path."""
    file = EVENTS_DIR / (name if name.endswith(".json") else name + ".json")
    event = json.loads(file.read_text(encoding="utf-8"))
    if path is not None:
        if "rawPath" in event:
            event["rawPath"] = event["requestContext"]["http"]["path"] = path
        else:
            event["path"] = path
            event["pathParameters"] = {"proxy": path.lstrip("/")}
    return event


def make_event(method: str, path: str, body: bytes | str | dict | None = None, *, version: int = 2,
               content_type: str | None = "application/json", base64_body: bool = False) -> dict:
    """A v1 (REST) or v2 (HTTP API) proxy event with an arbitrary raw body."""
    builder = http_event if version == 2 else rest_event
    event = builder(method, path, {} if body is not None else None)
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = event["headers"]
    for key in list(headers):
        if key.lower() == "content-type":
            del headers[key]
    if content_type is not None and body is not None:
        headers["content-type"] = content_type
    if version == 1:
        event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    if body is None:
        event["body"] = None
    elif base64_body:
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
    else:
        event["body"] = body.decode("utf-8")
    return event

"""OpenAPI descriptions of the request bodies. Bodies are parsed by functions/inputs (not pydantic),
so errors keep one shape and parsing stays cheap; these schemas only document them. What a task
takes comes from the task registry (functions/tasks) and the input kinds (functions/inputs)."""

from __future__ import annotations

from .inputs import INPUT_KINDS, TEXT
from .tasks import Task

_ERROR = {"description": "The caller's mistake (4xx) or a server fault (5xx)",
          "content": {"application/json": {"schema": {
              "type": "object", "properties": {"error": {"type": "object", "properties": {
                  "code": {"type": "string"}, "message": {"type": "string"}}}}}}}}
_ERRORS = {str(s): _ERROR for s in (400, 404, 413, 415, 422, 500)}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def predict(task: Task) -> dict:
    kind = INPUT_KINDS[task.inputs]
    schema = {"type": "object", "required": ["inputs"], "properties": {
        "inputs": kind.schema,
        "parameters": {"type": "object", "properties": task.params_schema}}}
    body = _body(schema)
    for media in kind.raw_media:  # e.g. an image/png body: the raw input itself, default parameters
        body["content"][media] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": body, "responses": _ERRORS}


EMBEDDINGS = {
    "requestBody": _body({"type": "object", "required": ["input"], "properties": {
        "input": INPUT_KINDS[TEXT].schema, "model": {"type": "string"},
        "encoding_format": {"enum": ["float", "base64"]}, "dimensions": {"type": "integer", "minimum": 1},
        "user": {"type": "string"}}}),
    "responses": _ERRORS,
}
INFO = {"responses": {"404": _ERROR}}
HEALTH: dict = {}

"""OpenAPI descriptions of the request bodies. Bodies are parsed by functions/inputs (not pydantic),
so errors keep one shape and parsing stays cheap; these schemas only document them. What a task
takes comes from the task registry (functions/tasks) and the input kinds (functions/inputs)."""

from __future__ import annotations

from .inputs import INPUT_KINDS, TEXT
from .tasks import Task
from .tasks.params import choice_schema

# What functions/inputs and the tasks' parse_params accept, exactly: unknown fields are refused, null
# means "the default" where the app says so; each task's parameters are declared by its module.
# tests/functions/test_fuzz.py holds the app to this schema in both directions.
_ERROR = {"description": "The caller's mistake (4xx) or a server fault (5xx)",
          "content": {"application/json": {"schema": {
              "type": "object", "properties": {"error": {"type": "object", "properties": {
                  "code": {"type": "string"}, "message": {"type": "string"}}}}}}}}
_ERRORS = {str(s): _ERROR for s in (400, 404, 413, 415, 422, 500, 503)}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def predict(task: Task) -> dict:
    kind = INPUT_KINDS[task.inputs]
    schema = {"type": "object", "required": ["inputs"], "additionalProperties": False, "properties": {
        "inputs": kind.schema,
        "parameters": {"type": ["object", "null"], "properties": task.params_schema, "additionalProperties": False},
        "options": {"type": ["object", "null"], "description": "accepted for Hugging Face clients; ignored"}}}
    body = _body(schema)
    for media in kind.raw_media:  # e.g. an image/png body: the raw input itself, default parameters
        body["content"][media] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": body, "responses": _ERRORS}


def embeddings(task: Task | None = None, width: int | None = None) -> dict:
    """POST /v1/embeddings; ``input`` as the task's embedder takes it (texts, or CLIP's texts and images);
    ``dimensions`` up to ``width``, the served model's vector width, when known."""
    kind = task.embedder.inputs if task is not None and task.embedder is not None else TEXT
    dimensions = {"type": ["integer", "null"], "minimum": 1,
                  "description": "at most the model's vector width (see GET /models/{name})"}
    if width:
        dimensions["maximum"] = width
    return {
        "requestBody": _body({"type": "object", "required": ["input"], "additionalProperties": False, "properties": {
            "input": INPUT_KINDS[kind].schema, "model": {"type": ["string", "null"]},
            "encoding_format": choice_schema("float", "base64"),
            "dimensions": dimensions,
            "user": {"type": ["string", "null"]}}}),
        "responses": _ERRORS,
    }


EMBEDDINGS = embeddings()
INFO = {"responses": {"404": _ERROR}}
HEALTH: dict = {}


def scoped(extra: dict) -> dict:
    """A model-scoped OpenAI route (/models/{name}/v1/...): the stack-wide route's description, and
    the 404 a name other than the served model's gets."""
    return {**extra, "responses": {**extra.get("responses", {}), **INFO["responses"]}}


# OpenAI generation bodies: the sampling fields both routes share (top_k and repetition_penalty are
# extensions, as in vLLM); a 200 is JSON, or with stream: true server-sent events ending [DONE].
_SAMPLING = {
    "model": {"type": "string"},
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2, "description": "0 is greedy"},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": 0, "description": "0 keeps every token"},
    "seed": {"type": "integer"},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
    "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "n": {"type": "integer", "enum": [1]},
    "user": {"type": "string"},
}
_PART = {"type": "object", "required": ["type", "text"],
         "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}}}
_MESSAGE = {"type": "object", "required": ["role", "content"], "properties": {
    "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _PART}, {"type": "null"}]},
    "name": {"type": "string"}}}
_GENERATED = {"description": "The answer (JSON), or with stream: true server-sent events ending `data: [DONE]`",
              "content": {"application/json": {"schema": {"type": "object"}},
                          "text/event-stream": {"schema": {"type": "string"}}}}
CHAT_COMPLETIONS = {
    "requestBody": _body({"type": "object", "required": ["messages"], "properties": {
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1}, **_SAMPLING}}),
    "responses": {"200": _GENERATED, **_ERRORS},
}
COMPLETIONS = {
    "requestBody": _body({"type": "object", "required": ["prompt"], "properties": {
        "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                                   "minItems": 1, "maxItems": 1}]},
        **_SAMPLING}}),
    "responses": {"200": _GENERATED, **_ERRORS},
}
MODELS: dict = {}
# OpenAI's transcription form (functions/transcriptions.py); a 200 is JSON, or text/plain for
# response_format=text.
TRANSCRIPTIONS = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "a WAV, FLAC, OGG or MP3 recording"},
            "model": {"type": "string"}, "language": {"type": "string", "description": "a code such as en"},
            "response_format": choice_schema("json", "text", "verbose_json"),
            "temperature": {"type": "number", "enum": [0]}}}}}},
    "responses": {"200": {"description": "The transcription", "content": {
        "application/json": {"schema": {"type": "object", "properties": {"text": {"type": "string"}}}},
        "text/plain": {"schema": {"type": "string"}}}}, **_ERRORS},
}

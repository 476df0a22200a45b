"""OpenAPI descriptions of the request bodies. Bodies are parsed by functions/inputs (not pydantic),
so errors keep one shape and parsing stays cheap; these schemas only document them."""

from __future__ import annotations

from .inputs import NOT_BLANK

# What functions/inputs and the tasks' parse_params accept, exactly: a text must hold a
# non-whitespace character, unknown fields are refused, null means "the default" where the app says
# so. tests/functions/test_fuzz.py holds the app to this schema in both directions.
_TEXT = {"type": "string", "minLength": 1, "pattern": NOT_BLANK}
_TEXTS = {"oneOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1}]}
_QA = {"type": "object", "required": ["question", "context"],
       "properties": {"question": _TEXT, "context": _TEXT}}
_PAIR = {"type": "object", "required": ["text"],
         "properties": {"text": _TEXT, "text_pair": {"oneOf": [_TEXT, {"type": "null"}]}}}


def _int(lo: int, hi: int, *, nullable: bool = False) -> dict:
    return {"type": ["integer", "null"] if nullable else "integer", "minimum": lo, "maximum": hi}


def _choice(*values: str) -> dict:
    return {"enum": [*values, None]}  # null: the default


_INPUTS = {
    "feature-extraction": _TEXTS,
    "text-classification": {"oneOf": [_TEXT, _PAIR,
                                      {"type": "array", "minItems": 1, "items": {"oneOf": [_TEXT, _PAIR]}}]},
    "token-classification": _TEXTS,
    "question-answering": {"oneOf": [_QA, {"type": "array", "items": _QA, "minItems": 1}]},
}
_PARAMS = {
    "feature-extraction": {"normalize": {"type": "boolean"}},
    "text-classification": {"top_k": _int(1, 100_000, nullable=True),
                            "function_to_apply": _choice("softmax", "sigmoid", "none")},
    "token-classification": {"aggregation_strategy": _choice("none", "simple", "first", "average", "max"),
                             "ignore_labels": {"type": ["array", "null"], "items": {"type": "string"}}},
    "question-answering": {"top_k": _int(1, 1000), "doc_stride": _int(0, 1 << 16),
                           "max_answer_len": _int(1, 1 << 16), "max_seq_len": _int(8, 1 << 16),
                           "handle_impossible_answer": {"type": "boolean"}, "align_to_words": {"type": "boolean"}},
}
_ERROR = {"description": "The caller's mistake (4xx) or a server fault (5xx)",
          "content": {"application/json": {"schema": {
              "type": "object", "properties": {"error": {"type": "object", "properties": {
                  "code": {"type": "string"}, "message": {"type": "string"}}}}}}}}
_ERRORS = {str(s): _ERROR for s in (400, 404, 413, 415, 422, 500, 503)}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def predict(task: str) -> dict:
    schema = {"type": "object", "required": ["inputs"], "additionalProperties": False, "properties": {
        "inputs": _INPUTS[task],
        "parameters": {"type": ["object", "null"], "properties": _PARAMS[task], "additionalProperties": False},
        "options": {"type": ["object", "null"], "description": "accepted for Hugging Face clients; ignored"}}}
    return {"requestBody": _body(schema), "responses": _ERRORS}


EMBEDDINGS = {
    "requestBody": _body({"type": "object", "required": ["input"], "additionalProperties": False, "properties": {
        "input": _TEXTS, "model": {"type": ["string", "null"]},
        "encoding_format": _choice("float", "base64"),
        "dimensions": {"type": ["integer", "null"], "minimum": 1,
                       "description": "at most the model's vector width (see GET /models/{name})"},
        "user": {"type": ["string", "null"]}}}),
    "responses": _ERRORS,
}
INFO = {"responses": {"404": _ERROR}}
HEALTH: dict = {}

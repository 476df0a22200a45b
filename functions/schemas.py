"""OpenAPI descriptions of the request bodies. Bodies are parsed by functions/inputs (not pydantic),
so errors keep one shape and parsing stays cheap; these schemas only document them."""

from __future__ import annotations

_TEXTS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
_QA = {"type": "object", "required": ["question", "context"],
       "properties": {"question": {"type": "string"}, "context": {"type": "string"}}}
_PAIR = {"type": "object", "required": ["text"],
         "properties": {"text": {"type": "string"}, "text_pair": {"type": "string"}}}

_INPUTS = {
    "feature-extraction": _TEXTS,
    "text-classification": {"oneOf": [{"type": "string"}, _PAIR,
                                      {"type": "array", "items": {"oneOf": [{"type": "string"}, _PAIR]}}]},
    "token-classification": _TEXTS,
    "question-answering": {"oneOf": [_QA, {"type": "array", "items": _QA}]},
}
_PARAMS = {
    "feature-extraction": {"normalize": {"type": "boolean"}},
    "text-classification": {"top_k": {"type": ["integer", "null"], "minimum": 1},
                            "function_to_apply": {"enum": ["softmax", "sigmoid", "none"]}},
    "token-classification": {"aggregation_strategy": {"enum": ["none", "simple", "first", "average", "max"]},
                             "ignore_labels": {"type": "array", "items": {"type": "string"}}},
    "question-answering": {"top_k": {"type": "integer", "minimum": 1}, "doc_stride": {"type": "integer"},
                           "max_answer_len": {"type": "integer", "minimum": 1},
                           "max_seq_len": {"type": "integer"}, "handle_impossible_answer": {"type": "boolean"},
                           "align_to_words": {"type": "boolean"}},
}
_ERROR = {"description": "The caller's mistake (4xx) or a server fault (5xx)",
          "content": {"application/json": {"schema": {
              "type": "object", "properties": {"error": {"type": "object", "properties": {
                  "code": {"type": "string"}, "message": {"type": "string"}}}}}}}}
_ERRORS = {str(s): _ERROR for s in (400, 404, 413, 415, 422, 500)}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def predict(task: str) -> dict:
    schema = {"type": "object", "required": ["inputs"], "properties": {
        "inputs": _INPUTS[task], "parameters": {"type": "object", "properties": _PARAMS[task]}}}
    return {"requestBody": _body(schema), "responses": _ERRORS}


EMBEDDINGS = {
    "requestBody": _body({"type": "object", "required": ["input"], "properties": {
        "input": _TEXTS, "model": {"type": "string"},
        "encoding_format": {"enum": ["float", "base64"]}, "dimensions": {"type": "integer", "minimum": 1},
        "user": {"type": "string"}}}),
    "responses": _ERRORS,
}
INFO = {"responses": {"404": _ERROR}}
HEALTH: dict = {}

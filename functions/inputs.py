"""Decoding and validating request bodies. Everything a caller can get wrong becomes a RequestError."""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from .tasks import QUESTION_CONTEXT, TEXT, TEXT_OR_PAIR

_JSON_TYPES = ("application/json",)


def check_content_type(content_type: str | None) -> None:
    """JSON only; a missing header is taken as JSON (API Gateway test events often omit it)."""
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(f"content type {media!r} is not supported", hint="send application/json")


# No request shape nests deeper than a few levels; 32 leaves room and keeps every later walk,
# repr and error message far from Python's recursion limit.
MAX_JSON_DEPTH = 32
# A \\uD800-\\uDFFF escape: the only way a lone surrogate gets into a str that json.loads returns.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_body_size(size: int, limit: int) -> None:
    """413 for a body over ``limit`` bytes; adapters call it before reading or decoding the rest."""
    if size > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes",
                              hint="send fewer or shorter inputs per request")


def _no_constant(name: str):
    raise BadRequest(f"request body is not valid JSON: {name} is not a JSON number")


def parse_json(body: bytes) -> dict:
    """The request body as a JSON object: strict JSON (no NaN/Infinity), valid Unicode, bounded depth."""
    if not body:
        raise BadRequest("request body is empty", hint="send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:  # an integer literal past Python's 4300-digit int conversion limit
        raise BadRequest("request body has an integer with too many digits") from None
    surrogates_possible = _SURROGATE_ESCAPE.search(text) is not None
    # Counting brackets is one fast C pass; only a body that could nest too deep is walked for it.
    if surrogates_possible or text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_structure(data, surrogates_possible)
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got {_kind(data)}")
    return data


def _check_structure(data: Any, surrogates_possible: bool) -> None:
    """Depth bound and, when an escape could have made one, no lone surrogates (the tokenizer and
    the UTF-8 encoder of the answer would fail on them far from here). Iterative: no recursion."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list, str)))
            if isinstance(value, dict) and surrogates_possible:
                stack.extend((k, depth) for k in value)
        elif surrogates_possible and isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadRequest(f"request body has an unpaired surrogate escape ({value[exc.start]!a})",
                                 hint="send valid Unicode text") from None


def shown(value: Any, limit: int = 60) -> str:
    """A caller's value for an error message: its repr, cut short (a body may be megabytes)."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    text = repr(value) if not isinstance(value, (dict, list)) or len(value) < 64 else f"<{_kind(value)}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


# Whitespace as JSON Schema (ECMA-262) regexes and Python's both spell it: a text is refused as
# empty when it holds nothing else. The OpenAPI schema's pattern is the complement, character for
# character (str.strip() would also strip \x1c-\x1f and \x85, which a schema validator keeps).
WHITESPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK = f"[^{WHITESPACE}]"
_NOT_BLANK = re.compile(NOT_BLANK)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a string, got {_kind(value)}")
    if _NOT_BLANK.search(value) is None:
        raise BadRequest(f"{where} is empty")
    return value


def _qa(value: Any, where: str) -> tuple[str, str]:
    if not isinstance(value, dict) or "question" not in value or "context" not in value:
        raise BadRequest(f"{where} must be an object with \"question\" and \"context\"")
    return _text(value["question"], where + ".question"), _text(value["context"], where + ".context")


def _text_or_pair(value: Any, where: str) -> str | tuple[str, str]:
    if isinstance(value, dict):
        if "text" not in value:
            raise BadRequest(f"{where} must be a string or an object with \"text\" (and \"text_pair\")")
        text = _text(value["text"], where + ".text")
        if value.get("text_pair") is None:
            return text
        return text, _text(value["text_pair"], where + ".text_pair")
    return _text(value, where)


_ITEM = {TEXT: _text, QUESTION_CONTEXT: _qa, TEXT_OR_PAIR: _text_or_pair}
_WANTS = {TEXT: "a string or a list of strings",
          QUESTION_CONTEXT: "an object {question, context} or a list of them",
          TEXT_OR_PAIR: "a string, an object {text, text_pair} or a list of either"}


def parse_items(value: Any, kind: str, max_batch: int, *, field: str = "inputs") -> tuple[list, bool]:
    """(items, single): the inputs as a list, and whether the caller sent one item rather than a list."""
    if value is None:
        raise BadRequest(f"\"{field}\" is required: {_WANTS[kind]}")
    single = not isinstance(value, list)
    values = [value] if single else value
    if not values:
        raise BadRequest(f"\"{field}\" is an empty list")
    if len(values) > max_batch:
        raise PayloadTooLarge(f"\"{field}\" has {len(values)} items; this model takes at most {max_batch} per request",
                              hint="split the request")
    check = _ITEM[kind]
    try:
        items = [check(v, field if single else f"{field}[{i}]") for i, v in enumerate(values)]
    except BadRequest as exc:
        raise BadRequest(f"{exc.message} (expected {_WANTS[kind]})") from None
    return items, single


def parse_predict(data: dict) -> tuple[Any, dict]:
    """The ``inputs`` and ``parameters`` of a Hugging Face inference request."""
    unknown = sorted(set(data) - {"inputs", "parameters", "options"})
    if unknown:
        raise BadRequest(f"unknown field {shown(unknown[0])}", hint="send {\"inputs\": ..., \"parameters\": {...}}")
    params = data.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):  # false, 0, "" and [] too: each is a caller's mistake
        raise BadRequest(f"\"parameters\" must be an object, got {_kind(params)}")
    options = data.get("options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest(f"\"options\" must be an object, got {_kind(options)}")
    return data.get("inputs"), params


def check_model_name(requested: str, served: str) -> None:
    if requested != served:
        raise NotFound(f"no model named {shown(requested)} here", hint=f"this function serves {served!r}")

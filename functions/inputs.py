"""Decoding and validating request bodies. Everything a caller can get wrong becomes a RequestError."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from .errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType

# What an image input may be (decoding and limits come with the model: functions/images.py, which
# imports numpy and Pillow only in image models' functions).
IMAGE_WANTS = "a PNG, JPEG, WebP, GIF, BMP or TIFF image"


@dataclass(frozen=True)
class ImageInput:
    """One image as the request carried it (raw bytes, or base64 text) and where it was."""

    data: bytes | str
    where: str

AUDIO_WANTS = "a WAV, FLAC, OGG or MP3 recording"


@dataclass(frozen=True)
class AudioInput:
    """One recording as the request carried it (raw bytes, or base64 text) and where it was."""

    data: bytes | str
    where: str

# The kinds of ``inputs`` a task takes; each task names one (functions/tasks).
TEXT = "text"  # a string, or a list of strings
QUESTION_CONTEXT = "question-context"  # {"question", "context"}, or a list of them
TEXT_OR_PAIR = "text-or-pair"  # a string, {"text", "text_pair"}, or a list of either
IMAGE = "image"  # base64 image bytes, or a list of them; or the raw image as the whole body
AUDIO = "audio"  # base64 audio bytes, or a list of them; or the raw recording as the whole body
# /v1/embeddings of CLIP-style bundles: a text, a data: URL of an image, {"type": "text", "text"} or
# {"type": "image_url", "image_url": {"url": <data: URL>}} (OpenAI's content-part shape), or a list of them
TEXT_OR_IMAGE = "text-or-image"

_JSON_TYPES = ("application/json",)


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def check_content_type(content_type: str | None, *, raw_media: tuple[str, ...] = ()) -> None:
    """JSON only; a missing header is taken as JSON (API Gateway test events often omit it)."""
    if not content_type:
        return
    media = _media(content_type)
    if media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(f"content type {media!r} is not supported",
                               hint="send " + " or ".join(("application/json",) + raw_media))


def is_raw_media(content_type: str | None, raw_media: tuple[str, ...]) -> bool:
    """Whether the body is one raw input (e.g. an image/png body) rather than JSON."""
    if not content_type or not raw_media:
        return False
    media = _media(content_type)
    return any(media == m or (m.endswith("/*") and media.startswith(m[:-1])) for m in raw_media)


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


def whole_number(value: Any) -> int | None:
    """``value`` as an int when JSON Schema's "integer" takes it (17, and also 17.0: a number with no
    fractional part is an integer there), else None; booleans are not numbers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


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


def _image(value: Any, where: str) -> ImageInput:
    # Only the type here: size limits and decoding come with the model (functions/images.py).
    if not isinstance(value, (str, bytes)):
        raise BadRequest(f"{where} must be a base64-encoded image string, got {_kind(value)}")
    if not (value.strip() if isinstance(value, str) else value):
        raise BadRequest(f"{where} is empty")
    return ImageInput(value, where)


def _audio(value: Any, where: str) -> AudioInput:
    # Only the type here: size and duration limits and decoding come with the model (functions/audio.py).
    if not isinstance(value, (str, bytes)):
        raise BadRequest(f"{where} must be a base64-encoded recording string, got {_kind(value)}")
    if not (value.strip() if isinstance(value, str) else value):
        raise BadRequest(f"{where} is empty")
    return AudioInput(value, where)
def _text_or_image(value: Any, where: str) -> str | ImageInput:
    # A plain string is a text unless it is a data: URL; URLs that would have to be fetched are
    # refused, never fetched (a function does not reach out to addresses a caller names).
    if isinstance(value, str) and value.startswith("data:"):
        return _image(value, where)
    if not isinstance(value, dict):
        return _text(value, where)
    kind = value.get("type")
    if kind == "text":
        return _text(value.get("text"), where + ".text")
    if kind != "image_url":
        raise BadRequest(f"{where}.type must be \"text\" or \"image_url\", got {shown(kind)}")
    url = value.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str):
        raise BadRequest(f"{where}.image_url.url must be a string, got {_kind(url)}")
    if not url.startswith("data:"):
        raise BadRequest(f"{where}.image_url.url is not a data: URL; images are not fetched from URLs",
                         hint="send data:image/png;base64,<the image bytes, base64-encoded>")
    return _image(url, where + ".image_url.url")


@dataclass(frozen=True)
class InputKind:
    """One kind of ``inputs``: how an item is checked, what a caller is told to send, its schema, and
    the media types (ranges like ``image/*``) whose body is itself one input, sent without JSON."""

    check: Callable[[Any, str], Any]
    wants: str
    item_schema: dict
    raw_media: tuple[str, ...] = ()

    @property
    def schema(self) -> dict:
        """The OpenAPI schema of ``inputs``: one item or a non-empty list of them."""
        return {"oneOf": [self.item_schema, {"type": "array", "items": self.item_schema, "minItems": 1}]}


# A text must hold a non-whitespace character, exactly as _text checks it.
_STRING = {"type": "string", "minLength": 1, "pattern": NOT_BLANK}
INPUT_KINDS: dict[str, InputKind] = {
    TEXT: InputKind(_text, "a string or a list of strings", _STRING),
    QUESTION_CONTEXT: InputKind(_qa, "an object {question, context} or a list of them", {
        "type": "object", "required": ["question", "context"],
        "properties": {"question": _STRING, "context": _STRING}}),
    TEXT_OR_PAIR: InputKind(_text_or_pair, "a string, an object {text, text_pair} or a list of either", {
        "oneOf": [_STRING, {"type": "object", "required": ["text"],
                            "properties": {"text": _STRING, "text_pair": {"oneOf": [_STRING, {"type": "null"}]}}}]}),
    IMAGE: InputKind(_image, "a base64-encoded image or a list of them", {
        "type": "string", "format": "byte", "description": "base64 (or a data: URL) of " + IMAGE_WANTS},
        raw_media=("image/*", "application/octet-stream")),
    AUDIO: InputKind(_audio, "a base64-encoded recording or a list of them", {
        "type": "string", "format": "byte", "description": "base64 (or a data: URL) of " + AUDIO_WANTS},
        raw_media=("audio/*", "application/octet-stream")),
    TEXT_OR_IMAGE: InputKind(_text_or_image, "a string, a data:image/...;base64 URL, {\"type\": \"image_url\", "
                             "\"image_url\": {\"url\": <data: URL>}} or a list of them", {
        "oneOf": [_STRING, {"type": "object", "required": ["type", "text"],
                            "properties": {"type": {"const": "text"}, "text": _STRING}},
                  {"type": "object", "required": ["type", "image_url"],
                   "properties": {"type": {"const": "image_url"}, "image_url": {
                       "oneOf": [{"type": "string", "pattern": "^data:"},
                                 {"type": "object", "required": ["url"],
                                  "properties": {"url": {"type": "string", "pattern": "^data:"}}}]}}}]}),
}


def parse_items(value: Any, kind: str, max_batch: int, *, field: str = "inputs") -> tuple[list, bool]:
    """(items, single): the inputs as a list, and whether the caller sent one item rather than a list."""
    spec = INPUT_KINDS[kind]
    if value is None:
        raise BadRequest(f"\"{field}\" is required: {spec.wants}")
    single = not isinstance(value, list)
    values = [value] if single else value
    if not values:
        raise BadRequest(f"\"{field}\" is an empty list")
    if len(values) > max_batch:
        raise PayloadTooLarge(f"\"{field}\" has {len(values)} items; this model takes at most {max_batch} per request",
                              hint="split the request")
    try:
        items = [spec.check(v, field if single else f"{field}[{i}]") for i, v in enumerate(values)]
    except BadRequest as exc:
        raise BadRequest(f"{exc.message} (expected {spec.wants})") from None
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


def read_predict_body(kind: str, content_type: str | None, body: bytes) -> tuple[Any, dict]:
    """The ``inputs`` and ``parameters`` of a predict request: a raw body of one of the kind's media
    types is the single input (no parameters), anything else must be the JSON request shape."""
    raw_media = INPUT_KINDS[kind].raw_media
    if is_raw_media(content_type, raw_media):
        if not body:
            raise BadRequest("request body is empty", hint=f"send {INPUT_KINDS[kind].wants}")
        return body, {}
    check_content_type(content_type, raw_media=raw_media)
    return parse_predict(parse_json(body))


def check_model_name(requested: str, served: str) -> None:
    if requested != served:
        raise NotFound(f"no model named {shown(requested)} here", hint=f"this function serves {served!r}")

"""Chat templates: the model's own Jinja template, rendered in a sandbox.

The template ships in the bundle (taken from the model's tokenizer config at export), so it is
code from the model's author; it runs in Jinja's immutable sandbox, with the globals Hugging Face
templates use (``raise_exception``, ``strftime_now``, a ``tojson`` that keeps non-ASCII text).
A template that rejects the conversation (``raise_exception``) is the caller's 400; one that fails
any other way is a fault of the bundle.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..errors import BadRequest, BundleError

ROLES = ("system", "developer", "user", "assistant", "tool")
_MESSAGE_FIELDS = ("role", "content", "name")


class TemplateRejected(Exception):
    """Raised by a template's ``raise_exception(message)``."""


def _raise_exception(message: str):
    raise TemplateRejected(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


class ChatTemplate:
    """A compiled chat template; :meth:`render` turns messages into the prompt text."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = ""):
        from jinja2 import TemplateError
        from jinja2.sandbox import (
            ImmutableSandboxedEnvironment,  # only generation bundles pay for jinja2
        )

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise BundleError(f"the chat template does not compile: {_one_line(exc)}",
                              hint="re-export the model") from None
        self._tokens = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages: list[dict]) -> str:
        """The prompt for ``messages``, ending with the assistant turn's opening (add_generation_prompt)."""
        from jinja2 import TemplateError

        try:
            return self._template.render(messages=messages, add_generation_prompt=True, **self._tokens)
        except TemplateRejected as exc:
            raise BadRequest(f"the model's chat template rejected the messages: {_one_line(exc)}") from None
        except (TemplateError, TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise BundleError(f"the chat template failed: {type(exc).__name__}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def parse_messages(value: Any) -> list[dict]:
    """Validated chat messages with string content (text parts joined); BadRequest names the bad one."""
    if not isinstance(value, list) or not value:
        raise BadRequest("\"messages\" must be a non-empty array of {role, content} objects")
    messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object with \"role\" and \"content\"")
        unknown = sorted(set(message) - set(_MESSAGE_FIELDS))
        if unknown:
            raise BadRequest(f"{where} has an unsupported field {unknown[0]!r}",
                             hint="message fields: " + ", ".join(_MESSAGE_FIELDS))
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
        parsed = {"role": role, "content": _content(message.get("content"), where, role)}
        if "name" in message:
            if not isinstance(message["name"], str):
                raise BadRequest(f"{where}.name must be a string")
            parsed["name"] = message["name"]
        messages.append(parsed)
    return messages


def _content(content: Any, where: str, role: str) -> str:
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"{where}.content[{j}] must be a text part {{\"type\": \"text\", \"text\": ...}}",
                                 hint="this model reads text only")
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"{where}.content must be a string or an array of text parts")

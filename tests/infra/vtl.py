"""API Gateway's integration response mapping, for the templates infra/template/_api.py generates:
the response whose selection pattern matches the integration's status, and its Velocity template
rendered with airspeed (LocalStack's VTL engine for API Gateway) and API Gateway's ``$input``,
``$util`` and ``$context.responseOverride``.

Only what REST API integration responses offer and our templates use is here: ``$input.path``,
``$input.json``, ``$input.body``, ``$util.escapeJavaScript`` (as Java's commons-lang escapes, quirks
included: ``'`` becomes ``\\'`` and ``/`` becomes ``\\/``) and the Java string methods airspeed lacks.
"""

from __future__ import annotations

import json
import re
from typing import Any

import airspeed
from airspeed import operators

# Java's String methods the templates call that airspeed does not map to Python's.
operators.__additional_methods__[str].update({
    "toLowerCase": lambda self: self.lower(),
    "equals": lambda self, other: self == other,
    "isEmpty": lambda self: not self,
})


def escape_javascript(text: Any) -> str:
    """Java's StringEscapeUtils.escapeJavaScript (commons-lang 2), which $util.escapeJavaScript is."""
    text = "" if text is None else str(text)
    out = []
    for unit in _utf16_units(text):
        char = chr(unit)
        if unit > 0x7F:
            out.append(f"\\u{unit:04X}")
        elif char in "'\"\\/":
            out.append("\\" + char)
        elif unit < 0x20:
            out.append({"\b": "\\b", "\n": "\\n", "\t": "\\t", "\f": "\\f", "\r": "\\r"}.get(char, f"\\u{unit:04X}"))
        else:
            out.append(char)
    return "".join(out)


def _utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-be", "surrogatepass")
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


class _Input:
    def __init__(self, body: str):
        self.body = body
        try:
            self._data = json.loads(body) if body.strip() else {}
        except ValueError:
            self._data = None

    def path(self, expression: str) -> Any:
        """A JSONPath of the form $ or $.a.b (what the templates read)."""
        value = self._data
        for key in [k for k in expression.lstrip("$").split(".") if k]:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def json(self, expression: str) -> str:
        return json.dumps(self.path(expression))


class _Util:
    def escapeJavaScript(self, text: Any) -> str:  # noqa: N802 - API Gateway's name
        return escape_javascript(text)

    def parseJson(self, text: str) -> Any:  # noqa: N802
        return json.loads(text)


def render(template: str, body: str) -> tuple[int | None, dict[str, str], str]:
    """(status override, header overrides, output) of ``template`` on an integration answer ``body``."""
    override: dict[str, Any] = {"header": {}}
    output = airspeed.Template(template).merge({"input": _Input(body), "util": _Util(),
                                                "context": {"responseOverride": override}})
    status = override.get("status")
    return (int(status) if status is not None else None), dict(override["header"]), output


def integration_response(integration: dict, status: int, body: str) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) API Gateway answers for an AWS integration's answer ``status``/``body``:
    the response whose selectionPattern matches the status (else ``default``), its template rendered."""
    responses = integration["responses"]
    chosen = responses["default"]
    for pattern, response in responses.items():
        if pattern != "default" and re.fullmatch(pattern, str(status)):
            chosen = response
            break
    headers = {name.removeprefix("method.response.header."): value.strip("'")
               for name, value in chosen.get("responseParameters", {}).items()}
    template = chosen.get("responseTemplates", {}).get("application/json")
    if template is None:  # passthrough
        return int(chosen["statusCode"]), headers, body
    override, more, output = render(template, body)
    return override or int(chosen["statusCode"]), {**headers, **more}, output

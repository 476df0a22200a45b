"""Validation of the ``parameters`` object of a predict request. Wrong values are a 400, named."""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest
from ..inputs import shown, whole_number

MISSING: Any = object()


def check_known(params: dict, known: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise BadRequest(f"unknown parameter {shown(unknown[0])}",
                         hint="this model accepts: " + (", ".join(known) or "no parameters"))


def get_int(params: dict, name: str, default: Any, *, lo: int = 1, hi: int = 1 << 20,
            nullable: bool = False) -> Any:
    value = params.get(name, MISSING)
    if value is MISSING:
        return default
    if value is None and nullable:
        return None
    number = whole_number(value)
    if number is None or not lo <= number <= hi:
        extra = " or null" if nullable else ""
        raise BadRequest(f"parameters.{name} must be an integer from {lo} to {hi}{extra}, got {shown(value)}")
    return number


def get_bool(params: dict, name: str, default: Any) -> Any:
    value = params.get(name, MISSING)
    if value is MISSING:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"parameters.{name} must be true or false, got {shown(value)}")
    return value


def get_choice(params: dict, name: str, default: Any, choices: tuple[str, ...]) -> Any:
    value = params.get(name, MISSING)
    if value is MISSING or value is None:
        return default
    # Exact spelling, as the OpenAPI schema's enum says (a case-folded match would accept more).
    if not isinstance(value, str) or value not in choices:
        raise BadRequest(f"parameters.{name} must be one of {', '.join(choices)}, got {shown(value)}")
    return value


def get_str_list(params: dict, name: str, default: Any) -> Any:
    value = params.get(name, MISSING)
    if value is MISSING or value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"parameters.{name} must be a list of strings")
    return value


# The OpenAPI side of the checks above, for the tasks' ``params_schema``: exactly what they accept.
def int_schema(lo: int, hi: int, *, nullable: bool = False) -> dict:
    return {"type": ["integer", "null"] if nullable else "integer", "minimum": lo, "maximum": hi}


def choice_schema(*values: str) -> dict:
    return {"enum": [*values, None]}  # null: the default

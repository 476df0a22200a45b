"""Sampling options of one generation request, and the validation of each field.

OpenAI bodies name fields at the top level (``max_tokens``), Hugging Face bodies inside
``parameters`` (``parameters.max_new_tokens``); both validate through the helpers here, which name
the field as the caller wrote it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest
from ..inputs import whole_number

MAX_STOPS = 4
_MISSING: Any = object()


@dataclass(frozen=True)
class SamplingOptions:
    """How to decode. ``temperature`` 0 is greedy; ``max_tokens`` None is "up to the limit"."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def number(data: dict, key: str, default: Any, *, lo: float, hi: float, where: str = "",
           lo_open: bool = False) -> Any:
    """A float in [lo, hi] (or (lo, hi] with ``lo_open``); null or absent gives ``default``."""
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (lo < value if lo_open else lo <= value) or value > hi:
        low = f"greater than {lo}" if lo_open else f"from {lo}"
        raise BadRequest(f"{where}{key} must be a number {low} to {hi}, got {value!r}")
    return float(value)


def integer(data: dict, key: str, default: Any, *, lo: int, hi: int, where: str = "") -> Any:
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None:
        return default
    number = whole_number(value)
    if number is None or not lo <= number <= hi:
        raise BadRequest(f"{where}{key} must be an integer from {lo} to {hi}, got {value!r}")
    return number


def boolean(data: dict, key: str, default: Any, *, where: str = "") -> Any:
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{where}{key} must be true or false, got {value!r}")
    return value


def stops(data: dict, key: str, *, where: str = "") -> tuple[str, ...]:
    """A string or up to four non-empty strings."""
    value = data.get(key)
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise BadRequest(f"{where}{key} must be a non-empty string or an array of non-empty strings")
    if len(values) > MAX_STOPS:
        raise BadRequest(f"{where}{key} has {len(values)} strings; at most {MAX_STOPS} are allowed")
    return tuple(dict.fromkeys(values))


def check_known(data: dict, known: tuple[str, ...], *, where: str = "field") -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise BadRequest(f"unknown {where} {unknown[0]!r}", hint="accepted: " + ", ".join(known))


def sampling(data: dict, *, max_tokens_key: str, max_tokens_default: int | None, where: str = "",
             temperature_default: float = 1.0) -> SamplingOptions:
    """The sampling fields shared by every route (names as the route spells them)."""
    return SamplingOptions(
        max_tokens=integer(data, max_tokens_key, max_tokens_default, lo=1, hi=1 << 20, where=where),
        temperature=number(data, "temperature", temperature_default, lo=0.0, hi=2.0, where=where),
        top_p=number(data, "top_p", 1.0, lo=0.0, hi=1.0, lo_open=True, where=where),
        top_k=integer(data, "top_k", 0, lo=0, hi=1 << 20, where=where),
        seed=integer(data, "seed", None, lo=-(1 << 63), hi=(1 << 63) - 1, where=where),
        stop=stops(data, "stop", where=where),
        repetition_penalty=number(data, "repetition_penalty", 1.0, lo=0.0, hi=10.0, lo_open=True, where=where),
    )

"""Choosing one candidate from the measured table, deterministically.

Latencies within ``TIE_FRACTION`` of the fastest count as a tie (timing noise on a shared machine
must not flip the choice between runs); ties go to the smaller file, then to the name.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from functions.manifest import Candidate

from .candidates import FP32
from .errors import ExportError

STRATEGIES = ("fastest-passing", "smallest-passing")
TIE_FRACTION = 0.05


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str
    fell_back: bool  # int8/fp16 was asked for, fp32 is what passed
    passed: bool


def parse_strategy(strategy: str) -> str:
    if strategy in STRATEGIES or (strategy.startswith("fixed:") and len(strategy) > len("fixed:")):
        return strategy
    raise ExportError(f"unknown strategy {strategy!r}", hint="use fastest-passing, smallest-passing or fixed:NAME")


def host_architecture() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)


def _fastest(pool: list[Candidate]) -> Candidate:
    best = min(c.latency_ms for c in pool)
    tied = [c for c in pool if c.latency_ms <= best * (1 + TIE_FRACTION)]
    return min(tied, key=lambda c: (c.size_bytes, c.name))


def choose(candidates: list[Candidate], strategy: str, *, requested: str, timed_here: bool,
           preference: tuple[str, ...] = ()) -> Choice:
    """Pick per ``strategy``. ``timed_here`` is False when latency was not measured on the target's hardware:
    then the first passing candidate in ``preference`` order wins and the reason says why."""
    strategy = parse_strategy(strategy)
    by_name = {c.name: c for c in candidates}
    if strategy.startswith("fixed:"):
        name = strategy.split(":", 1)[1]
        if name not in by_name:
            raise ExportError(f"strategy {strategy}: no candidate {name!r} was built",
                              hint="candidates: " + ", ".join(by_name))
        c = by_name[name]
        return Choice(name, f"fixed by strategy{'' if c.passed else ' (fails the parity gate)'}", False, c.passed)
    passing = [c for c in candidates if c.passed]
    quantized = [c for c in passing if c.name != FP32]
    if not passing:
        return Choice(FP32, "no candidate passes the parity gate", requested != "none", False)
    if requested != "none" and not quantized:
        return Choice(FP32, f"fell back to fp32: no {requested} candidate passes the parity gate", True, True)
    if not timed_here:
        pick = next(by_name[n] for n in preference if n in by_name and by_name[n].passed)
        return Choice(pick.name, f"latency cannot be measured for the target architecture on this "
                      f"{host_architecture()} host; first passing candidate in preset order "
                      f"({', '.join(preference)}); others were checked for parity only", False, True)
    if strategy == "smallest-passing":
        pick = min(passing, key=lambda c: (c.size_bytes, c.latency_ms, c.name))
        return Choice(pick.name, f"smallest passing candidate ({pick.size_bytes} bytes)", False, True)
    pick = _fastest(passing)
    fastest = min(passing, key=lambda c: c.latency_ms)
    tie = "" if pick is fastest else f"; within {TIE_FRACTION:.0%} of {fastest.name}, smaller file wins"
    fp32 = by_name.get(FP32)
    speed = f", {fp32.latency_ms / pick.latency_ms:.2f}x fp32" if fp32 and pick.latency_ms > 0 else ""
    if pick.name == FP32 and requested != "none":
        return Choice(FP32, f"fp32 is the fastest passing candidate: no {requested} candidate beat it{tie}", False, True)
    return Choice(pick.name, f"fastest passing candidate ({pick.latency_ms:.3f} ms at batch 1{speed}{tie})", False, True)


__all__ = ["Choice", "STRATEGIES", "TIE_FRACTION", "choose", "host_architecture", "parse_strategy"]

"""Choosing one candidate from the measured table, deterministically.

Speed is judged on the CPU time a call costs (export/measure.py: the load of a shared build host
moves it by percents where it moves wall time by several times), falling back to wall time for
tables that have none. Candidates whose batch-1 time differs from the fastest's by less than the timing noise
are tied: noise must not flip the choice between runs. The noise is two standard errors of the
median of their round-by-round time ratio (``NOISE_IQRS`` interquartile ranges over the square root
of the rounds: the question is whether the medians differ, not single rounds), at least
``TIE_FRACTION`` and at most ``TIE_CEILING``: however noisy a run was, a candidate more than
``1 + TIE_CEILING`` times faster is never tied, and on CPU time the floor is what usually decides,
so the tie band does not move with the load from one export to the next. Ties go to the more
accurate candidate (its gated metrics, means by their lower bound), then the smaller file, then
the name.

A re-export keeps the previous export's choice (``previous``: the bundle it replaces, or one named)
when that candidate still passes and may still be chosen, unless another passing candidate is more
than ``1 + TIE_CEILING`` times faster than it. A fixed tie band always has candidates near its edge
(MiniLM's weight-only int8 leads fp32 by 1.11-1.24x from one run to the next against a 10% band), and
a fresh choice between them is a coin toss each time; the previous choice makes the toss once, so
exporting the same model again gives the same bundle unless the speed gap is decisive. The reason
says when a fresh choice would have differed.

Automatic strategies never pick a candidate whose numerics assume an instruction set the target
may lack (``requires_cpu``, e.g. the VNNI preset: Lambda does not promise VNNI, and without it
ONNX Runtime's u8s8 kernels can saturate), nor one that must run one row per call when that makes
a batch slower than fp32 runs it. ``fixed:NAME`` still can, and its reason says so.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, replace

from functions.manifest import Candidate

from .candidates import FP32
from .errors import ExportError
from .measure import paired_ratio

STRATEGIES = ("fastest-passing", "smallest-passing")
TIE_FRACTION = 0.10
TIE_CEILING = 0.25  # a 1.25x-faster candidate is never tied, whatever the spread of one noisy run
# The median of n rounds has a standard error of ~0.93 IQR / sqrt(n) (normal rounds): two of them.
NOISE_IQRS = 1.9
# Without paired rounds (old tables): the larger spread of the two, as a single round would vary.
UNPAIRED_IQRS = 1.5


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


def ranked_ms(c: Candidate) -> float:
    """The batch-1 figure speed is judged on: CPU time per call where measured, else wall time."""
    return c.cpu_ms if c.cpu_ms > 0 else c.latency_ms


def _timed(a: Candidate, b: Candidate) -> tuple[float, float, float, float, tuple, tuple]:
    """(ms, spread) of each and their rounds, in CPU time when both have it, else in wall time: never mixed."""
    if a.cpu_ms > 0 and b.cpu_ms > 0:
        return a.cpu_ms, a.cpu_spread_ms, b.cpu_ms, b.cpu_spread_ms, a.cpu_rounds_ms, b.cpu_rounds_ms
    return (a.latency_ms, a.latency_spread_ms, b.latency_ms, b.latency_spread_ms, a.latency_rounds_ms,
            b.latency_rounds_ms)


def noise(a: Candidate, b: Candidate) -> float:
    """Milliseconds (of ``ranked_ms``) two candidates' batch-1 times must differ by before one counts as
    faster: two standard errors of the median of their round-by-round ratio when both were timed in the
    same rounds (load common to a round cancels), else the larger of their spreads; never under
    ``TIE_FRACTION`` nor over ``TIE_CEILING`` of the faster one's time."""
    a_ms, a_spread, b_ms, b_spread, a_rounds, b_rounds = _timed(a, b)
    floor, ceiling = TIE_FRACTION * min(a_ms, b_ms), TIE_CEILING * min(a_ms, b_ms)
    if a_rounds and len(a_rounds) == len(b_rounds):
        _, spread = paired_ratio(a_rounds, b_rounds)
        return min(max(NOISE_IQRS * spread / math.sqrt(len(a_rounds)) * b_ms, floor), ceiling)
    return min(max(UNPAIRED_IQRS * max(a_spread, b_spread), floor), ceiling)


def _gap(a: Candidate, b: Candidate) -> float:
    """How many milliseconds (of ``ranked_ms``) slower ``a`` is than ``b`` (paired by round when possible)."""
    a_ms, _, b_ms, _, a_rounds, b_rounds = _timed(a, b)
    if a_rounds and len(a_rounds) == len(b_rounds):
        ratio, _ = paired_ratio(a_rounds, b_rounds)
        return (ratio - 1.0) * b_ms
    return a_ms - b_ms


def _accuracy(c: Candidate, gated: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(c.metrics.get(m + "_lcb95", c.metrics.get(m, float("-inf"))) for m in gated)


def _fastest(pool: list[Candidate], gated: tuple[str, ...] = ()) -> Candidate:
    best = min(pool, key=lambda c: (ranked_ms(c), c.name))
    tied = [c for c in pool if _gap(c, best) <= noise(c, best)]
    return min(tied, key=lambda c: (tuple(-v for v in _accuracy(c, gated)), c.size_bytes, c.name))


def ineligible(c: Candidate, fp32: Candidate | None, *, timed_here: bool = True) -> str:
    """Why an automatic strategy will not pick ``c`` ("" when it may). Speed is only weighed when
    ``timed_here`` (latency measured on the target's own architecture)."""
    if c.requires_cpu:
        return (f"tuned for {'+'.join(c.requires_cpu)}, which the target CPU may lack (parity and speed "
                "measured here need not hold there): not chosen automatically")
    if not (timed_here and c.one_row_per_run and fp32 is not None):
        return ""
    # CPU time when both have it (steady under load), else wall time
    mine, theirs, clock = ((c.batch_cpu_ms, fp32.batch_cpu_ms, " of CPU") if c.batch_cpu_ms > 0 and fp32.batch_cpu_ms > 0
                           else (c.batch_latency_ms, fp32.batch_latency_ms, ""))
    if mine > 0 and theirs > 0 and mine > theirs:
        return (f"rows depend on batch-mates; run one row per call a batch of 8 takes {mine:.2f} ms{clock} "
                f"vs fp32 {theirs:.2f} ms: not worth it")
    return ""


def _kept(previous: Candidate | None, fresh: Choice, passing: list[Candidate], fastest: Candidate) -> Choice:
    """``fresh`` unless the previous export's choice is still passing and no candidate is more than
    ``1 + TIE_CEILING`` times faster than it (then that one again, saying what a fresh choice was)."""
    if previous is None or previous.name == fresh.name:
        return fresh
    not_kept = f"; the previous export's choice {previous.name} is not kept: "
    if previous.name not in {c.name for c in passing}:
        why = "it fails the parity gate" if not previous.passed else "it may not be chosen automatically"
        return replace(fresh, reason=fresh.reason + not_kept + why)
    lead = 1 + _gap(previous, fastest) / ranked_ms(fastest)  # how many times faster the fastest is
    clock = " by CPU time" if previous.cpu_ms > 0 and fastest.cpu_ms > 0 else ""
    if lead > 1 + TIE_CEILING:
        return replace(fresh, reason=fresh.reason + not_kept + f"{fastest.name} is {lead:.2f}x faster{clock}, past "
                       f"the {1 + TIE_CEILING:.2f}x a re-export needs to change its choice")
    rows = "; served one row per call (rows depend on batch-mates)" if previous.one_row_per_run else ""
    return Choice(previous.name, f"kept the previous export's choice: it passes and no candidate is more than "
                  f"{1 + TIE_CEILING:.2f}x faster (the fastest, {fastest.name}, {max(lead, 1.0):.2f}x{clock} at "
                  f"batch 1){rows}; a fresh choice would be {fresh.name}: {fresh.reason}", False, True)


def choose(candidates: list[Candidate], strategy: str, *, requested: str, timed_here: bool,
           preference: tuple[str, ...] = (), gated: tuple[str, ...] = (), previous: str = "") -> Choice:
    """Pick per ``strategy``. ``timed_here`` is False when latency was not measured on the target's hardware:
    then the first passing candidate in ``preference`` order wins and the reason says why. ``gated``
    names the metrics that decide which of several tied candidates is the more accurate. ``previous``
    names the previous export's choice, kept by fastest-passing unless beaten decisively (module doc)."""
    strategy = parse_strategy(strategy)
    by_name = {c.name: c for c in candidates}
    if strategy.startswith("fixed:"):
        name = strategy.split(":", 1)[1]
        if name not in by_name:
            raise ExportError(f"strategy {strategy}: no candidate {name!r} was built",
                              hint="candidates: " + ", ".join(by_name))
        c = by_name[name]
        caveat = f"; {ineligible(c, by_name.get(FP32)).split(':')[0]}" if ineligible(c, by_name.get(FP32)) else ""
        return Choice(name, f"fixed by strategy{'' if c.passed else ' (fails the parity gate)'}{caveat}", False,
                      c.passed)
    passing = [c for c in candidates if c.passed and not ineligible(c, by_name.get(FP32), timed_here=timed_here)]
    quantized = [c for c in passing if c.name != FP32]
    if not passing:
        return Choice(FP32, "no candidate passes the parity gate", requested != "none", False)
    if requested != "none" and not quantized:
        return Choice(FP32, f"fell back to fp32: no {requested} candidate passes the parity gate", True, True)
    if not timed_here:
        pick = next(c for n in preference for c in passing if c.name == n)
        return Choice(pick.name, f"latency cannot be measured for the target architecture on this "
                      f"{host_architecture()} host; first passing candidate in preset order "
                      f"({', '.join(preference)}); others were checked for parity only", False, True)
    if strategy == "smallest-passing":
        pick = min(passing, key=lambda c: (c.size_bytes, ranked_ms(c), c.name))
        return Choice(pick.name, f"smallest passing candidate ({pick.size_bytes} bytes)", False, True)
    pick = _fastest(passing, gated)
    fastest = min(passing, key=lambda c: (ranked_ms(c), c.name))
    return _kept(by_name.get(previous), _fresh(pick, fastest, by_name.get(FP32), requested), passing, fastest)


def _fresh(pick: Candidate, fastest: Candidate, fp32: Candidate | None, requested: str) -> Choice:
    """The fastest-passing choice of ``pick`` (tied with or equal to ``fastest``) and its reason."""
    unit = "ms CPU" if pick.cpu_ms > 0 and fastest.cpu_ms > 0 else "ms"
    tie = "" if pick is fastest else (f"; tied with {fastest.name} ({ranked_ms(fastest):.3f} {unit}) within the "
                                      f"timing noise ({noise(pick, fastest):.3f} {unit}), the more accurate wins")
    speed = (f", {ranked_ms(fp32) / ranked_ms(pick):.2f}x fp32{' by CPU time' if pick.cpu_ms > 0 else ''}"
             if fp32 and ranked_ms(pick) > 0 else "")
    if pick.name == FP32 and requested != "none":
        return Choice(FP32, f"fp32 is the fastest passing candidate: no {requested} candidate beat it{tie}", False, True)
    rows = "; served one row per call (rows depend on batch-mates)" if pick.one_row_per_run else ""
    cpu = f"{pick.cpu_ms:.3f} ± {pick.cpu_spread_ms:.3f} ms CPU, " if pick.cpu_ms > 0 else ""
    return Choice(pick.name, f"fastest passing candidate ({cpu}{pick.latency_ms:.3f} ± {pick.latency_spread_ms:.3f} ms "
                  f"wall at batch 1{speed}{tie}){rows}", False, True)


__all__ = ["Choice", "STRATEGIES", "TIE_CEILING", "TIE_FRACTION", "choose", "host_architecture", "ineligible", "noise",
           "parse_strategy", "ranked_ms"]

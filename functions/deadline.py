"""The per-request time budget: answer a clear 504 before Lambda kills the function mid-response.

When a Lambda function runs past its timeout, Lambda kills it and API Gateway answers the client a
bare 502 with no body. So each request carries a :class:`Deadline`: the function's remaining time
(``context.get_remaining_time_in_millis()``) minus :data:`MARGIN_S` for writing the answer, capped by
$MODELFN_TIME_BUDGET_MS when that is set (the only bound on adapters without a Lambda context).

- Encoders: before each session run, the run's cost is estimated from the last measured time per
  token (:class:`RunRate`); a run that would not fit answers 504 ``timeout`` instead of starting.
- Text generation: decoding stops when the next token would not fit (measured from the previous
  one) and the answer ends with ``finish_reason: "length"``, streamed or not; a request whose
  budget is gone before the first token answers 504.

The adapter opens the request's deadline with :func:`scope`; code deeper down reads it with
:func:`current` when it creates its work (a Generation, a Pending batch), so a lazily consumed
stream still obeys the deadline of the request that started it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .errors import TimedOut

# Left for serializing the answer, writing the log line and handing the response to Lambda.
MARGIN_S = 0.5
Clock = Callable[[], float]


class Deadline:
    """A point on ``clock`` (monotonic seconds) by which the answer must be complete; None: unbounded."""

    __slots__ = ("clock", "expires_at")

    def __init__(self, seconds: float | None, clock: Clock = time.monotonic):
        self.clock = clock
        self.expires_at = None if seconds is None else clock() + seconds

    @classmethod
    def for_request(cls, context: Any = None, budget_ms: int | None = None, clock: Clock = time.monotonic) -> Deadline:
        """The tighter of the configured budget and the Lambda context's remaining time minus the margin."""
        limits = [budget_ms / 1000] if budget_ms else []
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining):
            try:
                limits.append(float(remaining()) / 1000 - MARGIN_S)
            except (TypeError, ValueError):  # a context that cannot say: no Lambda bound
                pass
        return cls(min(limits) if limits else None, clock)

    @property
    def bounded(self) -> bool:
        return self.expires_at is not None

    def remaining(self) -> float:
        """Seconds left (negative once past); infinite when unbounded."""
        return math.inf if self.expires_at is None else self.expires_at - self.clock()

    def fits(self, seconds: float) -> bool:
        """Whether work estimated at ``seconds`` can finish before the deadline."""
        return seconds < self.remaining()

    def cancel(self) -> None:
        """End the time left now: nobody will read the answer (its client left). Work checking this
        deadline stops at its next check (a generation ends at its next token)."""
        self.expires_at = -math.inf

    def check(self, estimated_s: float, what: str) -> None:
        """TimedOut (504) unless ``what``, estimated at ``estimated_s`` seconds, fits in what is left."""
        left = self.remaining()
        if estimated_s >= left:
            raise TimedOut(f"{what} would not finish within this request's time budget "
                           f"({max(left, 0.0) * 1000:.0f} ms left, about {estimated_s * 1000:.0f} ms needed)",
                           hint="send fewer or shorter inputs, or raise the function's timeout")


UNBOUNDED = Deadline(None)
_current: ContextVar[Deadline | None] = ContextVar("modelfn_deadline", default=None)


def current() -> Deadline:
    """The deadline of the request being served; unbounded outside any :func:`scope`."""
    return _current.get() or UNBOUNDED


def active() -> bool:
    """Whether an adapter (or an outer call) already set this request's deadline."""
    return _current.get() is not None


@contextmanager
def scope(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` the current one for the work started inside the block."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


@contextmanager
def request_scope(budget_ms: int | None) -> Iterator[Deadline]:
    """The adapter's deadline when one is set, else a new one from the configured budget alone
    (adapters without a Lambda context: the ASGI app)."""
    existing = _current.get()
    if existing is not None:
        yield existing
        return
    with scope(Deadline.for_request(None, budget_ms)) as deadline:
        yield deadline


class RunRate:
    """Seconds per unit of work (tokens of a padded batch) of the model's last session run, per kind of
    run: ``kind`` is the feed's input names, so a CLIP bundle's text tower (tokens) and image tower
    (images) are each estimated from their own last run. An observation without a kind sets the rate
    of every kind not measured since."""

    __slots__ = ("seconds_per_unit", "_by_kind")

    def __init__(self) -> None:
        self.seconds_per_unit = 0.0  # nothing measured yet: the first run is not refused
        self._by_kind: dict = {}

    def observe(self, units: int, seconds: float, kind: tuple | None = None) -> None:
        if units > 0 and seconds >= 0:
            if kind is None:
                self._by_kind.clear()
            self.seconds_per_unit = self._by_kind[kind] = seconds / units

    def estimate(self, units: int, kind: tuple | None = None) -> float:
        if kind is None:
            return units * self.seconds_per_unit
        return units * self._by_kind.get(kind, self._by_kind.get(None, 0.0))


__all__ = ["MARGIN_S", "Deadline", "RunRate", "active", "current", "request_scope", "scope"]

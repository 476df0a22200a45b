"""Progress events export emits; the CLI renders them, tests and libraries may ignore or collect them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STEPS = ("load", "export", "optimize", "quantize", "validate", "write")


@dataclass(frozen=True)
class ProgressEvent:
    step: str  # one of STEPS
    state: str  # start | done | info | warn
    message: str = ""
    seconds: float = 0.0  # set on done


Progress = Callable[[ProgressEvent], None]


@dataclass
class Tracker:
    """Emits events to ``progress`` and keeps each step's duration (for --json and the summary)."""

    progress: Progress | None = None
    timings: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.perf_counter

    def emit(self, step: str, state: str, message: str = "", seconds: float = 0.0) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(step, state, message, seconds))

    def info(self, step: str, message: str) -> None:
        self.emit(step, "info", message)

    def warn(self, step: str, message: str) -> None:
        self.emit(step, "warn", message)

    @contextmanager
    def step(self, name: str, message: str = "") -> Iterator[None]:
        self.emit(name, "start", message)
        start = self.clock()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + self.clock() - start
        self.emit(name, "done", message, self.timings[name])


__all__ = ["STEPS", "Progress", "ProgressEvent", "Tracker"]

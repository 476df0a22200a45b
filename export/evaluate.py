"""One place that knows the sample set, the PyTorch reference and the gate: scores any candidate graph."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from functions.tasknames import QUESTION_ANSWERING

from . import measure, parity, vision
from .samples import Sample
from .source import Source


def checks_for(task: str):
    """The module holding ``task``'s samples and parity checks: export/vision.py for image tasks,
    export/samples.py + export/parity.py for text (gather_samples, gate_thresholds, compare, gate)."""
    return vision if vision.is_image_task(task) else parity


class Evaluator:
    """Parity metrics, a continuous drift score and side-by-side latency for candidate graphs of one model."""

    def __init__(self, src: Source, samples: list[Sample], tokenizer, gate: dict[str, float], threads: int,
                 provider: str = measure.CPU_PROVIDER):
        self.src, self.samples, self.gate, self.threads = src, samples, gate, threads
        self.provider = provider
        self.tokenizer = tokenizer
        self.checks = checks_for(src.task)
        if self.checks is vision:  # image models: pixel values from the runtime's own preprocessing
            self.encoded = vision.encode(samples, src.runtime.image, tokenizer, src.runtime.pad_token_id)
        else:
            self.encoded = parity.encode(tokenizer, samples)
        self.calibration = tuple(e.feeds for e in self.encoded)

    @cached_property
    def reference(self):
        """The PyTorch model's outputs, computed on first use (loading torch is the slow part)."""
        return self.checks.run_torch(self.src.path, self.src.task, self.encoded)

    def run(self, path: Path):
        """(session, raw outputs per sample); raises when the graph cannot run on this host."""
        session = measure.session(path, self.threads, self.provider)
        return session, parity.run_onnx(session, self.encoded)

    def metrics(self, outputs) -> dict[str, float]:
        return self.checks.compare(self.src.task, self.src.runtime, self.samples, self.encoded, self.reference, outputs)

    def passes(self, metrics: dict[str, float]) -> bool:
        return bool(metrics) and self.checks.gate(self.src.task, metrics, self.gate)

    def drift(self, outputs) -> float:
        """Mean (1 - cosine) of raw outputs to the reference: a smooth score for ranking, where agreement is too coarse."""
        scores = []
        for ref, cand in zip(self.reference, outputs):
            a = np.concatenate([r.ravel() for r in ref])
            b = np.concatenate([c.ravel() for c in cand])
            scores.append(1.0 - float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
        return float(np.mean(scores))

    def feed(self, input_names: list[str]) -> dict[str, np.ndarray]:
        if self.checks is vision:  # every image becomes the same shape: time the first
            return {n: self.encoded[0].feeds[n] for n in input_names}
        pair = "The answer is in this context sentence." if self.src.task == QUESTION_ANSWERING else None
        return measure.latency_feed(self.tokenizer, input_names, pair)

    def latency(self, sessions: dict[str, object], *, budget_s: float, rounds: int = 9) -> dict[str, float]:
        if not sessions:
            return {}
        feed = self.feed([i.name for i in next(iter(sessions.values())).get_inputs()])
        return measure.measure_latency(sessions, feed, rounds=rounds, budget_s=budget_s)


__all__ = ["Evaluator"]

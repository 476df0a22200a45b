"""One place that knows the sample set, the PyTorch reference and the gate: scores any candidate graph."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from functions.model import run_rows, sequence_outputs
from functions.tasknames import QUESTION_ANSWERING

from . import measure, parity, vision
from .samples import Sample
from .source import Source

QA_CONTEXT = "The answer is in this context sentence."
PROBE_PER_CLASS = 3  # inputs of each class in the probe subset


def checks_for(task: str):
    """The module holding ``task``'s samples and parity checks: export/vision.py for image tasks,
    export/samples.py + export/parity.py for text (gather_samples, gate_thresholds, compare, gate)."""
    return vision if vision.is_image_task(task) else parity


class Evaluator:
    """Parity (alone and in mixed batches), a continuous drift score and side-by-side latency for candidate graphs."""

    def __init__(self, src: Source, samples: list[Sample], tokenizer, gate: dict[str, float], threads: int,
                 calibration: list[Sample] = (), provider: str = measure.CPU_PROVIDER):
        self.src, self.gate, self.threads = src, gate, threads
        self.provider = provider
        self.tokenizer = tokenizer
        self.checks = checks_for(src.task)
        if self.checks is vision:  # image models: pixel values from the runtime's own preprocessing
            self.samples = samples
            self.encoded = vision.encode(samples, src.runtime.image, tokenizer, src.runtime.pad_token_id)
            self.calibration = tuple(e.feeds for e in self.encoded)
            self.batches = []
            return
        # Inputs the tokenizer maps to the same ids (e.g. two scripts it does not cover, both all
        # [UNK]) are one input to the model: keep the first, so no input counts twice.
        seen, kept, encoded = set(), [], []
        for sample, enc in zip(samples, parity.encode(tokenizer, samples)):
            key = (tuple(enc.encoding.ids), tuple(enc.encoding.type_ids))
            if key not in seen:
                seen.add(key)
                kept.append(sample)
                encoded.append(enc)
        self.samples, self.encoded = kept, encoded
        self.calibration = tuple(e.feeds for e in parity.encode(tokenizer, list(calibration)))
        self.batches = parity.mixed_batches(len(self.encoded))

    @cached_property
    def reference(self):
        """The PyTorch model's outputs, computed on first use (loading torch is the slow part)."""
        return self.checks.run_torch(self.src.path, self.src.task, self.encoded)

    @cached_property
    def probe(self) -> tuple[int, ...]:
        """Indices of the probe subset: the first ``PROBE_PER_CLASS`` samples of every class, so ranking
        node groups by drift (export/mixed.py) and the first pass of the batch check see every kind of
        input at a fraction of the full set's cost. Fixed by the sample order: every run uses the same."""
        taken: dict[str, int] = {}
        keep = []
        for i, sample in enumerate(self.samples):
            if taken.get(sample.kind, 0) < PROBE_PER_CLASS:
                taken[sample.kind] = taken.get(sample.kind, 0) + 1
                keep.append(i)
        return tuple(keep)

    def run(self, path: Path, *, probe: bool = False):
        """(session, raw outputs per sample alone, or per probe sample with ``probe``); raises when the
        graph cannot run on this host."""
        session = measure.session(path, self.threads, self.provider)
        # onnxruntime-gpu offers CUDA on a machine with no usable GPU and then runs on the CPU behind it:
        # the manifest says where the gate really ran
        self.provider = session.get_providers()[0]
        encoded = [self.encoded[i] for i in self.probe] if probe else self.encoded
        return session, parity.run_onnx(session, encoded)

    def batch_consistency(self, session, alone, *, probe_first: bool = False) -> float:
        """Min over samples of the cosine between each one's outputs alone and inside a mixed padded batch.

        With ``probe_first`` the probe subset's mixed batches run first, and when a row already moves
        there (min under parity.BATCH_INDEPENDENCE) that min is returned without running the rest: the
        rows are shown to depend on their batch-mates either way, which is all the gate decides from
        it, and the full set's batches (the dearer half of validating a candidate) are skipped."""
        pad = self.src.runtime.pad_token_id
        if probe_first:
            probe = [self.encoded[i] for i in self.probe]
            batched = parity.run_onnx_batched(session, probe, pad, parity.mixed_batches(len(probe)))
            low = float(parity.batch_consistency([alone[i] for i in self.probe], batched).min())
            if low < parity.BATCH_INDEPENDENCE:
                return low
        batched = parity.run_onnx_batched(session, self.encoded, pad, self.batches)
        return float(parity.batch_consistency(alone, batched).min())

    def assess(self, outputs) -> parity.Assessment:
        columns = parity.compare(self.src.task, self.src.runtime, self.samples, self.encoded, self.reference, outputs)
        return parity.assess(self.src.task, self.samples, columns)

    def metrics(self, outputs) -> dict[str, float]:
        if self.checks is vision:
            return self.checks.compare(self.src.task, self.src.runtime, self.samples, self.encoded, self.reference,
                                       outputs)
        return self.assess(outputs).metrics

    def passes(self, metrics: dict[str, float]) -> bool:
        return bool(metrics) and self.checks.gate(self.src.task, metrics, self.gate)

    def drift(self, outputs, *, probe: bool = False) -> float:
        """Mean (1 - cosine) of raw outputs to the reference (on the probe subset with ``probe``): a smooth
        score for ranking, where agreement is too coarse."""
        reference = [self.reference[i] for i in self.probe] if probe else self.reference
        scores = []
        for ref, cand in zip(reference, outputs):
            a = np.concatenate([r.ravel() for r in ref])
            b = np.concatenate([c.ravel() for c in cand])
            scores.append(1.0 - float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
        return float(np.mean(scores))

    def feed(self, input_names: list[str]) -> dict[str, np.ndarray]:
        if self.checks is vision:  # every image becomes the same shape: time the first
            return {n: self.encoded[0].feeds[n] for n in input_names}
        pair = QA_CONTEXT if self.src.task == QUESTION_ANSWERING else None
        return measure.latency_feed(self.tokenizer, input_names, pair)

    def batch_feed(self, input_names: list[str]) -> dict[str, np.ndarray]:
        """measure.BATCH_TEXTS as one padded batch, the way the runtime feeds a list (images: the first
        sample's pixels, eight times)."""
        if self.checks is vision:
            return {n: np.repeat(self.encoded[0].feeds[n], len(measure.BATCH_TEXTS), axis=0) for n in input_names}
        pair = QA_CONTEXT if self.src.task == QUESTION_ANSWERING else None
        samples = [Sample(text=t, pair=pair) for t in measure.BATCH_TEXTS]
        return parity.pad_batch(parity.encode(self.tokenizer, samples), input_names, self.src.runtime.pad_token_id)

    def timings(self, sessions: dict[str, object], one_row: set[str], *, budget_s: float,
                rounds: int = 11) -> dict[str, tuple[measure.Timing, measure.Timing]]:
        """(batch 1, batch of 8) timings per session, each run as it would be served: the names in
        ``one_row`` take the batch one row per call (functions.model.run_rows), the rest in one call."""
        if not sessions:
            return {}
        names = [i.name for i in next(iter(sessions.values())).get_inputs()]
        single, batch = self.feed(names), self.batch_feed(names)
        calls, batch_calls = {}, {}
        for name, s in sessions.items():
            calls[name] = lambda s=s: s.run(None, single)
            if name in one_row:
                axes = sequence_outputs(s)
                batch_calls[name] = lambda s=s, axes=axes: run_rows(s, None, batch, axes)
            else:
                batch_calls[name] = lambda s=s: s.run(None, batch)
        # batch 1 gets most of the budget and rounds: it decides the choice; the batch column informs it
        one = measure.time_calls(calls, rounds=rounds, budget_s=budget_s * 0.7)
        many = measure.time_calls(batch_calls, rounds=max(3, rounds // 2), budget_s=budget_s * 0.3)
        return {n: (one[n], many[n]) for n in sessions}


__all__ = ["Evaluator"]

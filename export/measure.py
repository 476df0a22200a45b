"""Latency of candidate graphs at batch 1, measured side by side.

The machine is shared, so candidates are timed round-robin (the order rotates every round) and
each gets the median of its rounds: background load slows every candidate alike instead of
whichever happened to run during it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

LATENCY_TEXT = "How do I reset my password if I no longer have access to the email address on my account?"


CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def gate_provider(target: str) -> str:
    """The execution provider the parity gate runs on: the one a gpu endpoint uses (CUDA) when this
    machine has it, else CPU."""
    import onnxruntime as ort

    if target == "gpu" and CUDA_PROVIDER in ort.get_available_providers():
        return CUDA_PROVIDER
    return CPU_PROVIDER


def session(path: Path, threads: int, provider: str = CPU_PROVIDER):
    """The session the runtime would open: all ORT optimizations on, ``threads`` intra-op threads,
    on ``provider`` (CPU fallback behind CUDA, as on the endpoint)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Spinning threads turn a neighbour's CPU load into huge stalls on a small shared machine;
    # without it the candidates' relative latencies stay stable.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [provider, CPU_PROVIDER] if provider != CPU_PROVIDER else [CPU_PROVIDER]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def latency_feed(tokenizer, input_names: list[str], pair: str | None = None) -> dict[str, np.ndarray]:
    enc = tokenizer.encode(LATENCY_TEXT, pair) if pair is not None else tokenizer.encode(LATENCY_TEXT)
    tensors = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
    return {n: np.asarray(tensors[n], dtype=np.int64)[None, :] for n in input_names}


def measure_latency(sessions: dict[str, object], feed: dict[str, np.ndarray], *, rounds: int = 9,
                    budget_s: float = 20.0, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median per-call milliseconds for each session, interleaved; stops early when ``budget_s`` runs out."""
    names = list(sessions)
    if not names:
        return {}
    for name in names:  # warm-up: first runs allocate arenas and pick kernels
        for _ in range(3):
            sessions[name].run(None, feed)
    # size each round so it takes ~30 ms for the slowest candidate
    start = clock()
    sessions[names[0]].run(None, feed)
    one = max(clock() - start, 1e-5)
    calls = int(min(max(0.03 / one, 3), 200))
    samples: dict[str, list[float]] = {n: [] for n in names}
    deadline = clock() + budget_s
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            run = sessions[name].run
            t0 = clock()
            for _ in range(calls):
                run(None, feed)
            samples[name].append((clock() - t0) * 1000.0 / calls)
        if r >= 2 and clock() > deadline:
            break
    return {n: statistics.median(v) for n, v in samples.items()}


__all__ = ["CPU_PROVIDER", "CUDA_PROVIDER", "LATENCY_TEXT", "gate_provider", "latency_feed", "measure_latency",
           "session"]

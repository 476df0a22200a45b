"""Speed of a generation candidate with onnxruntime-genai: prefill time and decode tokens per second.

One fixed prompt, greedy, a fixed number of new tokens (``min_length`` keeps an early end-of-turn
from shortening the run). Candidates are measured round-robin and each gets the median of its
rounds, so background load on a shared machine slows all of them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPEED_PROMPT = "Explain how a serverless function answers its first request after a cold start."


@dataclass(frozen=True)
class Speed:
    prefill_ms: float
    decode_tokens_per_s: float


def _one_run(model, prompt_ids: list[int], new_tokens: int, clock: Callable[[], float]) -> tuple[float, float]:
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    total = len(prompt_ids) + new_tokens
    params.set_search_options(do_sample=False, max_length=total, min_length=total, batch_size=1)
    generator = og.Generator(model, params)
    t0 = clock()
    generator.append_tokens(np.asarray([prompt_ids], dtype=np.int32))  # runs the prompt: prefill
    t1 = clock()
    steps = 0
    while not generator.is_done():
        generator.generate_next_token()
        steps += 1
    t2 = clock()
    return (t1 - t0) * 1000.0, steps / max(t2 - t1, 1e-9)


def measure_speed(model_dirs: dict[str, Path], prompt_ids: list[int], *, new_tokens: int = 48, rounds: int = 3,
                  budget_s: float = 60.0, clock: Callable[[], float] = time.perf_counter) -> dict[str, Speed]:
    """Median prefill ms and decode tokens/s per candidate directory; stops early when ``budget_s`` runs out."""
    import onnxruntime_genai as og

    models = {name: og.Model(str(path)) for name, path in model_dirs.items()}
    for model in models.values():  # warm-up: first runs allocate buffers and pick kernels
        _one_run(model, prompt_ids, 4, clock)
    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in models}
    deadline = clock() + budget_s
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(_one_run(models[name], prompt_ids, new_tokens, clock))
        if clock() > deadline:
            break
    return {n: Speed(prefill_ms=statistics.median(p for p, _ in v), decode_tokens_per_s=statistics.median(d for _, d in v))
            for n, v in samples.items()}


__all__ = ["SPEED_PROMPT", "Speed", "measure_speed"]

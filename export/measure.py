"""Latency of candidate graphs, measured side by side with repeats and a spread.

The machine is shared, so candidates are timed round-robin (the order rotates every round) and
each gets the median of its rounds and their interquartile range: background load slows every
candidate alike instead of whichever happened to run during it, and the spread says how far
apart two candidates must be before the difference is more than noise (export/search.py).

Every round is timed twice: wall time (what a caller waits) and the CPU time the process spent
(``time.process_time``: every thread's, ONNX Runtime's intra-op pool included). Sessions run with
a fixed number of intra-op threads and spinning off (functions/sessions.py), so a thread waiting
for a core, or for its pool-mate, sleeps and costs no CPU time: CPU time counts the work a call
does, while wall time also counts the queue for a core, which the load of a shared machine changes
from one round to the next. The choice ranks on CPU time; wall time is reported beside it.

Measured on MiniLM, 2 threads on 2 shared cores. At a quiet moment (load 1.7, 21 rounds, twice)
CPU and wall medians agreed within 0-5% (one candidate 26%) and ranked fp32, b32, b128 and the
dynamic int8 candidates alike, apart from two dynamic ones 5% apart swapping places: a short text
barely uses the second thread, so CPU ~ wall when nothing waits. At load 7-13 from other work,
per-candidate CPU spreads were 1-15% of the median and wall spreads 5-130%, and wall medians were
up to 3x the CPU ones (the old wall-time tables' 2.4x-4x int8 speed-ups were that load: at the
quiet moment int8 was 1.2-1.5x fp32 by either clock).
CPU time is not immune to load (a neighbour's memory traffic makes the same work cost more, and
not equally for every graph: int8-weight-only-b128's CPU-time lead over fp32 was 1.43x in one run
and 1.23x in another), which is why the tie band (export/search.py) keeps a floor.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LATENCY_TEXT = "How do I reset my password if I no longer have access to the email address on my account?"
# A batch as a caller sends one: eight texts of different lengths (the runtime pads to the longest).
BATCH_TEXTS = (LATENCY_TEXT, "ok", "Where is the nearest train station?", "Thanks!",
               "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.",
               "Is this covered by the warranty?", "Please cancel my order", "Serverless functions start cold, "
               "load their model once and then answer many requests until they are recycled.")


@dataclass(frozen=True)
class Timing:
    median_ms: float  # wall time per call
    spread_ms: float  # interquartile range of the rounds
    rounds: tuple[float, ...]  # per-call milliseconds of each round, in round order (paired across candidates)
    # the same rounds in CPU time of the process (all threads): what the choice ranks on
    cpu_median_ms: float = 0.0
    cpu_spread_ms: float = 0.0
    cpu_rounds: tuple[float, ...] = ()


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
    """The session the runtime would open (the runtime's functions.sessions.session_options), with
    ``threads`` intra-op threads, on ``provider`` (CPU fallback behind CUDA, as on the endpoint),
    except that its threads never spin: candidates are timed in turns in one process, where one
    session's spinning pool would take the CPUs from the next one's run."""
    import onnxruntime as ort

    from functions.sessions import session_options

    options = session_options(threads, allow_spinning=False, quiet=True)
    providers = [provider, CPU_PROVIDER] if provider != CPU_PROVIDER else [CPU_PROVIDER]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def latency_feed(tokenizer, input_names: list[str], pair: str | None = None) -> dict[str, np.ndarray]:
    enc = tokenizer.encode(LATENCY_TEXT, pair) if pair is not None else tokenizer.encode(LATENCY_TEXT)
    tensors = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
    return {n: np.asarray(tensors[n], dtype=np.int64)[None, :] for n in input_names}


def _quartiles(values: list[float]) -> tuple[float, float]:
    """(median, interquartile range)."""
    if len(values) < 2:
        return values[0], 0.0
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, q3 - q1


def time_calls(calls: dict[str, Callable[[], object]], *, rounds: int = 9, budget_s: float = 20.0,
               clock: Callable[[], float] = time.perf_counter,
               cpu_clock: Callable[[], float] = time.process_time) -> dict[str, Timing]:
    """Median and interquartile range of per-call milliseconds for each callable, interleaved round-robin,
    in wall time (``clock``) and process CPU time (``cpu_clock``); stops early (after at least 3 rounds)
    when ``budget_s`` of wall time runs out."""
    names = list(calls)
    if not names:
        return {}
    for name in names:  # warm-up: first runs allocate arenas and pick kernels
        for _ in range(3):
            calls[name]()
    # size each round so it takes ~30 ms for the first candidate (fp32: the slowest, usually)
    start = clock()
    calls[names[0]]()
    one = max(clock() - start, 1e-5)
    repeat = int(min(max(0.03 / one, 3), 200))
    samples: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    deadline = clock() + budget_s
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            run = calls[name]
            t0, c0 = clock(), cpu_clock()
            for _ in range(repeat):
                run()
            c1, t1 = cpu_clock(), clock()
            samples[name].append((t1 - t0) * 1000.0 / repeat)
            cpu[name].append((c1 - c0) * 1000.0 / repeat)
        if r >= 2 and clock() > deadline:
            break
    out = {}
    for n, v in samples.items():
        (median, spread), (cpu_median, cpu_spread) = _quartiles(v), _quartiles(cpu[n])
        out[n] = Timing(median, spread, tuple(v), cpu_median, cpu_spread, tuple(cpu[n]))
    return out


def timing_note(threads: int) -> str:
    """What a manifest's latencies are, for its readers (functions.manifest.Quantization.timing)."""
    return (f"batch 1 and a batch of {len(BATCH_TEXTS)}, {threads} intra-op threads, spinning off, candidates "
            "interleaved round by round: latency_ms is the median wall time per call, cpu_ms the median CPU time "
            "of the process per call (time.process_time, all threads); the choice ranks on cpu_ms, ties within "
            "the paired rounds' noise going to the more accurate candidate")


def paired_ratio(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float]:
    """Median and interquartile range of a's time over b's time round by round: load that slows both
    in a round cancels out, so this is far steadier than comparing the two medians."""
    ratios = [x / y for x, y in zip(a, b) if y > 0]
    if not ratios:
        return float("nan"), 0.0
    return _quartiles(ratios)


def cpu_features() -> tuple[str, ...]:
    """The build host's instruction-set flags that int8 kernels depend on (Linux /proc/cpuinfo; () elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve")
    return tuple(f for f in wanted if f in flags)


__all__ = ["BATCH_TEXTS", "CPU_PROVIDER", "CUDA_PROVIDER", "LATENCY_TEXT", "Timing", "cpu_features", "gate_provider",
           "latency_feed", "paired_ratio", "session", "time_calls", "timing_note"]

"""ONNX Runtime session options: the one place they are decided.

The runtime (functions/model.py) opens its session with :func:`session_options`, and export's
latency measurement and parity gate (export/measure.py) open theirs with the same function, so the
latency a bundle's manifest records is that of the session that serves it, except for spinning:
export's candidates share one process and never spin, so a function whose threads spin answers
faster than its manifest says.

Each choice below was measured side by side on MiniLM int8 (bench/warm_latency.py, results in
bench/warm_latency.md); the constants are module globals read at call time, so a benchmark can
flip one for a whole process (``functions.sessions.CPU_MEM_ARENA = False``) before the model loads.
"""

from __future__ import annotations

import onnxruntime as ort

from .settings import spinning_pays

# The arena keeps freed buffers for reuse and the memory pattern plans a run's allocations from the
# previous run of the same shape: both trade a few MiB of peak RSS for allocation time per request.
CPU_MEM_ARENA = True
MEM_PATTERN = True
# Spinning intra-op threads wait for work by busy-looping instead of sleeping. None: decided per
# process by functions.settings.spinning_pays (on with a whole CPU per thread, off on a fractional
# CPU share, where the spinning thread takes the time the working one needs; MODELFN_SPINNING
# forces it); True or False forces it for a whole process (a benchmark's flip).
ALLOW_SPINNING: bool | None = None
# All graph passes, the hardware-specific ones included, run at session creation on the machine
# that serves: a graph saved already optimized would carry the build host's choices.
OPTIMIZATION_LEVEL = ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def session_options(threads: int, *, cpu_mem_arena: bool | None = None, mem_pattern: bool | None = None,
                    allow_spinning: bool | None = None, quiet: bool = False) -> ort.SessionOptions:
    """Options for a Lambda-sized CPU: ``threads`` intra-op threads, no inter-op pool, sequential
    execution; the memory and spinning choices default to this module's constants (spinning: to
    functions.settings.spinning_pays). ``quiet`` keeps
    ONNX Runtime's warnings off the terminal (export's measurements)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = CPU_MEM_ARENA if cpu_mem_arena is None else cpu_mem_arena
    opts.enable_mem_pattern = MEM_PATTERN if mem_pattern is None else mem_pattern
    opts.graph_optimization_level = OPTIMIZATION_LEVEL
    spinning = allow_spinning if allow_spinning is not None else ALLOW_SPINNING
    if spinning is None:
        spinning = spinning_pays(threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if quiet:
        opts.log_severity_level = 3
    return opts


__all__ = ["ALLOW_SPINNING", "CPU_MEM_ARENA", "MEM_PATTERN", "OPTIMIZATION_LEVEL", "session_options"]

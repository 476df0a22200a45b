"""Which ONNX Runtime execution provider runs the session: TensorRT, then CUDA, then CPU.

Chosen once at load from what onnxruntime reports available (``onnxruntime-gpu`` lists TensorRT
and CUDA; the CPU wheel lists neither), or forced by name. The list handed to the session keeps
the slower providers behind the chosen one, because ONNX Runtime places each node on the first
provider that can run it (TensorRT leaves some ops to CUDA, CUDA some to the CPU). Which provider
the session actually got is ``session.get_providers()[0]``: onnxruntime falls back on its own when
a GPU provider cannot start (no device, missing libraries), and that is what LoadedModel reports.

Lambda always runs ``cpu``; only the GPU server (functions/serve.py) asks for ``auto``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import onnxruntime as ort

from .errors import ConfigError

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PREFERENCE = (TENSORRT, CUDA, CPU)
BY_NAME = {"tensorrt": TENSORRT, "cuda": CUDA, "cpu": CPU}
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})


def choose_provider(choice: str = "cpu", available: Sequence[str] | None = None) -> str:
    """The provider for ``choice`` (auto | tensorrt | cuda | cpu); ConfigError if a forced one is absent."""
    available = list(ort.get_available_providers() if available is None else available)
    if choice == "auto":
        return next(p for p in PREFERENCE if p in available or p == CPU)
    try:
        wanted = BY_NAME[choice]
    except KeyError:
        raise ConfigError(f"execution provider {choice!r} is not one of auto, {', '.join(BY_NAME)}") from None
    if wanted not in available:
        raise ConfigError(f"execution provider {choice!r} ({wanted}) is not available here",
                          hint="this onnxruntime offers: " + ", ".join(available))
    return wanted


def session_providers(provider: str, *, inputs: Sequence[str], max_rows: int, max_tokens: int) -> list[Any]:
    """The ``providers`` argument of InferenceSession: ``provider`` first, then the slower ones."""
    chain: list[Any] = list(PREFERENCE[PREFERENCE.index(provider):])
    if provider == TENSORRT:
        # Without an optimization profile covering every (rows, tokens) the batcher sends, TensorRT
        # rebuilds its engine (minutes) whenever a larger shape arrives; the cache keeps the built
        # engine across restarts of the container on the same instance.
        def shapes(rows: int, tokens: int) -> str:
            return ",".join(f"{name}:{rows}x{tokens}" for name in inputs)

        cache = Path(tempfile.gettempdir()) / "modelfn-trt"
        chain[0] = (TENSORRT, {
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_profile_min_shapes": shapes(1, 1),
            "trt_profile_opt_shapes": shapes(min(max_rows, 32), min(max_tokens, 128)),
            "trt_profile_max_shapes": shapes(max_rows, max_tokens),
        })
    return chain


__all__ = ["TENSORRT", "CUDA", "CPU", "PREFERENCE", "GPU_PROVIDERS", "choose_provider", "session_providers"]

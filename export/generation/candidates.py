"""Candidates of a text-generation export: onnxruntime-genai's model builder run with different recipes.

Each recipe is one builder call (precision, execution provider, extra options) in a child
process: the builder imports its own top-level ``builders`` package and holds the full model in
memory, neither of which should live in the exporting process.

onnxruntime-genai 0.12.2 offers int4 (MatMulNBits, optional int4 Gather for the embeddings),
fp16/bf16 (GPU) and fp32; it has no int8 precision, only an int8 output head inside an int4
model (``int4_algo_config=rtn_last``), which is a candidate here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConversionError, ExportError

FP32 = "fp32"


@dataclass(frozen=True)
class Recipe:
    name: str
    precision: str  # int4 | fp16 | fp32
    provider: str = "cpu"  # cpu | cuda
    options: dict[str, str] = field(default_factory=dict)
    # applied to the built directory (tests register deliberately damaged candidates this way)
    transform: Callable[[Path], None] | None = None


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    # embeddings and head quantized too (int4 Gather): the small one, ~100 MB for SmolLM2-135M
    Recipe("int4-b32-all", "int4", options={"int4_block_size": "32", "int4_op_types_to_quantize": "MatMul/Gather"}),
    # asymmetric (uint4 with zero points): closer to a Q4_1 GGUF's own grid, measured better on SmolLM2
    Recipe("int4-b32-all-asym", "int4", options={"int4_block_size": "32", "int4_op_types_to_quantize": "MatMul/Gather",
                                                 "int4_is_symmetric": "false"}),
    Recipe("int4-b128-all", "int4", options={"int4_block_size": "128", "int4_op_types_to_quantize": "MatMul/Gather"}),
    # the builder's default: MatMuls int4 (block 32), embeddings and output head fp32
    Recipe("int4-b32", "int4", options={"int4_block_size": "32"}),
    # int4 MatMuls with the output head in int8: the only int8 the builder offers. Not in the preset
    # (each candidate costs a build and a gate run); reachable with strategy fixed:int4-b32-int8head
    Recipe("int4-b32-int8head", "int4", options={"int4_block_size": "32", "int4_algo_config": "rtn_last"}),
    # Decode-speed variants measured by bench/generation.py (bench/generation.md); not in a preset unless
    # measured faster and gated. The builder's CPU default is int4_accuracy_level=4 (int8 activations
    # in MatMulNBits); level 1 keeps fp32 activations.
    Recipe("int4-b32-all-acc1", "int4", options={"int4_block_size": "32", "int4_op_types_to_quantize": "MatMul/Gather",
                                                 "int4_accuracy_level": "1"}),
    Recipe("int4-b64-all", "int4", options={"int4_block_size": "64", "int4_op_types_to_quantize": "MatMul/Gather"}),
    Recipe(FP32, "fp32"),
    Recipe("fp16", "fp16", provider="cuda"),
)}

# What each target tries; fp32 is always built: it is the fallback and the speed reference.
PRESETS: dict[str, tuple[str, ...]] = {
    "lambda": (FP32, "int4-b32-all", "int4-b32-all-asym", "int4-b128-all", "int4-b32"),
    "gpu": (FP32, "fp16"),
}


def preset(quantization: str, target: str) -> tuple[str, ...]:
    """Recipe names for a target; ``none`` builds fp32 only."""
    if quantization == "none":
        return (FP32,)
    return PRESETS[target]


def build(recipe: Recipe, hf_dir: Path, out: Path, *, timeout_s: float = 1800) -> Path:
    """Run the builder for ``recipe`` into ``out`` (model.onnx, model.onnx.data, genai_config.json)."""
    out.mkdir(parents=True, exist_ok=True)
    options = {"hf_remote": "false", **recipe.options}
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
               "-p", recipe.precision, "-e", recipe.provider, "-c", str(out.parent / f".cache-{recipe.name}"),
               "--extra_options", *[f"{k}={v}" for k, v in options.items()]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"model builder for {recipe.name} ran past {timeout_s:.0f}s") from None
    if done.returncode != 0 or not (out / "model.onnx").is_file() or not (out / "genai_config.json").is_file():
        lines = [l for l in (done.stderr or done.stdout).splitlines() if l.strip()]
        raise ConversionError(f"model builder failed for {recipe.name}: {lines[-1][:200] if lines else done.returncode}")
    if recipe.transform is not None:
        recipe.transform(out)
    return out


def check_names(names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ExportError(f"unknown text-generation candidate {unknown[0]!r}", hint="known: " + ", ".join(RECIPES))


__all__ = ["FP32", "PRESETS", "RECIPES", "Recipe", "build", "check_names", "preset"]

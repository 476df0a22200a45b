"""Quantization candidates: name -> builder, and the preset list for each target.

A builder turns the optimized fp32 graph into a candidate graph file. Presets are tied to the
function's hardware (``x86_64``, ``arm64``, ``gpu``), never picked per model: export tries every
candidate of the preset and the parity gate plus the latency measurement decide.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .convert import quiet
from .errors import ConversionError, ExportError


@dataclass(frozen=True)
class BuildContext:
    """What a builder may use besides the fp32 graph."""

    workdir: Path
    nodes_to_exclude: tuple[str, ...] = ()
    nodes_to_quantize: tuple[str, ...] = ()  # empty: every node of a quantizable type
    calibration: tuple[dict, ...] = field(default=())  # feeds for static quantization


Builder = Callable[[Path, Path, BuildContext], Path]
REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        REGISTRY[name] = fn
        return fn
    return wrap


FP32 = "fp32"

# What `quantization: int8` tries per architecture, in order of preference when latency cannot be
# measured on the target's own hardware (arm64 here).
PRESETS: dict[str, tuple[str, ...]] = {
    "x86_64": ("int8-dynamic-per-channel-avx512vnni", "int8-dynamic-per-channel-avx2", "int8-weight-only-b32-a4"),
    "arm64": ("int8-dynamic-per-channel-arm64", "int8-weight-only-b32-a4"),
    "gpu": ("fp16",),
}

# Tried as well when the quantization search has a time budget (issue: quantization search).
SEARCH_EXTRAS: dict[str, tuple[str, ...]] = {
    "x86_64": ("int8-dynamic-per-tensor-avx2", "int8-weight-only-b128-a4", "int8-static-qdq"),
    "arm64": ("int8-dynamic-per-tensor-arm64", "int8-weight-only-b128-a4", "int8-static-qdq"),
    "gpu": (),
}


# Candidates whose numerics assume an instruction set: ONNX Runtime's u8s8 int8 kernels are exact
# with VNNI but can saturate on AVX2-only CPUs (the VNNI preset skips reduce_range), so the parity
# measured on one host need not hold on another. Export never picks them automatically (export/search.py).
REQUIRES_CPU: dict[str, tuple[str, ...]] = {
    "int8-dynamic-per-channel-avx512vnni": ("avx512_vnni",),
    "int8-dynamic-per-tensor-avx512vnni": ("avx512_vnni",),
}


def requires_cpu(name: str) -> tuple[str, ...]:
    """The instruction sets candidate ``name`` assumes (mixed-precision variants inherit their base's)."""
    return REQUIRES_CPU.get(name) or (("avx512_vnni",) if "avx512vnni" in name else ())


def preset(quantization: str, architecture: str, target: str) -> tuple[str, ...]:
    """Candidate names export tries for a function (fp32 always comes first: it is the fallback)."""
    if quantization == "none":
        return (FP32,)
    if quantization == "fp16":
        if target != "gpu":
            raise ExportError("fp16 is for the gpu target", hint="use int8 or none on lambda")
        return (FP32,) + PRESETS["gpu"]
    if target == "gpu":
        # CUDA has no kernels for dynamically quantized int8: ONNX Runtime would run them on the CPU.
        raise ExportError("int8 is not for the gpu target", hint="use fp16 or none on gpu")
    return (FP32,) + PRESETS[architecture]


def build(name: str, fp32: Path, ctx: BuildContext, *, as_name: str | None = None) -> Path:
    """Build candidate ``name`` under ``ctx.workdir`` (in folder ``as_name``, default ``name``); returns its graph."""
    if name not in REGISTRY:
        raise ExportError(f"unknown quantization candidate {name!r}", hint="known: " + ", ".join(sorted(REGISTRY)))
    out_dir = ctx.workdir / (as_name or name)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # quantizers open sessions whose warnings reach the terminal
        with quiet():
            return REGISTRY[name](fp32, out_dir / "model.onnx", ctx)
    except ExportError:
        raise
    except Exception as exc:
        raise ConversionError(f"building candidate {name} failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc


@register(FP32)
def _fp32(fp32: Path, out: Path, ctx: BuildContext) -> Path:
    shutil.copyfile(fp32, out)
    return out


def _dynamic(preset_name: str, per_channel: bool) -> Builder:
    def builder(fp32: Path, out: Path, ctx: BuildContext) -> Path:
        import onnx
        from onnxruntime.quantization import quantize_dynamic
        from optimum.onnxruntime import AutoQuantizationConfig

        # Optimum's preset decides the scheme; quantize_dynamic is called directly because the
        # fused contrib ops defeat ONNX shape inference, which DefaultTensorType works around.
        config = getattr(AutoQuantizationConfig, preset_name)(is_static=False, per_channel=per_channel)
        quantize_dynamic(
            fp32, out, per_channel=config.per_channel, reduce_range=config.reduce_range,
            weight_type=config.weights_dtype, op_types_to_quantize=config.operators_to_quantize,
            nodes_to_exclude=list(ctx.nodes_to_exclude) or None,
            nodes_to_quantize=list(ctx.nodes_to_quantize) or None,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT,
                           "WeightSymmetric": config.weights_symmetric,
                           "ActivationSymmetric": config.activations_symmetric},
        )
        return _quantize_embedding_table(out, ctx)
    return builder


for _arch in ("avx512_vnni", "avx2", "arm64"):
    register(f"int8-dynamic-per-channel-{_arch.replace('_', '')}")(_dynamic(_arch, True))
    register(f"int8-dynamic-per-tensor-{_arch.replace('_', '')}")(_dynamic(_arch, False))


def _weight_only(block_size: int, accuracy_level: int) -> Builder:
    def builder(fp32: Path, out: Path, ctx: BuildContext) -> Path:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                     MatMulNBitsQuantizer)

        config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True,
                                              accuracy_level=accuracy_level, bits=8)
        quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), algo_config=config,
                                         nodes_to_exclude=list(ctx.nodes_to_exclude))
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
        return _quantize_embedding_table(out, ctx)
    return builder


def _quantize_embedding_table(path: Path, ctx: BuildContext) -> Path:
    """Store the fused embedding lookup (EmbedLayerNormalization: word, position and token-type tables)
    in uint8 as ONNX Runtime's QEmbedLayerNormalization, in place.

    The word table (MiniLM: 30522 x 384, 45 MiB in fp32) is most of what the dynamic, weight-only
    and static quantizers leave in fp32, since none of their presets touches that fused op (a
    dynamic MiniLM bundle was 60 MB with it, and its function's peak RSS 167 MiB). Only the
    looked-up rows are dequantized, per call and per row, so answers stay independent of
    batch-mates; the parity gate judges the candidate with it. It follows the context's node lists
    (mixed precision scores it as the ``embeddings`` group and may keep it fp32). Graphs without the
    fused op are left as they are."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    model = onnx.load(str(path), load_external_data=False)
    nodes = [n.name for n in model.graph.node if n.op_type == "EmbedLayerNormalization"
             and n.name not in ctx.nodes_to_exclude
             and (not ctx.nodes_to_quantize or n.name in ctx.nodes_to_quantize)]
    if not nodes:
        return path
    staged = path.with_name(path.stem + ".embedding.onnx")
    quantize_dynamic(path, staged, op_types_to_quantize=["EmbedLayerNormalization"], nodes_to_quantize=nodes,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    staged.replace(path)
    return path


for _block in (32, 64, 128):
    for _level in (0, 4):
        register(f"int8-weight-only-b{_block}-a{_level}")(_weight_only(_block, _level))


@register("int8-static-qdq")
def _static_qdq(fp32: Path, out: Path, ctx: BuildContext) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not ctx.calibration:
        raise ExportError("static quantization needs calibration samples")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(ctx.calibration)

        def get_next(self):
            return next(self._feeds, None)

    quantize_static(fp32, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Attention", "Gather"],
                    nodes_to_exclude=list(ctx.nodes_to_exclude) or None,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return _quantize_embedding_table(out, ctx)


@register("fp16")
def _fp16(fp32: Path, out: Path, ctx: BuildContext) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # inputs/outputs stay fp32 so the runtime's pre/post-processing is the same for every bundle
    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True,
                                     node_block_list=list(ctx.nodes_to_exclude) or None)
    onnx.save_model(model, str(out), save_as_external_data=False)
    return out


__all__ = ["FP32", "PRESETS", "REQUIRES_CPU", "requires_cpu", "SEARCH_EXTRAS", "REGISTRY", "BuildContext", "build", "preset", "register"]

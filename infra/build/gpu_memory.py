"""How much GPU memory a gpu model's SageMaker endpoint needs, against what one GPU of its instance holds.

    need = (weights + overhead + working) x (1 + 20% headroom), in MiB

    weights   the bundle's model files (model.onnx and its external data): fp16 for the gpu target,
              fp32 with ``quantization: none``. The CUDA provider copies each initializer to the
              device once (none of the CPU's pre-packed second copies, hence no 2x as on Lambda).
    overhead  GPU_OVERHEAD_MB: the CUDA context, the cuBLAS/cuDNN handles and workspaces and ONNX
              Runtime's CUDA provider before any model memory. nvidia-smi showed 345 MiB for a whole
              ResNet-18 session (onnxruntime issue #9138) and 443 MiB for a 9 MB MobileNet (#5801);
              1 GiB leaves room for current CUDA builds' larger kernel images and the few hundred MiB
              the driver keeps on HBM cards. Taken from those reports, not measured here (no GPU).
    working   encoders: the activations of the largest run the batch scheduler forms (memory.py's
              encoder estimate, at the bundle's float width): rows of the longest row a request can
              bring, as many as max_batch_tokens and max_batch_requests allow, or one request of
              max_batch rows (a request over the budget runs alone).
              text-generation: max_concurrent_generations x one generator's KV cache for the whole
              context window (onnxruntime-genai allocates it whole, per generator) + one prefill of
              the window (one: the server reads one prompt at a time, GenerationModel.prefill_gate;
              memory.py's generation estimate less its KV cache): every position's
              logits, but no heads x context^2 attention scores, which the builder's CUDA
              GroupQueryAttention (flash or memory-efficient attention) tiles instead of holding
              (kept, Llama-3-8B's 128k window would need a TB for them).
    headroom  20%, as on Lambda: the CUDA arena grows in power-of-two steps and fragments.

``have`` is one GPU's usable memory (infra/gpu_instances.py): the server runs on one device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from functions.batching import BatchLimits
from functions.errors import ConfigError
from functions.manifest import GENAI_CONFIG_FILE, Manifest
from functions.settings import DEFAULT_GPU_GENERATIONS
from functions.tasknames import TEXT_GENERATION

from ..gpu_instances import MIB_PER_GIB, GpuInstance, gpu_instance, smallest_fitting
from .memory import (
    FLOAT_BYTES,
    HEADROOM,
    MB,
    ReadFile,
    bundle_context,
    encoder_graph,
    encoder_shape,
    encoder_working_bytes,
    genai_sizes,
    generation_working_bytes,
    kv_cache_bytes,
    row_tokens,
)

GPU_OVERHEAD_MB = 1024
MAX_DERIVED_GENERATIONS = 64  # past this, decoding steps of that many generators at once crowd each other out
HALF_BYTES = 2
HALF_PRECISION = ("fp16", "int4")  # int4 generation models run fp16 activations and KV cache on CUDA


@dataclass(frozen=True)
class GpuEstimate:
    """The GPU memory of one model as a function of its scaling unit: a generator (its KV cache) for
    text-generation, a row of the largest batch (its activations at the longest row) for encoders."""

    weights_mb: float
    unit: str  # "KV" | "row"
    unit_mb: float  # one unit's working memory
    units: int  # at models.yaml's limits: the largest batch's rows, or max_concurrent_generations (0: unset)
    prefill_mb: float = 0.0  # text-generation: one prefill of the context window
    row_tokens: int = 0  # encoders: the longest row, tokens
    overhead_mb: float = GPU_OVERHEAD_MB

    @property
    def generative(self) -> bool:
        return self.unit == "KV"

    def need_mb(self, units: int | None = None) -> int:
        """Weights + overhead + working memory at ``units`` (default: models.yaml's) + headroom, MiB."""
        units = self.units if units is None else units
        total = self.weights_mb + self.overhead_mb + self.prefill_mb + units * self.unit_mb
        return math.ceil(total * (1 + HEADROOM))

    def most_units(self, have_mb: int, cap: int) -> int:
        """The most units (generators, rows) whose need fits ``have_mb``, at most ``cap``; 0 if none."""
        room = have_mb / (1 + HEADROOM) - (self.weights_mb + self.overhead_mb + self.prefill_mb)
        units = min(cap, max(0, math.floor(room / self.unit_mb))) if self.unit_mb > 0 else cap
        while units > 0 and self.need_mb(units) > have_mb:  # the rounding up of need_mb
            units -= 1
        return units

    def describe(self, units: int | None = None) -> str:
        """``need 20516 MiB (weights 15316 + overhead 1024 + 8 x KV 256 + prefill 757 + 20% headroom)``."""
        units = self.units if units is None else units
        if self.generative:
            working = f"{units} x KV {self.unit_mb:.0f} + prefill {self.prefill_mb:.0f}"
        else:
            working = f"activations {units * self.unit_mb:.0f} ({units} rows x {self.row_tokens} tokens)"
        return (f"need {self.need_mb(units)} MiB (weights {self.weights_mb:.0f} + overhead {self.overhead_mb:.0f} + "
                f"{working} + {HEADROOM:.0%} headroom)")


def estimate_gpu(manifest: Manifest, read: ReadFile, *, max_batch: int, max_tokens: int, context_length: int = 0,
                 max_batch_tokens: int | None = None, max_batch_requests: int | None = None,
                 max_concurrent_generations: int | None = None) -> GpuEstimate | None:
    """The GPU memory this bundle needs at models.yaml's limits (None: no estimator for its kind of
    bundle, e.g. speech). ``read(name)`` returns a bundle file's bytes, as for :func:`memory.estimate`."""
    weights_mb = sum(f.size for name, f in manifest.files.items() if ".onnx" in name) / MB
    dtype = HALF_BYTES if manifest.quantization.requested in HALF_PRECISION else FLOAT_BYTES
    if manifest.task == TEXT_GENERATION:
        config = genai_sizes(read(GENAI_CONFIG_FILE))
        context = bundle_context(manifest, config, context_length)
        kv = kv_cache_bytes(config, context, dtype)
        prefill = generation_working_bytes(config, context, dtype, attention_scores=False) - kv
        return GpuEstimate(weights_mb, "KV", kv / MB, max_concurrent_generations or 0, prefill_mb=prefill / MB)
    graph = encoder_graph(manifest)
    if graph not in manifest.files:
        return None
    shape = encoder_shape(read(graph))
    tokens = row_tokens(manifest, shape, max_tokens)
    defaults = BatchLimits()  # the GPU server's own defaults for what models.yaml leaves unset
    budget = max_batch_tokens or defaults.max_batch_tokens
    shared_rows = min(max_batch_requests or defaults.max_batch_requests, max(1, budget // tokens))
    return GpuEstimate(weights_mb, "row", encoder_working_bytes(shape, 1, tokens, dtype) / MB,
                       max(shared_rows, max_batch), row_tokens=tokens)


@dataclass(frozen=True)
class GpuFit:
    """What `modelfn build` found for one gpu model: the need against one GPU of its instance."""

    instance_type: str
    instance: GpuInstance | None  # None: not in the table, the check was skipped
    estimate: GpuEstimate | None  # None: no estimator for this bundle, the check was skipped
    generations: int = 0  # text-generation: generators at once (set or derived); 0 for encoders
    derived: bool = False  # generations derived here (models.yaml left max_concurrent_generations unset)

    def describe(self) -> str:
        """The build output's sizing fact, one clause."""
        if self.instance is None:
            return (f"GPU memory check skipped: {self.instance_type} is not in modelfn's GPU instance table "
                    f"(infra/gpu_instances.py)" + self._server_default())
        if self.estimate is None:
            return "GPU memory check skipped: no GPU memory estimate for this kind of bundle"
        units = self.generations if self.estimate.generative else None
        text = (f"GPU memory {self.estimate.describe(units)} of {self.instance.gpu.usable_mb} MiB on "
                f"{self.instance.describe()}")
        if self.derived:
            text += (f"; max_concurrent_generations {self.generations} (derived: the most that fit, "
                     f"at most {MAX_DERIVED_GENERATIONS})")
        return text

    def _server_default(self) -> str:
        generative = self.estimate is not None and self.estimate.generative
        return (f"; max_concurrent_generations unset: the server's default {DEFAULT_GPU_GENERATIONS}"
                if generative and not self.generations else "")


def check_gpu_memory(name: str, instance_type: str, estimate: GpuEstimate | None, *, max_batch: int) -> GpuFit:
    """The model's fit on its instance; derives max_concurrent_generations when it is unset. Raises
    ConfigError with one line (need, have, what to change) when the model cannot fit. ``max_batch``:
    models.yaml's rows per request (a fix to suggest when one request alone is over the GPU)."""
    instance = gpu_instance(instance_type)
    if instance is None or estimate is None:
        return GpuFit(instance_type, instance, estimate,
                      generations=estimate.units if estimate is not None and estimate.generative else 0)
    have = instance.gpu.usable_mb
    where = f"over the {have} MiB of one {instance.gpu.name} on {instance_type}"
    if estimate.generative:
        if estimate.units:  # set in models.yaml
            if estimate.need_mb() <= have:
                return GpuFit(instance_type, instance, estimate, generations=estimate.units)
            fits = estimate.most_units(have, cap=estimate.units)
            fixes = ([f"max_concurrent_generations <= {fits}"] if fits else []) + ["a lower context_length"]
            raise ConfigError(f"model {name!r}: GPU memory {estimate.describe()}, {where}; fix: "
                              + _fixes(fixes, estimate.need_mb()))
        fits = estimate.most_units(have, cap=MAX_DERIVED_GENERATIONS)
        if not fits:
            raise ConfigError(f"model {name!r}: GPU memory {estimate.describe(1)} for one generation, {where}; "
                              f"fix: " + _fixes(["a lower context_length"], estimate.need_mb(1)))
        return GpuFit(instance_type, instance, estimate, generations=fits, derived=True)
    if estimate.need_mb() <= have:
        return GpuFit(instance_type, instance, estimate)
    rows = estimate.most_units(have, cap=estimate.units)
    fixes = []
    if rows:
        fixes.append(f"max_batch_tokens <= {rows * estimate.row_tokens}")
        if max_batch > rows:  # one request of max_batch rows runs alone, whatever the budget
            fixes.append(f"max_batch <= {rows}")
        fixes.append("a lower max_tokens")
    raise ConfigError(f"model {name!r}: GPU memory {estimate.describe()}, {where}; fix: "
                      + _fixes(fixes, estimate.need_mb()))


def _fixes(smaller: list[str], need_mb: int) -> str:
    """``a, b, or instance_type X (...)``: the smaller limits, then the smallest instance that holds the need."""
    larger = smallest_fitting(need_mb)
    bigger = (f"instance_type {larger.instance_type} ({larger.gpu.name}, "
              f"{larger.gpu.usable_mb / MIB_PER_GIB:.1f} GiB usable)" if larger
              else "a smaller model (no GPU instance modelfn knows holds it)")
    return ", ".join(smaller + [f"or {bigger}"]) if smaller else bigger


__all__ = ["GPU_OVERHEAD_MB", "MAX_DERIVED_GENERATIONS", "GpuEstimate", "GpuFit", "check_gpu_memory", "estimate_gpu"]

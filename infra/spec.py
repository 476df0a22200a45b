"""models.yaml: the user's declaration of which models to serve and how. Loaded and validated here only.

Build-time only: the runtime never reads models.yaml (the manifest carries what it needs).

An invalid file raises ConfigError with one line naming the model and the field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from export.choices import (ARCHITECTURES, DEFAULT_THRESHOLDS, GENERATION_THRESHOLDS, LAMBDA_ONLY_TASKS,
                            QUANTIZATIONS, SPEECH_THRESHOLDS, TARGETS)
from export.source import resolve_source
from functions.errors import ConfigError, UnknownTaskError
from functions.tasknames import AUTOMATIC_SPEECH_RECOGNITION, TEXT_GENERATION, resolve_task

from . import defaults
from .registry.records import ALIAS_RE, NAME_RE, RESERVED_REFS

DEFAULT_MODELS_FILE = defaults.MODELS_FILE
DEFAULT_REGISTRY = defaults.REGISTRY
DEFAULT_INSTANCE_TYPE = "ml.g6.xlarge"
_GPU_FIELDS = ("instance_type", "min_instances", "max_instances", "target_invocations", "scale_to_zero",
               "max_batch_tokens", "max_batch_requests", "max_concurrent_requests", "max_concurrent_generations",
               "stream_relay")
# The GPU server's batch scheduler limits (functions/settings.py ServerSettings: same ranges); unset
# fields keep the server's defaults.
_BATCHING_RANGES = {"max_batch_tokens": (8, 1 << 24), "max_batch_requests": (1, 1 << 16),
                    "max_concurrent_requests": (1, 1 << 20), "max_concurrent_generations": (1, 1024)}
AUTO = "auto"
# memory_mb: auto is sized by `modelfn build` from the bundle (infra/build/memory.py); where no bundle
# is known yet (export's thread count, the committed template.yaml) this is assumed.
DEFAULT_MEMORY_MB = 2048
MAX_IMAGE_MB = 10240  # Lambda's container image limit

MAX_CONTEXT_LENGTH = 131072


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    task: str
    target: str = "lambda"
    architecture: str = "x86_64"
    quantization: str = "int8"
    memory_mb: int | None = None  # None: auto, sized by `modelfn build` from the bundle
    timeout_s: int = 30
    max_batch: int = 32
    max_tokens: int = 256
    truncate: bool = True  # over-long inputs: truncate (True) or answer 422 (False)
    alias: str = "prod"
    parity: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    # gpu target only: the SageMaker endpoint (ml.g6.xlarge: one NVIDIA L4, 24 GB) and its autoscaling.
    instance_type: str = DEFAULT_INSTANCE_TYPE
    min_instances: int = 1
    max_instances: int = 2
    target_invocations: int = 100  # per instance per minute, the target tracking goal
    scale_to_zero: bool = False  # opt-in: no instance (and no cost) when idle, minutes to the first answer
    context_length: int = 0  # text-generation: prompt + new tokens (sizes the KV cache); 0 = the model's own
    image_budget_mb: int | None = None  # `modelfn build` refuses an image whose contents are larger
    # gpu target only: the server's batch scheduler limits (None: the server's defaults)
    max_batch_tokens: int | None = None
    max_batch_requests: int | None = None
    max_concurrent_requests: int | None = None
    # gpu text-generation only: generators decoding at once, each holding a KV cache for the whole
    # context window (None: `modelfn build` derives the most that fit the instance's GPU, at most 64)
    max_concurrent_generations: int | None = None
    # gpu text-generation only: stream chat/completions through the relay function (functions/relay.py);
    # false keeps them on the direct InvokeEndpoint integration (a stream: true answer arrives whole)
    stream_relay: bool = True

    @property
    def planned_memory_mb(self) -> int:
        """memory_mb, or DEFAULT_MEMORY_MB for auto before the bundle sizes it."""
        return self.memory_mb or DEFAULT_MEMORY_MB

    def source_dir(self) -> Path:
        return resolve_source(self.source, model=self.name)


@dataclass(frozen=True)
class ModelsFile:
    models: tuple[ModelSpec, ...]
    registry: str = DEFAULT_REGISTRY
    path: str = DEFAULT_MODELS_FILE

    def get(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.models) or "none"
        raise ConfigError(f"{self.path}: no model named {name!r}", hint=f"declared models: {known}")



def _field_error(path: str, model: str, name: str, message: str) -> ConfigError:
    who = f"model {model!r}" if model else "a model"
    return ConfigError(f"{path}: {who}, field {name!r}: {message}")


def _int(path, model, name, value, lo, hi) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _field_error(path, model, name, f"must be an integer from {lo} to {hi}, got {value!r}")
    return value


def parse_model(raw: Any, *, path: str = DEFAULT_MODELS_FILE, index: int = 0) -> ModelSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: models[{index}] must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _field_error(path, str(name or f"#{index}"), "name",
                           "must be URL-safe: lowercase letters, digits and '-', 1-48 characters")
    known = {f.name for f in fields(ModelSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _field_error(path, name, unknown[0], "unknown field; known fields: " + ", ".join(sorted(known)))
    if not isinstance(raw.get("source"), str) or not raw["source"].strip():
        raise _field_error(path, name, "source", "is required: a model directory or an installed package name")
    try:
        task = resolve_task(raw.get("task", ""))
    except UnknownTaskError as exc:
        raise _field_error(path, name, "task", str(exc)) from None
    target = raw.get("target", "lambda")
    if target not in TARGETS:
        raise _field_error(path, name, "target", f"must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "gpu" and task in LAMBDA_ONLY_TASKS:
        raise _field_error(path, name, "target", f"gpu is not served for {task} yet ({LAMBDA_ONLY_TASKS[task]}); "
                                                 "use target: lambda")
    arch = raw.get("architecture", "x86_64")
    if arch not in ARCHITECTURES:
        raise _field_error(path, name, "architecture", f"must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    generation = task == TEXT_GENERATION
    quant = raw.get("quantization", ("int4" if generation else "int8") if target == "lambda" else "fp16")
    if quant not in QUANTIZATIONS:
        raise _field_error(path, name, "quantization", f"must be one of {', '.join(QUANTIZATIONS)}, got {quant!r}")
    if quant == "int4" and not generation:
        raise _field_error(path, name, "quantization", f"int4 is for {TEXT_GENERATION}; use int8, fp16 or none")
    if quant == "int8" and generation:
        raise _field_error(path, name, "quantization", f"{TEXT_GENERATION} uses int4 (the model builder has no int8)")
    if quant == "fp16" and target != "gpu":
        raise _field_error(path, name, "quantization", "fp16 is for the gpu target; use int8 or none on lambda")
    alias = raw.get("alias", "prod")
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias in RESERVED_REFS or alias.isdigit():
        raise _field_error(path, name, "alias", f"must be letters, digits, '-' or '_', not a number and not "
                                                f"{' or '.join(RESERVED_REFS)}, got {alias!r}")
    truncate = raw.get("truncate", True)
    if not isinstance(truncate, bool):
        raise _field_error(path, name, "truncate", f"must be true or false, got {truncate!r}")
    known_thresholds = (GENERATION_THRESHOLDS if generation else SPEECH_THRESHOLDS
                        if task == AUTOMATIC_SPEECH_RECOGNITION else DEFAULT_THRESHOLDS)
    parity = dict(known_thresholds)
    raw_parity = raw.get("parity", {}) or {}
    if not isinstance(raw_parity, dict):
        raise _field_error(path, name, "parity", "must be a mapping of metric to threshold")
    for metric, value in raw_parity.items():
        if metric not in known_thresholds:
            raise _field_error(path, name, f"parity.{metric}",
                               "unknown metric; known: " + ", ".join(known_thresholds))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise _field_error(path, name, f"parity.{metric}", f"must be a number from 0 to 1, got {value!r}")
        parity[metric] = float(value)
    context_length = raw.get("context_length", 0)
    if "context_length" in raw and not generation:
        raise _field_error(path, name, "context_length", f"applies to {TEXT_GENERATION} only")
    if context_length != 0:
        context_length = _int(path, name, "context_length", context_length, 16, MAX_CONTEXT_LENGTH)
    gpu = _gpu_fields(raw, path=path, name=name, target=target, architecture=arch, quantization=quant)
    if gpu.get("max_concurrent_generations") is not None and not generation:
        raise _field_error(path, name, "max_concurrent_generations", f"applies to {TEXT_GENERATION} only")
    return ModelSpec(
        name=name,
        source=raw["source"].strip(),
        task=task,
        target=target,
        architecture=arch,
        quantization=quant,
        memory_mb=_memory(path, name, raw.get("memory_mb", AUTO)),
        timeout_s=_int(path, name, "timeout_s", raw.get("timeout_s", 30), 1, 900),
        max_batch=_int(path, name, "max_batch", raw.get("max_batch", 32), 1, 1024),
        max_tokens=_int(path, name, "max_tokens", raw.get("max_tokens", 256), 8, 8192),
        truncate=truncate,
        alias=alias,
        parity=parity,
        **gpu,
        context_length=context_length,
        image_budget_mb=None if raw.get("image_budget_mb") is None else
        _int(path, name, "image_budget_mb", raw["image_budget_mb"], 1, MAX_IMAGE_MB),
    )


def _memory(path, model, value) -> int | None:
    """memory_mb: auto (None) or Lambda's 128-10240 MB."""
    if value == AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 128 <= value <= 10240:
        raise _field_error(path, model, "memory_mb", f"must be auto or an integer from 128 to 10240, got {value!r}")
    return value


def _gpu_fields(raw: dict, *, path: str, name: str, target: str, architecture: str, quantization: str) -> dict:
    """The endpoint fields of a gpu model, validated; a lambda model may not set them."""
    if target != "gpu":
        stray = next((f for f in _GPU_FIELDS if f in raw), None)
        if stray:
            raise _field_error(path, name, stray, "is for the gpu target only")
        return {}
    if architecture != "x86_64":
        raise _field_error(path, name, "architecture", "the gpu target runs on x86_64 only (SageMaker GPU instances)")
    if quantization == "int8":
        raise _field_error(path, name, "quantization",
                           "int8 is not for the gpu target (CUDA runs no dynamic int8 kernels); use fp16 or none")
    instance_type = raw.get("instance_type", DEFAULT_INSTANCE_TYPE)
    if not isinstance(instance_type, str) or not re.fullmatch(r"ml\.[a-z0-9]+\.[a-z0-9]+", instance_type):
        raise _field_error(path, name, "instance_type",
                           f"must be a SageMaker instance type like {DEFAULT_INSTANCE_TYPE}, got {instance_type!r}")
    scale_to_zero = raw.get("scale_to_zero", False)
    if not isinstance(scale_to_zero, bool):
        raise _field_error(path, name, "scale_to_zero", f"must be true or false, got {scale_to_zero!r}")
    min_instances = _int(path, name, "min_instances", raw.get("min_instances", 0 if scale_to_zero else 1), 0, 100)
    if min_instances == 0 and not scale_to_zero:
        raise _field_error(path, name, "min_instances", "0 needs scale_to_zero: true (the first request then waits minutes)")
    max_instances = _int(path, name, "max_instances", raw.get("max_instances", max(2, min_instances)), 1, 100)
    if max_instances < min_instances:
        raise _field_error(path, name, "max_instances", f"must be at least min_instances ({min_instances}), got {max_instances}")
    stream_relay = raw.get("stream_relay", True)
    if not isinstance(stream_relay, bool):
        raise _field_error(path, name, "stream_relay", f"must be true or false, got {stream_relay!r}")
    return dict(instance_type=instance_type, min_instances=min_instances, max_instances=max_instances,
                stream_relay=stream_relay,
                target_invocations=_int(path, name, "target_invocations", raw.get("target_invocations", 100), 1, 100000),
                scale_to_zero=scale_to_zero,
                **{f: None if raw.get(f) is None else _int(path, name, f, raw[f], lo, hi)
                   for f, (lo, hi) in _BATCHING_RANGES.items()})


def parse_models_file(data: Any, *, path: str = DEFAULT_MODELS_FILE) -> ModelsFile:
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
        raise ConfigError(f"{path}: must be a mapping with a non-empty 'models' list")
    unknown = sorted(set(data) - {"models", "registry"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level field {unknown[0]!r}; known: models, registry")
    specs = tuple(parse_model(raw, path=path, index=i) for i, raw in enumerate(data["models"]))
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise _field_error(path, spec.name, "name", "is declared twice; model names must be unique")
        seen.add(spec.name)
    registry = data.get("registry", DEFAULT_REGISTRY)
    if not isinstance(registry, str) or not registry:
        raise ConfigError(f"{path}: 'registry' must be an s3://bucket/prefix URI or a directory")
    return ModelsFile(models=specs, registry=registry, path=path)


def load_models_file(path: str | os.PathLike[str] = DEFAULT_MODELS_FILE) -> ModelsFile:
    """Read and validate models.yaml. Raises ConfigError with one line on any problem."""
    import yaml  # build-time only; the runtime never reads models.yaml

    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown} not found", hint="create it or pass --models-file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{shown} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_models_file(data, path=shown)


__all__ = [
    "ARCHITECTURES", "DEFAULT_INSTANCE_TYPE", "DEFAULT_THRESHOLDS", "GENERATION_THRESHOLDS", "ModelSpec", "ModelsFile",
    "QUANTIZATIONS", "TARGETS",
    "load_models_file", "parse_model", "parse_models_file",
]

"""Runtime settings: explicit argument, then environment variable, then default.

Every variable name comes from :mod:`functions.constants`; nothing else in the runtime reads
``os.environ`` for modelfn settings.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from . import constants as env
from .errors import ConfigError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
# Lambda refuses synchronous payloads over 6 MB; the ASGI app and the GPU server hold the same line.
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024


def env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not a boolean", hint="use 1/0 or true/false")


def _env_int(name: str, lo: int, hi: int) -> int | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise ConfigError(f"environment variable {name}={raw!r} must be an integer from {lo} to {hi}")
    return value


def default_bundle_dir() -> Path:
    """$MODELFN_BUNDLE_DIR, else $LAMBDA_TASK_ROOT/model (the image layout), else ./model."""
    explicit = os.environ.get(env.BUNDLE_DIR)
    if explicit:
        return Path(explicit)
    task_root = os.environ.get(env.LAMBDA_TASK_ROOT)
    return Path(task_root) / "model" if task_root else Path("model")


def available_cpus() -> int:
    """CPUs this process may actually use: affinity mask, capped by a cgroup v2/v1 CPU quota.

    os.cpu_count() reports the host's CPUs; on Lambda and in containers the quota is what counts,
    and oversubscribing ONNX Runtime threads costs latency.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


SPINNING_CHOICES = ("auto", "on", "off")
_THIS_PROCESS = object()  # spinning_pays' default quota: this process's cgroup quota


def spinning_pays(threads: int, quota: float | None | object = _THIS_PROCESS) -> bool:
    """Whether ONNX Runtime's ``threads`` intra-op threads should spin while they wait for work
    (MODELFN_SPINNING: auto, on or off; anything else is a one-line ConfigError), under a CPU
    ``quota`` (default: this process's cgroup quota; None: no quota; the bench passes a Lambda
    size's emulated share).

    auto: on when there is a pool to spin (more than one thread) and every thread has a whole CPU
    (no quota, or one of at least ``threads`` CPUs). A worker that sleeps between the ~50
    operators of a short request is woken once per operator, which cost a third of a MiniLM
    batch-1 request on a 2-CPU host (session.run alone, one process per setting, measured by
    hand: 1.42 ms spinning, 2.19 ms sleeping; `modelfn bench minilm` is the end-to-end run). On a
    fractional share (Lambda at 3,008 MB is 1.7 vCPU for 2 threads) the spinning pool uses up the
    quota and is throttled: under a 1.7-CPU cgroup quota, a sustained stream of short requests had
    a better mean (1.84 vs 2.51 ms) but a p99 of 15.9 ms instead of 5.3, so it stays off there.
    Below 1,769 MB Lambda gives one thread, with no pool at all."""
    raw = (os.environ.get(env.SPINNING) or "auto").strip().lower()
    if raw not in SPINNING_CHOICES:
        raise ConfigError(f"{env.SPINNING}={raw!r} is not one of {', '.join(SPINNING_CHOICES)}",
                          hint="leave it unset (auto) or set on/off")
    if raw != "auto":
        return raw == "on"
    if quota is _THIS_PROCESS:
        quota = _cgroup_quota()
    return threads > 1 and (quota is None or quota >= threads)


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        parts = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if parts and parts[0] != "max":
            return int(parts[0]) / int(parts[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Settings:
    bundle_dir: Path
    name: str | None  # None: the manifest's name
    version: str | None
    max_batch: int
    max_tokens: int | None  # None: the manifest's runtime.max_length
    truncate: bool
    log_inputs: bool
    threads: int
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    time_budget_ms: int | None = None  # None: only the Lambda context's remaining time bounds a request

    @classmethod
    def resolve(cls, bundle_dir: str | os.PathLike[str] | None = None, *, name: str | None = None,
                version: str | int | None = None, max_batch: int | None = None,
                max_tokens: int | None = None, truncate: bool | None = None,
                threads: int | None = None) -> "Settings":
        env_batch = _env_int(env.MAX_BATCH, 1, 4096)
        env_tokens = _env_int(env.MAX_TOKENS, 8, 1 << 20)
        env_threads = _env_int(env.THREADS, 1, 1024)
        env_body = _env_int(env.MAX_BODY_BYTES, 1024, 1 << 30)
        env_budget = _env_int(env.TIME_BUDGET_MS, 1, 15 * 60 * 1000)  # Lambda's longest timeout
        return cls(
            bundle_dir=Path(bundle_dir) if bundle_dir is not None else default_bundle_dir(),
            name=name or os.environ.get(env.MODEL_NAME) or None,
            version=str(version) if version is not None else (os.environ.get(env.MODEL_VERSION) or None),
            max_batch=max_batch if max_batch is not None else (env_batch or 32),
            max_tokens=max_tokens if max_tokens is not None else env_tokens,
            truncate=truncate if truncate is not None else env_flag(env.TRUNCATE, True),
            log_inputs=env_flag(env.LOG_INPUTS, False),
            threads=threads if threads is not None else (env_threads or available_cpus()),
            max_body_bytes=env_body or DEFAULT_MAX_BODY_BYTES,
            time_budget_ms=env_budget,
        )


# Lambda's synchronous payload limit is 6 MB, so a larger image can only reach the ASGI tier; 40
# megapixels (a 48 MP phone photo downscaled once) decodes to 120 MB of RGB.
DEFAULT_MAX_IMAGE_BYTES = 8 << 20
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int

    @classmethod
    def resolve(cls) -> "ImageLimits":
        """$MODELFN_MAX_IMAGE_BYTES / $MODELFN_MAX_IMAGE_PIXELS, else the defaults; read per request
        (two environment lookups), so only image tasks pay for them."""
        return cls(max_bytes=_env_int(env.MAX_IMAGE_BYTES, 1, 1 << 31) or DEFAULT_MAX_IMAGE_BYTES,
                   max_pixels=_env_int(env.MAX_IMAGE_PIXELS, 1, 1 << 31) or DEFAULT_MAX_IMAGE_PIXELS)


# Whisper hears 30 s windows; longer recordings are decoded window after window (functions/speech.py),
# each window costing a full encoder pass and up to a full decode. The default admits four windows;
# MODELFN_MAX_AUDIO_SECONDS may raise it to 30 minutes (the Lambda timeout is the practical bound).
# 6 MB holds 30 s of 48 kHz 16-bit stereo WAV (5.8 MB), or 3 min of 16 kHz mono, within Lambda's payload.
DEFAULT_MAX_AUDIO_BYTES = 6 << 20
DEFAULT_MAX_AUDIO_SECONDS = 120.0
MAX_AUDIO_SECONDS = 1800.0


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int
    max_seconds: float

    @classmethod
    def resolve(cls) -> "AudioLimits":
        """$MODELFN_MAX_AUDIO_BYTES / $MODELFN_MAX_AUDIO_SECONDS (at most 1800), else the defaults; read per request."""
        seconds = _env_int(env.MAX_AUDIO_SECONDS, 1, int(MAX_AUDIO_SECONDS))
        return cls(max_bytes=_env_int(env.MAX_AUDIO_BYTES, 1, 1 << 31) or DEFAULT_MAX_AUDIO_BYTES,
                   max_seconds=float(seconds or DEFAULT_MAX_AUDIO_SECONDS))


# SageMaker unpacks the model's ModelDataUrl here; the GPU server's bundle unless told otherwise.
SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
PROVIDER_CHOICES = ("auto", "tensorrt", "cuda", "cpu")
DEFAULT_GPU_GENERATIONS = 8


@dataclass(frozen=True)
class ServerSettings:
    """The GPU container server's own settings (the model's are :class:`Settings`)."""

    bundle_dir: Path
    port: int
    max_batch_tokens: int
    max_batch_requests: int
    max_concurrent_requests: int
    provider: str  # one of PROVIDER_CHOICES
    drain_timeout_s: int
    max_concurrent_generations: int | None = None  # text-generation; None: by provider (see generation_slots)

    def generation_slots(self, provider: str) -> int:
        """Generators decoding at once: the setting, else 1 on the CPU provider (one decode already
        uses every core) and 8 on a GPU (each holds a KV cache for the context window; 8 of a
        2k-token window fit beside a 7B fp16 model on a 24 GB L4)."""
        if self.max_concurrent_generations is not None:
            return self.max_concurrent_generations
        return 1 if provider == "CPUExecutionProvider" else DEFAULT_GPU_GENERATIONS

    @classmethod
    def resolve(cls, bundle_dir: str | os.PathLike[str] | None = None, *, port: int | None = None,
                max_batch_tokens: int | None = None, max_batch_requests: int | None = None,
                max_concurrent_requests: int | None = None, provider: str | None = None,
                drain_timeout_s: int | None = None,
                max_concurrent_generations: int | None = None) -> "ServerSettings":
        """Argument, then environment variable, then default (bundle: $MODELFN_BUNDLE_DIR, else
        /opt/ml/model; port 8080; 16384 tokens, 256 rows, 512 requests; provider auto; drain 25 s)."""
        provider = (provider or os.environ.get(env.PROVIDER) or "auto").strip().lower()
        if provider not in PROVIDER_CHOICES:
            raise ConfigError(f"execution provider {provider!r} is not one of {', '.join(PROVIDER_CHOICES)}",
                              hint=f"set {env.PROVIDER} or --provider")

        def pick(value: int | None, name: str, lo: int, hi: int, default: int) -> int:
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                    raise ConfigError(f"{name.removeprefix('MODELFN_').lower()} must be an integer from {lo} to {hi}, "
                                      f"got {value!r}")
                return value
            found = _env_int(name, lo, hi)
            return default if found is None else found

        explicit = bundle_dir if bundle_dir is not None else os.environ.get(env.BUNDLE_DIR)
        return cls(
            bundle_dir=Path(explicit) if explicit else SAGEMAKER_MODEL_DIR,
            port=pick(port, env.SAGEMAKER_BIND_TO_PORT, 1, 65535, 8080),
            max_batch_tokens=pick(max_batch_tokens, env.MAX_BATCH_TOKENS, 8, 1 << 24, 16384),
            max_batch_requests=pick(max_batch_requests, env.MAX_BATCH_REQUESTS, 1, 1 << 16, 256),
            max_concurrent_requests=pick(max_concurrent_requests, env.MAX_CONCURRENT_REQUESTS, 1, 1 << 20, 512),
            provider=provider,
            drain_timeout_s=pick(drain_timeout_s, env.DRAIN_TIMEOUT_S, 0, 3600, 25),
            # 0 (unset) -> None: chosen by provider once the model is loaded.
            max_concurrent_generations=pick(max_concurrent_generations, env.MAX_CONCURRENT_GENERATIONS,
                                            1, 1024, 0) or None,
        )

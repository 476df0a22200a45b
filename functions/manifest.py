"""The model bundle's manifest: one typed record, written by export, read by runtime and registry.

A bundle is a directory holding ``model.onnx``, ``tokenizer.json`` (image models:
``preprocessor_config.json``) and ``manifest.json``. The
manifest carries everything the runtime needs to serve the model (``runtime``), what was done to
build it (``quantization``, ``parity``, ``tools``) and the sha256 and size of every other file
(``files``). Nothing else parses manifest JSON: call :func:`read_manifest` / :meth:`Manifest.write`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import BundleError

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# image tasks: the model's preprocessor_config.json, shipped instead of tokenizer.json (the runtime
# reads the steps from the manifest's runtime.image; the file keeps the bundle usable by other tools).
PREPROCESSOR_FILE = "preprocessor_config.json"
# text-generation bundles: onnxruntime-genai's config (next to model.onnx and its model.onnx.data)
# and the chat template taken from the model's tokenizer config (absent for base models).
GENAI_CONFIG_FILE = "genai_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# automatic-speech-recognition bundles: Optimum's seq2seq graphs (the decoder with and without past
# key values merged into one, switched by use_cache_branch), in place of model.onnx.
ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model_merged.onnx"
# CLIP-style bundles (zero-shot-image-classification, image-feature-extraction): each tower its own
# graph, in place of model.onnx, so a text runs the text tower only and an image the image tower only.
TEXT_MODEL_FILE = "text_model.onnx"
VISION_MODEL_FILE = "vision_model.onnx"
FORMAT_VERSION = 1

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class ImageProcessing:
    """image tasks: how a decoded RGB image becomes ``pixel_values``, read at export from the model's
    image processor. Steps in transformers' order: resize, center crop, rescale, normalize."""

    height: int = 0  # resize to exactly height x width when both are set ...
    width: int = 0
    shortest_edge: int = 0  # ... else the shorter edge to this, aspect ratio kept
    crop_height: int = 0  # then a center crop (0: none)
    crop_width: int = 0
    resample: int = 2  # PIL filter: 2 bilinear, 3 bicubic
    rescale_factor: float = 0.0  # 0: pixels are not rescaled
    mean: tuple[float, ...] = ()  # empty: no normalization
    std: tuple[float, ...] = ()
    processor: str = ""  # the transformers class the steps were read from

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageProcessing":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("mean", "std"):
            if name in values:
                values[name] = tuple(float(v) for v in values[name])
        return cls(**values)


@dataclass(frozen=True)
class SpeechConfig:
    """automatic-speech-recognition: the feature extractor's settings and the decoder prompt rules,
    read at export from the model's WhisperFeatureExtractor and generation_config."""

    sampling_rate: int = 16_000
    n_mels: int = 80
    n_fft: int = 400
    hop_length: int = 160
    n_samples: int = 480_000  # the window: recordings are padded or cut to it (30 s)
    decoder_start_token_id: int = 0
    # generation_config's forced_decoder_ids after the start token, in order; None where Whisper
    # detects the language (multilingual checkpoints).
    forced_ids: tuple[int | None, ...] = ()
    lang_to_id: dict[str, int] = field(default_factory=dict)  # "<|en|>" -> id
    language_names: dict[str, str] = field(default_factory=dict)  # "en" -> "english" (Whisper's names)
    task_to_id: dict[str, int] = field(default_factory=dict)  # "transcribe" -> id
    no_timestamps_token_id: int | None = None
    # WhisperTimeStampLogitsProcessor's bound on the first timestamp (in 0.02 s steps; None: no bound).
    max_initial_timestamp_index: int | None = None
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    max_length: int = 448  # generation_config's max_length: prompt + new tokens
    max_target_positions: int = 448  # the decoder's positions

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpeechConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("forced_ids", "suppress_tokens", "begin_suppress_tokens"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class RuntimeConfig:
    """What the runtime needs beyond the graph and the tokenizer."""

    max_length: int = 512
    # feature-extraction: how token vectors become one sentence vector.
    pooling: str = "mean"  # mean | cls | max | none
    normalize: bool = False
    # classification tasks: index -> label, and whether labels are independent (sigmoid).
    labels: tuple[str, ...] = ()
    multi_label: bool = False
    # question-answering / token-classification: special tokens the tokenizer adds.
    pad_token_id: int = 0
    # text-generation: the tokens that end a turn (generation_config's eos, e.g. SmolLM2's
    # <|im_end|>), the one a prompt starts with, the context window (prompt + new tokens), and the
    # chat template's file in the bundle ("" when the model has none: /v1/chat/completions is 404).
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    context_length: int = 0
    chat_template: str = ""
    # image tasks: the image processor's steps (None for text models, which ship tokenizer.json).
    image: ImageProcessing | None = None
    # automatic-speech-recognition: features and decoding (None for every other task).
    speech: SpeechConfig | None = None
    # CLIP-style bundles: exp(logit_scale) of the checkpoint, which zero-shot multiplies the cosine of
    # each image and label by (CLIPModel.forward); 0.0 for every other bundle and for one-graph CLIP
    # bundles exported before the towers were split (their graph computes the logits itself).
    logit_scale: float = 0.0
    # Run a batch one row per session.run: set by export for graphs whose rows depend on their
    # batch-mates (dynamic int8 scales activations per batch), so an input's answer never does.
    one_row_per_run: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RuntimeConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("labels", "eos_token_ids"):
            if name in values:
                values[name] = tuple(values[name])
        if isinstance(values.get("image"), dict):
            values["image"] = ImageProcessing.from_dict(values["image"])
        if isinstance(values.get("speech"), dict):
            values["speech"] = SpeechConfig.from_dict(values["speech"])
        return cls(**values)


@dataclass(frozen=True)
class Candidate:
    """One quantization candidate tried at export, as measured."""

    name: str
    size_bytes: int
    latency_ms: float
    metrics: dict[str, float]
    passed: bool
    note: str = ""
    latency_spread_ms: float = 0.0  # interquartile range of the timing rounds at batch 1
    latency_rounds_ms: tuple[float, ...] = ()  # each round's per-call time, rounds interleaved across candidates
    batch_latency_ms: float = 0.0  # one batch of 8 mixed-length inputs, run as it would be served
    one_row_per_run: bool = False  # rows depend on batch-mates: served one row per session.run
    requires_cpu: tuple[str, ...] = ()  # instruction sets its numerics (and measured parity) assume
    worst: tuple[dict, ...] = ()  # the inputs furthest from the original: {"text", "kind", "score"}
    # The same rounds in CPU time of the building process (all threads; 0 where not measured): load
    # on the build host barely moves it, so the choice ranks on it (export/measure.py).
    cpu_ms: float = 0.0
    cpu_spread_ms: float = 0.0
    cpu_rounds_ms: tuple[float, ...] = ()
    batch_cpu_ms: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Candidate":
        return cls(
            name=data["name"],
            size_bytes=int(data["size_bytes"]),
            latency_ms=float(data["latency_ms"]),
            metrics={k: float(v) for k, v in data.get("metrics", {}).items()},
            passed=bool(data["passed"]),
            note=data.get("note", ""),
            latency_spread_ms=float(data.get("latency_spread_ms", 0.0)),
            latency_rounds_ms=tuple(float(x) for x in data.get("latency_rounds_ms", ())),
            batch_latency_ms=float(data.get("batch_latency_ms", 0.0)),
            one_row_per_run=bool(data.get("one_row_per_run", False)),
            requires_cpu=tuple(data.get("requires_cpu", ())),
            worst=tuple(dict(w) for w in data.get("worst", ())),
            cpu_ms=float(data.get("cpu_ms", 0.0)),
            cpu_spread_ms=float(data.get("cpu_spread_ms", 0.0)),
            cpu_rounds_ms=tuple(float(x) for x in data.get("cpu_rounds_ms", ())),
            batch_cpu_ms=float(data.get("batch_cpu_ms", 0.0)),
        )


@dataclass(frozen=True)
class Quantization:
    requested: str  # int8 | fp16 | none
    chosen: str  # candidate name, e.g. "int8-dynamic-per-channel-avx2" or "fp32"
    reason: str
    strategy: str = "fastest-passing"
    candidates: tuple[Candidate, ...] = ()
    # The build host's CPU features that int8 kernels depend on (from /proc/cpuinfo flags), since
    # the latencies above were measured there.
    host_cpu_features: tuple[str, ...] = ()
    # What the latencies are and which figure the choice ranked on (threads, clocks, rounds).
    timing: str = ""
    # The previous export's choice that this one weighed (export/search.py keeps it unless beaten
    # decisively), "" when there was none.
    previous: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Quantization":
        return cls(
            requested=data["requested"],
            chosen=data["chosen"],
            reason=data.get("reason", ""),
            strategy=data.get("strategy", "fastest-passing"),
            candidates=tuple(Candidate.from_dict(c) for c in data.get("candidates", ())),
            host_cpu_features=tuple(data.get("host_cpu_features", ())),
            timing=data.get("timing", ""),
            previous=data.get("previous", ""),
        )


@dataclass(frozen=True)
class Parity:
    """How the bundled model compares with the original PyTorch model on the sample set."""

    metrics: dict[str, float]
    thresholds: dict[str, float]
    passed: bool
    samples: int
    allowed_drift: bool = False
    reference: str = "pytorch"
    # The ONNX Runtime execution provider the gate ran the bundle on: CUDA for a gpu bundle exported
    # on a machine with a GPU, else CPU (manifests before this field were all gated on CPU).
    provider: str = "CPUExecutionProvider"
    classes: dict[str, int] = field(default_factory=dict)  # samples per class ("short", "cjk", "user", ...)
    worst: tuple[dict, ...] = ()  # the chosen candidate's worst inputs: {"text", "kind", "score"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Parity":
        return cls(
            metrics={k: float(v) for k, v in data.get("metrics", {}).items()},
            thresholds={k: float(v) for k, v in data.get("thresholds", {}).items()},
            passed=bool(data["passed"]),
            samples=int(data.get("samples", 0)),
            allowed_drift=bool(data.get("allowed_drift", False)),
            reference=data.get("reference", "pytorch"),
            provider=data.get("provider", "CPUExecutionProvider"),
            classes={k: int(v) for k, v in data.get("classes", {}).items()},
            worst=tuple(dict(w) for w in data.get("worst", ())),
        )


@dataclass(frozen=True)
class Manifest:
    name: str
    task: str
    architecture: str  # x86_64 | arm64
    target: str  # lambda | gpu
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    opset: int
    quantization: Quantization
    parity: Parity
    runtime: RuntimeConfig
    files: dict[str, FileEntry]
    tools: dict[str, str] = field(default_factory=dict)
    source: str = ""
    created_at: str = ""
    format_version: int = FORMAT_VERSION

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = {k: asdict(v) for k, v in sorted(self.files.items())}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        try:
            version = int(data.get("format_version", FORMAT_VERSION))
            if version > FORMAT_VERSION:
                raise BundleError(
                    f"manifest format {version} is newer than this modelfn understands ({FORMAT_VERSION})",
                    hint="upgrade modelfn",
                )
            return cls(
                name=data["name"],
                task=data["task"],
                architecture=data["architecture"],
                target=data["target"],
                inputs=tuple(data["inputs"]),
                outputs=tuple(data["outputs"]),
                opset=int(data["opset"]),
                quantization=Quantization.from_dict(data["quantization"]),
                parity=Parity.from_dict(data["parity"]),
                runtime=RuntimeConfig.from_dict(data.get("runtime", {})),
                files={k: FileEntry(**v) for k, v in data["files"].items()},
                tools=dict(data.get("tools", {})),
                source=data.get("source", ""),
                created_at=data.get("created_at", ""),
                format_version=version,
            )
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest is malformed: {exc!r}", hint="re-export the model") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"manifest is not valid JSON: {exc}", hint="re-export the model") from exc
        if not isinstance(data, dict):
            raise BundleError("manifest is not a JSON object", hint="re-export the model")
        return cls.from_dict(data)

    def write(self, bundle_dir: str | os.PathLike[str]) -> Path:
        path = Path(bundle_dir) / MANIFEST_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Read ``manifest.json`` from a bundle directory (no digest check; see verify_bundle)."""
    path = Path(bundle_dir) / MANIFEST_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir} is not a model bundle: {MANIFEST_FILE} is missing",
                          hint="run `modelfn export` to make one") from None
    return Manifest.from_json(text)


def describe_files(bundle_dir: str | os.PathLike[str], names: list[str] | None = None) -> dict[str, FileEntry]:
    """sha256 and size of every file in a bundle directory except the manifest."""
    root = Path(bundle_dir)
    if names is None:
        names = sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE
        )
    return {n: FileEntry(sha256=sha256_file(root / n), size=(root / n).stat().st_size) for n in names}


def verify_bundle(bundle_dir: str | os.PathLike[str], manifest: Manifest | None = None) -> Manifest:
    """Check every file listed in the manifest against its size and sha256; raise BundleError naming the first bad one."""
    manifest = manifest or read_manifest(bundle_dir)
    root = Path(bundle_dir)
    for name, entry in sorted(manifest.files.items()):
        path = root / name
        if not path.is_file():
            raise BundleError(f"bundle file {name} is missing", hint=f"re-fetch the bundle into {root}")
        size = path.stat().st_size
        if size != entry.size:
            raise BundleError(f"bundle file {name} has {size} bytes, manifest says {entry.size}",
                              hint="the copy is partial or corrupted; re-fetch it")
        if sha256_file(path) != entry.sha256:
            raise BundleError(f"bundle file {name} does not match its sha256 in the manifest",
                              hint="the copy is corrupted; re-fetch it")
    return manifest

"""How much memory a model's Lambda function needs, from the bundle and models.yaml's limits.

    need = runtime + weights + working, plus headroom, rounded up to 64 MB

    runtime  Python + numpy + onnxruntime + tokenizers + modelfn's functions/ imported, no model:
             55 MB peak RSS (63 MB with onnxruntime-genai), measured with
             `python scripts/measure_memory.py baseline` (Python 3.11, onnxruntime 1.32, x86_64).
    weights  2 x the bundle's files: a loaded session holds the initializers plus the copies ONNX
             Runtime pre-packs for its kernels (measured 2.0x for MiniLM int8, 1.7x for SmolLM2 int4).
    working  encoders: activations of the largest request, max_batch x max_tokens tokens (image
             models: (side / patch)^2 + 1 tokens per image),
                 4 bytes x tokens x (17 x hidden + heads x max_tokens)
             (17 hidden-wide float buffers per token alive at once, the feed-forward and the int8
             copies, and one attention score row per head; fitted to MiniLM at 8x128 and 32x256).
             text-generation: the prompt filling the context window (context_length tokens, the
             worst case) in one prefill,
                 KV cache      2 x layers x kv_heads x head_dim x context x 4 bytes
                 logits        context x vocab x 4 bytes (the builder's graph returns every position's)
                 attention     heads x context^2 x 4 bytes
             with the layer and head counts read from the bundle's genai_config.json (KV in fp32 on
             Lambda's CPU). The gpu target's GPU memory is gpu_memory.py's, from these same estimators.
    headroom 20% of the sum: the Lambda runtime client, allocator fragmentation, response buffers.

Checked against measurement (`python scripts/measure_memory.py bundle DIR --batch B --tokens T`):
MiniLM int8 at 32 x 256: measured 397 MB peak, estimate 400 MB before headroom (8 x 128: 132 and 131).
SmolLM2-135M int4 with a 1,789-token prompt: measured 732 MB, estimate 776 MB; at its 2,048-token
context the estimate is 886 MB before headroom, 1,088 MB with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from functions.errors import ConfigError
from functions.manifest import (
    ENCODER_FILE,
    GENAI_CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    VISION_MODEL_FILE,
    Manifest,
    read_manifest,
)
from functions.tasknames import AUTOMATIC_SPEECH_RECOGNITION, TEXT_GENERATION

MB = 2**20
RUNTIME_MB = 55.0  # scripts/measure_memory.py baseline: 54.8 MB
GENERATION_RUNTIME_MB = 63.0  # the same with onnxruntime-genai imported: 62.2 MB
WEIGHTS_FACTOR = 2.0
HIDDEN_BUFFERS = 17  # encoder activations per token, in hidden-wide float32 vectors
ATTENTION_COPIES = 1  # attention score rows per head and token
FLOAT_BYTES = 4
HEADROOM = 0.20
STEP_MB = 64  # Lambda takes any size in 1 MB steps; 64 keeps the numbers readable
AUTO_MIN_MB = 512  # below this a cold start's imports alone slow down (CPU scales with memory)
LAMBDA_MAX_MB = 10240
LAMBDA_MIN_MB = 128
HEAD_DIM = 64  # heads of an unfused graph whose head count is not written in it: hidden / 64

# Reads one file of the bundle (sha256-checked by whoever reads it): from a local bundle or the registry.
ReadFile = Callable[[str], bytes]


@dataclass(frozen=True)
class MemoryEstimate:
    runtime_mb: float
    weights_mb: float
    # the working memory by part: (("KV", mb), ("prefill", mb)) for generation, (("activations", mb),) for encoders
    working: tuple[tuple[str, float], ...]

    @property
    def working_mb(self) -> float:
        return sum(mb for _, mb in self.working)

    @property
    def generative(self) -> bool:
        return any(part == "KV" for part, _ in self.working)

    @property
    def need_mb(self) -> int:
        """Runtime + weights + working memory + headroom, rounded up to 64 MB."""
        total = (self.runtime_mb + self.weights_mb + self.working_mb) * (1 + HEADROOM)
        return int(math.ceil(total / STEP_MB) * STEP_MB)

    @property
    def auto_mb(self) -> int:
        """What ``memory_mb: auto`` gives the function: the need, at least 512 MB."""
        return max(AUTO_MIN_MB, self.need_mb)

    def breakdown(self) -> str:
        """``weights X + KV Y + runtime Z`` in whole MB, for one-line messages."""
        working = " + ".join(f"{part} {mb:.0f}" for part, mb in self.working)
        return f"weights {self.weights_mb:.0f} + {working} + runtime {self.runtime_mb:.0f} + {HEADROOM:.0%} headroom"

    def describe(self) -> str:
        return f"need {self.need_mb} MB ({self.breakdown()})"


@dataclass(frozen=True)
class EncoderShape:
    hidden: int
    heads: int  # 0: no attention (a convolutional image model)
    patch: int = 0  # image models: the patch embedding's kernel (tokens = (side / patch)^2 + 1)


def estimate(manifest: Manifest, read: ReadFile, *, max_batch: int, max_tokens: int,
             context_length: int = 0) -> MemoryEstimate:
    """The memory a Lambda function serving this bundle needs at these limits (see the module docstring).

    ``read(name)`` returns a bundle file's bytes: genai_config.json for generation, model.onnx for
    encoders (its graph gives the hidden width and head count), encoder.onnx for speech models. ``context_length`` 0 means the
    bundle's own."""
    weights_mb = WEIGHTS_FACTOR * sum(f.size for f in manifest.files.values()) / MB
    if manifest.task == TEXT_GENERATION:
        config = genai_sizes(read(GENAI_CONFIG_FILE))
        context = bundle_context(manifest, config, context_length)
        kv = kv_cache_bytes(config, context)
        prefill = generation_working_bytes(config, context) - kv
        return MemoryEstimate(GENERATION_RUNTIME_MB, weights_mb, (("KV", kv / MB), ("prefill", prefill / MB)))
    if manifest.task == AUTOMATIC_SPEECH_RECOGNITION:
        # one recording per call: the audio encoder over its whole window (Whisper: 30 s -> 3000 mel frames,
        # 1500 positions after the strided convolution); the decoder's cache is small beside it
        speech = manifest.runtime.speech
        frames = speech.n_samples // speech.hop_length // 2 if speech is not None else 1500
        activations = encoder_working_bytes(encoder_shape(read(ENCODER_FILE)), 1, frames)
        return MemoryEstimate(RUNTIME_MB, weights_mb, (("activations", activations / MB),))
    shape = encoder_shape(read(encoder_graph(manifest)))
    tokens = row_tokens(manifest, shape, max_tokens)
    return MemoryEstimate(RUNTIME_MB, weights_mb, 
                          (("activations", encoder_working_bytes(shape, max_batch, tokens) / MB),))


def encoder_graph(manifest: Manifest) -> str:
    """The graph an encoder bundle is sized from: CLIP bundles hold one graph per tower, and the image
    tower's gives the patch size (and the width); other encoders have model.onnx."""
    return VISION_MODEL_FILE if VISION_MODEL_FILE in manifest.files else MODEL_FILE


def bundle_context(manifest: Manifest, config: dict, context_length: int) -> int:
    """models.yaml's context_length, else the bundle's window."""
    return context_length or manifest.runtime.context_length or config["context_length"]


def row_tokens(manifest: Manifest, shape: EncoderShape, max_tokens: int) -> int:
    """The longest row a request can bring: max_tokens cut to the model's window (image models:
    their patches, or the text tower's tokens if longer)."""
    tokens = min(max_tokens, manifest.runtime.max_length) if manifest.runtime.max_length else max_tokens
    image = manifest.runtime.image
    if image is not None and shape.patch:
        side = image.crop_height or image.height or image.shortest_edge
        patches = (side // shape.patch) ** 2 + 1  # + the class token
        # CLIP-style models also run a text tower (they ship a tokenizer); image-only ones do not
        tokens = max(patches, tokens) if TOKENIZER_FILE in manifest.files else patches
    return tokens


def estimate_bundle(bundle: Path, *, max_batch: int, max_tokens: int, context_length: int = 0) -> MemoryEstimate:
    """:func:`estimate` for a bundle directory on this machine."""
    bundle = Path(bundle)
    return estimate(read_manifest(bundle), lambda name: (bundle / name).read_bytes(), max_batch=max_batch,
                    max_tokens=max_tokens, context_length=context_length)


def kv_cache_bytes(config: dict, context: int, dtype_bytes: int = FLOAT_BYTES) -> int:
    """2 (keys and values) x layers x kv_heads x head_dim x context x bytes."""
    return 2 * config["layers"] * config["kv_heads"] * config["head_dim"] * context * dtype_bytes


def generation_working_bytes(config: dict, context: int, dtype_bytes: int = FLOAT_BYTES, *,
                             attention_scores: bool = True) -> int:
    """KV cache at ``context`` + one prefill of ``context`` tokens (every position's logits, and the
    attention scores unless ``attention_scores`` is False: kernels that tile them never hold them whole)."""
    logits = context * config["vocab"] * dtype_bytes
    attention = config["heads"] * context * context * dtype_bytes if attention_scores else 0
    return kv_cache_bytes(config, context, dtype_bytes) + logits + attention


def encoder_working_bytes(shape: EncoderShape, max_batch: int, max_tokens: int, dtype_bytes: int = FLOAT_BYTES) -> int:
    """Activations of one run of ``max_batch`` rows of ``max_tokens`` tokens."""
    per_token = HIDDEN_BUFFERS * shape.hidden + ATTENTION_COPIES * shape.heads * max_tokens
    return dtype_bytes * max_batch * max_tokens * per_token


def genai_sizes(data: bytes) -> dict:
    """The numbers the KV cache needs from onnxruntime-genai's config."""
    try:
        model = json.loads(data)["model"]
        decoder = model["decoder"]
        heads = int(decoder["num_attention_heads"])
        return {"layers": int(decoder["num_hidden_layers"]), "heads": heads,
                "kv_heads": int(decoder.get("num_key_value_heads") or heads),
                "head_dim": int(decoder.get("head_size") or int(decoder["hidden_size"]) // heads),
                "vocab": int(model["vocab_size"]), "context_length": int(model["context_length"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{GENAI_CONFIG_FILE} of the bundle lacks the model's sizes ({exc})",
                          hint="re-export the model") from None


_ATTENTION_OPS = {"Attention", "QAttention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention"}


_INPUT_QUANTIZERS = ("DynamicQuantizeLinear", "QuantizeLinear")
_CONVOLUTIONS = ("Conv", "ConvInteger")


def encoder_shape(model_bytes: bytes) -> EncoderShape:
    """Hidden width and attention heads of an encoder graph, read from its structure (external data,
    if any, is not needed): the width of the embedding the token ids index (or, for image models, of
    the patch convolution), the heads from a fused attention node's ``num_heads`` or else from a
    reshape to (batch, tokens, heads, head_dim)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ConfigError("sizing an encoder's memory reads its graph, which needs the onnx package",
                          hint="pip install onnx (or set memory_mb explicitly in models.yaml)") from None
    try:
        model = onnx.load_model_from_string(model_bytes)
    except Exception as exc:  # noqa: BLE001 - a protobuf decode error of any kind is a bad bundle
        raise ConfigError(f"{MODEL_FILE} of the bundle cannot be read as ONNX: {exc}", hint="re-export the model") from None
    graph = model.graph
    dims = {i.name: list(i.dims) for i in graph.initializer}
    produced_by = {out: node for node in graph.node for out in node.output}
    hidden = patch = 0
    feeds = {i.name for i in graph.input}
    # A dynamically quantized graph quantizes its inputs first (pixel values -> DynamicQuantizeLinear ->
    # ConvInteger): what those nodes make of a feed counts as the feed.
    feeds |= {out for node in graph.node if node.op_type in _INPUT_QUANTIZERS and node.input
              and node.input[0] in feeds for out in node.output}
    for node in graph.node:
        if not feeds & set(node.input):
            continue
        for name in node.input:
            source = produced_by.get(name)
            if name not in dims and source is not None and source.op_type == "DequantizeLinear":
                name = source.input[0]
            shape = dims.get(name, [])
            if node.op_type in _CONVOLUTIONS and len(shape) == 4:  # image models: patch embedding
                hidden, patch = max(hidden, shape[0]), shape[2]
            elif len(shape) == 2 and node.op_type not in _CONVOLUTIONS:  # [vocab, hidden] word embedding
                hidden = max(hidden, shape[1])
    if not hidden:
        output = graph.output[0].type.tensor_type.shape.dim if graph.output else []
        hidden = output[-1].dim_value if output and output[-1].dim_value else 0
    if not hidden:
        raise ConfigError(f"cannot tell the hidden width of {MODEL_FILE}", hint="set memory_mb explicitly in models.yaml")
    heads = 0
    for node in graph.node:
        if node.op_type in _ATTENTION_OPS:
            heads = next((a.i for a in node.attribute if a.name == "num_heads"), 0)
            if heads:
                break
    if not heads:
        heads = _reshape_heads(graph, hidden, produced_by, numpy_helper)
    if not heads and not any(node.op_type == "Softmax" for node in graph.node):
        return EncoderShape(hidden=hidden, heads=0, patch=patch)  # no attention: a convolutional model
    return EncoderShape(hidden=hidden, heads=heads or max(1, hidden // HEAD_DIM), patch=patch)


def _reshape_heads(graph, hidden: int, produced_by: dict, numpy_helper) -> int:
    """Heads of an unfused attention: a Reshape to (..., heads, head_dim) with heads x head_dim ==
    hidden, its shape a constant or a Concat of constants and dynamic sizes (as torch exports it)."""
    initializers = {i.name: i for i in graph.initializer}

    def ints(name: str) -> list[int | None]:
        if name in initializers:
            return [int(v) for v in numpy_helper.to_array(initializers[name]).reshape(-1)]
        node = produced_by.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].type == 4:
            return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).reshape(-1)]
        if node is not None and node.op_type == "Concat":
            return [v for part in node.input for v in ints(part)]
        return [None]

    for node in graph.node:
        if node.op_type == "Reshape" and len(node.input) > 1:
            values = ints(node.input[1])
            if len(values) == 4 and values[2] and values[3] and values[2] > 0 and values[2] * values[3] == hidden:
                return values[2]
    return 0


def check_lambda_memory(name: str, memory_mb: int | None, need: MemoryEstimate) -> int:
    """The function's MemorySize: ``memory_mb`` when it covers the need, the estimate when it is None
    (``auto``). Raises ConfigError with one line when the model cannot fit."""
    lower = "lower context_length" if need.generative else "lower max_batch/max_tokens"
    if need.need_mb > LAMBDA_MAX_MB:
        raise ConfigError(
            f"model {name!r}: {need.describe()}, over Lambda's {LAMBDA_MAX_MB} MB; fix: {lower}, or use target: gpu")
    if memory_mb is None:
        return need.auto_mb
    if memory_mb < need.need_mb:
        raise ConfigError(f"model {name!r}: {need.describe()}, has memory_mb {memory_mb}; "
                          f"fix: set memory_mb >= {need.need_mb} (or auto) or {lower}")
    return memory_mb


__all__ = ["MemoryEstimate", "bundle_context", "check_lambda_memory", "encoder_shape", "encoder_working_bytes",
           "estimate", "estimate_bundle", "genai_sizes", "generation_working_bytes", "kv_cache_bytes", "row_tokens"]

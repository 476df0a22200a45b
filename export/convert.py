"""PyTorch checkpoint -> fp32 ONNX graph (Optimum) -> portable graph optimizations; and the fast tokenizer.

The optimized graph is what every quantization candidate starts from. Optimization stays at a
level that runs on any CPU: transformer fusions into ONNX Runtime contrib ops (Attention,
SkipLayerNormalization, BiasGelu), no layout transforms or kernels picked for this machine's ISA,
no GELU approximation (it changes numerics). ONNX Runtime applies its hardware-specific passes
at session creation on the machine that serves.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

from functions.tasknames import FEATURE_EXTRACTION, IMAGE_FEATURE_EXTRACTION, ZERO_SHOT_IMAGE_CLASSIFICATION

from .errors import ConversionError
from .source import Source

DEFAULT_OPSET = 17


@contextlib.contextmanager
def quiet():
    """Optimum, transformers and torch.onnx talk a lot on stdout/stderr; the CLI owns the terminal."""
    sink = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        logging.disable(previous)


def export_onnx(source: Source, workdir: Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Optimum export of ``source`` into ``workdir``; returns the fp32 model.onnx (weights inlined)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from optimum.exporters.onnx import main_export

    out = workdir / "optimum"
    try:
        with quiet():
            main_export(
                str(source.path), output=out, task=_optimum_task(source.task), opset=opset,
                # feature-extraction: the graph outputs token embeddings; pooling runs in the runtime
                # with the manifest's settings, so sentence-transformers' own export variant is not used.
                library_name="transformers", local_files_only=True, do_validation=False, device="cpu",
            )
    except Exception as exc:  # Optimum raises bare ValueError/KeyError/RuntimeError for unsupported models
        raise ConversionError(f"ONNX export of {source.path} failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    model = out / "model.onnx"
    if not model.is_file():
        raise ConversionError(f"ONNX export of {source.path} produced no model.onnx")
    if source.task == IMAGE_FEATURE_EXTRACTION:
        add_unnormalized_outputs(model, FEATURE_OUTPUTS)
    return model


def _optimum_task(task: str) -> str:
    # CLIP's image-feature-extraction is the two-tower graph zero-shot classification exports: Optimum
    # has no image-feature-extraction export of CLIPModel, and /v1/embeddings needs the text tower too.
    return {FEATURE_EXTRACTION: "feature-extraction",
            IMAGE_FEATURE_EXTRACTION: ZERO_SHOT_IMAGE_CLASSIFICATION}.get(task, task)


# CLIP's normalized outputs -> the unnormalized projections (get_text_features / get_image_features)
FEATURE_OUTPUTS = {"text_embeds": "text_features", "image_embeds": "image_features"}


def add_unnormalized_outputs(model_path: Path, names: dict[str, str]) -> None:
    """Expose the numerator of each ``x / ||x||`` output as an output of its own (``names``: normalized ->
    new name), so the bundle answers CLIP's get_*_features as transformers does, unnormalized."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    producers = {o: n for n in model.graph.node for o in n.output}
    outputs = {o.name: o for o in model.graph.output}
    for normalized, name in names.items():
        node = producers.get(normalized)
        if node is None or node.op_type != "Div" or normalized not in outputs:
            raise ConversionError(f"{model_path.name}: {normalized} is not x / ||x|| in the exported graph",
                                  hint="not a CLIP-style two-tower model")
        model.graph.node.append(helper.make_node("Identity", [node.input[0]], [name], name=f"{name}_output"))
        value = onnx.ValueInfoProto()
        value.CopyFrom(outputs[normalized])
        value.name = name
        model.graph.output.append(value)
    onnx.save_model(model, str(model_path))  # weights stay where Optimum put them (inline or beside)


def optimize_onnx(model: Path, source: Source, out: Path) -> Path:
    """Portable transformer fusions (onnxruntime.transformers optimizer, no ORT session-level passes)."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = source.config
    model_type = config.get("model_type", "bert")
    try:
        with quiet():
            optimized = optimize_model(
                str(model), model_type=model_type if model_type in _FUSABLE else "bert",
                num_heads=int(config.get("num_attention_heads", 0)), hidden_size=int(config.get("hidden_size", 0)),
                opt_level=0, use_gpu=False, only_onnxruntime=False,
            )
            optimized.save_model_to_file(str(out), use_external_data_format=False)
    except Exception as exc:
        raise ConversionError(f"graph optimization failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    return out


# model types the onnxruntime.transformers fusions understand; others are optimized as BERT-like encoders
_FUSABLE = {"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "mpnet", "deberta-v2", "bart"}


def save_single_file(model_path: Path, out: Path) -> Path:
    """Write the model as one file with every tensor inlined (the bundle ships a single model.onnx)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=True)
    onnx.save_model(model, str(out), save_as_external_data=False)
    return out


# Initializers this large leave the graph file for ``<graph>.data`` (store_weights_beside).
WEIGHTS_BESIDE_MIN_BYTES = 1 << 20
_PAGE = 4096


def store_weights_beside(model_path: Path) -> Path | None:
    """Move the graph's large initializers (at least WEIGHTS_BESIDE_MIN_BYTES of raw bytes) into
    ``<graph>.data`` beside it, each at a page-aligned offset, and rewrite the graph to point there.

    ONNX Runtime maps a page-aligned external tensor into memory instead of parsing and copying it,
    so a session loads faster and only the pages a request touches become resident: for MiniLM with
    an fp32 word-embedding table (47 MB), session creation took 0.02 s instead of 0.10 s and the
    peak RSS after a short request was 98 MiB instead of 165 (measured by hand on the same bundle
    both ways; `modelfn bench minilm`'s peak RSS went from 167 to 103 MiB). The tensors are
    moved byte for byte: the graph answers exactly as before. Returns the data file, or None when
    nothing moved (no tensor that large, or the graph already keeps its weights outside)."""
    import onnx
    from onnx.external_data_helper import set_external_data

    model = onnx.load(str(model_path), load_external_data=False)
    tensors = list(model.graph.initializer)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        return None
    large = [t for t in tensors if len(t.raw_data) >= WEIGHTS_BESIDE_MIN_BYTES]
    if not large:
        return None
    data = model_path.with_name(model_path.name + ".data")
    with open(data, "wb") as out:
        for tensor in large:
            out.write(b"\0" * (-out.tell() % _PAGE))
            offset = out.tell()
            out.write(tensor.raw_data)
            set_external_data(tensor, location=data.name, offset=offset, length=len(tensor.raw_data))
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(model, str(model_path))
    return data


def graph_io(model_path: Path) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return tuple(i.name for i in model.graph.input), tuple(o.name for o in model.graph.output), int(opset)


def build_tokenizer(source: Source, out: Path):
    """Save a fast tokenizer.json (converted from a slow tokenizer when the source has none).

    Truncation is set to the function's max length and padding is off: the runtime pads per batch.
    Returns the ``tokenizers.Tokenizer`` as saved, so parity tokenizes exactly as the runtime will.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    try:
        with quiet():
            hf_tok = AutoTokenizer.from_pretrained(str(source.path), use_fast=True, local_files_only=True)
    except Exception as exc:
        raise ConversionError(f"{source.path}: no usable tokenizer: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if not getattr(hf_tok, "is_fast", False):
        raise ConversionError(f"{source.path}: the tokenizer cannot be converted to a fast tokenizer.json")
    backend: Tokenizer = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length=source.runtime.max_length)
    backend.save(str(out))
    pad_id = hf_tok.pad_token_id
    return backend, (int(pad_id) if pad_id is not None else source.runtime.pad_token_id)


__all__ = ["DEFAULT_OPSET", "build_tokenizer", "export_onnx", "graph_io", "optimize_onnx", "quiet", "save_single_file"]

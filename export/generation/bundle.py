"""What a text-generation bundle holds, and the genai_config.json it ships.

Files: model.onnx (+ model.onnx.data), genai_config.json, tokenizer.json, chat_template.jinja
(when the model has one) and manifest.json. The builder's genai_config.json is kept except for
what modelfn knows better: the end-of-turn ids (the builder copies config.json's single eos,
a GGUF's tokenizer may name the wrong one) and the context window (the KV cache is sized to
``max_length``, so a smaller declared context is less memory on Lambda).
"""

from __future__ import annotations

import json
from pathlib import Path

from functions.manifest import CHAT_TEMPLATE_FILE, GENAI_CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, RuntimeConfig

from ..errors import ConversionError

DATA_FILE = MODEL_FILE + ".data"
INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("logits",)


def configure_genai(model_dir: Path, runtime: RuntimeConfig, *, threads: int | None = None) -> dict:
    """Rewrite ``model_dir``/genai_config.json with the bundle's eos ids and context; return it.

    ``threads`` pins intra-op threads for measurement; bundles leave thread counts to the runtime.
    """
    path = model_dir / GENAI_CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        model = config["model"]
        model["eos_token_id"] = list(runtime.eos_token_ids) if len(runtime.eos_token_ids) > 1 else runtime.eos_token_ids[0]
        model["pad_token_id"] = runtime.pad_token_id
        if runtime.bos_token_id is not None:
            model["bos_token_id"] = runtime.bos_token_id
        model["context_length"] = runtime.context_length
        config["search"]["max_length"] = runtime.context_length
        options = model["decoder"].setdefault("session_options", {})
        if threads:
            options["intra_op_num_threads"] = threads
            options["inter_op_num_threads"] = 1
        else:
            options.pop("intra_op_num_threads", None)
            options.pop("inter_op_num_threads", None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"{path} from the model builder is not usable: {exc!r}") from None
    path.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    return config


def bundle_files(model_dir: Path, tokenizer_json: Path, chat_template: str, work: Path) -> dict[str, Path]:
    """Bundle file name -> file to copy, for the chosen candidate ``model_dir``."""
    files = {MODEL_FILE: model_dir / MODEL_FILE, GENAI_CONFIG_FILE: model_dir / GENAI_CONFIG_FILE,
             TOKENIZER_FILE: tokenizer_json}
    if (model_dir / DATA_FILE).is_file():
        files[DATA_FILE] = model_dir / DATA_FILE
    if chat_template:
        path = work / CHAT_TEMPLATE_FILE
        path.write_text(chat_template, encoding="utf-8")
        files[CHAT_TEMPLATE_FILE] = path
    return files


def model_size(model_dir: Path) -> int:
    """Bytes of the graph and its weights (what the bundle's model costs to ship and load)."""
    return sum((model_dir / n).stat().st_size for n in (MODEL_FILE, DATA_FILE) if (model_dir / n).is_file())


def opset(model_dir: Path) -> int:
    import onnx

    model = onnx.load(str(model_dir / MODEL_FILE), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


__all__ = ["DATA_FILE", "INPUTS", "OUTPUTS", "bundle_files", "configure_genai", "model_size", "opset"]

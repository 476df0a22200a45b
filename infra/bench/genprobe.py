"""The measured child of `modelfn bench` for text-generation models (run through infra/bench/probe.py).

    python -m infra.bench.probe gencold|genwarm|gensize RESULT.json CONFIG.json

Three ways of answering a chat request, each a ``call(text, max_tokens) -> new tokens``:

    handler   ``functions.handler.handler`` with an API Gateway POST /v1/chat/completions event (greedy);
              the answer may end at the end of the turn before ``max_tokens``
    floor     bare onnxruntime-genai + tokenizers on the same bundle: encode, generate, decode; no web stack
    torch     transformers fp32 ``generate`` on the source model (the usual way)

floor and torch get the prompt already rendered with the bundle's chat template (the same text, so
the same token ids, the handler renders from its messages) and are held to exactly ``max_tokens``
new tokens. Time to first token is a request of one new token (prefill + first step); decode
tokens/s is (n - 1) / (time of an n-token answer - time to first token), both from the same round.
Nothing heavy is imported at module level; probe.py adds its start time (``t0``) to the result.
"""

from __future__ import annotations

import json
import os
import time

from .probe import LambdaContext, peak_rss_mib

CHAT_PATH = "/v1/chat/completions"


def chat_event(name: str, question: str, max_tokens: int) -> dict:
    """An API Gateway HTTP API (payload 2.0) POST /v1/chat/completions event: one user message, greedy."""
    body = {"model": name, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0}
    return {"version": "2.0", "routeKey": "$default", "rawPath": CHAT_PATH, "rawQueryString": "",
            "headers": {"content-type": "application/json"}, "isBase64Encoded": False,
            "requestContext": {"http": {"method": "POST", "path": CHAT_PATH, "protocol": "HTTP/1.1",
                                        "sourceIp": "127.0.0.1"}, "stage": "$default"},
            "body": json.dumps(body)}


def _threads() -> int:
    return int(os.environ.get("MODELFN_THREADS") or len(os.sched_getaffinity(0)))


def load_handler(name: str):
    """(import_t, load_t, call): the Lambda handler; ``call(question, n)`` answers a chat request."""
    import jinja2  # noqa: F401 - the libraries, charged to import
    import numpy  # noqa: F401
    import onnxruntime_genai  # noqa: F401
    import tokenizers  # noqa: F401

    import functions.service  # noqa: F401 - modelfn's runtime modules, without a model
    t_import = time.monotonic()
    from functions.handler import handler  # loads the model (Lambda init)
    t_load = time.monotonic()
    context = LambdaContext()

    def call(question: str, max_tokens: int) -> int:
        out = handler(chat_event(name, question, max_tokens), context)
        if out["statusCode"] != 200:
            raise RuntimeError(f"handler answered {out['statusCode']}: {out['body'][:300]}")
        return int(json.loads(out["body"])["usage"]["completion_tokens"])
    return t_import, t_load, call


def load_floor(bundle: str, overlay: dict | None = None):
    """(import_t, load_t, call): onnxruntime-genai + tokenizers, nothing else; ``call(text, n)`` makes
    exactly n tokens from the rendered prompt ``text``. ``overlay`` is merged into genai_config.json
    (session options under test); by default the handler's thread settings."""
    import numpy as np
    import onnxruntime_genai as og
    from tokenizers import Tokenizer
    t_import = time.monotonic()
    config = og.Config(bundle)
    config.overlay(json.dumps(overlay or {"model": {"decoder": {"session_options": {
        "intra_op_num_threads": _threads(), "inter_op_num_threads": 1}}}}))
    config.clear_providers()
    model = og.Model(config)
    tokenizer = Tokenizer.from_file(os.path.join(bundle, "tokenizer.json"))
    t_load = time.monotonic()

    def call(text: str, max_tokens: int) -> int:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        params = og.GeneratorParams(model)
        total = len(ids) + max_tokens
        params.set_search_options(do_sample=False, max_length=total, min_length=total)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        new: list[int] = []
        while not generator.is_done():
            generator.generate_next_token()
            new.append(int(generator.get_next_tokens()[0]))
        tokenizer.decode(new)
        return len(new)
    return t_import, t_load, call


def load_torch(source: str):
    """(import_t, load_t, call): transformers fp32 ``generate``, greedy, exactly n new tokens."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    import transformers
    t_import = time.monotonic()
    torch.set_num_threads(_threads())
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    t_load = time.monotonic()

    def call(text: str, max_tokens: int) -> int:
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_tokens,
                                 min_new_tokens=max_tokens, pad_token_id=pad)
        tokenizer.decode(out[0, ids.shape[1]:])
        return int(out.shape[1] - ids.shape[1])
    return t_import, t_load, call


def _loader(way: dict):
    if way["kind"] == "handler":
        return load_handler(way["name"])
    if way["kind"] == "floor":
        return load_floor(way["bundle"], way.get("overlay"))
    if way["kind"] == "torch":
        return load_torch(way["source"])
    raise ValueError(f"unknown way {way['kind']!r}")


def _prompt(way: dict, config: dict, case: str) -> str:
    """What a way is given: the handler takes the question, the others the rendered prompt."""
    return config["questions"][case] if way["kind"] == "handler" else config["rendered"][case]


def gencold(config: dict) -> dict:
    """Import -> model load -> first generated token (a one-token answer to the short question)."""
    way = config["way"]
    t_import, t_load, call = _loader(way)
    call(_prompt(way, config, "short"), 1)
    t_first = time.monotonic()
    return {"t_import": t_import, "t_load": t_load, "t_first": t_first, "rss_mib": peak_rss_mib()}


def _fastest_torch_threads(call, text: str) -> int:
    """torch's fastest thread count here (1 or every usable CPU), by a short trial: on a shared machine
    its OpenMP pool can stall at 2 threads, and the comparison should favour the baseline."""
    import torch

    timings = {}
    for threads in sorted({1, _threads()}):
        torch.set_num_threads(threads)
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            call(text, 8)
            runs.append(time.perf_counter() - t)
        timings[threads] = sorted(runs)[1]
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return best


def one_round(call, text: str, new_tokens: int) -> dict:
    """One time-to-first-token request and one ``new_tokens`` answer: their times and the decode rate."""
    t = time.perf_counter()
    call(text, 1)
    first = time.perf_counter() - t
    t = time.perf_counter()
    n = call(text, new_tokens)
    answer = time.perf_counter() - t
    rate = (n - 1) / (answer - first) if n > 1 and answer > first else None
    return {"ttft_ms": first * 1000, "answer_ms": answer * 1000, "tokens": n, "decode_tokens_per_s": rate}


def genwarm(config: dict) -> dict:
    """Every way answers the same prompts in turn, round after round, so load hits all alike."""
    ways = {label: (way, _loader(way)[2]) for label, way in config["ways"].items()}
    torch_threads = None
    for label, (way, call) in ways.items():
        if way["kind"] == "torch":
            torch_threads = _fastest_torch_threads(call, _prompt(way, config, "short"))
        call(_prompt(way, config, "short"), 4)  # warm-up: first runs allocate buffers and pick kernels
    samples: dict = {label: {case: [] for case in config["cases"]} for label in ways}
    for rep in range(config["reps"]):
        for case in config["cases"]:
            for label, (way, call) in ways.items():
                samples[label][case].append(one_round(call, _prompt(way, config, case), config["new_tokens"]))
    return {"samples": samples, "rss_mib": peak_rss_mib(), "torch_threads": torch_threads}


def gensize(config: dict) -> dict:
    """One Lambda size: cold start to the first token through the handler, then ``reps`` rounds of a
    time-to-first-token request and a ``new_tokens`` chat answer to the short question."""
    t_import, t_load, call = load_handler(config["way"]["name"])
    call(config["questions"]["short"], 1)
    t_first = time.monotonic()
    rounds = [one_round(call, config["questions"]["short"], config["new_tokens"]) for _ in range(config["reps"])]
    return {"t_import": t_import, "t_load": t_load, "t_first": t_first, "rounds": rounds,
            "rss_mib": peak_rss_mib()}


MODES = {"gencold": gencold, "genwarm": genwarm, "gensize": gensize}

"""The child program of `modelfn bench`: one measured process.

    python -m infra.bench.probe MODE RESULT.json CONFIG.json

MODE is one of
    cold          import -> model load -> first answer for CONFIG's way: ``functions.handler.handler``,
                  bare onnxruntime + tokenizers (the floor), or transformers + torch
    warm          every way of CONFIG, warm, interleaved round-robin, at batch 1 and 8, short and long
    size          cold-handler, then warm batch-1 requests and one batch-8 long one (a Lambda size run)
    gen*          the same for text-generation models: infra/bench/genprobe.py

Times are time.monotonic() points (CLOCK_MONOTONIC, the same clock in the parent), so the parent
can subtract its own spawn time to get the interpreter start. Nothing heavy is imported at module
level: this module runs inside the measurement. The handler's log line goes to stdout, which the
parent points at /dev/null, so its cost counts and a terminal's does not.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

T0 = time.monotonic()

SINGLE_TEXT_TASKS = ("feature-extraction", "text-classification", "token-classification")


class LambdaContext:
    """The attributes of a Lambda context the handler reads."""
    function_name, memory_limit_in_mb, aws_request_id = "bench", 2048, "bench-request"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench"


def api_event(name: str, inputs) -> dict:
    """An API Gateway HTTP API (payload 2.0) POST /models/NAME/predict event."""
    path = f"/models/{name}/predict"
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {"content-type": "application/json", "host": "bench"}, "isBase64Encoded": False,
            "requestContext": {"requestId": "bench", "http": {"method": "POST", "path": path,
                               "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"}, "stage": "$default"},
            "body": json.dumps({"inputs": inputs})}


def peak_rss_mib() -> float:
    """Peak resident memory of this process since exec: VmHWM. (ru_maxrss would also count the
    parent's pages at fork, which Linux carries over into the exec'd child's figure.)"""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the ways a request can be answered -------------------------------------------------------------

def load_handler(name: str):
    """``functions.handler.handler`` (the bundle comes from MODELFN_BUNDLE_DIR): (import_t, load_t, call)."""
    import numpy, onnxruntime, tokenizers  # noqa: F401,E401 - the libraries, charged to import
    import functions.service  # noqa: F401 - modelfn's runtime modules, without a model
    t_import = time.monotonic()
    from functions.handler import handler  # builds the session and tokenizer (Lambda init)
    t_load = time.monotonic()
    context = LambdaContext()

    def call(texts: list[str]):
        out = handler(api_event(name, texts if len(texts) > 1 else texts[0]), context)
        if out["statusCode"] != 200:
            raise RuntimeError(f"handler answered {out['statusCode']}: {out['body'][:300]}")
        return out
    return t_import, t_load, call


def load_floor(model_onnx: str, tokenizer_json: str, task: str, max_tokens: int):
    """Bare onnxruntime + tokenizers, the least a handler can do: (import_t, load_t, call)."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer
    t_import = time.monotonic()
    tok = Tokenizer.from_file(tokenizer_json)
    tok.enable_truncation(max_tokens)
    tok.enable_padding()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("MODELFN_THREADS") or len(os.sched_getaffinity(0)))
    # The spinning the runtime chooses on this host (the parent's measure.host_spinning).
    opts.add_session_config_entry("session.intra_op.allow_spinning",
                                  "1" if os.environ.get("MODELFN_SPINNING") == "on" else "0")
    session = ort.InferenceSession(model_onnx, opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    t_load = time.monotonic()

    def call(texts: list[str]):
        encs = tok.encode_batch(texts)
        feed = {"input_ids": np.array([e.ids for e in encs], np.int64),
                "attention_mask": np.array([e.attention_mask for e in encs], np.int64),
                "token_type_ids": np.array([e.type_ids for e in encs], np.int64)}
        out = session.run(None, {k: v for k, v in feed.items() if k in wanted})[0]
        if task == "feature-extraction":
            mask = feed["attention_mask"][..., None].astype(out.dtype)
            v = (out * mask).sum(1) / mask.sum(1)
            out = v / np.linalg.norm(v, axis=1, keepdims=True)
        else:
            out = np.exp(out - out.max(-1, keepdims=True))
            out /= out.sum(-1, keepdims=True)
        return json.dumps(out.tolist())
    return t_import, t_load, call


def load_torch(source: str, task: str, max_tokens: int):
    """The usual transformers + torch handler (fp32, eager): (import_t, load_t, call)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    import transformers
    t_import = time.monotonic()
    torch.set_num_threads(int(os.environ.get("MODELFN_THREADS") or len(os.sched_getaffinity(0))))
    head = {"feature-extraction": "AutoModel", "text-classification": "AutoModelForSequenceClassification",
            "token-classification": "AutoModelForTokenClassification"}[task]
    tok = transformers.AutoTokenizer.from_pretrained(source)
    model = getattr(transformers, head).from_pretrained(source).eval()
    t_load = time.monotonic()

    def call(texts: list[str]):
        with torch.inference_mode():
            enc = tok(texts, return_tensors="pt", truncation=True, max_length=max_tokens, padding=True)
            out = model(**enc)
            if task == "feature-extraction":
                h, m = out.last_hidden_state, enc["attention_mask"][..., None]
                result = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)
            else:
                result = out.logits.softmax(-1)
        return json.dumps(result.tolist())
    return t_import, t_load, call


def _loader(way: dict):
    kind = way["kind"]
    if kind == "handler":
        return load_handler(way["name"])
    if kind == "floor":
        return load_floor(way["model_onnx"], way["tokenizer"], way["task"], way["max_tokens"])
    if kind == "torch":
        return load_torch(way["source"], way["task"], way["max_tokens"])
    raise ValueError(f"unknown way {kind!r}")


# --- modes ------------------------------------------------------------------------------------------

def cold(config: dict) -> dict:
    t_import, t_load, call = _loader(config["way"])
    call([config["short"]])
    t_first = time.monotonic()
    return {"t0": T0, "t_import": t_import, "t_load": t_load, "t_first": t_first, "rss_mib": peak_rss_mib()}


def warm(config: dict) -> dict:
    """Every way answers the same requests in turn, so load from other processes hits all alike."""
    ways = {label: _loader(way)[2] for label, way in config["ways"].items()}
    cases = {"b1 short": [config["short"]], "b1 long": [config["long"]],
             "b8 short": [config["short"]] * 8, "b8 long": [config["long"]] * 8}
    samples: dict = {label: {case: [] for case in cases} for label in ways}
    torch_threads = None
    if any(way["kind"] == "torch" for way in config["ways"].values()):
        torch_threads = _fastest_torch_threads(ways, config)
    for _ in range(config["warmup"]):
        for call in ways.values():
            for texts in cases.values():
                call(texts)
    for rep in range(config["reps"]):
        for case, texts in cases.items():
            if case.startswith("b8") and rep % 4:
                continue  # batch 8 is slow: a quarter of the rounds
            for label, call in ways.items():
                t = time.perf_counter()
                call(texts)
                samples[label][case].append((time.perf_counter() - t) * 1000)
    return {"samples": samples, "rss_mib": peak_rss_mib(), "torch_threads": torch_threads}


def _fastest_torch_threads(ways: dict, config: dict) -> int:
    """Give torch its fastest thread count here (1 or every usable CPU), measured on short texts,
    so the baseline is not slowed by OpenMP barriers on a busy machine: the comparison favours torch."""
    import torch

    calls = [ways[label] for label, way in config["ways"].items() if way["kind"] == "torch"]
    timings = {}
    for threads in sorted({1, int(os.environ.get("MODELFN_THREADS") or len(os.sched_getaffinity(0)))}):
        torch.set_num_threads(threads)
        runs = []
        for _ in range(7):
            t = time.perf_counter()
            for call in calls:
                call([config["short"]])
                call([config["long"]])
            runs.append(time.perf_counter() - t)
        timings[threads] = sorted(runs)[len(runs) // 2]
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return best


# Short requests are sent back to back for at least this long: three periods of a CPU quota
# (sizing.PERIOD_S), so a throttled size's stalls land among them every time (a sustained stream: the
# conservative case), not only when a burst happens to cross the quota.
BURST_S = 0.3


def size_run(config: dict) -> dict:
    """One Lambda size: cold start, then batch-1 short requests back to back (at least ``reps`` and
    BURST_S of wall time), then a third as many long ones, then one batch of 8 long texts, so peak RSS
    covers the largest request the bench sends."""
    t_import, t_load, call = load_handler(config["way"]["name"])
    call([config["short"]])
    t_first = time.monotonic()
    samples: dict = {"b1 short": [], "b1 long": []}
    started = time.perf_counter()
    while len(samples["b1 short"]) < config["reps"] or time.perf_counter() - started < BURST_S:
        t = time.perf_counter()
        call([config["short"]])
        samples["b1 short"].append((time.perf_counter() - t) * 1000)
    for _ in range(max(1, config["reps"] // 3)):  # long texts take ~15x longer: a third as many
        t = time.perf_counter()
        call([config["long"]])
        samples["b1 long"].append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    call([config["long"]] * 8)
    samples["b8 long"] = [(time.perf_counter() - t) * 1000]
    return {"t0": T0, "t_import": t_import, "t_load": t_load, "t_first": t_first, "samples_ms": samples,
            "rss_mib": peak_rss_mib()}


MODES = {"cold": cold, "warm": warm, "size": size_run}


def main(argv: list[str]) -> int:
    mode, result_path, config_path = argv
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    try:
        if mode in MODES:
            result = MODES[mode](config)
        else:  # text-generation models (infra/bench/genprobe.py); T0 is this process's start
            from .genprobe import MODES as GENERATION_MODES

            result = {"t0": T0, **GENERATION_MODES[mode](config)}
    except Exception as exc:  # noqa: BLE001 - the parent reports the last stderr line: make it the error
        import traceback

        traceback.print_exc()
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)  # no teardown: libraries' exit-time warnings would bury the error line
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: not part of any measured figure


if __name__ == "__main__":
    main(sys.argv[1:])

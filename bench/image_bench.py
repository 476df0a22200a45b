"""Image benchmark: cold start and warm latency, modelfn handler vs transformers pipeline.

    python bench/image_bench.py [--reps 3] [--arch vit|convnext|clip]

No image model is available offline, so the model is a random-weight checkpoint of a real size built
from a config (image classification: ViT-S/16 at 224 px, 22 M parameters, or ConvNeXt-T, 28 M;
zero-shot image classification: CLIP ViT-B/32, its text tower with a small test vocabulary) and
exported with `modelfn export` (int8 candidates, parity gate). Weights do not change the cost of a
forward pass. CLIP requests are JSON (the image base64, three candidate labels).
Measured in one run, interleaved so load from other processes affects both alike:
  * process start -> first answer for one 640x480 JPEG, fresh interpreter each time: the modelfn
    Lambda ``handler`` (raw image/jpeg body, base64 as API Gateway sends it) and a transformers
    pipeline handler (torch);
  * warm median latency per request in the same processes (20 requests after the first).
Writes bench/image_classification.md (a section per architecture).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.pipeline_compare import medians, ratio_rows, run_probe, write_section  # noqa: E402
WORK = ROOT / ".modelfn" / "bench-image"
WARM = 20

MODELFN = """
import base64, json, os, sys, time
t0 = time.perf_counter()
from functions.handler import handler
class C:
    function_name, memory_limit_in_mb, aws_request_id = "bench", 2048, "r"
    invoked_function_arn = "arn:aws:lambda:us-east-1:1:function:bench"
body = open(sys.argv[1], "rb").read()
labels = json.loads(sys.argv[3])  # zero-shot: candidate labels, sent as JSON with the image base64
if labels:
    kind, raw = "application/json", False
    payload = json.dumps({"inputs": base64.b64encode(body).decode(), "parameters": {"candidate_labels": labels}})
else:
    kind, raw, payload = "image/jpeg", True, base64.b64encode(body).decode()
event = {"version": "2.0", "routeKey": "$default", "rawPath": "/models/bench/predict", "rawQueryString": "",
         "headers": {"content-type": kind, "host": "x"}, "isBase64Encoded": raw,
         "requestContext": {"requestId": "r", "http": {"method": "POST", "path": "/models/bench/predict",
                            "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4"}, "stage": "$default"},
         "body": payload}
sys.stdout = open(os.devnull, "w")
out = handler(event, C()); first = time.perf_counter() - t0
assert out["statusCode"] == 200, out
warm = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); handler(event, C()); warm.append(time.perf_counter() - t)
print(json.dumps({"first_s": first, "warm": warm, "answer": json.loads(out["body"])[0]["label"]}), file=sys.stderr)
sys.stderr.flush(); os._exit(0)
"""

PIPELINE = """
import io, json, os, sys, time
t0 = time.perf_counter()
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from PIL import Image
from transformers import pipeline
labels = json.loads(sys.argv[4])
task = "zero-shot-image-classification" if labels else "image-classification"
pipe = pipeline(task, model=sys.argv[3], device="cpu")
classify = (lambda image: pipe(image, candidate_labels=labels)) if labels else pipe
body = open(sys.argv[1], "rb").read()
answer = classify(Image.open(io.BytesIO(body))); first = time.perf_counter() - t0
warm = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); classify(Image.open(io.BytesIO(body))); warm.append(time.perf_counter() - t)
print(json.dumps({"first_s": first, "warm": warm, "answer": answer[0]["label"]}), file=sys.stderr)
sys.stderr.flush(); os._exit(0)
"""


LABELS = ["a photo of shapes", "a photo of a cat", "a photo of a car"]  # zero-shot (clip) only


def build_source(arch: str, out: Path) -> Path:
    if arch == "clip":  # ViT-B/32 towers (text: 12 layers, width 512; vision: 12 layers, width 768)
        if not (out / "config.json").is_file():
            from tests.tinymodels import build_tiny_clip_model

            build_tiny_clip_model(out, text_sizes=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                                       num_attention_heads=8, max_position_embeddings=77),
                                  vision_sizes=dict(image_size=224, patch_size=32, hidden_size=768,
                                                    intermediate_size=3072, num_hidden_layers=12,
                                                    num_attention_heads=12), projection_dim=512)
        return out
    import torch
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor, ViTConfig,
                              ViTForImageClassification, ViTImageProcessor)

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    labels = {i: f"class_{i}" for i in range(1000)}
    common = dict(id2label=labels, label2id={v: k for k, v in labels.items()})
    if arch == "vit":  # ViT-S/16
        model = ViTForImageClassification(ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                                    intermediate_size=1536, **common))
        processor = ViTImageProcessor(size={"height": 224, "width": 224})
    else:  # ConvNeXt-T
        model = ConvNextForImageClassification(ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768],
                                                              **common))
        processor = ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875)
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    return out


def photo(path: Path) -> Path:
    from export.vision import _shapes

    image = _shapes(640, 480)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    return path


def run(script: str, args: list[str], env: dict) -> dict:
    return run_probe(script, args, env, timeout_s=600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--arch", choices=("vit", "convnext", "clip"), default="vit")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    source = build_source(args.arch, WORK / f"{args.arch}-source")
    bundle = WORK / f"{args.arch}-bundle"
    if not (bundle / "manifest.json").is_file():
        subprocess.run([sys.executable, "infra/cli/__init__.py", "export", "--source", str(source), "--task",
                        "zero-shot-image-classification" if args.arch == "clip" else "image-classification",
                        "--out", str(bundle), "--search-budget-s", "0", "--overwrite"],
                       cwd=ROOT, check=True)
    from functions.manifest import read_manifest

    manifest = read_manifest(bundle)
    image = photo(WORK / "photo.jpg")
    threads = "2"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MODELFN_BUNDLE_DIR": str(bundle), "MODELFN_MODEL_NAME": "bench",
           "MODELFN_THREADS": threads, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1",
           # torch's OpenMP threads spin while idle, as onnxruntime's would without allow_spinning=0 (which
           # the runtime sets); on a shared machine spinning inflates torch's latency many times over.
           "OMP_WAIT_POLICY": "PASSIVE"}
    results: dict[str, list[dict]] = {"modelfn": [], "pipeline": []}
    for _ in range(args.reps):
        labels = json.dumps(LABELS if args.arch == "clip" else [])
        results["modelfn"].append(run(MODELFN, [str(image), str(WARM), labels], env))
        results["pipeline"].append(run(PIPELINE, [str(image), str(WARM), str(source), labels], env))
    rows = medians(results, skip_warm=2)
    same = results["modelfn"][0]["answer"] == results["pipeline"][0]["answer"]
    table = [
        f"## {args.arch}: {manifest.quantization.chosen} bundle, {threads} threads, 640x480 JPEG, "
        f"median of {args.reps} cold starts and {args.reps * (WARM - 2)} warm requests",
        "",
        *ratio_rows(rows),
        "",
        f"Same top label from both: {same}. Both with {threads} threads and OMP_WAIT_POLICY=PASSIVE; host "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs. Chosen candidate: {manifest.quantization.chosen} "
        f"({manifest.quantization.reason}); parity {manifest.parity.metrics}.",
        "",
    ]
    text = "\n".join(table)
    print(text)
    out = ROOT / "bench" / "image_classification.md"
    header = "# Image tasks: modelfn vs transformers pipeline (bench/image_bench.py)\n\n"
    write_section(out, header, args.arch, text)


if __name__ == "__main__":
    main()

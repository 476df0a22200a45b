"""CLIP bundles: one graph per tower vs the one two-tower graph bundles held before, and cold start both ways.

    python bench/clip_towers.py      # writes bench/clip_towers.md

A CLIP ViT-B/32-sized model (bench/image_bench.py's: random weights, latency does not depend on them)
is exported as modelfn exports it now (image-feature-extraction, fp32: text_model.onnx and
vision_model.onnx) and as bundles were exported before the split (Optimum's two-tower model.onnx,
served with a blank partner input). Measured in one run, side by side in interleaved rounds
(export/measure.py), 2 threads as on Lambda:

  * one text and one image embedding through the service (POST /v1/embeddings, ModelService) of each
    bundle, and through each tower's session alone (the floor);
  * cold start in a fresh interpreter, both towers' sessions opened at load (what functions/clip.py
    does) vs the text tower at load and the image tower on the first image (lazy): time to ready, the
    first image's extra wait, peak RSS.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORK = ROOT / ".modelfn" / "bench-clip-towers"
THREADS = 2
COLD_REPS = 5

# A fresh interpreter: import the runtime, open the sessions (both, or the text tower only), then the
# image tower if it was left for the first image. Last stderr line: the JSON result.
COLD = """
import json, sys, time
t0 = time.perf_counter()
import onnxruntime as ort
from functions.sessions import session_options
bundle, mode = sys.argv[1], sys.argv[2]
def rss_mb():  # peak RSS of this process (ru_maxrss would carry the parent's peak across exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
def open_(name):
    return ort.InferenceSession(f"{bundle}/{name}", sess_options=session_options(2), providers=["CPUExecutionProvider"])
text = open_("text_model.onnx")
vision = open_("vision_model.onnx") if mode == "eager" else None
ready, ready_rss = time.perf_counter() - t0, rss_mb()
t1 = time.perf_counter()
vision = vision or open_("vision_model.onnx")
first_image_extra = time.perf_counter() - t1
print(json.dumps({"ready_s": ready, "ready_rss_mb": ready_rss, "first_image_extra_s": first_image_extra,
                  "both_rss_mb": rss_mb()}), file=sys.stderr)
"""


def one_graph_bundle(source: Path, split: Path, out: Path) -> Path:
    """The same checkpoint as bundles were before the split: Optimum's two-tower graph (with the
    unnormalized outputs image-feature-extraction added), the split bundle's tokenizer and processor."""
    import onnxruntime as ort
    from optimum.exporters.onnx import main_export

    from export.convert import FEATURE_OUTPUTS, add_unnormalized_outputs, quiet
    from functions.manifest import (
        MODEL_FILE,
        PREPROCESSOR_FILE,
        TOKENIZER_FILE,
        describe_files,
        read_manifest,
    )

    if (out / "manifest.json").is_file():
        return out
    with quiet():
        main_export(str(source), output=WORK / "optimum", task="zero-shot-image-classification", opset=17,
                    library_name="transformers", local_files_only=True, do_validation=False, device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(WORK / "optimum" / MODEL_FILE, out / MODEL_FILE)
    add_unnormalized_outputs(out / MODEL_FILE, FEATURE_OUTPUTS)
    for name in (TOKENIZER_FILE, PREPROCESSOR_FILE):
        shutil.copyfile(split / name, out / name)
    graph = ort.InferenceSession(str(out / MODEL_FILE), providers=["CPUExecutionProvider"])
    manifest = read_manifest(split)
    replace(manifest, inputs=tuple(i.name for i in graph.get_inputs()), outputs=tuple(o.name for o in graph.get_outputs()),
            files=describe_files(out), runtime=replace(manifest.runtime, logit_scale=0.0)).write(out)
    return out


def main() -> int:
    from bench.image_bench import build_source
    from bench.pipeline_compare import run_probe
    from export.exporter import export_bundle
    from export.measure import session, time_calls
    from export.vision import _shapes
    from functions.inputs import TEXT_OR_IMAGE, parse_items
    from functions.manifest import MODEL_FILE, TEXT_MODEL_FILE, VISION_MODEL_FILE
    from functions.service import ModelService
    from functions.tasks.clip import image_rows

    WORK.mkdir(parents=True, exist_ok=True)
    source = build_source("clip", WORK / "source")
    split = WORK / "bundle"
    if not (split / "manifest.json").is_file():
        export_bundle(source, "image-feature-extraction", split, quantization="none", overwrite=True)
    old = one_graph_bundle(source, split, WORK / "one-graph-bundle")
    services = {name: ModelService.load(path, name="bench", max_batch=8) for name, path in (("split", split), ("old", old))}
    assert not services["old"].model.separate_towers and services["split"].model.separate_towers
    towers = {name: session(split / name, THREADS) for name in (TEXT_MODEL_FILE, VISION_MODEL_FILE)}
    model = services["split"].model
    text_feed = model.feed(model.encode(["a photo of a cat"]))
    buffer = io.BytesIO()
    _shapes(640, 480).save(buffer, "JPEG", quality=90)
    image_url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    pixels = {"pixel_values": np.stack(image_rows(model, parse_items(image_url, TEXT_OR_IMAGE, 1, field="input")[0]))}

    def embed(service, value):
        body = json.dumps({"input": value}).encode()
        return lambda: service.embeddings("application/json", body)

    for value in ("a photo of a cat", image_url):  # both bundles answer the same vectors before anything is timed
        vectors = [embed(service, value)().payload["data"][0]["embedding"] for service in services.values()]
        np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-4)
    calls = {
        "text: text tower alone": lambda: towers[TEXT_MODEL_FILE].run(None, text_feed),
        "text: /v1/embeddings, split bundle": embed(services["split"], "a photo of a cat"),
        "text: /v1/embeddings, one-graph bundle": embed(services["old"], "a photo of a cat"),
        "image: image tower alone": lambda: towers[VISION_MODEL_FILE].run(None, pixels),
        "image: /v1/embeddings, split bundle": embed(services["split"], image_url),
        "image: /v1/embeddings, one-graph bundle": embed(services["old"], image_url),
    }
    timings = time_calls(calls, rounds=25, budget_s=240)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(THREADS)}
    cold: dict = {"eager": [], "lazy": []}
    for _ in range(COLD_REPS):  # interleaved, so load from other processes affects both alike
        for mode, runs in cold.items():
            runs.append(run_probe(COLD, [str(split), mode], env))
    cold = {mode: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for mode, runs in cold.items()}
    sizes = {name: (path / name).stat().st_size / 2**20 for name, path in
             ((TEXT_MODEL_FILE, split), (VISION_MODEL_FILE, split), (MODEL_FILE, old))}
    ms = {name: t.median_ms for name, t in timings.items()}
    rows = ["| call | ms (median) | spread (IQR) |", "|---|---|---|"]
    rows += [f"| {name} | {t.median_ms:.1f} | {t.spread_ms:.1f} |" for name, t in timings.items()]
    cold_rows = ["| towers' sessions | ready (s) | first image waits extra (s) | peak RSS at ready (MB) | peak RSS, both open (MB) |",
                 "|---|---|---|---|---|"]
    cold_rows += [f"| {mode} | {c['ready_s']:.2f} | {c['first_image_extra_s']:.2f} | {c['ready_rss_mb']:.0f} | "
                  f"{c['both_rss_mb']:.0f} |" for mode, c in (("both at load (eager)", cold["eager"]),
                                                               ("image tower on first image (lazy)", cold["lazy"]))]
    out = "\n".join([
        "# CLIP: one graph per tower vs the one two-tower graph",
        "",
        f"`python bench/clip_towers.py`: CLIP ViT-B/32 size (bench/image_bench.py's source, random weights), fp32, "
        f"batch 1, {THREADS} threads, {os.cpu_count()} CPUs shared with other work (load average "
        f"{os.getloadavg()[0]:.1f} at the end); medians of 25 interleaved rounds. The split bundle is "
        "`modelfn export --task image-feature-extraction --quantization none`; the one-graph bundle is the same "
        "checkpoint as bundles were exported before the split (Optimum's two-tower graph, served with a blank "
        "partner input). The /v1/embeddings rows are the whole request through ModelService (JSON, tokenizing "
        "or decoding a 640x480 JPEG, the run, the answer).",
        "",
        *rows,
        "",
        f"A text embedding through the split bundle takes **{ms['text: /v1/embeddings, split bundle'] / ms['text: text tower alone']:.2f}x** "
        "the text tower alone; through the one-graph bundle (whose blank image runs the whole vision tower) it took "
        f"**{ms['text: /v1/embeddings, one-graph bundle'] / ms['text: /v1/embeddings, split bundle']:.1f}x** as long. An "
        f"image embedding takes **{ms['image: /v1/embeddings, split bundle'] / ms['image: image tower alone']:.2f}x** the image "
        "tower alone (decoding and resizing the JPEG included); through the one-graph bundle (an empty text partner) "
        f"**{ms['image: /v1/embeddings, one-graph bundle'] / ms['image: /v1/embeddings, split bundle']:.2f}x** as long. "
        f"Graph sizes: text tower {sizes[TEXT_MODEL_FILE]:.0f} MiB, image tower {sizes[VISION_MODEL_FILE]:.0f} MiB, "
        f"two-tower {sizes[MODEL_FILE]:.0f} MiB.",
        "",
        f"## Cold start: both towers at load, or the image tower on the first image (median of {COLD_REPS} fresh "
        "interpreters each, interleaved; import of onnxruntime included)",
        "",
        *cold_rows,
        "",
        "functions/clip.py opens both at load. The lazy start saves "
        f"{cold['eager']['ready_s'] - cold['lazy']['ready_s']:.2f} s of init and "
        f"{cold['eager']['ready_rss_mb'] - cold['lazy']['ready_rss_mb']:.0f} MB until the first image, but that image "
        f"then waits {cold['lazy']['first_image_extra_s']:.2f} s more inside a request (on Lambda, outside the init "
        "phase's CPU boost; zero-shot needs both towers on every request), and the saved memory cannot be given "
        "back: the function is sized for both towers (infra/build/memory.py counts every file of the bundle).",
        "",
    ])
    (ROOT / "bench" / "clip_towers.md").write_text(out, encoding="utf-8")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

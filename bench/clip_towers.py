"""What a CLIP bundle's single two-tower graph costs when only one tower is wanted.

    python bench/clip_towers.py      # writes bench/clip_towers.md

A CLIP bundle is one ONNX graph with both towers (functions/tasks/clip.py): /v1/embeddings of texts
feeds one blank image, of images one empty text, and image-feature-extraction's predict one empty
text. This measures that overhead on a CLIP ViT-B/32-sized model (transformers' CLIPConfig defaults,
random weights: latency does not depend on the weights) exported as the bundles are (Optimum, fp32),
against each tower cut out of the same graph (onnx.utils.Extractor), side by side in interleaved
rounds (export/measure.py), 2 threads as on Lambda.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    import onnx
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import CLIPConfig, CLIPModel

    from export.convert import quiet
    from export.measure import session, time_calls

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        CLIPModel(CLIPConfig()).eval().save_pretrained(tmp / "hf")
        with quiet():
            main_export(str(tmp / "hf"), output=tmp / "onnx", task="zero-shot-image-classification", opset=17,
                        library_name="transformers", do_validation=False, device="cpu")
        full = tmp / "onnx" / "model.onnx"
        model = onnx.load(str(full))
        extractor = onnx.utils.Extractor(model)
        onnx.save(extractor.extract_model(["input_ids", "attention_mask"], ["text_embeds"]), str(tmp / "text.onnx"))
        onnx.save(extractor.extract_model(["pixel_values"], ["image_embeds"]), str(tmp / "image.onnx"))
        sessions = {name: session(tmp / f"{name}.onnx", 2) for name in ("text", "image")}
        sessions["model"] = session(full, 2)
        text = {"input_ids": np.asarray([[49406, 320, 1125, 539, 320, 2368, 49407]], dtype=np.int64),
                "attention_mask": np.ones((1, 7), dtype=np.int64)}  # "a photo of a cat", CLIP's BOS/EOS ids
        blank_text = {"input_ids": np.asarray([[49406, 49407]], dtype=np.int64),
                      "attention_mask": np.ones((1, 2), dtype=np.int64)}
        image = {"pixel_values": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        blank_image = {"pixel_values": np.zeros((1, 3, 224, 224), dtype=np.float32)}
        calls = {
            "text tower alone": lambda: sessions["text"].run(None, text),
            "text via two-tower graph (+ blank image)": lambda: sessions["model"].run(None, {**text, **blank_image}),
            "text via two-tower graph, text_embeds fetched only": lambda: sessions["model"].run(
                ["text_embeds"], {**text, **blank_image}),
            "image tower alone": lambda: sessions["image"].run(None, image),
            "image via two-tower graph (+ empty text)": lambda: sessions["model"].run(None, {**image, **blank_text}),
        }
        timings = time_calls(calls, rounds=15, budget_s=120)
        sizes = {n: (tmp / f"{n}.onnx").stat().st_size / 2**20 for n in ("text", "image")}
        sizes["model"] = full.stat().st_size / 2**20
    rows = ["| call | ms (median) | spread (IQR) |", "|---|---|---|"]
    rows += [f"| {name} | {t.median_ms:.1f} | {t.spread_ms:.1f} |" for name, t in timings.items()]
    text_over = timings["text via two-tower graph (+ blank image)"].median_ms / timings["text tower alone"].median_ms
    image_over = timings["image via two-tower graph (+ empty text)"].median_ms / timings["image tower alone"].median_ms
    fetch_over = (timings["text via two-tower graph, text_embeds fetched only"].median_ms
                  / timings["text tower alone"].median_ms)
    out = "\n".join([
        "# CLIP: one two-tower graph vs each tower alone",
        "",
        f"`python bench/clip_towers.py`: CLIP ViT-B/32 size (CLIPConfig defaults, random weights), fp32 ONNX from "
        f"Optimum, batch 1, 2 threads, {os.cpu_count()} CPUs shared with other work (load average "
        f"{os.getloadavg()[0]:.1f} at the end); medians of 15 interleaved rounds.",
        "",
        *rows,
        "",
        f"A text embedding through the two-tower graph takes **{text_over:.1f}x** the text tower alone (the blank "
        f"image runs the whole vision tower); an image embedding takes **{image_over:.2f}x** the image tower "
        "alone (an empty text is two tokens). Graph sizes: two-tower "
        f"{sizes['model']:.0f} MiB, text tower {sizes['text']:.0f} MiB, image tower {sizes['image']:.0f} MiB.",
        "",
        f"Asking ONNX Runtime for `text_embeds` only does not help ({fetch_over:.1f}x the text tower): it runs "
        "every node of the graph whatever the fetches. Serving texts at the text tower's cost needs the towers as "
        "separate graphs in the bundle and a runtime that picks the graph per request (not done: "
        "functions/model.py holds one session per bundle).",
        "",
    ])
    (ROOT / "bench" / "clip_towers.md").write_text(out, encoding="utf-8")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

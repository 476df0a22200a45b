"""Image decoding and preprocessing (functions/images.py) against transformers' own image processors,
and the limits and errors of bad image input."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from export.vision import builtin_samples, image_processing
from functions.errors import BadRequest, PayloadTooLarge
from functions.images import ImageInput, image_bytes, open_image, read_pixels
from functions.settings import ImageLimits

LIMITS = ImageLimits(max_bytes=1 << 24, max_pixels=40_000_000)


def _processors():
    from transformers import (BitImageProcessor, CLIPImageProcessor, ConvNextImageProcessor, DeiTImageProcessor,
                              ViTImageProcessor)

    return {
        "vit-32": ViTImageProcessor(size={"height": 32, "width": 32}),
        "vit-224-bicubic-imagenet": ViTImageProcessor(size={"height": 224, "width": 160}, resample=3,
                                                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
        "convnext-224-crop": ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875),
        "convnext-40-crop": ConvNextImageProcessor(size={"shortest_edge": 40}, crop_pct=0.9),
        "convnext-384-square": ConvNextImageProcessor(size={"shortest_edge": 384}),
        "vit-no-normalize": ViTImageProcessor(size={"height": 48, "width": 48}, do_normalize=False),
        "deit-resize-then-crop": DeiTImageProcessor(size={"height": 40, "width": 44}, crop_size={"height": 32, "width": 36}),
        "bit-shortest-edge-crop": BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}),
        "clip-shortest-edge-crop": CLIPImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 36, "width": 36}),
    }


def _exif_rotated() -> bytes:
    image = Image.fromarray(np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (30, 20), color) for color in ((255, 0, 0), (0, 255, 0))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    return out.getvalue()


SAMPLES = [(s.name, s.data) for s in builtin_samples()] + [("exif-rotated", _exif_rotated()),
                                                          ("animated-gif", _animated_gif())]


@pytest.mark.parametrize("processor_name", list(_processors()))
def test_pixel_values_match_transformers(processor_name, tmp_path):
    from transformers.image_utils import load_image

    processor = _processors()[processor_name]
    processor.save_pretrained(tmp_path)
    steps = image_processing(tmp_path)
    for name, data in SAMPLES:
        ours = read_pixels(ImageInput(data, name), steps, LIMITS)
        theirs = processor(images=load_image(Image.open(io.BytesIO(data))), return_tensors="np").pixel_values[0]
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6, err_msg=name)


def test_crop_larger_than_the_resized_image_is_refused(tmp_path):
    from transformers import DeiTImageProcessor

    from export.errors import ExportError

    DeiTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 40, "width": 40}).save_pretrained(tmp_path)
    with pytest.raises(ExportError, match="center crop"):
        image_processing(tmp_path)


def test_exif_orientation_is_applied():
    image = open_image(_exif_rotated(), "inputs", LIMITS)
    assert image.size == (40, 60) and image.mode == "RGB"


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data: what a bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _png(width=20, height=10) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("data, error, words", [
    (_png_header(8000, 8000), PayloadTooLarge, "8000x8000 = 64000000 pixels"),
    (_png_header(100_000, 100_000), PayloadTooLarge, "more than 40000000 pixels"),
    (builtin_samples()[7].data[:20_000], BadRequest, "truncated or corrupt"),  # noise PNG cut mid-IDAT
    (builtin_samples()[6].data[:len(builtin_samples()[6].data) // 2], BadRequest, "truncated or corrupt"),  # JPEG
    (b"just some text, not an image", BadRequest, "is not a PNG, JPEG"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"/>', BadRequest, "is not a PNG, JPEG"),
    (b"", BadRequest, "is empty"),
], ids=["pixels-over-limit", "pillow-bomb", "truncated-png", "truncated-jpeg", "text", "svg", "empty"])
def test_bad_images_are_named_before_decoding(data, error, words):
    with pytest.raises(error) as err:
        open_image(data, "inputs[1]", LIMITS)
    assert words in err.value.message and "inputs[1]" in err.value.message


def test_compressed_size_is_checked_before_base64_decoding():
    limits = ImageLimits(max_bytes=100, max_pixels=LIMITS.max_pixels)
    big = base64.b64encode(b"x" * 300).decode()
    with pytest.raises(PayloadTooLarge, match="300 bytes"):
        image_bytes(ImageInput(big, "inputs"), limits)
    with pytest.raises(PayloadTooLarge):
        image_bytes(ImageInput(b"x" * 101, "inputs"), limits)


@pytest.mark.parametrize("text, ok", [
    (base64.b64encode(_png()).decode(), True),
    ("data:image/png;base64," + base64.b64encode(_png()).decode(), True),
    (base64.encodebytes(_png()).decode(), True),  # MIME line breaks
    ("data:image/png," + base64.b64encode(_png()).decode(), False),
    ("not base64 at all!", False),
])
def test_base64_forms(text, ok):
    if ok:
        assert image_bytes(ImageInput(text, "inputs"), LIMITS) == _png()
    else:
        with pytest.raises(BadRequest):
            image_bytes(ImageInput(text, "inputs"), LIMITS)


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MODELFN_MAX_IMAGE_BYTES", "1234")
    monkeypatch.setenv("MODELFN_MAX_IMAGE_PIXELS", "5678")
    assert ImageLimits.resolve() == ImageLimits(1234, 5678)
    monkeypatch.delenv("MODELFN_MAX_IMAGE_BYTES")
    assert ImageLimits.resolve().max_bytes == 8 << 20


LEAN = r"""
import base64, json, sys
from functions.handler import handler
from tests.functions.eventfiles import make_event
class Context:
    function_name, memory_limit_in_mb, aws_request_id = "lean", 2048, "req-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:lean"
body = {"inputs": sys.argv[2]} if sys.argv[2] else {"inputs": "hello"}
response = handler(make_event("POST", "/models/lean/predict", body), Context())
print("RESULT " + json.dumps({"status": response["statusCode"], "modules": sorted(
    {m.split(".")[0] for m in sys.modules} & {"PIL", "torch", "transformers", "optimum", "fastapi"})}))
"""


@pytest.mark.parametrize("kind", ["text", "image"])
def test_only_image_functions_load_pillow_and_none_loads_torch(kind, tiny_bundle, tiny_image_bundle):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    bundle = tiny_bundle("feature-extraction") if kind == "text" else tiny_image_bundle("vit", quantization="none")
    image = base64.b64encode(builtin_samples()[0].data).decode() if kind == "image" else ""
    env = {**os.environ, "MODELFN_BUNDLE_DIR": str(bundle), "MODELFN_MODEL_NAME": "lean", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", LEAN, "x", image], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result == {"status": 200, "modules": ["PIL"] if kind == "image" else []}

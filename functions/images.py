"""Images in requests: checked against the limits, decoded with Pillow, preprocessed in numpy.

Decoding follows transformers' ``load_image`` (EXIF orientation applied, then RGB); preprocessing
applies the model's own image processor steps from the manifest (functions.manifest.ImageProcessing)
in the order and arithmetic of transformers' ViT, ConvNeXt, DeiT, BiT and CLIP image processors, so
pixel values match theirs (tests/functions/test_images.py holds them to it). Pillow is imported on first use: text
functions never load it, and their images do not ship it.

Limits are checked before work: the compressed size before base64 decoding and before Pillow sees
the bytes, the pixel count from the header (Pillow's lazy open) before any pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np

from .errors import BadRequest, PayloadTooLarge
from .inputs import IMAGE_WANTS as WANTS
from .inputs import ImageInput
from .manifest import ImageProcessing
from .settings import ImageLimits

# Formats Pillow may try: the common photo and web formats only, which keeps the many rarer
# decoders (and their attack surface) out of reach of a request.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def image_bytes(item: ImageInput, limits: ImageLimits) -> bytes:
    """The compressed image bytes; base64 text (or a ``data:`` URL) is decoded after a size check."""
    data = item.data
    if isinstance(data, bytes):
        size = len(data)
    else:
        if data.startswith("data:"):
            head, _, data = data.partition(",")
            if not head.endswith(";base64"):
                raise BadRequest(f"{item.where} is a data: URL without ;base64", hint="send base64-encoded image bytes")
        if len(data) // 2 > limits.max_bytes:  # far too large: refused before even copying it
            raise PayloadTooLarge(f"{item.where} has about {len(data) * 3 // 4} bytes; this model takes images of "
                                  f"at most {limits.max_bytes} bytes", hint="send a smaller or more compressed image")
        data = "".join(data.split())  # MIME base64 wraps lines
        size = len(data) * 3 // 4
    if size > limits.max_bytes:
        raise PayloadTooLarge(f"{item.where} has {size} bytes; this model takes images of at most "
                              f"{limits.max_bytes} bytes", hint="send a smaller or more compressed image")
    if isinstance(data, bytes):
        return data
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{item.where} is not valid base64", hint=f"send {WANTS}, base64-encoded") from None


def open_image(data: bytes, where: str, limits: ImageLimits):
    """The image as an RGB ``PIL.Image``: 400 when it is not a supported image or is truncated or
    corrupt, 413 when it has more pixels than the limit (known from the header, before decoding)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadRequest(f"{where} is empty", hint=f"send {WANTS}")
    with warnings.catch_warnings():
        # Pillow's own bomb check warns (or raises) by its global limit; ours below is the one that answers.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError:  # Pillow's own limit (2x its MAX_IMAGE_PIXELS), from the header
            most = min(limits.max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or 0) or limits.max_pixels)
            raise PayloadTooLarge(f"{where} has more than {most} pixels", hint="downscale the image") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            raise BadRequest(f"{where} is not {WANTS}") from None
        width, height = image.size
        if width * height > limits.max_pixels:
            raise PayloadTooLarge(f"{where} is {width}x{height} = {width * height} pixels; this model takes at most "
                                  f"{limits.max_pixels} pixels per image", hint="downscale the image")
        if width < 1 or height < 1:
            raise BadRequest(f"{where} has no pixels ({width}x{height})")
        try:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
        except Exception as exc:  # noqa: BLE001 - every decoder fault of the caller's file is a 400
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadRequest(f"{where} cannot be decoded (truncated or corrupt: {reason})") from None


def _resize_size(width: int, height: int, steps: ImageProcessing) -> tuple[int, int]:
    """(width, height) after the resize step, as transformers' get_resize_output_image_size computes it."""
    if steps.height and steps.width:
        return steps.width, steps.height
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = steps.shortest_edge, int(steps.shortest_edge * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' center_crop of an (H, W, C) array. The supported processors resize to at least
    the crop first (ConvNeXt: shorter edge to size / crop_pct), so no padding is ever needed."""
    rows, cols = array.shape[:2]
    top, left = (rows - height) // 2, (cols - width) // 2
    return array[top:top + height, left:left + width]


def pixel_values(image, steps: ImageProcessing) -> np.ndarray:
    """One RGB ``PIL.Image`` -> the model's ``pixel_values`` row, (3, H, W) float32."""
    if steps.shortest_edge or (steps.height and steps.width):
        size = _resize_size(image.width, image.height, steps)
        if size != image.size:
            image = image.resize(size, resample=steps.resample)
    array = np.asarray(image)
    if steps.crop_height and steps.crop_width:
        array = _center_crop(array, steps.crop_height, steps.crop_width)
    if steps.rescale_factor:
        # transformers rescales in float64 and then casts; normalization then runs in float32.
        array = (array.astype(np.float64) * steps.rescale_factor).astype(np.float32)
    else:
        array = array.astype(np.float32)
    if steps.mean:
        array = (array - np.asarray(steps.mean, dtype=np.float32)) / np.asarray(steps.std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def read_pixels(item: ImageInput, steps: ImageProcessing, limits: ImageLimits) -> np.ndarray:
    """Check, decode and preprocess one request image; only one decoded image is held at a time."""
    return pixel_values(open_image(image_bytes(item, limits), item.where, limits), steps)


__all__ = ["FORMATS", "WANTS", "ImageInput", "image_bytes", "open_image", "pixel_values", "read_pixels"]

"""Two-tower (CLIP-style) bundles: feeding one tower at a time, and /v1/embeddings over texts and images.

A CLIP bundle is one ONNX graph with both towers (input_ids + attention_mask and pixel_values in;
logits_per_image, logits_per_text, text_embeds, image_embeds out, and for bundles exported since
image-feature-extraction also the unnormalized ``text_features`` / ``image_features``). The graph
needs every input, so a request that embeds only texts feeds one blank image, and one that embeds
only images feeds one empty text (bench/clip_towers.md measures what the unused tower costs).

/v1/embeddings answers ``text_embeds`` for texts and ``image_embeds`` for images: CLIP's
``get_text_features`` / ``get_image_features`` L2-normalized (what CLIPModel.forward answers), so a
text's and an image's vectors compare by dot product. Both CLIP tasks (zero-shot-image-classification
and image-feature-extraction) serve it with :data:`CLIP_EMBEDDER`.
"""

from __future__ import annotations

import numpy as np

from ..images import pixel_values, read_pixels
from ..inputs import TEXT_OR_IMAGE, ImageInput, parse_items
from ..settings import ImageLimits
from . import Embedder, Prepared
from .embeddings import l2_normalize

TEXT_EMBEDS, IMAGE_EMBEDS = "text_embeds", "image_embeds"  # normalized (CLIPModel.forward)
IMAGE_FEATURES = "image_features"  # get_image_features, unnormalized (added to the graph at export)


def pixels_input(model) -> str:
    """The graph's image input (the one input that is not a token input)."""
    return next(n for n in model.manifest.inputs if n not in model.token_dtypes)


def blank_text_feed(model) -> dict[str, np.ndarray]:
    """One empty text (the tokenizer's special tokens only): the text tower's cheapest input."""
    return model.feed([model.tokenizer.encode("")])


def blank_pixels(model) -> np.ndarray:
    """One black image as the bundle's preprocessing shapes it: the image tower's input when only texts run."""
    from PIL import Image

    return pixel_values(Image.new("RGB", (1, 1)), model.manifest.runtime.image)[None]


def image_rows(model, images: list[ImageInput]) -> list[np.ndarray]:
    """Each image checked, decoded and preprocessed (one decoded image held at a time)."""
    steps, limits = model.manifest.runtime.image, ImageLimits.resolve()
    return [read_pixels(item, steps, limits) for item in images]


def _parse(model, raw) -> list:
    return parse_items(raw, TEXT_OR_IMAGE, model.limits.max_batch, field="input")[0]


def _prepare(model, items: list) -> Prepared:
    """Texts and images of one request, at most max_batch of each per run, in the order they came."""
    texts = [item for item in items if isinstance(item, str)]
    images = [item for item in items if isinstance(item, ImageInput)]
    encodings = model.encode(texts) if texts else []
    rows = image_rows(model, images)
    pixels, size = pixels_input(model), model.limits.max_batch
    feeds, counts = [], []
    for start in range(0, max(len(texts), len(rows)), size):
        chunk_texts, chunk_rows = encodings[start:start + size], rows[start:start + size]
        text_feed = model.feed(chunk_texts) if chunk_texts else blank_text_feed(model)
        feeds.append({pixels: np.stack(chunk_rows) if chunk_rows else blank_pixels(model), **text_feed})
        counts.append((len(chunk_texts), len(chunk_rows)))
    # No encodings on the Prepared: its feeds are not one row per encoding, so a batch scheduler
    # runs them as they are (functions/batching.py) instead of splicing rows into other requests.
    order = [isinstance(item, str) for item in items]
    return Prepared(feeds=feeds, tokens=sum(len(e.ids) for e in encodings), extra=(counts, order))


def _vectors(model, prepared: Prepared, outputs: list[dict]) -> np.ndarray:
    counts, order = prepared.extra
    text_parts = [out[TEXT_EMBEDS][:t] for (t, _), out in zip(counts, outputs)]
    image_parts = [out[IMAGE_EMBEDS][:i] for (_, i), out in zip(counts, outputs)]
    texts, images = iter(np.concatenate(text_parts)), iter(np.concatenate(image_parts))
    vectors = np.stack([next(texts) if is_text else next(images) for is_text in order]).astype(np.float32, copy=False)
    return l2_normalize(vectors)  # already unit length from the graph; kept exact after quantization too


def _width(model) -> int | None:
    shapes = {o.name: o.shape for o in model.session.get_outputs()}
    width = shapes.get(TEXT_EMBEDS, [None])[-1]
    return width if isinstance(width, int) else None


CLIP_EMBEDDER = Embedder(parse=_parse, prepare=_prepare, vectors=_vectors, width=_width, inputs=TEXT_OR_IMAGE)

__all__ = ["CLIP_EMBEDDER", "IMAGE_EMBEDS", "IMAGE_FEATURES", "TEXT_EMBEDS", "blank_pixels", "blank_text_feed",
           "image_rows", "pixels_input"]

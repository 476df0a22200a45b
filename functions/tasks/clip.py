"""CLIP-style bundles: feeding one tower at a time, and /v1/embeddings over texts and images.

A CLIP bundle serves through functions/clip.ClipModel: a text tower (input_ids + attention_mask ->
``text_embeds``, ``text_features``) and an image tower (pixel_values -> ``image_embeds``,
``image_features``), each run only for the feeds that hold its inputs. A request is prepared as
separate feeds per tower (texts in chunks of max_batch, images in chunks of max_batch), so texts never
run the image tower and images never the text tower.

/v1/embeddings answers ``text_embeds`` for texts and ``image_embeds`` for images: CLIP's
``get_text_features`` / ``get_image_features`` L2-normalized (what CLIPModel.forward answers), so a
text's and an image's vectors compare by dot product. Both CLIP tasks (zero-shot-image-classification
and image-feature-extraction) serve it with :data:`CLIP_EMBEDDER`.
"""

from __future__ import annotations

import numpy as np

from ..images import read_pixels
from ..inputs import TEXT_OR_IMAGE, ImageInput, parse_items
from ..settings import ImageLimits
from . import Embedder, Prepared, chunked_feeds
from .embeddings import l2_normalize

TEXT_EMBEDS, IMAGE_EMBEDS = "text_embeds", "image_embeds"  # normalized (CLIPModel.forward)
IMAGE_FEATURES = "image_features"  # get_image_features, unnormalized (added to the graph at export)


def image_feeds(model, rows: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The image tower's feeds: preprocessed images in chunks of at most max_batch."""
    size = model.limits.max_batch
    return [{model.pixels: np.stack(rows[i:i + size])} for i in range(0, len(rows), size)]


def image_rows(model, images: list[ImageInput]) -> list[np.ndarray]:
    """Each image checked, decoded and preprocessed (one decoded image held at a time)."""
    steps, limits = model.manifest.runtime.image, ImageLimits.resolve()
    return [read_pixels(item, steps, limits) for item in images]


def _parse(model, raw) -> list:
    return parse_items(raw, TEXT_OR_IMAGE, model.limits.max_batch, field="input")[0]


def _prepare(model, items: list) -> Prepared:
    """Texts and images of one request, each tower's in chunks of at most max_batch (texts first)."""
    texts = [item for item in items if isinstance(item, str)]
    images = [item for item in items if isinstance(item, ImageInput)]
    encodings = model.encode(texts) if texts else []
    feeds = chunked_feeds(model, encodings) + image_feeds(model, image_rows(model, images))
    # No encodings on the Prepared: its feeds are not all one row per encoding, so a batch scheduler
    # runs them as they are (functions/batching.py) instead of splicing rows into other requests.
    order = [isinstance(item, str) for item in items]
    return Prepared(feeds=feeds, tokens=sum(len(e.ids) for e in encodings), extra=order)


def _vectors(model, prepared: Prepared, outputs: list[dict]) -> np.ndarray:
    order = prepared.extra
    texts = iter(row for out in outputs if TEXT_EMBEDS in out for row in out[TEXT_EMBEDS])
    images = iter(row for out in outputs if IMAGE_EMBEDS in out for row in out[IMAGE_EMBEDS])
    vectors = np.stack([next(texts) if is_text else next(images) for is_text in order]).astype(np.float32, copy=False)
    return l2_normalize(vectors)  # already unit length from the graph; kept exact after quantization too


def _width(model) -> int | None:
    return model.output_width(TEXT_EMBEDS)


CLIP_EMBEDDER = Embedder(parse=_parse, prepare=_prepare, vectors=_vectors, width=_width, inputs=TEXT_OR_IMAGE)

__all__ = ["CLIP_EMBEDDER", "IMAGE_EMBEDS", "IMAGE_FEATURES", "TEXT_EMBEDS", "image_feeds", "image_rows"]

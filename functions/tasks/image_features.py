"""image-feature-extraction: CLIP-style models embed images (and, on /v1/embeddings, texts) into one space.

A predict request carries images as image tasks do (the raw body, or base64 / data: URLs in
``{"inputs": ...}``) and each image is answered as transformers' image-feature-extraction pipeline
answers a model with a projection (CLIPVisionModelWithProjection): its image embedding
(``get_image_features``), nested as the pipeline nests it, ``[[...]]`` for one image and a list of
those for a list. ``parameters.normalize: true`` answers it L2-normalized (CLIPModel's
``image_embeds``); ``parameters.pool`` is accepted as the pipeline takes it, but CLIP's embedding is
pooled by construction (the class token, projected), so ``pool: false`` (token states) is refused.

Images run the image tower only (functions/clip.py). POST /v1/embeddings embeds texts with the text
tower and images with the image tower (functions/tasks/clip.py), normalized.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadRequest
from ..tasknames import IMAGE_FEATURE_EXTRACTION
from . import EMBEDDINGS_ROUTE, IMAGE, Prepared, register
from .clip import CLIP_EMBEDDER, IMAGE_FEATURES, image_feeds, image_rows
from .embeddings import l2_normalize
from .image_classification import SAMPLE_PNG
from .params import check_known, get_bool


def _params(raw: dict) -> dict:
    check_known(raw, ("pool", "normalize"))
    if get_bool(raw, "pool", True) is False:
        raise BadRequest("parameters.pool: false (token states) is not served: this bundle answers CLIP's pooled "
                         "image embedding", hint="drop pool, or set it to true")
    return {"normalize": bool(get_bool(raw, "normalize", False))}


def _preprocess(model, items: list, params: dict) -> Prepared:
    return Prepared(feeds=image_feeds(model, image_rows(model, items)), tokens=0)  # the image tower only


def _openai_routes(runtime) -> tuple[str, ...]:
    return (EMBEDDINGS_ROUTE,)


@register(IMAGE_FEATURE_EXTRACTION, inputs=IMAGE, parse_params=_params, preprocess=_preprocess,
          synonyms=("image-embeddings",),
          params_schema={"pool": {"type": "boolean", "default": True,
                                  "description": "CLIP's embedding is pooled; false is refused"},
                         "normalize": {"type": "boolean", "default": False}},
          openai_routes=_openai_routes, embedder=CLIP_EMBEDDER, sample={"inputs": SAMPLE_PNG})
def postprocess(model, prepared: Prepared, outputs: list[dict], params: dict) -> list:
    # Bundles carry the unnormalized image_features; image_embeds is the same vector normalized.
    vectors = np.concatenate([out[IMAGE_FEATURES] for out in outputs]).astype(np.float32)
    if params["normalize"]:
        vectors = l2_normalize(vectors)
    return [[v.tolist()] for v in vectors]  # the pipeline's (1, dim) per image

"""image-classification: ViT- and ConvNeXt-style classifiers over images, in transformers' pipeline shapes.

An image comes as the raw request body (``image/*``) or as base64 in ``{"inputs": ...}``; each is
checked, decoded and preprocessed by functions/images.py with the bundle's own processor steps.
Each image is answered with up to ``top_k`` (default 5, as the pipeline) ``{label, score}``, best
first: a single image with one list, a list of images with one list each.
"""

from __future__ import annotations

import numpy as np

from ..images import read_pixels
from ..settings import ImageLimits
from ..tasknames import IMAGE_CLASSIFICATION
from . import IMAGE, Prepared, register
from .classification import FUNCTIONS, label_scores
from .params import check_known, get_choice, get_int

DEFAULT_TOP_K = 5  # transformers' image-classification pipeline default

# A synthetic 8x8 RGB gradient PNG (made with Pillow from numpy's mgrid), base64: the sample request.
SAMPLE_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAG0lEQVR42mNkYGBQYBDARCwMCgIMDFjQ4JQAAIWuBc54Zaa9AAAAAElFTkSuQmCC"


def _params(raw: dict) -> dict:
    check_known(raw, ("top_k", "function_to_apply"))
    return {
        # More than the model has labels answers every label (the pipeline clips it the same way).
        "top_k": get_int(raw, "top_k", DEFAULT_TOP_K, lo=1, hi=100_000),
        "function_to_apply": get_choice(raw, "function_to_apply", None, FUNCTIONS),
    }


def _preprocess(model, items: list, params: dict) -> Prepared:
    steps, limits = model.manifest.runtime.image, ImageLimits.resolve()
    name = model.manifest.inputs[0]
    size = model.limits.max_batch
    # Decoded one at a time: only the small preprocessed rows are kept, never many full-size images.
    rows = [read_pixels(item, steps, limits) for item in items]
    feeds = [{name: np.stack(rows[i:i + size])} for i in range(0, len(rows), size)]
    return Prepared(feeds=feeds, tokens=0)


@register(IMAGE_CLASSIFICATION, inputs=IMAGE, parse_params=_params, preprocess=_preprocess,
          synonyms=("image-classifier", "vision-classification"),
          params_schema={"top_k": {"type": "integer", "minimum": 1, "default": DEFAULT_TOP_K},
                         "function_to_apply": {"enum": list(FUNCTIONS)}},
          sample={"inputs": SAMPLE_PNG, "parameters": {"top_k": 3}})
def postprocess(model, prepared: Prepared, outputs: list[dict], params: dict) -> list:
    scores, labels = label_scores(model, outputs, params["function_to_apply"])
    top_k = params["top_k"]
    results = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:top_k]  # ties keep label order, as the pipeline's sort
        results.append([{"label": labels[i], "score": float(row[i])} for i in order])
    return results

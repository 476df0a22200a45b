"""zero-shot-image-classification: CLIP-style models score images against labels the caller names.

``{"inputs": <base64 image or list>, "parameters": {"candidate_labels": [...], "hypothesis_template":
"This is a photo of {}."}}``; each label becomes a sentence for the text tower, each image goes
through functions/images.py; the text tower embeds the labels once per request, the image tower the
images, and the image x label logits are the embeddings' dot products times the bundle's
``logit_scale``, as CLIPModel.forward computes them (a one-graph bundle exported before the towers
were split computes them in its graph). Each image is answered, as transformers' pipeline answers,
with every label and its softmax score, best first (a single image with one list, a list of images
with one list each).
"""

from __future__ import annotations

import numpy as np

from ..clip import LOGITS_PER_IMAGE
from ..errors import BadRequest
from ..tasknames import ZERO_SHOT_IMAGE_CLASSIFICATION
from . import EMBEDDINGS_ROUTE, IMAGE, Prepared, register
from .classification import softmax
from .clip import CLIP_EMBEDDER, IMAGE_EMBEDS, TEXT_EMBEDS, image_feeds, image_rows
from .image_classification import SAMPLE_PNG
from .params import MISSING, check_known, get_str_list

DEFAULT_TEMPLATE = "This is a photo of {}."  # the pipeline's default
MAX_LABELS = 64


def _params(raw: dict) -> dict:
    check_known(raw, ("candidate_labels", "hypothesis_template"))
    labels = get_str_list(raw, "candidate_labels", MISSING)
    if labels is MISSING or not labels:
        raise BadRequest("parameters.candidate_labels is required: a non-empty list of label strings")
    if len(labels) > MAX_LABELS:
        raise BadRequest(f"parameters.candidate_labels has {len(labels)} labels; at most {MAX_LABELS}")
    if not all(label.strip() for label in labels):
        raise BadRequest("parameters.candidate_labels has an empty label")
    template = raw.get("hypothesis_template", DEFAULT_TEMPLATE)
    if not isinstance(template, str) or "{}" not in template:
        raise BadRequest("parameters.hypothesis_template must be a string with {} where the label goes")
    return {"candidate_labels": labels, "hypothesis_template": template}


def _preprocess(model, items: list, params: dict) -> Prepared:
    # str.replace, not format: a label or template with other braces stays literal text.
    texts = [params["hypothesis_template"].replace("{}", label, 1) for label in params["candidate_labels"]]
    encodings = model.encode(texts)
    text_feed = model.feed(encodings)
    feeds = image_feeds(model, image_rows(model, items))
    # The labels run once, as the first feed; a one-graph bundle takes them with every image chunk instead.
    feeds = [text_feed, *feeds] if model.logit_scale is not None else [{**f, **text_feed} for f in feeds]
    # No encodings on the Prepared: the feeds hold images and labels, not one row per encoding, so a batch
    # scheduler must run them as they are (functions/batching.py) rather than re-feed rows from encodings.
    return Prepared(feeds=feeds, tokens=sum(len(e.ids) for e in encodings))


def logits_per_image(text_embeds: np.ndarray, image_embeds: np.ndarray, logit_scale: float) -> np.ndarray:
    """(images, labels) logits as CLIPModel.forward computes them from the normalized embeddings:
    logits_per_text = text @ image.T * scale, transposed (float32 throughout)."""
    scale = np.float32(logit_scale)
    return (np.matmul(text_embeds.astype(np.float32), image_embeds.astype(np.float32).T) * scale).T


@register(ZERO_SHOT_IMAGE_CLASSIFICATION, inputs=IMAGE, parse_params=_params, preprocess=_preprocess,
          synonyms=("zero-shot-image", "clip"), embedder=CLIP_EMBEDDER,
          openai_routes=lambda runtime: (EMBEDDINGS_ROUTE,),  # texts and images, functions/tasks/clip.py
          params_schema={"candidate_labels": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                              "maxItems": MAX_LABELS},
                         "hypothesis_template": {"type": "string", "default": DEFAULT_TEMPLATE}},
          sample={"inputs": SAMPLE_PNG, "parameters": {"candidate_labels": ["a gradient", "a cat", "a car"]}})
def postprocess(model, prepared: Prepared, outputs: list[dict], params: dict) -> list:
    if model.logit_scale is None:  # a one-graph bundle: its graph's logits
        logits = np.concatenate([out[LOGITS_PER_IMAGE] for out in outputs]).astype(np.float32)
    else:
        images = np.concatenate([out[IMAGE_EMBEDS] for out in outputs[1:]])
        logits = logits_per_image(outputs[0][TEXT_EMBEDS], images, model.logit_scale)
    labels = params["candidate_labels"]
    results = []
    for row in softmax(logits):
        order = np.argsort(-row, kind="stable")
        results.append([{"score": float(row[i]), "label": labels[i]} for i in order])
    return results

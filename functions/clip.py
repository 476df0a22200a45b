"""A CLIP-style bundle made ready to serve: one session per tower, and the tokenizer.

Bundles hold ``text_model.onnx`` (input_ids, attention_mask -> text_embeds [, text_features]) and
``vision_model.onnx`` (pixel_values -> image_embeds [, image_features]), cut at export from the
gated two-tower graph (export/vision.py). :meth:`ClipModel.run` runs only the towers whose inputs a
feed holds: a text embedding costs the text tower alone, an image embedding the image tower alone,
and zero-shot classification computes its logits from both towers' embeddings with the manifest's
``logit_scale`` (functions/tasks/zero_shot_image.py), as CLIPModel.forward does.

One-graph CLIP bundles (``model.onnx`` with both towers and the logits, exported before the split)
keep serving: a feed that lacks one tower's inputs gets a blank partner input (one empty text, one
black image) and is answered only the fed towers' outputs, plus the graph's own logits when both
were fed. They pay for the unused tower (bench/clip_towers.md); re-exporting removes that.

Both towers' sessions open at load rather than the image tower's on the first image. Measured at
ViT-B/32 size (bench/clip_towers.md): lazy would start 1.2 s sooner and hold 380 MB less until the first
image, which would then wait 1.1 s more inside its request, outside Lambda's init-phase CPU boost (and
zero-shot needs both towers on every request); the memory saved cannot be given back, since the
function is sized for both towers (infra/build/memory.py counts every file of the bundle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding

from .manifest import MODEL_FILE, TEXT_MODEL_FILE, TOKENIZER_FILE, VISION_MODEL_FILE, Manifest, read_manifest
from .model import _TOKEN_INPUTS, LoadedModel
from .tasknames import IMAGE_FEATURE_EXTRACTION, ZERO_SHOT_IMAGE_CLASSIFICATION

CLIP_TASKS = (ZERO_SHOT_IMAGE_CLASSIFICATION, IMAGE_FEATURE_EXTRACTION)  # the tasks served by ClipModel
LOGITS_PER_IMAGE = "logits_per_image"
_TEXT, _VISION = "text", "vision"


def _tower_of(output: str) -> str | None:
    """Which tower answers an output (Optimum's CLIP names); None for the logits, which need both."""
    return _TEXT if output.startswith("text_") else _VISION if output.startswith("image_") else None


class ClipModel:
    """The towers of one CLIP bundle, loaded once: ``encode``/``feed`` tokenize as LoadedModel does,
    ``run(feed)`` runs the towers the feed has inputs for. ``logit_scale`` is None for a one-graph
    bundle (its graph answers ``logits_per_image`` itself when fed both towers)."""

    def __init__(self, bundle_dir: str | Path, *, threads: int, max_batch: int, max_tokens: int | None,
                 truncate: bool, manifest: Manifest | None = None, options: ort.SessionOptions | None = None,
                 provider: str = "cpu", max_rows: int | None = None):
        root = Path(bundle_dir)
        self.bundle_dir = root
        self.manifest = manifest = manifest or read_manifest(root)
        self.separate_towers = TEXT_MODEL_FILE in manifest.files
        common = dict(threads=threads, max_batch=max_batch, max_tokens=max_tokens, truncate=truncate,
                      options=options, provider=provider, max_rows=max_rows)
        self.pixels = next((n for n in manifest.inputs if n not in _TOKEN_INPUTS), "pixel_values")
        text_inputs = tuple(n for n in manifest.inputs if n != self.pixels)
        if self.separate_towers:
            def tower(graph: str, kind: str, inputs: tuple[str, ...]) -> LoadedModel:
                files = {k: v for k, v in manifest.files.items() if kind == _TEXT or k != TOKENIZER_FILE}
                view = replace(manifest, inputs=inputs, files=files,  # only the text tower loads the tokenizer
                               outputs=tuple(o for o in manifest.outputs if _tower_of(o) == kind))
                return LoadedModel(root, manifest=view, graph=graph, **common)

            self.towers = {_TEXT: tower(TEXT_MODEL_FILE, _TEXT, text_inputs),
                           _VISION: tower(VISION_MODEL_FILE, _VISION, (self.pixels,))}
            self._text = self.towers[_TEXT]
        else:
            self._text = LoadedModel(root, manifest=manifest, graph=MODEL_FILE, **common)
            self.towers = {_TEXT: self._text}
            self._blank = {_TEXT: self._text.feed([self._text.tokenizer.encode("")]),
                           _VISION: {self.pixels: blank_pixels(manifest)}}
        self._inputs = {_TEXT: text_inputs, _VISION: (self.pixels,)}
        self.limits = self._text.limits
        self.provider = self._text.provider
        self.tokenizer = self._text.tokenizer
        self.logit_scale = manifest.runtime.logit_scale or None

    # -- per request ---------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Tokenize with the configured limit (LoadedModel.encode)."""
        return self._text.encode(texts)

    def feed(self, encodings: Sequence[Encoding]) -> dict[str, np.ndarray]:
        """The text tower's token inputs for a batch (LoadedModel.feed)."""
        return self._text.feed(encodings)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs of the towers whose inputs ``feed`` holds (text_* and image_*); a one-graph bundle
        also answers logits_per_image when fed both. RuntimeError (500) on non-finite outputs."""
        fed = [kind for kind, names in self._inputs.items() if any(n in feed for n in names)]
        if self.separate_towers:
            outputs: dict[str, np.ndarray] = {}
            for kind in fed:
                outputs.update(self.towers[kind].run({n: feed[n] for n in self._inputs[kind]}))
            return outputs
        partner = {k: v for kind, blank in self._blank.items() if kind not in fed for k, v in blank.items()}
        outputs = self._text.run({**partner, **feed})
        return {name: value for name, value in outputs.items()
                if (_tower_of(name) in fed) or (_tower_of(name) is None and len(fed) == 2)}

    def output_width(self, name: str) -> int | None:
        """The last dimension of an output when its graph declares it (None when symbolic)."""
        for tower in self.towers.values():
            for output in tower.session.get_outputs():
                if output.name == name:
                    width = output.shape[-1]
                    return width if isinstance(width, int) else None
        return None


def blank_pixels(manifest: Manifest) -> np.ndarray:
    """One black image as the bundle's preprocessing shapes it: a one-graph bundle's image input when only texts run."""
    from PIL import Image

    from .images import pixel_values

    return pixel_values(Image.new("RGB", (1, 1)), manifest.runtime.image)[None]


__all__ = ["CLIP_TASKS", "LOGITS_PER_IMAGE", "ClipModel", "blank_pixels"]

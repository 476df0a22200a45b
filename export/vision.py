"""Image models at export: the image processor's steps, the built-in images, and the parity checks.

The counterpart of export/samples.py and export/parity.py for tasks whose inputs are images (the
task registry says which). Samples are synthetic images generated here (gradients, shapes, noise,
odd sizes and modes), never fetched; each is encoded to PNG or JPEG bytes and goes through the
runtime's own decoding and preprocessing (functions/images.py), so the gate sees exactly the
pixel values the function will feed. Classification metrics are text-classification's (top-1
``agreement``, gated; ``max_prob_gap``, the largest probability drift, recorded; ``accuracy`` with
labelled eval images). CLIP image-feature-extraction bundles are gated by cosine (``mean_cosine``,
``min_cosine``) of their image and text embeddings against PyTorch's get_image_features and
get_text_features, over the sample images and ZERO_SHOT_TEXTS.

CLIP bundles are gated as one two-tower graph (Optimum's export), then cut into one graph per tower
(:func:`tower_files`): a text embedding then costs the text tower only (bench/clip_towers.md). Each
tower keeps exactly its nodes of the gated graph, and :func:`gate_towers` scores the towers again,
with the manifest's ``logit_scale``, as they will be served: the manifest's parity is theirs.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from functions.images import ImageInput, read_pixels
from functions.inputs import IMAGE
from functions.manifest import TEXT_MODEL_FILE, VISION_MODEL_FILE, ImageProcessing, RuntimeConfig
from functions.settings import ImageLimits
from functions.tasknames import (IMAGE_CLASSIFICATION, IMAGE_FEATURE_EXTRACTION, TEXT_CLASSIFICATION,
                                 ZERO_SHOT_IMAGE_CLASSIFICATION)

from .errors import ConversionError, ExportError, ParityGateError, SourceError

GATED: dict[str, tuple[str, ...]] = {IMAGE_CLASSIFICATION: ("agreement",), ZERO_SHOT_IMAGE_CLASSIFICATION: ("agreement",),
                                     IMAGE_FEATURE_EXTRACTION: ("mean_cosine", "min_cosine")}
# Zero-shot parity scores every sample image against these sentences (the text tower's inputs).
ZERO_SHOT_TEXTS = ("This is a photo of a cat.", "This is a photo of a dog.", "This is a photo of a car.",
                   "This is a diagram of shapes.", "This is a photo of a landscape.", "This is noise.")
PREPROCESSOR = "preprocessor_config.json"
# Processors whose steps image_processing() reproduces (tests compare the pixel values); the fast
# (torchvision) variants are served with their slow twin's PIL arithmetic.
SUPPORTED = tuple(f"{name}ImageProcessor{fast}" for name in ("ViT", "ConvNext", "DeiT", "Bit", "CLIP")
                  for fast in ("", "Fast"))
_LIMITS = ImageLimits(max_bytes=1 << 30, max_pixels=1 << 30)  # the samples are ours; limits are for callers


def has_text_tower(task: str) -> bool:
    """Whether an image task also tokenizes text (CLIP's labels), so its bundle ships tokenizer.json too."""
    from functions.clip import CLIP_TASKS

    return task in CLIP_TASKS


def is_image_task(task: str) -> bool:
    """Whether ``task`` takes images (the registry's input kind)."""
    from functions.tasks import get_task

    return get_task(task).inputs == IMAGE


# -- the image processor --------------------------------------------------------------------------------

def image_processing(root: Path) -> ImageProcessing:
    """The steps of the checkpoint's image processor (preprocessor_config.json), as the runtime applies them."""
    if not (root / PREPROCESSOR).is_file():
        raise SourceError(f"{root} has no {PREPROCESSOR}", hint="an image model needs its image processor config")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoImageProcessor

    from .convert import quiet

    try:
        with quiet():
            processor = AutoImageProcessor.from_pretrained(str(root), use_fast=False, local_files_only=True)
    except Exception as exc:
        raise SourceError(f"{root}/{PREPROCESSOR} cannot be loaded: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    name = type(processor).__name__
    if name not in SUPPORTED:
        raise ExportError(f"{root}: image processor {name} is not supported yet", hint="supported: " + ", ".join(SUPPORTED))
    steps: dict[str, Any] = {"processor": name, "resample": int(getattr(processor, "resample", 2))}
    size = dict(processor.size or {}) if processor.do_resize else {}
    if "ConvNext" in name and size:
        # ConvNeXt: below 384 the shorter edge goes to size / crop_pct, then a center crop to size.
        edge = int(size["shortest_edge"])
        if edge < 384:
            steps.update(shortest_edge=int(edge / processor.crop_pct), crop_height=edge, crop_width=edge)
        else:
            steps.update(height=edge, width=edge)
    elif size:
        if set(size) == {"height", "width"}:
            steps.update(height=int(size["height"]), width=int(size["width"]))
        elif set(size) == {"shortest_edge"}:
            steps.update(shortest_edge=int(size["shortest_edge"]))
        else:
            raise ExportError(f"{root}: image size {size} is not supported",
                              hint="expected height and width, or shortest_edge")
    if getattr(processor, "do_center_crop", False):
        crop = dict(processor.crop_size)
        steps.update(crop_height=int(crop["height"]), crop_width=int(crop["width"]))
        # The runtime crops without padding: the resized image must cover the crop.
        cover = (steps.get("height") or steps.get("shortest_edge", 0), steps.get("width") or steps.get("shortest_edge", 0))
        if steps["crop_height"] > cover[0] or steps["crop_width"] > cover[1]:
            raise ExportError(f"{root}: center crop {crop} is larger than the resized image", hint="not supported")
    if processor.do_rescale:
        steps["rescale_factor"] = float(processor.rescale_factor)
    if processor.do_normalize:
        mean, std = processor.image_mean, processor.image_std
        mean = [float(mean)] * 3 if isinstance(mean, (int, float)) else [float(v) for v in mean]
        std = [float(std)] * 3 if isinstance(std, (int, float)) else [float(v) for v in std]
        steps.update(mean=tuple(mean), std=tuple(std))
    return ImageProcessing(**steps)


def copy_preprocessor(root: Path, out: Path) -> Path:
    shutil.copyfile(root / PREPROCESSOR, out)
    return out


# -- samples --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageSample:
    name: str
    data: bytes  # encoded PNG/JPEG bytes, decoded by the runtime's code
    label: str | None = None  # expected label, for accuracy
    kind: str = "image"  # the class it is reported under (built-in synthetic images, or the user's)


def _encode(array: np.ndarray | Any, fmt: str = "PNG", mode: str | None = None) -> bytes:
    from PIL import Image

    image = array if isinstance(array, Image.Image) else Image.fromarray(np.asarray(array, dtype=np.uint8))
    if mode is not None:
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return out.getvalue()


def _shapes(width: int, height: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.1, height * 0.1, width * 0.5, height * 0.5), fill=(230, 200, 40))
    draw.rectangle((width * 0.55, height * 0.2, width * 0.9, height * 0.6), fill=(200, 40, 60))
    draw.polygon([(width * 0.2, height * 0.9), (width * 0.5, height * 0.55), (width * 0.8, height * 0.9)],
                 fill=(30, 160, 70))
    return image


def builtin_samples() -> list[ImageSample]:
    """Synthetic images chosen for coverage: smooth and sharp content, noise, flat colours, odd
    sizes and aspect ratios, and every mode the runtime converts (RGBA, L, P, JPEG's YCbCr)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320] / np.array([239.0, 319.0])[:, None, None]
    gradient = np.stack([x * 255, y * 255, (1 - x) * 255], -1)
    wide = np.stack([np.linspace(0, 255, 500)[None, :].repeat(200, 0)] * 3, -1) * np.array([1.0, 0.5, 0.2])
    board = ((np.indices((256, 256)) // 16).sum(0) % 2 * 255)[..., None].repeat(3, -1)
    smooth = np.asarray(_encode_array_resized(rng.integers(0, 256, (8, 8, 3)), (400, 300)))
    stripes = (np.sin(np.arange(200) / 6.0)[None, :] * 127 + 128).repeat(120, 0)
    rgba = np.concatenate([gradient[:96, :128], (np.arange(128)[None, :] * 2).repeat(96, 0)[..., None]], -1)
    return [
        ImageSample("gradient", _encode(gradient)),
        ImageSample("gradient-portrait", _encode(gradient.transpose(1, 0, 2))),
        ImageSample("gradient-wide", _encode(wide)),
        ImageSample("checkerboard", _encode(board)),
        ImageSample("shapes", _encode(_shapes(300, 300))),
        ImageSample("shapes-jpeg", _encode(_shapes(320, 200), "JPEG")),
        ImageSample("shapes-large", _encode(_shapes(1024, 768), "JPEG")),
        ImageSample("noise", _encode(rng.integers(0, 256, (224, 224, 3)))),
        ImageSample("smooth-noise", _encode(smooth)),
        ImageSample("black", _encode(np.zeros((64, 64, 3)))),
        ImageSample("white", _encode(np.full((64, 64, 3), 255))),
        ImageSample("tiny", _encode(np.full((5, 7, 3), (128, 64, 200)))),
        ImageSample("rgba", _encode(rgba)),
        ImageSample("grayscale-stripes", _encode(np.asarray(stripes, dtype=np.uint8), mode="L")),
        ImageSample("palette", _encode(gradient, mode="P")),
    ]


def _encode_array_resized(array: np.ndarray, size: tuple[int, int]):
    from PIL import Image

    return Image.fromarray(np.asarray(array, dtype=np.uint8)).resize(size, resample=Image.Resampling.BICUBIC)


def load_eval_file(path: str | Path) -> list[ImageSample]:
    """JSONL: {"image": path (relative to the file), "label": optional expected label} per line."""
    from .samples import read_jsonl

    path = Path(path)
    samples = []
    for number, row in read_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise ExportError(f"{path}:{number}: needs a string field 'image' (a file path)")
        image = (path.parent / row["image"]).expanduser()
        try:
            data = image.read_bytes()
        except OSError as exc:
            raise ExportError(f"{path}:{number}: cannot read {image}: {exc.strerror or exc}") from None
        label = row.get("label")
        samples.append(ImageSample(row["image"], data, None if label is None else str(label)))
    if not samples:
        raise ExportError(f"eval file {path} holds no samples")
    return samples


def gather_samples(task: str, eval_file: str | Path | None = None) -> list[ImageSample]:
    samples = builtin_samples()
    if eval_file is not None:
        samples += load_eval_file(eval_file)
    return samples


# -- parity ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Encoded:
    feeds: dict[str, np.ndarray]  # {"pixel_values": (1, 3, H, W)}


def encode(samples: list[ImageSample], steps: ImageProcessing, tokenizer=None, pad_token_id: int = 0,
           input_name: str = "pixel_values") -> list[Encoded]:
    """Each sample through the runtime's decoding and preprocessing; with a ``tokenizer`` (two-tower
    models) every sample also carries ZERO_SHOT_TEXTS, padded as the runtime pads them."""
    from functions.errors import RequestError

    text: dict[str, np.ndarray] = {}
    if tokenizer is not None:
        encodings = tokenizer.encode_batch(list(ZERO_SHOT_TEXTS))
        width = max(len(e.ids) for e in encodings)
        text = {"input_ids": np.full((len(encodings), width), pad_token_id, dtype=np.int64),
                "attention_mask": np.zeros((len(encodings), width), dtype=np.int64)}
        for row, e in enumerate(encodings):
            text["input_ids"][row, :len(e.ids)] = e.ids
            text["attention_mask"][row, :len(e.ids)] = e.attention_mask
    out = []
    for sample in samples:
        try:
            row = read_pixels(ImageInput(sample.data, sample.name), steps, _LIMITS)
        except RequestError as exc:
            raise ExportError(f"sample image {exc.message}") from None
        out.append(Encoded(feeds={input_name: row[None], **text}))
    return out


def run_torch(source_dir: Path, task: str, encoded: list[Encoded]) -> list[list[np.ndarray]]:
    """The original model's logits per sample."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    from .convert import quiet

    two_towers = has_text_tower(task)
    cls = transformers.AutoModel if two_towers else transformers.AutoModelForImageClassification
    with quiet():
        model = cls.from_pretrained(str(source_dir), local_files_only=True).eval()
    results = []
    with torch.inference_mode():
        for e in encoded:
            out = model(**{k: torch.from_numpy(v) for k, v in e.feeds.items()})
            if task == IMAGE_FEATURE_EXTRACTION:  # and the unnormalized projections export/convert.py exposes
                text = model.get_text_features(input_ids=torch.from_numpy(e.feeds["input_ids"]),
                                               attention_mask=torch.from_numpy(e.feeds["attention_mask"]))
                image = model.get_image_features(pixel_values=torch.from_numpy(e.feeds["pixel_values"]))
                results.append([t.float().numpy() for t in (out.logits_per_image, out.logits_per_text,
                                                            out.text_embeds, out.image_embeds, text, image)])
            elif two_towers:  # the ONNX graph's outputs, in its order
                results.append([t.float().numpy() for t in (out.logits_per_image, out.logits_per_text,
                                                            out.text_embeds, out.image_embeds)])
            else:
                results.append([out.logits.float().numpy()])
    return results


def compare(task: str, runtime: RuntimeConfig, samples: list[ImageSample], encoded: list[Encoded],
            reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict[str, float]:
    """Label agreement and probability drift (over ZERO_SHOT_TEXTS for two-tower models, whose first
    output is the image x text logits): an image classifier's answers are text-classification's."""
    from functions.tasks import parity_module

    if task == IMAGE_FEATURE_EXTRACTION:
        return _embedding_cosines(reference, candidate)
    columns = parity_module(TEXT_CLASSIFICATION).parity_metrics(runtime, samples, [None] * len(encoded),
                                                                 reference, candidate)
    metrics = {"agreement": float(np.mean(columns["agreement"])), "max_prob_gap": float(np.max(columns["prob_gap"]))}
    correct = columns["correct"][~np.isnan(columns["correct"])]
    if correct.size:
        metrics["accuracy"] = float(np.mean(correct))
    return metrics


def _embedding_cosines(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict[str, float]:
    """Cosine of every image's embedding (output 5, get_image_features) and of each ZERO_SHOT_TEXTS embedding
    (output 4, get_text_features, once: every sample carries the same texts) to PyTorch's."""
    from functions.tasks.parity import cosine_rows

    images = cosine_rows(np.concatenate([r[5] for r in reference]), np.concatenate([c[5] for c in candidate]))
    texts = cosine_rows(reference[0][4], candidate[0][4])
    every = np.concatenate([images, texts])
    return {"mean_cosine": float(every.mean()), "min_cosine": float(every.min()),
            "image_min_cosine": float(images.min()), "text_min_cosine": float(texts.min())}


# -- CLIP: one graph per tower ---------------------------------------------------------------------------

PIXELS = "pixel_values"  # the vision tower's input; every other input of a two-tower graph is the text tower's
# The gated graph's outputs each tower keeps (the image x text logits need both: the runtime computes
# them from the embeddings and the manifest's logit_scale, as CLIPModel.forward does).
TOWER_OUTPUTS = {TEXT_MODEL_FILE: ("text_embeds", "text_features"), VISION_MODEL_FILE: ("image_embeds", "image_features")}


def tower_io(inputs: tuple[str, ...], outputs: tuple[str, ...]) -> dict[str, tuple[list[str], list[str]]]:
    """(inputs, outputs) of each tower's graph (TEXT_MODEL_FILE, VISION_MODEL_FILE), from the two-tower graph's."""
    return {TEXT_MODEL_FILE: ([n for n in inputs if n != PIXELS], [n for n in outputs if n in TOWER_OUTPUTS[TEXT_MODEL_FILE]]),
            VISION_MODEL_FILE: ([PIXELS], [n for n in outputs if n in TOWER_OUTPUTS[VISION_MODEL_FILE]])}


def tower_files(model_path: Path, workdir: Path) -> tuple[dict[str, Path], tuple[tuple[str, ...], tuple[str, ...], int]]:
    """The two-tower graph cut into TEXT_MODEL_FILE and VISION_MODEL_FILE (onnx.utils.Extractor keeps the
    nodes each tower's outputs depend on, quantized ones included); returns the files and the bundle's
    (inputs, outputs, opset) for the manifest: both towers' together."""
    import onnx

    from .convert import graph_io

    inputs, outputs, opset = graph_io(model_path)
    if PIXELS not in inputs or not all(n in outputs for names in TOWER_OUTPUTS.values() for n in names[:1]):
        raise ConversionError(f"{model_path.name} is not a two-tower graph (inputs {inputs}, outputs {outputs})",
                              hint="not a CLIP-style model")
    workdir.mkdir(parents=True, exist_ok=True)
    extractor = onnx.utils.Extractor(onnx.load(str(model_path)))
    files, names = {}, {"inputs": [], "outputs": []}
    for name, (tower_inputs, tower_outputs) in tower_io(inputs, outputs).items():
        onnx.save_model(extractor.extract_model(tower_inputs, tower_outputs), str(workdir / name))
        files[name] = workdir / name
        names["inputs"] += tower_inputs
        names["outputs"] += tower_outputs
    return files, (tuple(names["inputs"]), tuple(names["outputs"]), opset)


def read_logit_scale(source_dir: Path) -> float:
    """exp(logit_scale) of the checkpoint, as CLIPModel.forward (and so the pipeline) scales its logits."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    from .convert import quiet

    with quiet():
        model = transformers.AutoModel.from_pretrained(str(source_dir), local_files_only=True)
    with torch.inference_mode():
        return float(model.logit_scale.exp())


def tower_outputs(model_path: Path, files: dict[str, Path], encoded: list[Encoded], logit_scale: float,
                  threads: int, provider: str) -> list[list[np.ndarray]]:
    """Each sample's outputs as the towers in ``files`` answer them, in the two-tower graph's output order
    (its logits computed from the embeddings and ``logit_scale``, as the runtime computes them): what
    :func:`compare` scores."""
    from functions.tasks.zero_shot_image import logits_per_image

    from .convert import graph_io
    from .measure import session

    names = graph_io(model_path)[1]
    towers = [session(path, threads, provider) for path in files.values()]
    results = []
    for e in encoded:
        got = {}
        for tower in towers:
            feed = {i.name: e.feeds[i.name] for i in tower.get_inputs()}
            got.update(zip([o.name for o in tower.get_outputs()], tower.run(None, feed)))
        got["logits_per_image"] = logits_per_image(got["text_embeds"], got["image_embeds"], logit_scale)
        got["logits_per_text"] = got["logits_per_image"].T
        results.append([got[n] for n in names])
    return results


def gate_towers(model_path: Path, workdir: Path, evaluator, threads: int, *, must_pass: bool):
    """The chosen two-tower graph cut into its towers and scored again as they will be served (ONNX
    Runtime's session-level fusions see each tower alone, which can move a statically quantized
    graph's answers): (files, (inputs, outputs, opset), logit_scale, metrics). ParityGateError when
    ``must_pass`` and the towers fail the gate the two-tower graph passed."""
    files, graph = tower_files(model_path, workdir)
    scale = read_logit_scale(evaluator.src.path)
    outputs = tower_outputs(model_path, files, evaluator.encoded, scale, threads, evaluator.provider)
    metrics = {k: round(v, 6) for k, v in evaluator.metrics(outputs).items()}  # as the candidate table rounds
    if must_pass and not evaluator.passes(metrics):
        values = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        raise ParityGateError(f"parity gate failed: {model_path.stem} passed as one graph but its towers, as served, "
                              f"do not ({values}); nothing written", hint="choose another candidate: --strategy fixed:NAME")
    return files, graph, scale, metrics


def gate(task: str, metrics: dict[str, float], thresholds: dict[str, float]) -> bool:
    return all(metrics.get(m, float("-inf")) >= thresholds[m] for m in GATED[task] if m in thresholds)


def gated(task: str) -> tuple[str, ...]:
    return GATED[task]


def gate_thresholds(task: str, thresholds: dict[str, Any]) -> dict[str, float]:
    return {m: float(thresholds[m]) for m in GATED[task] if m in thresholds}


__all__ = ["GATED", "gated", "SUPPORTED", "Encoded", "ImageSample", "builtin_samples", "compare", "copy_preprocessor",
           "encode", "gate", "gate_thresholds", "gather_samples", "gate_towers", "image_processing", "is_image_task",
           "load_eval_file", "read_logit_scale", "run_torch", "tower_files", "tower_io", "tower_outputs"]

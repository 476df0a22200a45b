"""The loaded model: one ONNX Runtime session and one tokenizer per execution environment.

Everything here is built once at cold start; per request only :meth:`LoadedModel.encode`,
:meth:`LoadedModel.feed` and :meth:`LoadedModel.run` are called.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from .errors import BundleError, ConfigError, Unprocessable
from .manifest import MODEL_FILE, TOKENIZER_FILE, Manifest, read_manifest
from .providers import GPU_PROVIDERS, choose_provider, session_providers
from .sessions import session_options

_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what feed() makes from encodings
_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}
_add_reduce = np.add.reduce

# No tokenizer modelfn serves spends more than this many characters of ordinary text on one token
# (English averages ~4-5). A text is cut to max_tokens * this before tokenizing: the cut keeps
# more than max_tokens tokens, so truncation answers exactly as on the whole text, and a
# multi-megabyte text costs a slice instead of seconds of tokenizing. Only text averaging more
# characters per token than this (long whitespace runs, words of hundreds of letters) is affected.
MAX_CHARS_PER_TOKEN = 32


def sequence_outputs(session) -> list[bool]:
    """For each graph output, whether its axis 1 is the token axis (a symbolic dimension, not a fixed size)."""
    return [len(o.shape) >= 2 and not isinstance(o.shape[1], int) for o in session.get_outputs()]


def run_rows(session, output_names: list[str], feed: dict[str, np.ndarray], token_axis: list[bool]) -> list[np.ndarray]:
    """Run a padded batch one row per call, each row cut to its own length, and re-pad the outputs.

    For graphs whose answer for a row depends on the other rows (dynamic int8 quantization scales
    activations over the whole batch, padding included): each row then gets exactly its batch-1 answer.
    """
    count, width = next(iter(feed.values())).shape[:2]
    mask = feed.get("attention_mask")  # the runtime pads on the right: a row's length is its mask's sum
    lengths = mask.sum(axis=1) if mask is not None else np.full(count, width)
    rows = []
    for i, length in enumerate(lengths.tolist()):
        length = max(int(length), 1)
        rows.append(session.run(output_names, {n: v[i:i + 1, :length] for n, v in feed.items()}))
    outputs = []
    for j, is_tokens in enumerate(token_axis):
        parts = [r[j] for r in rows]
        if is_tokens:
            padded = np.zeros((len(parts), width) + parts[0].shape[2:], dtype=parts[0].dtype)
            for i, part in enumerate(parts):
                padded[i, :part.shape[1]] = part[0]
            parts = [padded]
        outputs.append(np.concatenate(parts))
    return outputs


def check_finite(outputs: Sequence[np.ndarray]) -> None:
    """RuntimeError (a server fault, 500) if any float output holds NaN or inf.

    One reduction per output: NaN/inf propagate through the sum. Answering them would put null
    (orjson) or invalid JSON on the wire instead of reporting the model fault. The ufunc's reduce is
    called directly: ndarray.sum's Python wrapper costs as much as the sum itself at batch 1.
    """
    for array in outputs:
        if array.dtype.kind == "f" and not math.isfinite(_add_reduce(array, axis=None)):
            raise RuntimeError("the model produced non-finite outputs")


@dataclass(frozen=True)
class Limits:
    max_batch: int
    max_tokens: int
    truncate: bool

    @property
    def max_chars(self) -> int:
        """Characters of one text read before tokenizing (see MAX_CHARS_PER_TOKEN)."""
        return self.max_tokens * MAX_CHARS_PER_TOKEN


class LoadedModel:
    """A bundle made ready to serve: manifest, session, tokenizer (None for image
    models), request limits.

    ``provider`` is auto, tensorrt, cuda or cpu (the default, and Lambda's); ``max_rows`` is the most
    rows one run may carry (default ``max_batch``; the GPU server's batches may be larger), which
    TensorRT's optimization profile must cover. ``self.provider`` is the provider the session got.
    ``graph`` is the bundle's file the session opens (a CLIP tower's, functions/clip.py), with the
    ``manifest`` naming that graph's inputs and outputs.
    """

    def __init__(self, bundle_dir: str | Path, *, threads: int, max_batch: int, max_tokens: int | None,
                 truncate: bool, manifest: Manifest | None = None,
                 options: ort.SessionOptions | None = None, provider: str = "cpu", max_rows: int | None = None,
                 graph: str = MODEL_FILE):
        root = Path(bundle_dir)
        self.bundle_dir = root
        self.manifest = manifest or read_manifest(root)
        # Image models take pixel values the task computes (functions/images.py); a tokenizer only
        # when they also have a text tower (CLIP).
        text = self.manifest.runtime.image is None or TOKENIZER_FILE in self.manifest.files
        for name in (graph, TOKENIZER_FILE) if text else (graph,):
            if not (root / name).is_file():
                raise BundleError(f"{root} is not a model bundle: {name} is missing",
                                  hint="re-export or re-fetch the bundle")
        runtime = self.manifest.runtime
        limit = min(max_tokens, runtime.max_length) if max_tokens else runtime.max_length
        self.limits = Limits(max_batch=max_batch, max_tokens=limit, truncate=truncate)
        self._max_chars = self.limits.max_chars
        chosen = choose_provider(provider)
        providers = session_providers(chosen, inputs=list(self.manifest.inputs),
                                      max_rows=max(max_rows or max_batch, max_batch), max_tokens=limit)
        self.session = ort.InferenceSession(str(root / graph), sess_options=options or session_options(threads),
                                            providers=providers)
        self.provider: str = self.session.get_providers()[0]
        if chosen in GPU_PROVIDERS and self.provider not in GPU_PROVIDERS:
            # onnxruntime falls back to the CPU on its own: a GPU endpoint would serve, slowly, on its CPU.
            raise ConfigError(f"onnxruntime offers {chosen} but could not start it here (no GPU visible, or CUDA "
                              "libraries or a driver too old for them), so the model would run on the CPU",
                              hint="fix the GPU setup, or set MODELFN_PROVIDER=cpu (--provider cpu) to serve on the CPU")
        # On a GPU, IO binding copies each input to the device once and each output back once: the
        # device the outputs stay on until then ("cuda"); None runs plain session.run.
        self.output_device: str | None = "cuda" if self.provider in GPU_PROVIDERS else None
        graph_inputs = {i.name: i for i in self.session.get_inputs()}
        missing = [n for n in self.manifest.inputs if n not in graph_inputs]
        if missing:
            raise BundleError(f"{graph} has no input {missing[0]!r} that the manifest names",
                              hint="the bundle is inconsistent; re-export it")
        self.input_dtypes = {n: _DTYPES.get(graph_inputs[n].type, np.int64) for n in self.manifest.inputs}
        self.token_dtypes = {n: d for n, d in self.input_dtypes.items() if n in _TOKEN_INPUTS}
        self.output_names = list(self.manifest.outputs)
        # Bundles whose rows depend on their batch-mates (export measured it) run one row per call.
        self.one_row_per_run = bool(getattr(runtime, "one_row_per_run", False))
        axes = dict(zip([o.name for o in self.session.get_outputs()], sequence_outputs(self.session)))
        self._token_axis = [axes.get(n, False) for n in self.output_names]
        self.tokenizer = self._load_tokenizer(root / TOKENIZER_FILE, self.limits.max_tokens) if text else None
        # Question answering reconfigures truncation (stride, only_second) per request; a separate
        # tokenizer and a lock keep that from leaking into concurrent plain encodes.
        self._pair_tokenizer: Tokenizer | None = None
        self._pair_lock = threading.Lock()
        self.pad_token_id = runtime.pad_token_id

    @staticmethod
    def _load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise BundleError(f"{path} cannot be loaded: {exc}", hint="re-export the bundle") from None
        tok.no_padding()
        tok.enable_truncation(max_length=max_tokens)
        return tok

    # -- per request ---------------------------------------------------------------------
    def encode(self, texts: Sequence[str] | Sequence[tuple[str, str]]) -> list[Encoding]:
        """Tokenize with the configured limit; answer 422 for over-long texts when truncation is off."""
        if len(texts) == 1:
            item = self._bounded(texts[0], 0)
            encs = [self.tokenizer.encode(*item) if isinstance(item, tuple) else self.tokenizer.encode(item)]
        else:
            texts = [self._bounded(item, i) for i, item in enumerate(texts)]
            encs = self.tokenizer.encode_batch(list(texts))
        if not self.limits.truncate:
            for i, enc in enumerate(encs):
                if enc.overflowing:
                    raise Unprocessable(
                        f"inputs[{i}] is longer than the limit of {self.limits.max_tokens} tokens",
                        hint="shorten the text or deploy the model with truncate: true")
        return encs

    def _bounded(self, item: str | tuple[str, str], index: int) -> str | tuple[str, str]:
        """The text (or pair) cut to ``max_chars`` per text; past it without truncation, a 422."""
        limit = self._max_chars
        if isinstance(item, str):
            if len(item) <= limit:  # nearly every text: one comparison
                return item
            parts = (item,)
        else:
            parts = item
            if all(len(part) <= limit for part in parts):
                return item
        if not self.limits.truncate:
            raise Unprocessable(f"inputs[{index}] is longer than {limit} characters, past the limit of "
                                f"{self.limits.max_tokens} tokens",
                                hint="shorten the text or deploy the model with truncate: true")
        cut = tuple(part[:limit] for part in parts)
        return cut if isinstance(item, tuple) else cut[0]

    def encode_pair_spans(self, question: str, context: str, *, max_length: int, stride: int) -> list[Encoding]:
        """Question + context, the context split into overlapping windows (question answering)."""
        with self._pair_lock:
            if self._pair_tokenizer is None:
                self._pair_tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
                self._pair_tokenizer.no_padding()
            tok = self._pair_tokenizer
            try:
                tok.enable_truncation(max_length=max_length, stride=stride, strategy="only_second")
                enc = tok.encode(question, context)
            except Exception as exc:  # tokenizers: question too long for max_length, stride too large
                raise Unprocessable(f"question and context cannot be windowed: {exc}",
                                    hint="shorten the question or lower doc_stride") from None
        return [enc, *enc.overflowing]

    def feed(self, encodings: Sequence[Encoding]) -> dict[str, np.ndarray]:
        """The graph's token inputs for a batch, padded to the longest encoding."""
        names = self.token_dtypes
        if len(encodings) == 1:
            enc = encodings[0]
            columns = {"input_ids": [enc.ids], "attention_mask": [enc.attention_mask], "token_type_ids": [enc.type_ids]}
            return {n: np.asarray(columns[n], dtype=names[n]) for n in names}
        width = max(len(e.ids) for e in encodings)
        out = {}
        for n in names:
            fill = self.pad_token_id if n == "input_ids" else 0
            out[n] = np.full((len(encodings), width), fill, dtype=names[n])
        for row, enc in enumerate(encodings):
            k = len(enc.ids)
            if "input_ids" in out:
                out["input_ids"][row, :k] = enc.ids
            if "attention_mask" in out:
                out["attention_mask"][row, :k] = enc.attention_mask
            if "token_type_ids" in out:
                out["token_type_ids"][row, :k] = enc.type_ids
        return out

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The named outputs; RuntimeError (a server fault, 500) if any float output is not finite."""
        rows = len(next(iter(feed.values()))) if feed else 0
        if self.one_row_per_run and rows > 1:
            outputs = run_rows(self.session, self.output_names, feed, self._token_axis)
        else:
            outputs = self._run_bound(feed) if self.output_device else self.session.run(self.output_names, feed)
        check_finite(outputs)
        return dict(zip(self.output_names, outputs))

    def _run_bound(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self.output_names:
            # Left on the device by the run, copied to the host once below (post-processing is numpy).
            binding.bind_output(name, self.output_device)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    # -- tokenizer facts the post-processing needs --------------------------------------
    def decode_tokens(self, tokens: list[str]) -> str:
        """Join tokens back into text the way transformers' fast tokenizers do."""
        decoder = self.tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    @property
    def unk_token_id(self) -> int | None:
        unk = getattr(self.tokenizer.model, "unk_token", None)
        return self.tokenizer.token_to_id(unk) if isinstance(unk, str) else None

    @property
    def word_aware(self) -> bool:
        """Whether subwords carry a prefix (WordPiece ``##``), so word boundaries are exact."""
        return bool(getattr(self.tokenizer.model, "continuing_subword_prefix", None))

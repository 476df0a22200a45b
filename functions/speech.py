"""A speech-recognition bundle made ready to serve: Whisper's encoder and merged decoder on ONNX
Runtime, the tokenizer, and greedy decoding as transformers' WhisperForConditionalGeneration.generate
does it.

Built once per execution environment. Per recording, :meth:`SpeechModel.run` takes a feed of
``input_features`` (functions/audio.py) and the request's decoding options and returns the new
tokens: the encoder runs once; the decoder first reads the whole prompt (start token, language,
task, no-timestamps) without past key values, then one token per step with them
(``use_cache_branch``). Each step suppresses ``suppress_tokens`` (and ``begin_suppress_tokens`` at
the first new token) and takes the argmax, stopping at end-of-text or the token bound, which is
exactly greedy ``generate`` (tests/functions/test_speech.py compares the tokens).

A multilingual checkpoint whose prompt leaves the language open detects it as transformers does:
one decoder pass over the start token alone, argmax over the language tokens.

Timestamps and long recordings (:meth:`SpeechModel.transcribe`) follow transformers' Whisper
``generate(..., return_timestamps=True)``, which is also what the pipeline runs for a recording
past 30 s: the prompt drops ``<|notimestamps|>``; each step applies WhisperTimeStampLogitsProcessor's
rules (timestamps in pairs, never decreasing, the first one within ``max_initial_timestamp_index``,
and text masked whenever the timestamps' summed probability beats every text token); the features
are decoded 30 s window by window, each window cut into segments at its consecutive timestamp pairs
and the next window starting at the last complete segment's end (or after the window when it ended
on a single timestamp or had no pairs). No temperature fallback or conditioning on previous text,
as generate's defaults. :func:`pipeline_chunks` turns the tokens into the pipeline's text and chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .deadline import current as current_deadline
from .errors import BadRequest, BundleError
from .manifest import DECODER_FILE, ENCODER_FILE, TOKENIZER_FILE, Manifest, SpeechConfig, read_manifest
from .model import Limits, session_options
from .providers import CUDA, TENSORRT, choose_provider, session_providers

_USE_CACHE = "use_cache_branch"
_PAST = "past_key_values."
# Whisper's fixed geometry: timestamp tokens step 0.02 s, and the encoder's convolutions halve the
# 100 feature frames a second (generate's time_precision, time_precision_features and input_stride).
TIME_PRECISION = 0.02
FEATURE_PRECISION = 0.01
INPUT_STRIDE = 2
TIMESTAMP_TOKENS = 1501  # <|0.00|> .. <|30.00|>


@dataclass(frozen=True)
class Segment:
    """One timestamped segment of a transcription: seconds from the recording's start, its tokens
    (timestamps included) and the window (feature frame) it was decoded from."""

    start: float
    end: float
    tokens: tuple[int, ...]
    seek: int


class SpeechModel:
    """Encoder + merged decoder sessions and the tokenizer of one bundle, loaded once."""

    def __init__(self, bundle_dir: str | Path, *, threads: int, max_batch: int, max_tokens: int | None,
                 manifest: Manifest | None = None, provider: str = "cpu", options: ort.SessionOptions | None = None):
        root = Path(bundle_dir)
        self.bundle_dir = root
        self.manifest = manifest or read_manifest(root)
        for name in (ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE):
            if not (root / name).is_file():
                raise BundleError(f"{root} is not a speech-recognition bundle: {name} is missing",
                                  hint="re-export or re-fetch the bundle")
        config = self.manifest.runtime.speech
        if config is None:
            raise BundleError("the manifest has no runtime.speech settings", hint="re-export the bundle")
        self.config: SpeechConfig = config
        self.eos_token_ids = frozenset(self.manifest.runtime.eos_token_ids)
        # max_tokens (models.yaml) caps the new tokens of one recording; the decoder's positions always do.
        self.token_cap = max_tokens  # None: generate's own bound (see _bound)
        most = max(1, config.max_target_positions - len(self.prompt_ids(None, undetected=True)))
        self.limits = Limits(max_batch=max_batch, max_tokens=min(max_tokens, most) if max_tokens else most,
                             truncate=False)
        chosen = choose_provider(provider)
        # TensorRT would rebuild an engine for every decoder length: the decoder loop runs on CUDA.
        providers = session_providers(CUDA if chosen == TENSORRT else chosen, inputs=["input_features"], max_rows=1,
                                      max_tokens=config.max_target_positions)
        opts = options or session_options(threads)
        self.encoder = ort.InferenceSession(str(root / ENCODER_FILE), sess_options=opts, providers=providers)
        self.decoder = ort.InferenceSession(str(root / DECODER_FILE), sess_options=opts, providers=providers)
        self.provider: str = self.encoder.get_providers()[0]
        self._past = [i for i in self.decoder.get_inputs() if i.name.startswith(_PAST)]
        self._present = [o.name for o in self.decoder.get_outputs() if o.name.startswith("present.")]
        if not self._past or _USE_CACHE not in {i.name for i in self.decoder.get_inputs()}:
            raise BundleError(f"{DECODER_FILE} is not a merged decoder with past key values", hint="re-export the bundle")
        try:
            self.tokenizer = Tokenizer.from_file(str(root / TOKENIZER_FILE))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise BundleError(f"{TOKENIZER_FILE} cannot be loaded: {exc}", hint="re-export the bundle") from None
        self.eot = int(self.manifest.runtime.eos_token_ids[0]) if self.manifest.runtime.eos_token_ids else None
        self._special = frozenset(i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special)
        # Timestamp tokens follow <|notimestamps|>; a vocabulary without all 1501 of them cannot time.
        no_ts = config.no_timestamps_token_id
        self.timestamp_begin = None if no_ts is None else int(no_ts) + 1
        self.has_timestamps = (self.timestamp_begin is not None and self.eot is not None
                               and self.tokenizer.get_vocab_size() >= self.timestamp_begin + TIMESTAMP_TOKENS)
        self.window_frames = config.n_samples // config.hop_length  # 3000: one 30 s window
        self._suppress = np.array(config.suppress_tokens, dtype=np.int64)
        self._begin_suppress = np.array(config.begin_suppress_tokens, dtype=np.int64)
        self.languages = {token[2:-2]: i for token, i in config.lang_to_id.items()}  # "en" -> id
        self._language_of = {i: code for code, i in self.languages.items()}
        self._code_of = {name: code for code, name in config.language_names.items()}

    # -- the prompt ----------------------------------------------------------------------------------
    def prompt_ids(self, language: str | None, task: str | None = None, *, undetected: bool = False,
                   detected: int | None = None, timestamps: bool = False) -> list[int]:
        """Whisper's decoder prompt, as transformers' _retrieve_init_tokens builds it: the start token,
        generation_config's forced ids, the language (given, detected, or left open with
        ``undetected``), the task, and no-timestamps unless ``timestamps``."""
        config = self.config
        ids: list[int | None] = [config.decoder_start_token_id, *config.forced_ids]
        lang = self.language_id(language) if language is not None else detected
        if lang is not None:
            if len(ids) > 1:
                ids[1] = lang
            else:
                ids.append(lang)
        elif len(ids) > 1 and ids[1] is None:
            ids[1] = 0 if undetected else None  # a placeholder when only the prompt's length matters
        task_ids = set(config.task_to_id.values())
        if task is not None:
            task_id = config.task_to_id[task]
            ids = [task_id if i in task_ids else i for i in ids] if any(i in task_ids for i in ids) else ids + [task_id]
        elif language is not None and task_ids and not any(i in task_ids for i in ids):
            ids.append(config.task_to_id["transcribe"])
        if timestamps:
            if ids[-1] == config.no_timestamps_token_id:
                ids.pop()
        elif config.no_timestamps_token_id is not None and ids[-1] != config.no_timestamps_token_id:
            ids.append(config.no_timestamps_token_id)
        return [int(i) for i in ids if i is not None]

    def language_id(self, language: str) -> int:
        """The language token for a code (``en``), a name (``english``) or a token (``<|en|>``); 400 for
        one the model lacks."""
        key = language.strip().lower()
        key = key[2:-2] if key.startswith("<|") and key.endswith("|>") else key
        key = self._code_of.get(key, key)
        if key not in self.languages:
            known = ", ".join(sorted(self.languages)) or "none"
            raise BadRequest(f"language {language!r} is not one this model knows", hint=f"use a code of: {known}")
        return self.languages[key]

    @property
    def needs_detection(self) -> bool:
        """Whether the prompt leaves the language open (a multilingual checkpoint's default)."""
        forced = self.config.forced_ids
        return bool(self.languages) and (not forced or forced[0] is None)

    # -- running -------------------------------------------------------------------------------------
    def encode(self, features: np.ndarray) -> np.ndarray:
        """The encoder's hidden states for one (n_mels, frames) recording."""
        return self.encoder.run(None, {"input_features": features[None].astype(np.float32)})[0]

    def _step(self, ids: list[int], hidden: np.ndarray, past: dict | None) -> tuple[np.ndarray, dict]:
        feed = {"input_ids": np.array([ids], dtype=np.int64), "encoder_hidden_states": hidden,
                _USE_CACHE: np.array([past is not None])}
        if past is None:  # the no-cache branch ignores them; they only need the right rank
            for i in self._past:
                feed[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32)
        else:
            feed.update(past)
        outputs = self.decoder.run(None, feed)
        present = {_PAST + n[len("present."):]: v for n, v in zip(self._present, outputs[1:])}
        if past is not None:
            # The cache branch's encoder outputs are not the cross-attention keys and values (Optimum
            # keeps the first step's): only the self-attention cache grows.
            present = {n: (v if ".decoder." in n else past[n]) for n, v in present.items()}
        return outputs[0][0, -1], present

    def detect_language(self, hidden: np.ndarray) -> int:
        """transformers' detect_language: the most likely language token after the start token alone."""
        logits, _ = self._step([self.config.decoder_start_token_id], hidden, None)
        ids = np.array(sorted(self.languages.values()), dtype=np.int64)
        return int(ids[int(np.argmax(logits[ids]))])

    def _bound(self, prompt: list[int], max_new_tokens: int | None) -> int:
        # generate's bound: max_new_tokens when given, else generation_config's max_length; never
        # past the decoder's positions.
        bound = max_new_tokens or self.config.max_length - len(prompt)
        return min(bound, self.config.max_target_positions - len(prompt))

    def _decode_window(self, hidden: np.ndarray, prompt: list[int], bound: int, timestamps: bool) -> list[int]:
        """Greedy new tokens after ``prompt``; ends with end-of-text unless the bound came first."""
        tokens: list[int] = []
        logits, past = self._step(prompt, hidden, None)
        while len(tokens) < bound:
            logits = logits.astype(np.float32, copy=True)
            # generate's order: begin-suppress, suppress, then the timestamp rules.
            if not tokens and self._begin_suppress.size:
                logits[self._begin_suppress] = -np.inf
            if self._suppress.size:
                logits[self._suppress] = -np.inf
            if timestamps:
                self._timestamp_rules(logits, tokens)
            token = int(np.argmax(logits))
            tokens.append(token)
            if token in self.eos_token_ids or len(tokens) >= bound:
                break
            logits, past = self._step([token], hidden, past)
        return tokens

    def _timestamp_rules(self, logits: np.ndarray, tokens: list[int]) -> None:
        """transformers' WhisperTimeStampLogitsProcessor on one row, in place; ``tokens`` are the new
        tokens of this window so far."""
        begin = self.timestamp_begin
        logits[self.config.no_timestamps_token_id] = -np.inf
        last_was_timestamp = len(tokens) >= 1 and tokens[-1] >= begin
        penultimate_was_timestamp = len(tokens) < 2 or tokens[-2] >= begin
        if last_was_timestamp:
            if penultimate_was_timestamp:  # a pair just closed: text (or end) next
                logits[begin:] = -np.inf
            else:  # an opened timestamp: its pair or the end, never text
                logits[:self.eot] = -np.inf
        stamps = [t for t in tokens if t >= begin]
        if stamps:
            # Timestamps never decrease; after a pair the next one must move on.
            last = stamps[-1] if last_was_timestamp and not penultimate_was_timestamp else stamps[-1] + 1
            logits[begin:last] = -np.inf
        if not tokens:  # a window starts with a timestamp, within max_initial_timestamp_index
            logits[:begin] = -np.inf
            if self.config.max_initial_timestamp_index is not None:
                logits[begin + self.config.max_initial_timestamp_index + 1:] = -np.inf
        # Text is masked when the timestamps together are likelier than any one text token
        # (log-softmax's shared normalizer cancels from both sides of the comparison).
        stamp = logits[begin:].astype(np.float64)
        text_max = float(logits[:begin].max())
        top = float(stamp.max())
        if top > -np.inf and top + np.log(np.exp(stamp - top).sum()) > text_max:
            logits[:begin] = -np.inf

    def _language_and_prompt(self, hidden: np.ndarray, language: str | None, task: str | None,
                             timestamps: bool) -> list[int]:
        detected = None
        if language is None and self.needs_detection:
            detected = self.detect_language(hidden)
        return self.prompt_ids(language, task, detected=detected, timestamps=timestamps)

    def _prompt_language(self, prompt: list[int]) -> int | None:
        return prompt[1] if len(prompt) > 1 and prompt[1] in self._language_of else None

    def generate(self, features: np.ndarray, *, language: str | None = None, task: str | None = None,
                 max_new_tokens: int | None = None) -> tuple[list[int], int | None]:
        """(new tokens, the language token used) for one 30 s recording, greedy, without timestamps;
        ends with end-of-text unless the bound was reached first."""
        hidden = self.encode(features)
        prompt = self._language_and_prompt(hidden, language, task, False)
        return self._decode_window(hidden, prompt, self._bound(prompt, max_new_tokens), False), \
            self._prompt_language(prompt)

    def transcribe(self, features: np.ndarray, *, language: str | None = None, task: str | None = None,
                   max_new_tokens: int | None = None, timestamps: bool = True) -> tuple[list[Segment], int | None]:
        """(segments, the language token used) of a recording, window by window as transformers' Whisper
        generate does (see the module doc): with ``timestamps`` (forced past one window, as generate
        forces it), else one window decoded after <|notimestamps|> (cut into segments only if the model
        emits timestamp pairs anyway, as generate cuts it). ``features`` holds at least one window
        (shorter recordings are padded to it)."""
        window = self.window_frames
        frames = features.shape[1]
        timestamps = timestamps or frames > window
        if timestamps and not self.has_timestamps:
            raise BadRequest("this model has no timestamp tokens, so it cannot time or transcribe past 30 s",
                             hint="send at most 30 s and leave return_timestamps out")
        segments: list[Segment] = []
        seek, prompt, took = 0, None, 0.0
        deadline = current_deadline()
        while seek < frames:
            if took:  # a long recording: the next window is estimated at the last one's time
                deadline.check(took, f"transcribing from {seek * FEATURE_PRECISION:.1f} s on")
            began = time.perf_counter()
            size = min(frames - seek, window)
            piece = features[:, seek:seek + size]
            if size < window:  # generate pads the last window's features with zeros
                piece = np.pad(piece, ((0, 0), (0, window - size)))
            hidden = self.encode(piece)
            if prompt is None:  # the language is detected once, on the first window
                prompt = self._language_and_prompt(hidden, language, task, timestamps)
            tokens = self._decode_window(hidden, prompt, self._bound(prompt, max_new_tokens), timestamps)
            if tokens and tokens[-1] in self.eos_token_ids:
                tokens.pop()
            found, advance = self._segments(tokens, seek, size)
            segments.extend(found)
            # A window that ends on a pair at 0.00 would be decoded again forever: move past it.
            seek += advance if advance > 0 else size
            took = time.perf_counter() - began
        return segments, self._prompt_language(prompt or [])

    def _segments(self, tokens: list[int], seek: int, size: int) -> tuple[list[Segment], int]:
        """transformers' _retrieve_segment: one window's tokens cut at consecutive timestamps, and how
        many feature frames the next window starts after this one's start."""
        begin = self.timestamp_begin if self.timestamp_begin is not None else 1 << 62
        offset = seek * TIME_PRECISION / INPUT_STRIDE
        stamp = [t >= begin for t in tokens]
        single_ending = stamp[-2:] == [False, True]
        cuts = [i + 1 for i in range(len(tokens) - 1) if stamp[i] and stamp[i + 1]]
        if not cuts:
            # No pair: the whole window is one segment, to its last timestamp or its end.
            stamps = [t for t in tokens if t >= begin]
            end = int(size * FEATURE_PRECISION / TIME_PRECISION)
            if stamps and stamps[-1] != begin:
                end = stamps[-1] - begin
            return [Segment(offset, offset + end * TIME_PRECISION, tuple(tokens), seek)], size
        if single_ending:
            cuts.append(len(tokens))
        else:
            cuts[-1] += 1  # the last pair stays whole in the last segment
        segments, last = [], 0
        for i, cut in enumerate(cuts):
            piece = tokens[last:cut]
            end = piece[-1 if i < len(cuts) - 1 or single_ending else -2]
            segments.append(Segment(offset + (piece[0] - begin) * TIME_PRECISION,
                                    offset + (end - begin) * TIME_PRECISION, tuple(piece), seek))
            last = cut
        # After a single timestamp nothing more is said in the window; otherwise the text after the
        # last pair was cut off mid-speech and is decoded again from that pair's time.
        return segments, size if single_ending else (tokens[last - 2] - begin) * INPUT_STRIDE

    def run(self, feed: dict) -> dict:
        """One recording's feed (``input_features`` and the request's options) -> {"tokens", "segments",
        "language"}: "tokens" are the segments' tokens in order, as generate returns them."""
        segments, lang = self.transcribe(feed["input_features"], language=feed.get("language"), task=feed.get("task"),
                                         max_new_tokens=feed.get("max_new_tokens"),
                                         timestamps=bool(feed.get("return_timestamps")))
        return {"tokens": [t for s in segments for t in s.tokens], "segments": segments,
                "language": self._language_of.get(lang)}

    def decode(self, tokens: list[int]) -> str:
        """The text of ``tokens``, special and timestamp tokens skipped (the pipeline's
        skip_special_tokens; timestamps are added tokens but not special ones)."""
        if self.timestamp_begin is not None:
            tokens = [t for t in tokens if t < self.timestamp_begin]
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def pipeline_text(self, tokens: list[int], *, timestamps: bool) -> tuple[str, list[dict]]:
        """(text, chunks) of one recording's tokens as the transformers pipeline makes them from
        generate's output (``_decode_asr`` for one output without stride): text tokens gathered
        between timestamps, each closed pair of timestamps ending a chunk, times made continuous
        across windows from the tokens alone. ``chunks`` are [{"text", "timestamp": [start, end]}]."""
        begin = self.timestamp_begin if self.timestamp_begin is not None else 1 << 62
        chunks: list[dict] = []
        start: float | None = None
        current: list[int] = []
        language = None
        cur_max = previous = penultimate = 0.0

        def close(end: float | None) -> None:
            chunks.append({"text": self.tokenizer.decode(current, skip_special_tokens=False), "timestamp": [start, end]})

        for i, token in enumerate(tokens):
            if token in self._special:
                # Only a change of language matters, and only without timestamps: it ends a chunk.
                if token in self._language_of:
                    if language is not None and token != language and not timestamps:
                        close(None)
                        current, start = [], None
                    language = token
            elif token >= begin:
                stamp = float((token - begin) * TIME_PRECISION)
                if stamp < cur_max:  # a new window started
                    if i >= 2 and not (tokens[i - 1] >= begin and tokens[i - 2] >= begin):
                        previous += TIME_PRECISION * (self.window_frames // INPUT_STRIDE)
                    else:
                        cur_max = penultimate
                        previous += penultimate
                penultimate, cur_max = cur_max, stamp
                at = round((token - begin) * TIME_PRECISION + previous, 2)
                if start is None:
                    start = at
                elif at != start:  # a repeated start is the model's slip, not an end
                    close(at)
                    current, start = [], None
            else:
                current.append(token)
        if current:
            close(None)
        text = "".join(c["text"] for c in chunks)
        return text, chunks


__all__ = ["Segment", "SpeechModel", "TIME_PRECISION"]

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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .errors import BadRequest, BundleError
from .manifest import DECODER_FILE, ENCODER_FILE, TOKENIZER_FILE, Manifest, SpeechConfig, read_manifest
from .model import Limits, session_options
from .providers import CUDA, TENSORRT, choose_provider, session_providers

_USE_CACHE = "use_cache_branch"
_PAST = "past_key_values."


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
        self._suppress = np.array(config.suppress_tokens, dtype=np.int64)
        self._begin_suppress = np.array(config.begin_suppress_tokens, dtype=np.int64)
        self.languages = {token[2:-2]: i for token, i in config.lang_to_id.items()}  # "en" -> id
        self._language_of = {i: code for code, i in self.languages.items()}
        self._code_of = {name: code for code, name in config.language_names.items()}

    # -- the prompt ----------------------------------------------------------------------------------
    def prompt_ids(self, language: str | None, task: str | None = None, *, undetected: bool = False,
                   detected: int | None = None) -> list[int]:
        """Whisper's decoder prompt, as transformers' _retrieve_init_tokens builds it: the start token,
        generation_config's forced ids, the language (given, detected, or left open with
        ``undetected``), the task, and no-timestamps."""
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
        if config.no_timestamps_token_id is not None and ids[-1] != config.no_timestamps_token_id:
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

    def generate(self, features: np.ndarray, *, language: str | None = None, task: str | None = None,
                 max_new_tokens: int | None = None) -> tuple[list[int], int | None]:
        """(new tokens, the language token used) for one recording, greedy; ends with end-of-text
        unless the bound was reached first."""
        hidden = self.encode(features)
        detected = None
        if language is None and self.needs_detection:
            detected = self.detect_language(hidden)
        prompt = self.prompt_ids(language, task, detected=detected)
        # generate's bound: max_new_tokens when given, else generation_config's max_length; never
        # past the decoder's positions.
        bound = max_new_tokens or self.config.max_length - len(prompt)
        bound = min(bound, self.config.max_target_positions - len(prompt))
        tokens: list[int] = []
        logits, past = self._step(prompt, hidden, None)
        while len(tokens) < bound:
            logits = logits.astype(np.float32, copy=True)
            if self._suppress.size:
                logits[self._suppress] = -np.inf
            if not tokens and self._begin_suppress.size:
                logits[self._begin_suppress] = -np.inf
            token = int(np.argmax(logits))
            tokens.append(token)
            if token in self.eos_token_ids or len(tokens) >= bound:
                break
            logits, past = self._step([token], hidden, past)
        lang = prompt[1] if len(prompt) > 1 and prompt[1] in self._language_of else None
        return tokens, lang

    def run(self, feed: dict) -> dict:
        """One recording's feed (``input_features`` and the request's options) -> {"tokens", "language"}."""
        tokens, lang = self.generate(feed["input_features"], language=feed.get("language"), task=feed.get("task"),
                                     max_new_tokens=feed.get("max_new_tokens"))
        return {"tokens": tokens, "language": self._language_of.get(lang)}

    def decode(self, tokens: list[int]) -> str:
        """The text of ``tokens``, special tokens skipped (the pipeline's skip_special_tokens)."""
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


__all__ = ["SpeechModel"]

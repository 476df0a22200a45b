"""A text-generation bundle made ready to serve: onnxruntime-genai's model, the tokenizer, limits.

Built once per execution environment. Per request: :meth:`GenerationModel.encode` (or
:meth:`GenerationModel.chat_prompt`), then :meth:`GenerationModel.start`, which checks the request
against the context window before anything runs and returns a :class:`Generation` that decodes
lazily with onnxruntime-genai's Generator as it is iterated.

Text is decoded with the ``tokenizers`` library from the bundle's ``tokenizer.json``, not with
onnxruntime-genai's tokenizer (which left byte-level markers such as ``Ġ`` in SmolLM2's text).
"""

from __future__ import annotations

import atexit
import gc
import json
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer

from .. import deadline as deadlines
from ..errors import BadRequest, BundleError, ConfigError, NotFound
from ..manifest import (
    GENAI_CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    read_manifest,
)
from ..model import Limits
from ..providers import CPU, CUDA
from .chat import ChatTemplate
from .detokenize import IncrementalDecoder
from .options import SamplingOptions
from .stops import StopStrings

STOP, LENGTH = "stop", "length"


def generation_provider(choice: str, *, cuda_available: bool) -> str:
    """The provider a text-generation model runs on for ``choice`` (auto | cuda | cpu).

    onnxruntime-genai's CUDA package (the GPU image's ``onnxruntime-genai-cuda``) reports CUDA
    available; its CPU package never does. TensorRT is an encoder-session provider only; a forced
    provider that is absent is a ConfigError, as for encoders.
    """
    if choice == "cpu":
        return CPU
    if choice == "auto":
        return CUDA if cuda_available else CPU
    if choice == "cuda":
        if not cuda_available:
            raise ConfigError("execution provider 'cuda' is not available to onnxruntime-genai here",
                              hint="the GPU image installs onnxruntime-genai-cuda; use --provider auto or cpu")
        return CUDA
    raise ConfigError(f"execution provider {choice!r} does not run text-generation models",
                      hint="use auto, cuda or cpu (onnxruntime-genai has no TensorRT path here)")


# Models still loaded when the interpreter exits. onnxruntime-genai counts its live models in a static
# destructor that runs after Python's own clean-up and prints "OGA Error: 1 instances of ... Model were
# leaked" for each one still referenced then (a module global, a server's app state): released here first.
_LOADED: "weakref.WeakSet[GenerationModel]" = weakref.WeakSet()


@atexit.register
def _release_models() -> None:
    for loaded in list(_LOADED):
        loaded.model = None
    gc.collect()


class GenerationModel:
    """onnxruntime-genai model + tokenizer + chat template of one bundle, loaded once."""

    def __init__(self, bundle_dir: str | Path, *, threads: int, max_batch: int, max_tokens: int | None,
                 manifest: Manifest | None = None, provider: str = "cpu"):
        import onnxruntime_genai as og  # encoder functions never load it

        root = Path(bundle_dir)
        self.bundle_dir = root
        use_cuda = generation_provider(provider, cuda_available=og.is_cuda_available()) == CUDA
        self.provider = CUDA if use_cuda else CPU
        self.manifest = manifest or read_manifest(root)
        for name in (MODEL_FILE, GENAI_CONFIG_FILE, TOKENIZER_FILE):
            if not (root / name).is_file():
                raise BundleError(f"{root} is not a text-generation bundle: {name} is missing",
                                  hint="re-export or re-fetch the bundle")
        runtime = self.manifest.runtime
        try:
            genai = json.loads((root / GENAI_CONFIG_FILE).read_text(encoding="utf-8"))["model"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{GENAI_CONFIG_FILE} cannot be read: {exc}", hint="re-export the bundle") from None
        self.context_length = int(runtime.context_length or genai.get("context_length") or 0)
        if self.context_length < 2:
            raise BundleError("the bundle does not say its context length", hint="re-export the bundle")
        # The deployment's cap on new tokens per request (models.yaml max_tokens), else the window.
        cap = min(max_tokens, self.context_length) if max_tokens else self.context_length
        self.limits = Limits(max_batch=max_batch, max_tokens=cap, truncate=False)
        config = og.Config(str(root))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
        # The provider is chosen here, not by the export: a bundle built for CUDA (`-e cuda` writes
        # provider options into genai_config.json) must not reach for a GPU on a CPU host, and the
        # reverse. No provider appended means onnxruntime-genai's CPU execution.
        config.clear_providers()
        if use_cuda:
            config.append_provider("cuda")
        try:
            self._og = og
            self.model = og.Model(config)
            _LOADED.add(self)
        except Exception as exc:  # noqa: BLE001 - onnxruntime-genai raises RuntimeError with the reason
            raise BundleError(f"the generation model cannot be loaded: {exc}", hint="re-export the bundle") from None
        try:
            self.tokenizer = Tokenizer.from_file(str(root / TOKENIZER_FILE))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise BundleError(f"{TOKENIZER_FILE} cannot be loaded: {exc}", hint="re-export the bundle") from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        eos = runtime.eos_token_ids or _as_tuple(genai.get("eos_token_id"))
        self.eos_token_ids = frozenset(int(i) for i in eos)
        self.chat_template = self._load_chat_template(root, runtime.chat_template, runtime.bos_token_id)
        # Seconds per prompt token of the last prefill (the first token's step): what a new prompt is
        # estimated at against the request's deadline before anything runs.
        self.prefill_rate = deadlines.RunRate()
        # One prompt read (prefill) at a time: it holds logits for every prompt position (up to the
        # whole window x the vocabulary), far more than a decoding step, and the GPU memory check
        # (infra/build/gpu_memory.py) counts room for one. Generators decode side by side otherwise.
        self.prefill_gate = threading.Lock()

    def _load_chat_template(self, root: Path, file: str, bos_id: int | None) -> ChatTemplate | None:
        if not file:
            return None
        try:
            source = (root / file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"chat template {file} cannot be read: {exc}", hint="re-export the bundle") from None
        token = self.tokenizer.id_to_token
        bos = token(bos_id) if bos_id is not None else None
        eos = token(min(self.eos_token_ids)) if self.eos_token_ids else None
        return ChatTemplate(source, bos_token=bos or "", eos_token=eos or "")

    # -- per request ---------------------------------------------------------------------
    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of ``text``; ``special`` adds what the tokenizer adds around a text (e.g. BOS)."""
        return self.tokenizer.encode(text, add_special_tokens=special).ids

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of the chat template rendered over ``messages`` (the template writes any BOS)."""
        if self.chat_template is None:
            raise NotFound("this model has no chat template; /v1/chat/completions needs one",
                           hint="use POST /v1/completions with a prompt")
        return self.encode(self.chat_template.render(messages), special=False)

    def check_budget(self, prompt_tokens: int, max_tokens: int | None, default: int | None = None) -> int:
        """The number of new tokens to allow; BadRequest (with the numbers) if the request cannot fit.

        Without ``max_tokens`` the answer may run to ``default`` tokens, the deployment's cap or the
        end of the context window, whichever comes first.
        """
        window, cap = self.context_length, self.limits.max_tokens
        if prompt_tokens == 0:
            raise BadRequest("the prompt is empty")
        if max_tokens is not None and max_tokens > cap:
            raise BadRequest(f"max_tokens is {max_tokens}; this deployment generates at most {cap} tokens "
                             "per request")
        wanted = max_tokens if max_tokens is not None else 1
        if prompt_tokens + wanted > window:
            what = f"{prompt_tokens} prompt tokens + {wanted} max_tokens" if max_tokens is not None \
                else f"{prompt_tokens} prompt tokens leave no room for new tokens"
            raise BadRequest(f"{what} exceed the context window of {window} tokens",
                             hint="shorten the prompt or lower max_tokens")
        if max_tokens is not None:
            return max_tokens
        return min(default or cap, cap, window - prompt_tokens)

    def start(self, prompt_ids: list[int], options: SamplingOptions, *,
              default_max_tokens: int | None = None) -> Generation:
        """A generation checked against the limits now; decoding starts when it is iterated."""
        budget = self.check_budget(len(prompt_ids), options.max_tokens, default_max_tokens)
        # Refused while the status can still say so: a stream that has started can only end early.
        deadlines.current().check(self.prefill_rate.estimate(len(prompt_ids)),
                                  f"reading the {len(prompt_ids)}-token prompt")
        return Generation(self, prompt_ids, options, budget)

    def _generator(self, prompt_ids: list[int], options: SamplingOptions, budget: int):
        og = self._og
        params = og.GeneratorParams(self.model)
        search = {"max_length": len(prompt_ids) + budget, "do_sample": not options.greedy,
                  "repetition_penalty": options.repetition_penalty}
        if not options.greedy:
            # top_k 0 keeps the whole distribution (onnxruntime-genai's default would cut at 50).
            search.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
            if options.seed is not None:
                search["random_seed"] = options.seed & 0x7FFFFFFF  # the generator takes a 32-bit seed
        params.set_search_options(**search)
        generator = og.Generator(self.model, params)
        generator.append_tokens(prompt_ids)
        return generator


class Generation:
    """One request's answer. Iterate for text pieces as they decode (they concatenate to
    :meth:`text`); after the end, ``finish_reason``, ``completion_tokens`` and ``token_ids`` are set.

    It keeps the deadline of the request that created it (functions/deadline.py): decoding stops,
    with ``finish_reason`` "length", when the next token would not fit in the time left (judged by
    the previous token's time), and a request with no time left at all is refused (504)."""

    def __init__(self, model: GenerationModel, prompt_ids: list[int], options: SamplingOptions, budget: int):
        self.model = model
        self.prompt_ids = prompt_ids
        self.options = options
        self.max_tokens = budget
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None
        self._pieces: Iterator[str] | None = None
        self._text: list[str] = []
        self.deadline = deadlines.current()

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def __iter__(self) -> Iterator[str]:
        if self._pieces is None:
            self._pieces = self._decode()
        return self._pieces

    def text(self) -> str:
        """Run to the end and return the whole answer."""
        for _ in self:
            pass
        return "".join(self._text)

    def _decode(self) -> Iterator[str]:
        model, deadline = self.model, self.deadline
        deadline.check(0.0, "generating an answer")
        clock, step = deadline.clock, 0.0
        with model.prefill_gate:  # the prompt is appended, and read by the first step, under the gate
            generator = model._generator(self.prompt_ids, self.options, self.max_tokens)
            stepped = not generator.is_done()
            if stepped:
                started = clock()
                generator.generate_next_token()
                step = clock() - started
        if stepped:
            model.prefill_rate.observe(len(self.prompt_ids), step)
        decoder = IncrementalDecoder(model.tokenizer, self.prompt_ids)
        stops = StopStrings(self.options.stop)
        eos = model.eos_token_ids
        reason = LENGTH
        while stepped or not generator.is_done():
            if not stepped:  # the first token came with the prompt's read above
                if not deadline.fits(step):
                    break  # out of time: the answer ends here, as at max_tokens ("length")
                started = clock()
                generator.generate_next_token()
                step = clock() - started
            stepped = False
            token = int(generator.get_next_tokens()[0])
            self.token_ids.append(token)
            if token in eos:
                reason = STOP
                break
            piece = stops.feed(decoder.push(token))
            if piece:
                self._text.append(piece)
                yield piece
            if stops.stopped:
                reason = STOP
                break
        else:
            if len(self.token_ids) < self.max_tokens:  # ended by an end token only genai_config names
                reason = STOP
        if not stops.stopped:
            piece = stops.feed(decoder.flush())
            piece += "" if stops.stopped else stops.flush()
            if piece:
                self._text.append(piece)
                yield piece
            reason = STOP if stops.stopped else reason
        self.finish_reason = reason


def _as_tuple(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)

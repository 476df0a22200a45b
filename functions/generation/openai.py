"""POST /v1/chat/completions and POST /v1/completions: OpenAI's request and response shapes.

Every field is validated and the prompt is tokenized and checked against the context window
before anything is generated, so a bad request costs no decoding and is answered as a 4xx, never
as a broken stream. With ``stream: true`` the reply is an iterator of server-sent events (OpenAI's
chunk objects, then ``data: [DONE]``) that decodes as it is consumed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from ..errors import BadRequest, NotFound
from ..http import SSE_DONE, render_error, sse_event
from .chat import parse_messages
from .model import Generation, GenerationModel
from .options import boolean, check_known, sampling

_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "repetition_penalty")
CHAT_FIELDS = ("model", "messages", "max_completion_tokens", *_SAMPLING, "stream", "stream_options", "n", "user")
COMPLETION_FIELDS = ("model", "prompt", *_SAMPLING, "stream", "stream_options", "n", "user")
# OpenAI's default for /v1/completions; chat answers run to the end of the turn (or the limit).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class Reply(NamedTuple):
    """A JSON ``payload``, or a ``stream`` of server-sent event strings; token counts for the metrics."""

    payload: dict | None
    stream: Iterator[str] | None
    prompt_tokens: int
    completion_tokens: int | None = None


class OpenAIGeneration:
    """The two OpenAI generation routes over a loaded :class:`GenerationModel`."""

    def __init__(self, model: GenerationModel, served_name: str):
        self.model = model
        self.name = served_name

    def chat(self, data: dict) -> Reply:
        check_known(data, CHAT_FIELDS)
        self._check_model(data)
        if self.model.chat_template is None:
            raise NotFound(f"model {self.name!r} has no chat template; /v1/chat/completions needs one",
                           hint="use POST /v1/completions with a prompt")
        messages = parse_messages(data.get("messages"))
        if data.get("max_completion_tokens") is not None and data.get("max_tokens") is None:
            data = {**data, "max_tokens": data["max_completion_tokens"]}
        generation, stream, usage = self._start(data, self.model.chat_prompt(messages), None)
        return self._reply(generation, stream, usage, chat=True)

    def completions(self, data: dict) -> Reply:
        check_known(data, COMPLETION_FIELDS)
        self._check_model(data)
        prompt = data.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("\"prompt\" must be a string", hint="token arrays and several prompts are not supported")
        if not prompt:
            raise BadRequest("\"prompt\" is empty")
        prompt_ids = self.model.encode(prompt, special=True)
        generation, stream, usage = self._start(data, prompt_ids, COMPLETIONS_DEFAULT_MAX_TOKENS)
        return self._reply(generation, stream, usage, chat=False)

    # -- shared ------------------------------------------------------------------------------
    def _check_model(self, data: dict) -> None:
        requested = data.get("model")
        if requested is not None and requested != self.name:
            raise NotFound(f"no model named {requested!r} here", hint=f"this function serves {self.name!r}")

    def _start(self, data: dict, prompt_ids: list[int], default_max: int | None) -> tuple[Generation, bool, bool]:
        n = data.get("n")
        if n is not None and (isinstance(n, bool) or n != 1):
            raise BadRequest(f"n must be 1 (one choice per request), got {n!r}")
        options = sampling(data, max_tokens_key="max_tokens", max_tokens_default=None)
        stream = boolean(data, "stream", False)
        stream_options = data.get("stream_options")
        include_usage = False
        if stream_options is not None:
            if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
                raise BadRequest("stream_options must be an object {\"include_usage\": true|false}")
            if not stream:
                raise BadRequest("stream_options is only allowed with stream: true")
            include_usage = boolean(stream_options, "include_usage", False, where="stream_options.")
        return self.model.start(prompt_ids, options, default_max_tokens=default_max), stream, include_usage

    def _reply(self, generation: Generation, stream: bool, include_usage: bool, *, chat: bool) -> Reply:
        ident = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        created = int(time.time())
        if stream:
            return Reply(None, self._events(generation, ident, created, include_usage, chat=chat),
                         generation.prompt_tokens)
        text = generation.text()
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": generation.finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": generation.finish_reason}
        body = {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": self.name, "choices": [choice], "usage": _usage(generation)}
        return Reply(body, None, generation.prompt_tokens, generation.completion_tokens)

    def _events(self, generation: Generation, ident: str, created: int, include_usage: bool, *,
                chat: bool) -> Iterator[str]:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: str | None, finish: str | None, *, first: bool = False) -> str:
            if chat:
                body = {"role": "assistant", "content": ""} if first else ({} if delta is None else {"content": delta})
                choice = {"index": 0, "delta": body, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            payload = {"id": ident, "object": kind, "created": created, "model": self.name, "choices": [choice]}
            if include_usage:
                payload["usage"] = None
            return sse_event(payload)

        try:
            if chat:
                yield chunk(None, None, first=True)
            for piece in generation:
                yield chunk(piece, None)
            yield chunk(None, generation.finish_reason)
            if include_usage:
                yield sse_event({"id": ident, "object": kind, "created": created, "model": self.name,
                                 "choices": [], "usage": _usage(generation)})
        except Exception as exc:  # noqa: BLE001 - the status is sent; the client learns of it in-band
            from .. import observability

            observability.exception("generation failed while streaming")
            yield sse_event(render_error(exc)[1])
        yield SSE_DONE


def _usage(generation: Generation) -> dict[str, Any]:
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

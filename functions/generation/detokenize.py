"""Incremental detokenization: token ids in, text pieces out, each piece complete UTF-8.

Decoding one token at a time is wrong twice over: a character outside the vocabulary spans several
tokens (byte-level BPE, or SentencePiece's ``<0xE2>`` byte fallback) and decodes to U+FFFD until
its last byte arrives, and SentencePiece decoders strip the leading space of whatever they are
given first. So each step decodes a short window of recent tokens twice, with and without the new
ones, and emits the difference only once it no longer ends in an incomplete character (the scheme
of Hugging Face's text-generation-inference). The window starts inside the prompt so that the
first generated word keeps its leading space; it starts on a whole character, as a window starting
inside one would decode to U+FFFD throughout (byte-fallback decoders reject a whole run of byte
tokens if any of it is invalid). Pieces concatenate to the text of the whole answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

_INCOMPLETE = "\ufffd"
# Prompt tokens the first window reaches back over: enough for a decoder to see a word boundary.
_CONTEXT_TOKENS = 5


class IncrementalDecoder:
    """Feed generated token ids with :meth:`push`; :meth:`flush` returns what is held at the end."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = ()):
        self._tokenizer = tokenizer
        self._ids: list[int] = self._context(list(prompt_ids))
        self._prefix = 0  # window start
        self._read = len(self._ids)  # end of what has been emitted

    def _context(self, prompt: list[int]) -> list[int]:
        for start in range(max(0, len(prompt) - _CONTEXT_TOKENS), max(-1, len(prompt) - 4 * _CONTEXT_TOKENS), -1):
            if not self._decode(prompt[start:]).startswith(_INCOMPLETE):
                return prompt[start:]
        return []  # no clean start nearby: decode the answer on its own

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """The text ``token_id`` completes ("" while a character is still incomplete)."""
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end decodes as U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if not final and (len(after) <= len(before) or after.endswith(_INCOMPLETE)):
            return ""
        # Drop the window's history: keep only the emitted tail as the next window's context.
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before):]

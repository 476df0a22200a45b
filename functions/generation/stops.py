"""Stop strings: cut the answer just before the first one, even when it arrives split across pieces.

Text that could still turn out to be the start of a stop string is held back until the next piece
settles it, so a streamed answer never shows part of a stop string and then takes it back. The cut
is where the first stop string starts in the whole answer, whatever the pieces were: a match is
not taken while a longer stop string starting earlier might still complete.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopStrings:
    """Filter text pieces through :meth:`feed`; :meth:`flush` releases what is held at the end."""

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The part of ``piece`` (with what was held) that is safe to emit; sets ``stopped`` on a match."""
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        return self._scan(self._held + piece, final=False)

    def flush(self) -> str:
        """At the end of the answer: what was held, up to a stop string if one is there."""
        if self.stopped or not self._held:
            return ""
        return self._scan(self._held, final=True)

    def _scan(self, text: str, *, final: bool) -> str:
        match = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        partial = -1 if final else self._partial_start(text)
        if partial >= 0 and (match < 0 or partial < match):
            self._held = text[partial:]
            return text[:partial]
        self._held = ""
        if match >= 0:
            self.stopped = True
            return text[:match]
        return text

    def _partial_start(self, text: str) -> int:
        """Where the earliest end of ``text`` begins that a stop string starts with but does not equal."""
        for start in range(max(0, len(text) - self._longest + 1), len(text)):
            tail = text[start:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self._stops):
                return start
        return -1

"""Stop strings: cut the answer just before the first one, even when it arrives split across pieces.

Text that could still turn out to be the start of a stop string is held back until the next piece
settles it, so a streamed answer never shows part of a stop string and then takes it back.
"""

from __future__ import annotations

from typing import Sequence


class StopStrings:
    """Filter text pieces through :meth:`feed`; :meth:`flush` releases what is held at the end."""

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The part of ``piece`` (with what was held) that is safe to emit; sets ``stopped`` on a match."""
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        text = self._held + piece
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held, self.stopped = "", True
            return text[:cut]
        keep = self._partial_suffix(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest end of ``text`` that a stop string starts with."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

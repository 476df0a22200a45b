"""Aliases: one JSON document per alias, changed only by compare-and-swap.

``models/<name>/aliases/<alias>.json`` holds the current version and the append-only history of
every promotion and rollback. An update reads the document and its ETag, appends one entry, and
writes it back with If-Match on that ETag (If-None-Match for the first one). A lost race (412,
or 409 while another write is in flight) re-reads and tries again after a jittered backoff, so
concurrent updates all land, each exactly once, in some order.
"""

from __future__ import annotations

import json
import random
import time
from typing import Callable

from .errors import AlreadyExists, Conflict, IntegrityError, PreconditionFailed
from .records import AliasState, HistoryEntry, alias_key
from .store import ObjectStore

__all__ = ["REPAIR_HINT", "read_alias", "update_alias", "rollback_target"]

_ATTEMPTS = 200
_BACKOFF_BASE_S = 0.01
_BACKOFF_CAP_S = 0.5


REPAIR_HINT = ("remove it with `modelfn registry unalias {name} --alias {alias}`, or re-point it with "
               "`modelfn registry promote {name} VERSION --alias {alias} --force`")


def _version(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"version {value!r} is not a positive integer")
    return value


def _parse(name: str, alias: str, data: bytes) -> AliasState:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("history"), list):
            raise ValueError("not an object with a history list")
        if not all(isinstance(h, dict) for h in doc["history"]):
            raise ValueError("a history entry is not an object")
        history = tuple(HistoryEntry.from_dict(h) for h in doc["history"])
        for entry in history:
            _version(entry.version)
        return AliasState(name=name, alias=alias, version=_version(doc.get("version")), history=history)
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        why = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise IntegrityError(f"alias {alias!r} of model {name!r} is corrupted: {why}",
                             hint=REPAIR_HINT.format(name=name, alias=alias)) from None


def read_alias(store: ObjectStore, name: str, alias: str) -> tuple[AliasState, str] | None:
    found = store.get(alias_key(name, alias))
    return None if found is None else (_parse(name, alias, found[0]), found[1])


def update_alias(store: ObjectStore, name: str, alias: str,
                 next_entry: Callable[[AliasState | None], HistoryEntry],
                 sleep: Callable[[float], None] = time.sleep) -> AliasState:
    """Append the entry ``next_entry(current)`` and point the alias at its version, atomically.

    ``next_entry`` is called again after each lost race with the fresh state, so its checks (the
    version exists, there is something to roll back to) always hold for the state it extends.
    """
    key = alias_key(name, alias)
    for attempt in range(_ATTEMPTS):
        found = read_alias(store, name, alias)
        current = None if found is None else found[0]
        entry = next_entry(current)
        state = AliasState(name=name, alias=alias, version=entry.version,
                           history=(current.history if current else ()) + (entry,))
        body = json.dumps({"model": name, **state.to_dict()}, indent=1).encode()
        try:
            if found is None:
                store.put_new(key, body)
            else:
                store.put_if_match(key, body, found[1])
            return state
        except (AlreadyExists, PreconditionFailed):
            # Full jitter: contenders spread out instead of colliding again in lockstep.
            sleep(random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** attempt)))
    raise Conflict(f"alias {alias!r} of model {name!r} is changing too fast; gave up after {_ATTEMPTS} tries",
                   hint="try again")


def rollback_target(state: AliasState) -> int | None:
    """The version the alias held before its current version was last promoted, if any."""
    for entry in reversed(state.history):
        if entry.version == state.version and entry.action == "promote":
            return entry.previous
    # Reached only through rollbacks (--to a version never promoted): undo the last step.
    return state.history[-1].previous if state.history else None

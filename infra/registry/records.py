"""Value types the registry returns, and the key layout under a registry root."""

from __future__ import annotations

import re
from dataclasses import dataclass

from functions.fetch import version_prefix
from functions.manifest import MANIFEST_FILE, Manifest

from .errors import RegistryError

__all__ = ["AliasState", "HistoryEntry", "PushResult", "VerifyResult", "VersionInfo", "is_version_number"]

# Names are URL-safe, aliases are simple words; models.yaml (infra/spec.py) checks the same patterns.
# fullmatch, not match with "$": "$" also matches before a trailing newline ("m\n" is not a name).
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?")
ALIAS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
RESERVED_REFS = ("latest",)

CLAIM_FILE = ".claim"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise RegistryError(f"invalid model name {name!r}",
                            hint="lowercase letters, digits and '-', 1-48 characters")
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias in RESERVED_REFS or alias.isdigit():
        raise RegistryError(f"invalid alias {alias!r}",
                            hint="letters, digits, '-' or '_', not a number and not 'latest'")
    return alias


def is_version_number(ref: object) -> bool:
    """A version number as text: ASCII digits only (str.isdigit also takes "١" and "１")."""
    return isinstance(ref, str) and ref.isascii() and ref.isdigit()


def model_prefix(name: str) -> str:
    return f"models/{name}/"


def versions_prefix(name: str) -> str:
    return f"models/{name}/versions/"


def version_key(name: str, version: int, file_name: str) -> str:
    return version_prefix(name, version) + file_name


def manifest_key(name: str, version: int) -> str:
    return version_key(name, version, MANIFEST_FILE)


def claim_key(name: str, version: int) -> str:
    return version_key(name, version, CLAIM_FILE)


def digest_key(name: str, digest: str) -> str:
    return f"models/{name}/digests/{digest}.json"


def aliases_prefix(name: str) -> str:
    return f"models/{name}/aliases/"


def alias_key(name: str, alias: str) -> str:
    return f"{aliases_prefix(name)}{alias}.json"


@dataclass(frozen=True)
class PushResult:
    version: int
    created: bool  # False: identical content was already stored as this version


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    digest: str  # sha256 of the manifest without created_at: equal digests, equal content
    pushed_at: str
    actor: str
    size_bytes: int
    manifest: Manifest
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "digest": self.digest, "pushed_at": self.pushed_at,
                "actor": self.actor, "size_bytes": self.size_bytes, "task": self.manifest.task,
                "quantization": self.manifest.quantization.chosen, "files": sorted(self.manifest.files),
                "created_at": self.manifest.created_at, "aliases": list(self.aliases)}


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    previous: int | None
    actor: str
    time: str
    reason: str
    action: str  # promote | rollback

    def to_dict(self) -> dict:
        return {"version": self.version, "previous": self.previous, "actor": self.actor, "time": self.time,
                "reason": self.reason, "action": self.action}

    @classmethod
    def from_dict(cls, data: dict) -> "HistoryEntry":
        previous = data.get("previous")
        return cls(version=int(data["version"]), previous=None if previous is None else int(previous),
                   actor=str(data.get("actor", "")), time=str(data.get("time", "")),
                   reason=str(data.get("reason", "")), action=str(data.get("action", "promote")))


@dataclass(frozen=True)
class AliasState:
    name: str
    alias: str
    version: int
    history: tuple[HistoryEntry, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "alias": self.alias, "version": self.version,
                "history": [h.to_dict() for h in self.history]}


@dataclass(frozen=True)
class VerifyResult:
    name: str
    version: int
    ok: bool
    problem: str = ""  # one line naming the bad file when not ok

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "ok": self.ok, "problem": self.problem}

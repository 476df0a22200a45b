"""The model registry: immutable numbered versions, aliases with history, verified pulls.

Layout under the root (``s3://bucket/prefix`` or a local directory)::

    models/<name>/versions/<n>/.claim          who claimed number n, when, for which content
    models/<name>/versions/<n>/<file>          bundle files, create-exclusive
    models/<name>/versions/<n>/manifest.json   written last: version n exists once it does
    models/<name>/digests/<sha256>.json        content digest -> version, for idempotent pushes
    models/<name>/aliases/<alias>.json         current version + append-only history, CAS only
    models/<name>/removed-aliases/<alias>-<time>-<id>.json   records set aside by unalias / promote --force
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from functions.errors import BundleError, FetchError, VersionCorrupt
from functions.fetch import fetch_bundle, parse_registry_uri
from functions.manifest import Manifest, read_manifest

from . import versions as _versions
from .aliases import read_alias, rollback_target, update_alias
from .external import external_data_problems
from .errors import Conflict, IntegrityError, NotInRegistry, PreconditionFailed, RegistryError, from_fetch_error
from .records import (AliasState, HistoryEntry, PushResult, VerifyResult, VersionInfo, alias_key, aliases_prefix,
                      check_alias, check_name, claim_key, digest_key, is_version_number, manifest_key,
                      version_key)
from .s3store import S3Store
from .store import LocalStore, ObjectStore

__all__ = ["Registry", "open_registry"]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _listing(values) -> str:
    values = list(values)
    return ", ".join(str(v) for v in values) if values else "none"


class _MovedOn(Exception):
    """The alias no longer points at the version being undone."""


class Registry:
    """Registry operations over an object store. ``clock`` returns the current (aware) datetime."""

    def __init__(self, store: ObjectStore, *, clock: Callable[[], datetime] | None = None):
        self.store = store
        self.uri = store.uri
        self._clock = clock or _utc_now

    def _now(self) -> str:
        return self._clock().astimezone(timezone.utc).isoformat(timespec="seconds")

    # -- reading ---------------------------------------------------------------------------
    def list_models(self) -> list[str]:
        return [n for n in self.store.children("models") if _versions.version_numbers(self.store, n)]

    def _complete(self, name: str) -> list[int]:
        return [n for n in _versions.version_numbers(self.store, name)
                if self.store.exists(manifest_key(name, n))]

    def _require_model(self, name: str) -> list[int]:
        check_name(name)
        complete = self._complete(name)
        if not complete and not self.store.children(aliases_prefix(name)):
            raise NotInRegistry(f"no model {name!r} in registry {self.uri}",
                                hint=f"models: {_listing(self.list_models())}")
        return complete

    def _aliases(self, name: str) -> dict[str, AliasState]:
        states = {}
        for child in self.store.children(aliases_prefix(name)):
            if child.endswith(".json"):
                try:
                    found = read_alias(self.store, name, child[: -len(".json")])
                except IntegrityError:
                    continue  # a corrupt alias must not hide the versions; resolving it names the fault
                if found is not None:
                    states[found[0].alias] = found[0]
        return states

    def resolve(self, name: str, ref: int | str) -> int:
        """A version number for ``ref``: a number, "latest", or an alias name."""
        complete = self._require_model(name)
        if (isinstance(ref, int) and not isinstance(ref, bool)) or is_version_number(ref):
            if int(ref) not in complete:
                raise NotInRegistry(f"model {name!r} has no version {int(ref)}", hint=f"versions: {_listing(complete)}")
            return int(ref)
        if ref == "latest":
            if not complete:
                raise NotInRegistry(f"model {name!r} has no versions yet", hint="push one with `modelfn registry push`")
            return complete[-1]
        found = read_alias(self.store, name, check_alias(ref))
        if found is None:
            raise NotInRegistry(f"model {name!r} has no alias {ref!r}",
                                hint=f"aliases: {_listing(self._aliases(name))}")
        return found[0].version

    def _info(self, name: str, number: int, aliases: dict[str, AliasState]) -> VersionInfo | None:
        found = self.store.get(manifest_key(name, number))
        if found is None:
            return None
        try:
            manifest = Manifest.from_json(found[0])
        except BundleError as exc:
            raise IntegrityError(f"model {name!r} version {number}: {exc.message}") from None
        record = (_versions.read_record(self.store, claim_key(name, number)) or ({}, ""))[0]
        return VersionInfo(
            name=name, version=number, digest=record.get("digest") or _versions.content_digest(manifest),
            pushed_at=record.get("pushed_at", ""), actor=record.get("actor", ""),
            size_bytes=sum(f.size for f in manifest.files.values()) + len(found[0]), manifest=manifest,
            aliases=tuple(sorted(a for a, s in aliases.items() if s.version == number)))

    def list_versions(self, name: str) -> list[VersionInfo]:
        numbers = self._require_model(name)
        aliases = self._aliases(name)
        return [info for n in numbers if (info := self._info(name, n, aliases)) is not None]

    def show(self, name: str, ref: int | str) -> VersionInfo:
        number = self.resolve(name, ref)
        info = self._info(name, number, self._aliases(name))
        if info is None:
            raise NotInRegistry(f"model {name!r} version {number} was deleted")
        return info

    def history(self, name: str, alias: str) -> list[HistoryEntry]:
        self._require_model(name)
        found = read_alias(self.store, name, check_alias(alias))
        if found is None:
            raise NotInRegistry(f"model {name!r} has no alias {alias!r}",
                                hint=f"aliases: {_listing(self._aliases(name))}")
        return list(found[0].history)

    # -- writing ---------------------------------------------------------------------------
    def push(self, name: str, bundle_dir: str | Path, *, actor: str | None = None) -> PushResult:
        """Store a bundle as the next version; identical content returns the existing version."""
        check_name(name)
        return _versions.push_bundle(self.store, name, bundle_dir, actor=actor, now=self._now)

    def _entry(self, name: str, version: int, previous: int | None, actor: str | None, reason: str,
               action: str) -> HistoryEntry:
        if not self.store.exists(manifest_key(name, version)):
            raise NotInRegistry(f"model {name!r} has no version {version}")
        return HistoryEntry(version=version, previous=previous, actor=actor or _versions.default_actor(),
                            time=self._now(), reason=reason, action=action)

    def promote(self, name: str, alias: str, version: int | str, *, actor: str | None = None,
                reason: str = "", force: bool = False) -> AliasState:
        """Point ``alias`` at ``version`` and record it in the alias history.

        ``force`` repairs a corrupted alias record: it is set aside (see :meth:`unalias`) and the
        alias starts a new history at ``version``. A readable alias is moved as usual."""
        check_alias(alias)
        number = self.resolve(name, version)
        if force:
            try:
                read_alias(self.store, name, alias)
            except IntegrityError:
                self.unalias(name, alias)
        state = update_alias(self.store, name, alias, lambda current: self._entry(
            name, number, current.version if current else None, actor, reason, "promote"))
        return self._settled(name, alias, state)

    def rollback(self, name: str, alias: str, *, to: int | None = None, actor: str | None = None,
                 reason: str = "") -> AliasState:
        """Point ``alias`` back at the version it held before (or at ``to``), recording it."""
        check_alias(alias)
        self._require_model(name)
        target = None if to is None else self.resolve(name, to)

        def entry(current: AliasState | None) -> HistoryEntry:
            if current is None:
                raise NotInRegistry(f"model {name!r} has no alias {alias!r}")
            number = target if target is not None else rollback_target(current)
            if number is None:
                raise Conflict(f"alias {alias!r} of model {name!r} has no earlier version to roll back to",
                               hint="pass --to VERSION")
            return self._entry(name, number, current.version, actor, reason, "rollback")

        return self._settled(name, alias, update_alias(self.store, name, alias, entry))

    def unalias(self, name: str, alias: str) -> None:
        """Remove an alias, readable or corrupted; its record is kept under ``models/<name>/removed-aliases/``.

        The repair path for an alias record nobody can read: promote cannot move it, show cannot
        resolve it. Deployments that name the alias fail to build until it is promoted again."""
        check_name(name)
        check_alias(alias)
        found = self.store.get(alias_key(name, alias))
        if found is None:
            raise NotInRegistry(f"model {name!r} has no alias {alias!r}",
                                hint=f"aliases: {_listing(self._aliases(name))}")
        stamp = self._now().replace(":", "").replace("+", "Z")
        self.store.put_new(f"models/{name}/removed-aliases/{alias}-{stamp}-{uuid.uuid4().hex[:8]}.json", found[0])
        try:
            self.store.delete(alias_key(name, alias), if_match=found[1])
        except PreconditionFailed:
            raise Conflict(f"alias {alias!r} of model {name!r} changed while it was being removed",
                           hint="look at it again and retry") from None

    def _settled(self, name: str, alias: str, state: AliasState) -> AliasState:
        """Undo an alias move whose version a concurrent delete removed after the move's own check.

        delete() re-checks the aliases after hiding the manifest, but a move whose compare-and-swap
        lands after that re-check would leave the alias on a deleted version. So every move checks
        the manifest once more after it lands and, if it is gone, puts the alias back and fails.
        """
        number = state.version
        if self.store.exists(manifest_key(name, number)):
            return state
        found = read_alias(self.store, name, alias)
        if found is not None and found[0].version == number:  # nobody has moved it on since
            current, etag = found
            previous = current.history[-1].previous if current.history else None
            if previous is None:
                try:  # this move created the alias: remove it
                    self.store.delete(alias_key(name, alias), if_match=etag)
                except PreconditionFailed:
                    pass
            else:
                def undo(current: AliasState | None) -> HistoryEntry:
                    if current is None or current.version != number:
                        raise _MovedOn  # someone moved the alias off the deleted version already
                    return HistoryEntry(version=previous, previous=number, actor="modelfn", time=self._now(),
                                        reason=f"version {number} was deleted while the alias moved to it",
                                        action="rollback")
                try:
                    update_alias(self.store, name, alias, undo)
                except _MovedOn:
                    pass
        raise Conflict(f"model {name!r} version {number} was deleted while {alias!r} moved to it",
                       hint="promote another version")

    def delete(self, name: str, version: int) -> None:
        """Remove a version; refused while an alias points at it. Its number is never reused."""
        number = self.resolve(name, version)

        def holders() -> list[str]:
            return sorted(a for a, s in self._aliases(name).items() if s.version == number)

        if held := holders():
            raise Conflict(f"model {name!r} version {number} is in use by alias {_listing(held)}",
                           hint="promote another version to it first")
        key = manifest_key(name, number)
        found = self.store.get(key)
        if found is None:
            return
        self.store.delete(key)  # invisible from here on
        if held := holders():  # a promotion slipped in between: put the version back
            self.store.put_new(key, found[0])
            raise Conflict(f"model {name!r} version {number} was just promoted to {_listing(held)}")
        info = (_versions.read_record(self.store, claim_key(name, number)) or ({}, ""))[0]
        if digest := info.get("digest"):
            owner = _versions.read_record(self.store, digest_key(name, digest))
            if owner is not None and owner[0].get("version") == number:
                try:
                    self.store.delete(digest_key(name, digest), if_match=owner[1])
                except PreconditionFailed:
                    pass
        claim = claim_key(name, number)
        for stored in self.store.keys(version_key(name, number, "")):
            if stored != claim:  # the claim stays as a tombstone
                self.store.delete(stored)

    # -- integrity -------------------------------------------------------------------------
    def _fetch(self, name: str, number: int, dest: Path) -> Path:
        try:
            return fetch_bundle(self.uri, name, number, dest, s3_client=getattr(self.store, "client", None),
                                endpoint_url=getattr(self.store, "endpoint_url", None))
        except FetchError as exc:
            if isinstance(exc, VersionCorrupt) and not self.store.exists(manifest_key(name, number)):
                # Files vanished because a delete removed the version while we read it (delete hides
                # the manifest first): that is "not found", not a corrupted registry.
                raise NotInRegistry(f"model {name!r} version {number} was deleted while it was being read") from None
            raise from_fetch_error(exc) from None

    def read_file(self, name: str, version: int, manifest: Manifest, file_name: str) -> bytes:
        """One file of a version, checked against its manifest's sha256 (`modelfn build` reads the
        sizes it plans memory with this way, without pulling the whole bundle)."""
        import hashlib

        entry = manifest.files.get(file_name)
        if entry is None:
            raise IntegrityError(f"model {name!r} version {version} has no {file_name} in its manifest")
        found = self.store.get(version_key(name, version, file_name))
        if found is None:
            raise NotInRegistry(f"model {name!r} version {version}: {file_name} is missing from the registry")
        if hashlib.sha256(found[0]).hexdigest() != entry.sha256:
            raise IntegrityError(f"model {name!r} version {version}: {file_name} does not match its sha256")
        return found[0]

    def pull(self, name: str, ref: int | str, dest: str | Path) -> Path:
        """Download a version into ``dest`` atomically, every file checked against the manifest."""
        return self._fetch(name, self.resolve(name, ref), Path(dest))

    def verify(self, name: str, version: int | None = None) -> list[VerifyResult]:
        """Download and check one version, or all of a model's versions; never raises on corruption."""
        numbers = [self.resolve(name, version)] if version is not None else self._require_model(name)
        results = []
        for number in numbers:
            with tempfile.TemporaryDirectory(prefix="modelfn-verify-") as tmp:
                try:
                    fetched = self._fetch(name, number, Path(tmp) / "bundle")
                    problems = external_data_problems(fetched, read_manifest(fetched))
                    if problems:
                        raise IntegrityError(f"model {name!r} version {number}: {problems[0]}")
                    results.append(VerifyResult(name, number, True))
                except IntegrityError as exc:
                    results.append(VerifyResult(name, number, False, str(exc)))
                except NotInRegistry:
                    if version is not None:
                        raise
                    # deleted since the listing: nothing left to verify
        return results


def open_registry(uri: str, *, endpoint_url: str | None = None, s3_client: Any = None,
                  clock: Callable[[], datetime] | None = None) -> Registry:
    """A Registry over ``s3://bucket/prefix`` or a local directory (created on first write)."""
    try:
        kind, where, prefix = parse_registry_uri(uri)
    except FetchError as exc:
        raise RegistryError(exc.message, hint=exc.hint) from None
    if kind == "s3":
        store: ObjectStore = S3Store(where, prefix, client=s3_client, endpoint_url=endpoint_url)
    else:
        store = LocalStore(where)
    return Registry(store, clock=clock)

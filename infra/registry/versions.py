"""Pushing a bundle as a new immutable version, with numbers that are never handed out twice.

How a push goes (every write is create-exclusive, If-None-Match: *):

1. ``versions/<n>/.claim`` for n = highest number seen + 1, moving up on each 412. Exactly one
   pusher creates a given claim, so no two pushes share a number. The claim records the content
   digest, the actor and the time; it is not part of the visible version.
2. Every file the manifest lists, into ``versions/<n>/``.
3. ``digests/<digest>.json`` -> n: the first pusher of a given content wins. A loser whose winner
   is complete returns the winner's number; if the winner's files are gone it takes the digest
   over (If-Match); if the winner is still writing its manifest, it waits a little for it.
4. ``versions/<n>/manifest.json``, last: only now does version n exist for readers.

A push that fails removes what it wrote, claim last, so the number is free again and a retry
gets it. A push that dies without cleaning up leaves a claim without manifest: never visible,
and later pushes simply take the next number. Deleting a version keeps its claim as a tombstone
so a number never names two different contents.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Callable

from functions.fetch import safe_file_name
from functions.manifest import MANIFEST_FILE, Manifest, read_manifest, verify_bundle

from .errors import AlreadyExists, IntegrityError, PreconditionFailed, RegistryError
from .external import external_data_problems
from .records import PushResult, claim_key, digest_key, is_version_number, manifest_key, version_key, versions_prefix
from .store import ObjectStore

__all__ = ["content_digest", "default_actor", "push_bundle", "read_record", "version_numbers"]

_MAX_CLAIM_TRIES = 10_000
# How long a same-content loser waits for the winner to write its manifest before taking over.
DEDUP_WAIT_S = 30.0
_POLL_S = 0.05


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def content_digest(manifest: Manifest) -> str:
    """sha256 of the manifest minus its export time: the same bundle content, the same digest."""
    data = manifest.to_dict()
    data.pop("created_at", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_record(store: ObjectStore, key: str) -> tuple[dict, str] | None:
    """A small JSON record (claim, digest) and its ETag; IntegrityError, naming it, if it is not one."""
    found = store.get(key)
    if found is None:
        return None
    try:
        record = json.loads(found[0])
        if not isinstance(record, dict) or ("version" in record and not isinstance(record["version"], int)):
            raise ValueError("not a record with an integer version")
    except ValueError as exc:
        raise IntegrityError(f"registry record {key} is corrupted: {exc}",
                             hint="restore it from the bucket's versioning, or delete the version") from None
    return record, found[1]


def version_numbers(store: ObjectStore, name: str) -> list[int]:
    """Every number claimed under the model, complete or not, ascending."""
    return sorted(int(c) for c in store.children(versions_prefix(name)) if is_version_number(c))


def _claim(store: ObjectStore, name: str, record: dict) -> int:
    numbers = version_numbers(store, name)
    number = (numbers[-1] if numbers else 0) + 1
    for _ in range(_MAX_CLAIM_TRIES):
        body = json.dumps({**record, "version": number}, sort_keys=True).encode()
        try:
            store.put_new(claim_key(name, number), body)
            return number
        except AlreadyExists:
            number += 1
    raise RegistryError(f"model {name!r}: could not claim a version number after {_MAX_CLAIM_TRIES} tries")


def _owner_of_digest(store: ObjectStore, name: str, digest: str, number: int, token: str,
                     wait_s: float) -> int:
    """Register ``number`` as the version holding ``digest``; return the version that does."""
    key = digest_key(name, digest)
    ours = json.dumps({"version": number, "token": token}).encode()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            store.put_new(key, ours)
            return number
        except AlreadyExists:
            pass
        found = read_record(store, key)
        if found is None:
            continue  # deleted between our create and our read
        other = int(found[0]["version"])
        if other == number or store.exists(manifest_key(name, other)):
            return other
        # The winner is writing its manifest, or failed, or was deleted: wait, then take over.
        if store.exists(claim_key(name, other)) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
            continue
        try:
            store.put_if_match(key, ours, found[1])
            return number
        except PreconditionFailed:
            continue


def _cleanup(store: ObjectStore, name: str, number: int, digest: str, token: str) -> None:
    """Remove a failed or redundant push; the claim goes last so the number is freed only when empty."""
    if store.exists(manifest_key(name, number)):
        return  # the manifest landed before the failure: the version is complete, keep it
    try:
        found = store.get(digest_key(name, digest))
        if found is not None and json.loads(found[0]).get("token") == token:
            store.delete(digest_key(name, digest), if_match=found[1])
    except (PreconditionFailed, RegistryError, ValueError):
        pass
    claim = claim_key(name, number)
    for key in store.keys(versions_prefix(name) + str(number)):
        if key != claim:
            store.delete(key)
    store.delete(claim)


def find_by_digest(store: ObjectStore, name: str, digest: str) -> int | None:
    found = read_record(store, digest_key(name, digest))
    if found is None:
        return None
    number = int(found[0]["version"])
    return number if store.exists(manifest_key(name, number)) else None


def _refuse_links(bundle: Path, file_names: list[str]) -> None:
    """Every stored file is a regular file inside the bundle: a symlink (of the file or of a folder on
    its way) would upload whatever it points at, secrets included."""
    root = bundle.resolve()
    for file_name in file_names:
        path = bundle
        for part in PurePosixPath(file_name).parts:
            path = path / part
            if path.is_symlink():
                raise RegistryError(f"bundle {bundle}: {file_name} is or passes through a symlink "
                                    f"({path.relative_to(bundle)})", hint="copy the real file into the bundle")
        if not path.resolve().is_relative_to(root) or (path.exists() and not path.is_file()):
            raise RegistryError(f"bundle {bundle}: {file_name} is not a regular file inside the bundle")


def push_bundle(store: ObjectStore, name: str, bundle_dir: str | Path, *, actor: str | None,
                now: Callable[[], str], wait_s: float = DEDUP_WAIT_S) -> PushResult:
    bundle = Path(bundle_dir)
    manifest = read_manifest(bundle)
    for file_name in manifest.files:
        if not safe_file_name(file_name) or file_name == MANIFEST_FILE:
            raise RegistryError(f"bundle {bundle}: file name {file_name!r} cannot be stored",
                                hint="file names must be relative, without '..' or leading dots")
    _refuse_links(bundle, [*manifest.files, MANIFEST_FILE])
    verify_bundle(bundle, manifest)  # never store a bundle that is already broken
    problems = external_data_problems(bundle, manifest)
    if problems:
        raise RegistryError(f"bundle {bundle}: {problems[0]}", hint="re-export the bundle; external data "
                            "must sit inside it and be listed in manifest.json")
    digest = content_digest(manifest)
    existing = find_by_digest(store, name, digest)
    if existing is not None:
        return PushResult(existing, False)
    token = uuid.uuid4().hex
    number = _claim(store, name, {"digest": digest, "token": token, "actor": actor or default_actor(),
                                  "pushed_at": now()})
    try:
        for file_name in sorted(manifest.files):
            store.put_file_new(version_key(name, number, file_name), bundle / file_name)
        owner = _owner_of_digest(store, name, digest, number, token, wait_s)
        if owner != number:
            _cleanup(store, name, number, digest, token)
            return PushResult(owner, False)
        store.put_file_new(manifest_key(name, number), bundle / MANIFEST_FILE)
    except BaseException:
        try:
            _cleanup(store, name, number, digest, token)
        except Exception:  # noqa: BLE001 - report the failure that stopped the push
            pass
        raise
    return PushResult(number, True)

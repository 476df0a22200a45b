"""The object store under the registry: the few conditional operations it needs, on a local directory.

Both stores (this one and :class:`infra.registry.s3store.S3Store`) offer the same semantics, so the
registry logic above them is written once:

- ``put_new`` / ``put_file_new``: create-exclusive; raise AlreadyExists if the key is present
  (S3 ``If-None-Match: *``). Readers never see a half-written object.
- ``put_if_match``: compare-and-swap on the ETag returned by ``get``; raise PreconditionFailed if
  the object changed or vanished (S3 ``If-Match``).
- ``get`` -> (bytes, etag) or None; ``exists``; ``children`` (names one level below a prefix);
  ``keys`` (every key below a prefix); ``delete`` (optionally only if the ETag still matches).

Keys are '/'-separated paths relative to the registry root.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Protocol

from .errors import AlreadyExists, EndpointError, PreconditionFailed

__all__ = ["LocalStore", "ObjectStore"]


class ObjectStore(Protocol):
    uri: str

    def get(self, key: str) -> tuple[bytes, str] | None: ...
    def exists(self, key: str) -> bool: ...
    def put_new(self, key: str, data: bytes) -> str: ...
    def put_file_new(self, key: str, path: Path) -> None: ...
    def put_if_match(self, key: str, data: bytes, etag: str) -> str: ...
    def children(self, prefix: str) -> list[str]: ...
    def keys(self, prefix: str) -> list[str]: ...
    def delete(self, key: str, *, if_match: str | None = None) -> None: ...


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class LocalStore:
    """A plain directory. Temporary files and lock files live under ``.tmp`` and ``.locks``
    in the root, so listings only ever show complete objects."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.uri = str(root)
        if self.root.exists() and not self.root.is_dir():
            raise EndpointError(f"registry {self.root} is a file, not a directory")

    def _path(self, key: str) -> Path:
        return self.root / key

    def _staged(self, write) -> Path:
        tmp_dir = self.root / ".tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / uuid.uuid4().hex
        write(tmp)
        return tmp

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        # flock is released by the kernel if the holder dies, so a crash never leaves a stuck lock.
        lock_path = self.root / ".locks" / (key.replace("/", "%") + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _link_new(self, key: str, tmp: Path) -> None:
        final = self._path(key)
        try:
            for _ in range(5):  # a concurrent cleanup may remove the empty parent under us
                final.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(tmp, final)  # atomic create-exclusive: fails if the key exists
                    return
                except FileNotFoundError:
                    continue
                except FileExistsError:
                    raise AlreadyExists(key) from None
            raise EndpointError(f"cannot create {final}: its directory keeps disappearing")
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return data, _etag(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def put_new(self, key: str, data: bytes) -> str:
        self._link_new(key, self._staged(lambda p: p.write_bytes(data)))
        return _etag(data)

    def put_file_new(self, key: str, path: Path) -> None:
        self._link_new(key, self._staged(lambda p: shutil.copyfile(path, p)))

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        with self._locked(key):
            current = self.get(key)
            if current is None or current[1] != etag:
                raise PreconditionFailed(key)
            tmp = self._staged(lambda p: p.write_bytes(data))
            os.replace(tmp, self._path(key))  # readers see the old or the new document, never half
        return _etag(data)

    def children(self, prefix: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._path(prefix)) if not n.startswith(".tmp"))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        if if_match is None:
            self._path(key).unlink(missing_ok=True)
        else:
            with self._locked(key):
                current = self.get(key)
                if current is None or current[1] != if_match:
                    raise PreconditionFailed(key)
                self._path(key).unlink(missing_ok=True)
        # Empty directories would read as claimed version numbers; prune them up to the root.
        parent = self._path(key).parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

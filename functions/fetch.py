"""Fetch one registry version into a local directory, checking every file against the manifest.

This is the one read path for bundle files: the runtime calls :func:`fetch_bundle` at cold start
(when ``MODELFN_REGISTRY_URI`` is set) and ``infra.registry`` calls it for ``pull`` and ``verify``.
It imports only the standard library and ``functions``; boto3 is imported when an ``s3://`` URI is
used, never at module import.

Registry layout read here (see DESIGN.md)::

    <root>/models/<name>/versions/<n>/manifest.json   written last: a version exists once it does
    <root>/models/<name>/versions/<n>/<file>          every file the manifest lists, immutable

Failures raise a :class:`FetchError` (a BundleError; functions/errors.py) whose class says what went
wrong: RegistryUnreachable (unreachable, no credentials, no bucket, access denied), VersionNotFound
(no such version), VersionCorrupt (a stored file is missing, partial or corrupted; the message names
it) or DestinationTaken.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from .constants import AWS_ENDPOINT_URL
from .errors import (
    BundleError,
    DestinationTaken,
    FetchError,
    RegistryUnreachable,
    VersionCorrupt,
    VersionNotFound,
)
from .manifest import MANIFEST_FILE, Manifest, sha256_file, verify_bundle

__all__ = [
    "FetchError", "clean_staging", "fetch_bundle", "make_s3_client", "parse_registry_uri", "s3_failure", "safe_file_name",
    "version_prefix",
]

# Small connect timeout so an unreachable endpoint fails in seconds, with a few standard retries
# for the throttling and 5xx answers real S3 gives under load.
_CONNECT_TIMEOUT_S = 3
_READ_TIMEOUT_S = 60
_MAX_ATTEMPTS = 4  # in all, the first included (botocore's total_max_attempts)
# At cold start a request is waiting: a registry that does not answer must fail it within seconds
# (then the handler backs off and answers 503), not hold it for minutes. The read timeout is per
# socket read, so large files still download at any speed that keeps bytes coming.
COLD_START_CONNECT_TIMEOUT_S = 2
COLD_START_READ_TIMEOUT_S = 5
COLD_START_MAX_ATTEMPTS = 2
# A file whose digest does not match is downloaded once more (a torn transfer), then refused.
_INTEGRITY_ATTEMPTS = 2
STAGING_MARKER = ".partial-"


def parse_registry_uri(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/prefix`` -> ("s3", bucket, prefix); anything else -> ("local", path, "")."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise RegistryUnreachable(f"registry URI {uri!r} names no bucket",
                                      hint="use s3://bucket/prefix")
        return "s3", bucket, prefix.strip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise RegistryUnreachable(f"registry URI {uri!r} is neither s3://bucket/prefix nor a directory")
    return "local", uri[len("file://"):] if uri.startswith("file://") else uri, ""


def version_prefix(name: str, version: int) -> str:
    return f"models/{name}/versions/{int(version)}/"


def safe_file_name(name: str) -> bool:
    """A manifest file name that stays inside its version directory and is not a registry marker."""
    path = PurePosixPath(name)
    return (bool(name) and "\\" not in name and not path.is_absolute()
            and all(part not in ("", ".", "..") and not part.startswith(".") for part in path.parts))


def make_s3_client(endpoint_url: str | None = None, *, connect_timeout: float = _CONNECT_TIMEOUT_S,
                   read_timeout: float = _READ_TIMEOUT_S, max_attempts: int = _MAX_ATTEMPTS) -> Any:
    """A boto3 S3 client with short connect timeouts; endpoint from the argument, then AWS_ENDPOINT_URL.

    ``max_attempts`` counts every try of a request, the first included."""
    import boto3
    from botocore.config import Config

    endpoint_url = endpoint_url or os.environ.get(AWS_ENDPOINT_URL) or None
    session = boto3.session.Session()
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=32,
    )
    return session.client("s3", endpoint_url=endpoint_url, region_name=session.region_name or "us-east-1",
                          config=config)


def s3_failure(exc: BaseException, *, bucket: str, endpoint: str | None) -> FetchError | None:
    """Translate a boto3/botocore failure into one clear FetchError; None when it is not one."""
    try:
        from botocore import exceptions as bce
    except ImportError:  # pragma: no cover - boto3 is installed wherever s3:// is used
        return None
    where = endpoint or "the default AWS S3 endpoint"
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return RegistryUnreachable("no AWS credentials found",
                                   hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ConnectionClosedError,
                        bce.ReadTimeoutError)):
        return RegistryUnreachable(f"cannot reach S3 endpoint {where}",
                                   hint="check --endpoint-url / AWS_ENDPOINT_URL and the network")
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code == "NoSuchBucket":
            return RegistryUnreachable(f"S3 bucket {bucket!r} does not exist at {where}",
                                       hint="create it or fix the registry URI")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "ExpiredToken"):
            return RegistryUnreachable(f"S3 denied access to bucket {bucket!r} ({code})",
                                       hint="check the AWS credentials and the bucket policy")
        if code in ("NoSuchKey", "404", "NotFound"):
            return VersionNotFound("object not found")
        return RegistryUnreachable(
            f"S3 error {code or 'unknown'} on bucket {bucket!r}: {error.get('Message', '')}".strip())
    if isinstance(exc, bce.BotoCoreError):
        return RegistryUnreachable(f"S3 request to {where} failed: {exc}")
    return None


class _LocalReader:
    def __init__(self, root: str):
        self.root = Path(root)

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def download(self, key: str, dest: Path) -> bool:
        try:
            shutil.copyfile(self.root / key, dest)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True


class _S3Reader:
    def __init__(self, bucket: str, prefix: str, client: Any, endpoint: str | None):
        self.bucket, self.prefix, self.client, self.endpoint = bucket, prefix, client, endpoint

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn, *args, missing=None, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            failure = s3_failure(exc, bucket=self.bucket, endpoint=self.endpoint)
            if failure is None:
                raise
            if isinstance(failure, VersionNotFound):
                return missing
            raise failure from None

    def read(self, key: str) -> bytes | None:
        response = self._call(self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return None if response is None else response["Body"].read()

    def download(self, key: str, dest: Path) -> bool:
        # download_file splits large objects into ranged GETs on several threads.
        missing = object()
        return self._call(self.client.download_file, self.bucket, self._key(key), str(dest),
                          missing=missing) is not missing


def _reader(registry_uri: str, s3_client: Any, endpoint_url: str | None, client_options: dict | None):
    kind, where, prefix = parse_registry_uri(registry_uri)
    if kind == "local":
        return _LocalReader(where)
    endpoint = endpoint_url or os.environ.get(AWS_ENDPOINT_URL) or None
    return _S3Reader(where, prefix, s3_client or make_s3_client(endpoint, **(client_options or {})), endpoint)


def clean_staging(dest: str | os.PathLike[str]) -> list[Path]:
    """Remove staging directories that interrupted fetches into ``dest`` left behind; the removed paths.

    Only for a caller that owns ``dest``'s directory and knows no fetch into it is running: the
    runtime at cold start (one process per execution environment; a process killed mid-fetch, by a
    timeout or out of memory, is restarted in the same environment with the same /tmp).
    """
    dest = Path(dest)
    removed = []
    for leftover in dest.parent.glob(f".{dest.name}{STAGING_MARKER}*") if dest.parent.is_dir() else ():
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover)
    return removed


def _file_ok(path: Path, entry) -> bool:
    try:
        return path.stat().st_size == entry.size and sha256_file(path) == entry.sha256
    except OSError:
        return False


def _already_there(dest: Path, manifest_bytes: bytes) -> bool:
    """A previous fetch of exactly this version, intact (warm start, or a concurrent fetcher won)."""
    try:
        if (dest / MANIFEST_FILE).read_bytes() != manifest_bytes:
            return False
        verify_bundle(dest)
    except (OSError, BundleError):
        return False
    return True


def fetch_bundle(registry_uri: str, name: str, version: int, dest: str | os.PathLike[str], *,
                 s3_client: Any = None, endpoint_url: str | None = None, client_options: dict | None = None,
                 replace_invalid: bool = False) -> Path:
    """Download version ``version`` of model ``name`` into ``dest`` and return ``dest``.

    The files land in a sibling temporary directory, are checked against the manifest's sha256
    and size, and only then is the directory renamed to ``dest``: a reader never sees a partial
    or unverified bundle. A file that fails its check is downloaded once more, then refused
    (``integrity``). An existing ``dest`` holding this exact version is returned as is; any other
    non-empty ``dest`` is refused, or with ``replace_invalid`` (a caller that owns it) removed.
    ``client_options`` (connect_timeout, read_timeout, max_attempts) shape an S3 client made here.
    """
    dest = Path(dest)
    label = f"model {name!r} version {version}"
    reader = _reader(registry_uri, s3_client, endpoint_url, client_options)
    prefix = version_prefix(name, version)
    manifest_bytes = reader.read(prefix + MANIFEST_FILE)
    if manifest_bytes is None:
        raise VersionNotFound(f"{label} is not in registry {registry_uri}",
                              hint="`modelfn registry list NAME` shows the versions")
    try:
        manifest = Manifest.from_json(manifest_bytes)
    except BundleError as exc:
        raise VersionCorrupt(f"{label}: stored manifest is unreadable: {exc.message}") from None
    if _already_there(dest, manifest_bytes):
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if not replace_invalid:
            raise DestinationTaken(f"destination {dest} already exists and does not hold {label}",
                                   hint="remove it or choose another directory")
        if dest.is_dir():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}{STAGING_MARKER}{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        for file_name in manifest.files:
            if not safe_file_name(file_name):
                raise VersionCorrupt(f"{label}: manifest lists an unsafe file name {file_name!r}")
        pending = sorted(manifest.files)
        (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
        for attempt in range(_INTEGRITY_ATTEMPTS):
            for file_name in pending:
                target = staging / file_name
                target.parent.mkdir(parents=True, exist_ok=True)
                if not reader.download(prefix + file_name, target):
                    raise VersionCorrupt(f"{label}: file {file_name} is missing from the registry",
                                         hint="the version is partial; push it again")
            try:
                verify_bundle(staging, manifest)
                break
            except BundleError as exc:
                if attempt + 1 == _INTEGRITY_ATTEMPTS:
                    raise VersionCorrupt(f"{label}: {exc.message}",
                                         hint="the stored copy is corrupted; push the bundle again") from None
            # A torn transfer is fetched once more, only the files that failed; a stored corruption
            # fails the same way again and is refused above.
            pending = [f for f in pending if not _file_ok(staging / f, manifest.files[f])]
        try:
            os.rename(staging, dest)  # onto a missing or empty directory: atomic on POSIX
        except OSError:
            if _already_there(dest, manifest_bytes):  # a concurrent fetcher finished first
                return dest
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest

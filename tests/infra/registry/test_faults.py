"""Faults: corrupted and partial versions, pushes that die halfway, multipart failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.manifest import MODEL_FILE, TOKENIZER_FILE
from infra.registry import IntegrityError, NotInRegistry, PushResult, Registry
from infra.registry.s3store import S3Store
from infra.registry.versions import version_numbers


def _stored_key(registry, key: str) -> str:
    store = registry.store
    return store._key(key) if isinstance(store, S3Store) else key


def _overwrite(registry, key: str, mutate) -> None:
    """Change a stored object behind the registry's back, as a bad disk or a stray tool would."""
    store = registry.store
    data, _ = store.get(key)
    if isinstance(store, S3Store):
        store.client.put_object(Bucket=store.bucket, Key=store._key(key), Body=mutate(data))
    else:
        (store.root / key).write_bytes(mutate(data))


def _remove(registry, key: str) -> None:
    store = registry.store
    if isinstance(store, S3Store):
        store.client.delete_object(Bucket=store.bucket, Key=store._key(key))
    else:
        (store.root / key).unlink()


def _flip_first_byte(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:]


def test_flipped_byte_is_refused_by_pull_and_verify_naming_the_file(registry, bundle, tmp_path):
    registry.push("m", bundle("a"))
    registry.push("m", bundle("b"))
    _overwrite(registry, f"models/m/versions/1/{MODEL_FILE}", _flip_first_byte)

    with pytest.raises(IntegrityError, match=MODEL_FILE) as err:
        registry.pull("m", 1, tmp_path / "out")
    assert "sha256" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out.partial-*")) == []

    results = registry.verify("m")
    assert [(r.version, r.ok) for r in results] == [(1, False), (2, True)]
    assert MODEL_FILE in results[0].problem
    assert registry.pull("m", 2, tmp_path / "good").is_dir()


def test_missing_file_is_refused_as_partial(registry, bundle, tmp_path):
    registry.push("m", bundle("a"))
    _remove(registry, f"models/m/versions/1/{TOKENIZER_FILE}")
    with pytest.raises(IntegrityError, match=f"{TOKENIZER_FILE} is missing"):
        registry.pull("m", "latest", tmp_path / "out")
    assert not registry.verify("m", 1)[0].ok


class FailingStore:
    """Wraps a store; file uploads after the first ``uploads_ok`` raise, as a dropped network would.
    With ``dies=True`` deletes fail too: the pusher cannot clean up, as if the process was killed."""

    def __init__(self, inner, uploads_ok: int, *, dies: bool = False):
        self.inner, self.uploads_ok, self.dies = inner, uploads_ok, dies
        self.uploads = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_file_new(self, key, path):
        if self.uploads >= self.uploads_ok:
            raise ConnectionError(f"injected failure uploading {key}")
        self.uploads += 1
        return self.inner.put_file_new(key, path)

    def delete(self, key, **kwargs):
        if self.dies:
            raise ConnectionError("injected: process gone")
        return self.inner.delete(key, **kwargs)


def test_push_failing_halfway_leaves_nothing_and_a_retry_succeeds(registry, bundle):
    source = bundle("a")
    flaky = Registry(FailingStore(registry.store, uploads_ok=2))
    with pytest.raises(ConnectionError, match="injected"):
        flaky.push("m", source)
    with pytest.raises(NotInRegistry):
        registry.resolve("m", "latest")
    assert registry.store.keys("models/m/versions") == []  # the failed push cleaned up after itself
    assert registry.push("m", source) == PushResult(1, True)
    assert registry.verify("m")[0].ok


def test_push_dying_halfway_never_becomes_visible_and_does_not_block(registry, bundle, tmp_path):
    source = bundle("a")
    dying = Registry(FailingStore(registry.store, uploads_ok=2, dies=True))
    with pytest.raises(ConnectionError):
        dying.push("m", source)
    assert version_numbers(registry.store, "m") == [1]  # claimed, half written
    with pytest.raises(NotInRegistry):
        registry.resolve("m", 1)
    # The retry takes the next number at once; the abandoned one never shows up.
    assert registry.push("m", source) == PushResult(2, True)
    assert [i.version for i in registry.list_versions("m")] == [2]
    with pytest.raises(NotInRegistry):
        registry.pull("m", 1, tmp_path / "out")
    assert [r.version for r in registry.verify("m")] == [2]


class FailingClient:
    """A boto3 client whose second multipart part upload fails."""

    def __init__(self, inner):
        self.inner = inner
        self.parts = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upload_part(self, **kwargs):
        self.parts += 1
        if self.parts == 2:
            raise ConnectionError("injected failure in part 2")
        return self.inner.upload_part(**kwargs)


MIB = 1024 * 1024


@pytest.fixture
def multipart_registry(s3_bucket, moto_endpoint):
    def make(client=None) -> Registry:
        from functions.fetch import make_s3_client

        client = client or make_s3_client(moto_endpoint)
        return Registry(S3Store(s3_bucket, "reg", client=client, endpoint_url=moto_endpoint,
                                multipart_threshold=5 * MIB, part_size=5 * MIB))
    return make


def test_large_files_go_up_as_multipart_and_stay_create_exclusive(multipart_registry, bundle, tmp_path):
    registry = multipart_registry()
    source = bundle("big", big=6 * MIB)
    assert registry.push("m", source) == PushResult(1, True)
    store = registry.store
    head = store.client.head_object(Bucket=store.bucket, Key=store._key(f"models/m/versions/1/{MODEL_FILE}"))
    assert head["ETag"].strip('"').endswith("-2")  # two parts
    from infra.registry.errors import AlreadyExists

    with pytest.raises(AlreadyExists):
        store.put_file_new(f"models/m/versions/1/{MODEL_FILE}", source / MODEL_FILE)
    assert (registry.pull("m", 1, tmp_path / "out") / MODEL_FILE).stat().st_size == (source / MODEL_FILE).stat().st_size


def test_failed_multipart_upload_is_aborted_and_invisible(multipart_registry, bundle):
    source = bundle("big", big=6 * MIB)
    from functions.fetch import make_s3_client

    flaky = FailingClient(make_s3_client(multipart_registry().store.endpoint_url))
    registry = multipart_registry(flaky)
    with pytest.raises(ConnectionError, match="part 2"):
        registry.push("m", source)
    store = registry.store
    assert store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    assert store.keys("models/m/versions") == []
    assert multipart_registry().push("m", source) == PushResult(1, True)


def test_fetch_bundle_is_the_runtime_read_path(registry, bundle, tmp_path):
    """functions.fetch.fetch_bundle reads what the registry wrote, given only the URI."""
    from functions.errors import VersionNotFound
    from functions.fetch import fetch_bundle

    registry.push("m", bundle("a"))
    store = registry.store
    endpoint = getattr(store, "endpoint_url", None)
    dest = fetch_bundle(registry.uri, "m", 1, tmp_path / "cold-start", endpoint_url=endpoint)
    assert (dest / MODEL_FILE).read_bytes().startswith(b"onnx:a")
    with pytest.raises(VersionNotFound):
        fetch_bundle(registry.uri, "m", 7, tmp_path / "nope", endpoint_url=endpoint)


def test_functions_fetch_does_not_import_boto3_or_infra():
    import subprocess
    import sys

    code = ("import sys, functions.fetch; bad = [m for m in ('boto3', 'botocore', 'infra', 'torch') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stdout + done.stderr


class ConflictingClient:
    """Answers the first ``n`` conditional PutObjects with 409 ConditionalRequestConflict, as S3 does
    while a competing conditional write is in flight (moto's server never sends it)."""

    def __init__(self, inner, n: int):
        self.inner, self.left, self.seen = inner, n, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_object(self, **kwargs):
        if self.left and ("IfMatch" in kwargs or "IfNoneMatch" in kwargs):
            from botocore.exceptions import ClientError

            self.left -= 1
            self.seen += 1
            raise ClientError({"Error": {"Code": "ConditionalRequestConflict", "Message": "in flight"},
                               "ResponseMetadata": {"HTTPStatusCode": 409}}, "PutObject")
        return self.inner.put_object(**kwargs)


def test_409_conditional_request_conflict_is_retried(s3_bucket, moto_endpoint, bundle):
    from functions.fetch import make_s3_client

    client = ConflictingClient(make_s3_client(moto_endpoint), n=3)
    registry = Registry(S3Store(s3_bucket, "reg", client=client, endpoint_url=moto_endpoint))
    assert registry.push("m", bundle("a")) == PushResult(1, True)  # claim and files retried
    registry.push("m", bundle("b"))
    registry.promote("m", "prod", 1)
    client.left = 2
    assert registry.promote("m", "prod", 2).version == 2  # CAS lost twice, re-read, then landed
    assert [h.version for h in registry.history("m", "prod")] == [1, 2]
    assert client.seen == 5



def test_a_corrupted_registry_record_is_one_clear_error(registry, bundle):
    """A claim record that is not JSON is named in an IntegrityError, not a traceback."""
    registry.push("m", bundle("a"))
    _overwrite(registry, "models/m/versions/1/.claim", lambda data: b"{not json")
    with pytest.raises(IntegrityError, match=r"\.claim is corrupted"):
        registry.list_versions("m")

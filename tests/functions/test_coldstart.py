"""Cold-start fetch faults, each injected for real: a registry that refuses connections (a closed
loopback port), one that accepts and never answers, corrupt and torn objects on moto's S3 server,
staging leftovers. The handler answers 503 ``model_unavailable`` with Retry-After, backs off between
load attempts, and serves once the registry is back."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from functions.errors import VersionCorrupt
from functions.fetch import COLD_START_MAX_ATTEMPTS, fetch_bundle, make_s3_client
from functions.manifest import MODEL_FILE
from tests.functions.conftest import call
from tests.functions.eventfiles import load_event
from infra.emulator import free_port
from tests.infra.registry.conftest import aws_env, moto_endpoint, s3_bucket  # noqa: F401 - fixtures

HEALTH = "minilm-health-v2"


@pytest.fixture(scope="module")
def embed_bundle(tiny_bundle):
    return tiny_bundle("feature-extraction")


class StepClock:
    """The handler's monotonic clock, moved by hand through the backoff."""

    def __init__(self):
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def _load_attempts(capsys) -> int:
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    return sum(1 for l in lines if l.get("message") == "model bundle could not be loaded")


def _push(endpoint: str, bucket: str, bundle) -> None:
    from infra.registry import open_registry

    open_registry(f"s3://{bucket}/reg", endpoint_url=endpoint).push("minilm", bundle)


def _cold_start(load_handler, tmp_path, endpoint: str, monkeypatch, **env):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return load_handler(tmp_path / "absent", MODELFN_REGISTRY_URI=env.pop("uri", "s3://registry/reg"),
                        MODELFN_MODEL_NAME="minilm", MODELFN_MODEL_VERSION="1",
                        MODELFN_FETCH_DIR=tmp_path / "fetch", **env)


def test_unreachable_registry_is_a_503_with_backoff_and_recovers_when_it_returns(
        load_handler, embed_bundle, tmp_path, monkeypatch, aws_env, capsys):  # noqa: F811
    port = free_port()  # nothing listens here: every connection is refused
    endpoint = f"http://127.0.0.1:{port}"
    module = _cold_start(load_handler, tmp_path, endpoint, monkeypatch)
    clock = module.clock = StepClock()
    assert _load_attempts(capsys) == 1  # the init-phase attempt

    for _ in range(3):  # within the backoff: answered at once from the last error, no new attempt
        status, body, headers = call(module, load_event(HEALTH))
        assert (status, body["error"]["code"]) == (503, "model_unavailable")
        assert "cannot reach" in body["error"]["message"] and headers["retry-after"] == "1"
    assert _load_attempts(capsys) == 0

    clock.now += 1.0  # backoff over: one more attempt, and the next wait doubles
    status, _, headers = call(module, load_event(HEALTH))
    assert status == 503 and headers["retry-after"] == "2" and _load_attempts(capsys) == 1
    clock.now += 1.0
    assert call(module, load_event(HEALTH))[2]["retry-after"] == "1" and _load_attempts(capsys) == 0

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)  # the registry returns
    server.start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="registry")
        _push(endpoint, "registry", embed_bundle)
        clock.now += 1.0
        status, body, headers = call(module, load_event(HEALTH))
        assert status == 200 and body["status"] == "ok" and "retry-after" not in headers
        assert (tmp_path / "fetch" / "minilm" / "1" / MODEL_FILE).is_file()
    finally:
        server.stop()


def test_a_registry_that_never_answers_fails_the_load_after_bounded_attempts(
        load_handler, tmp_path, monkeypatch, aws_env, capsys):  # noqa: F811
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept_and_stay_silent():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    try:
        module = _cold_start(load_handler, tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}",
                             monkeypatch, MODELFN_FETCH_TIMEOUT_S="0.5")
        status, body, headers = call(module, load_event(HEALTH))
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
    assert (status, body["error"]["code"]) == (503, "model_unavailable") and headers["retry-after"]
    loads = _load_attempts(capsys)  # the init attempt, and one more if its backoff ran out meanwhile
    assert loads in (1, 2)
    assert len(accepted) == COLD_START_MAX_ATTEMPTS * loads  # one read timeout per try, then it gives up


class CountingClient:
    """An S3 client that counts downloads per key and may tear the first ``torn`` of them."""

    def __init__(self, inner, torn: int = 0):
        self.inner, self.torn, self.downloads = inner, torn, {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def download_file(self, bucket, key, filename, **kwargs):
        name = key.rsplit("/", 1)[-1]
        self.downloads[name] = self.downloads.get(name, 0) + 1
        self.inner.download_file(bucket, key, filename, **kwargs)
        if name == MODEL_FILE and self.torn > 0:
            self.torn -= 1
            with open(filename, "r+b") as f:  # a transfer cut short
                f.truncate(10)


def test_a_torn_download_is_fetched_once_more(moto_endpoint, s3_bucket, embed_bundle, tmp_path):  # noqa: F811
    _push(moto_endpoint, s3_bucket, embed_bundle)
    client = CountingClient(make_s3_client(moto_endpoint), torn=1)
    dest = fetch_bundle(f"s3://{s3_bucket}/reg", "minilm", 1, tmp_path / "b", s3_client=client)
    assert (dest / MODEL_FILE).stat().st_size == (embed_bundle / MODEL_FILE).stat().st_size
    assert client.downloads[MODEL_FILE] == 2 and set(client.downloads.values()) == {1, 2}


def test_a_corrupt_stored_object_is_fetched_twice_then_refused(moto_endpoint, s3_bucket, embed_bundle,
                                                               tmp_path):  # noqa: F811
    _push(moto_endpoint, s3_bucket, embed_bundle)
    client = CountingClient(make_s3_client(moto_endpoint))
    key = f"reg/models/minilm/versions/1/{MODEL_FILE}"
    data = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    client.put_object(Bucket=s3_bucket, Key=key, Body=bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(VersionCorrupt, match=f"{MODEL_FILE} does not match its sha256"):
        fetch_bundle(f"s3://{s3_bucket}/reg", "minilm", 1, tmp_path / "b", s3_client=client)
    assert client.downloads[MODEL_FILE] == 2
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []  # no staging left


def test_staging_leftovers_and_an_invalid_copy_are_cleaned_at_cold_start(
        load_handler, embed_bundle, tmp_path, monkeypatch, moto_endpoint, s3_bucket):  # noqa: F811
    _push(moto_endpoint, s3_bucket, embed_bundle)
    leftover = tmp_path / "fetch" / "minilm" / ".1.partial-0123456789ab"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / MODEL_FILE).write_bytes(b"half a model")
    invalid = tmp_path / "fetch" / "minilm" / "1"
    invalid.mkdir()
    (invalid / MODEL_FILE).write_bytes(b"not the model")  # a copy a killed process left unverified
    other = tmp_path / "fetch" / "minilm" / ".2.partial-0123456789ab"  # another version's: not ours
    other.mkdir()
    module = _cold_start(load_handler, tmp_path, moto_endpoint, monkeypatch, uri=f"s3://{s3_bucket}/reg")
    status, body, _ = call(module, load_event(HEALTH))
    assert status == 200, body
    assert not leftover.exists() and other.exists()
    assert (invalid / MODEL_FILE).read_bytes() == (embed_bundle / MODEL_FILE).read_bytes()

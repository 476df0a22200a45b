"""Registry fixtures: one suite, two backends (a local directory and S3 over HTTP via moto's server)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from functions.manifest import MODEL_FILE, TOKENIZER_FILE, Manifest, Parity, Quantization, RuntimeConfig, describe_files
from infra.emulator import free_port


def make_bundle(root: Path, content: str, *, big: int = 0) -> Path:
    """A small fake bundle: the registry only needs files plus a manifest describing them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / MODEL_FILE).write_bytes(b"onnx:" + content.encode() + b"\0" * big)
    (root / TOKENIZER_FILE).write_text('{"content": "%s"}' % content)
    (root / "extra").mkdir(exist_ok=True)
    (root / "extra" / "labels.txt").write_text("a\nb\n")
    Manifest(
        name="fake", task="feature-extraction", architecture="x86_64", target="lambda",
        inputs=("input_ids", "attention_mask"), outputs=("last_hidden_state",), opset=17,
        quantization=Quantization(requested="int8", chosen="int8-dynamic", reason="test"),
        parity=Parity(metrics={"mean_cosine": 0.999}, thresholds={"mean_cosine": 0.99}, passed=True, samples=4),
        runtime=RuntimeConfig(), files=describe_files(root),
        created_at=datetime.now(timezone.utc).isoformat(),
    ).write(root)
    return root


@pytest.fixture
def bundle(tmp_path):
    """Factory: content string -> a bundle directory whose files depend on it."""
    counter = iter(range(10_000))

    def make(content: str, **kwargs) -> Path:
        return make_bundle(tmp_path / f"bundle-{next(counter)}", content, **kwargs)

    return make




@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's real HTTP server on loopback, one per session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Fake credentials; no shared config or instance metadata lookups that could reach real AWS."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture
def s3_bucket(moto_endpoint, aws_env):
    """A fresh bucket on the moto server for each test."""
    import boto3

    name = "reg-" + uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def registry_uri(request, tmp_path):
    """(uri, endpoint_url) of an empty registry on each backend."""
    if request.param == "local":
        return str(tmp_path / "registry"), None
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/team/registry", request.getfixturevalue("moto_endpoint")


@pytest.fixture
def registry(registry_uri):
    from infra.registry import open_registry

    uri, endpoint = registry_uri
    return open_registry(uri, endpoint_url=endpoint)

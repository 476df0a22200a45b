"""A bundle over the bake limit is not in the image: the function fetches it from an S3 registry at
cold start (moto's S3 server standing in for S3) and answers like the baked one.

The image `sam build` made runs with the host's network under its own Runtime Interface Emulator,
so it reaches moto on loopback like every other test here: no traffic leaves 127.0.0.1. (`sam local
invoke --docker-network host` would not do: SAM keeps such a container on the default bridge.)
"""

from __future__ import annotations

import json

import pytest
import yaml

from infra.emulator import free_port
from tests.integration.samlocal import (assert_parity, modelfn_build,
                                        predict_event, sam)

pytestmark = [pytest.mark.slow, pytest.mark.containers]

IMAGE = "minilmfunction"  # sam build names the image after the function's logical id

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}




@pytest.fixture(scope="module")
def s3_registry(minilm_bundle, minilm_spec):
    """MiniLM pushed and promoted in an S3 registry served by moto on loopback."""
    import boto3
    from moto.server import ThreadedMotoServer

    from infra.registry import open_registry

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="models")
    uri = "s3://models/registry"
    registry = open_registry(uri, endpoint_url=endpoint, s3_client=client)
    registry.promote(minilm_spec.name, minilm_spec.alias, registry.push(minilm_spec.name, minilm_bundle).version)
    yield uri, endpoint, port
    server.stop()


@pytest.fixture(scope="module")
def fetch_project(tmp_path_factory, s3_registry, image_python, monkeypatch_module):
    uri, endpoint, _ = s3_registry
    for key, value in CREDENTIALS.items():
        monkeypatch_module.setenv(key, value)
    work = tmp_path_factory.mktemp("fetch-project")
    modelfn_build(work, uri, image_python, "--endpoint-url", endpoint, "--bake-limit-mb", "1")
    sam(work, "build", timeout=900)
    return work


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_large_bundle_is_left_out_of_the_image_and_fetched_at_cold_start(
        fetch_project, s3_registry, engine, reference, minilm_spec):
    _, _, port = s3_registry
    context = fetch_project / ".modelfn" / "build" / "minilm"
    assert not (context / "model").exists()
    assert "boto3==" in (context / "requirements.txt").read_text()
    fn = yaml.safe_load((fetch_project / "template.yaml").read_text())["Resources"]["MinilmFunction"]["Properties"]
    assert fn["Environment"]["Variables"]["MODELFN_REGISTRY_URI"] == "s3://models/registry"
    assert fn["EphemeralStorage"]["Size"] >= 512

    # The function's environment as the template declares it, as Lambda would set it.
    declared = {k: v for k, v in fn["Environment"]["Variables"].items() if isinstance(v, str)}
    answer = _invoke_on_host_network(engine, port, declared, predict_event(fetch_project / "event.json"))
    assert answer["statusCode"] == 200, answer
    assert_parity(json.loads(answer["body"]), reference, minilm_spec)


def _invoke_on_host_network(engine, s3_port: int, declared: dict, event_file) -> dict:
    import time
    import urllib.request

    rie_port = free_port()
    container = engine.containers.run(
        f"{IMAGE}:minilm-v1", detach=True, network_mode="host", working_dir="/var/task",
        entrypoint=["/usr/local/bin/aws-lambda-rie", "--runtime-interface-emulator-address",
                    f"127.0.0.1:{rie_port}", "python3", "-m", "awslambdaric"],
        command=["functions.handler.handler"],
        environment={**declared, **CREDENTIALS, "PYTHONPATH": "/var/task", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}"})
    try:
        url = f"http://127.0.0.1:{rie_port}/2015-03-31/functions/function/invocations"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data=event_file.read_bytes()),
                                            timeout=120) as response:
                    return json.loads(response.read())
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(container.logs()[-3000:].decode(errors="replace")) from None
                time.sleep(0.5)
    finally:
        container.remove(force=True)

"""A bundle over the bake limit is not in the image: the function fetches it from an S3 registry at
cold start (moto's S3 server standing in for S3) and answers like the baked one.

The container reaches the host's moto server through the engine's host alias, host.containers.internal
(podman; set MODELFN_TEST_HOST_ALIAS=host.docker.internal for Docker Desktop), by IP: moto would
read a host name as a virtual-hosted bucket name.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import yaml

from tests.integration.samlocal import (BASE_IMAGE, assert_parity, invoke_response, modelfn_build,
                                        predict_event, sam)

pytestmark = [pytest.mark.slow, pytest.mark.containers]

HOST_ALIAS = os.environ.get("MODELFN_TEST_HOST_ALIAS", "host.containers.internal")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_registry(minilm_bundle, minilm_spec):
    """MiniLM pushed and promoted in an S3 registry served by moto on all interfaces."""
    import boto3
    from moto.server import ThreadedMotoServer

    from infra.registry import open_registry

    port = _free_port()
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=port, verbose=False)
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
    # Only variables the template declares can be set by `sam local --env-vars`; the deployed
    # function uses real S3 and needs no endpoint.
    template = yaml.safe_load((work / "template.yaml").read_text())
    template["Resources"]["MinilmFunction"]["Properties"]["Environment"]["Variables"]["AWS_ENDPOINT_URL"] = ""
    (work / "template.yaml").write_text(yaml.safe_dump(template, sort_keys=False))
    sam(work, "build", timeout=900)
    return work


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def host_ip(engine) -> str:
    """The host as containers see it."""
    out = engine.containers.run(BASE_IMAGE, entrypoint="python3", remove=True, command=[
        "-c", f"import socket; print(socket.gethostbyname({HOST_ALIAS!r}))"])
    return out.decode().strip()


def test_large_bundle_is_left_out_of_the_image_and_fetched_at_cold_start(
        fetch_project, s3_registry, host_ip, reference, minilm_spec):
    _, _, port = s3_registry
    context = fetch_project / ".modelfn" / "build" / "minilm"
    assert not (context / "model").exists()
    assert "boto3==" in (context / "requirements.txt").read_text()
    fn = yaml.safe_load((fetch_project / "template.yaml").read_text())["Resources"]["MinilmFunction"]["Properties"]
    assert fn["Environment"]["Variables"]["MODELFN_REGISTRY_URI"] == "s3://models/registry"
    assert fn["EphemeralStorage"]["Size"] >= 512

    env_vars = fetch_project / "env.json"
    env_vars.write_text(json.dumps({"MinilmFunction": {"AWS_ENDPOINT_URL": f"http://{host_ip}:{port}"}}))
    proc = sam(fetch_project, "local", "invoke", "MinilmFunction", "--env-vars", str(env_vars),
               "--event", str(predict_event(fetch_project / "event.json")))
    response = invoke_response(proc)
    assert response["statusCode"] == 200, (response, proc.stderr[-3000:])
    assert_parity(json.loads(response["body"]), reference, minilm_spec)

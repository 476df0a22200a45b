"""The real workflow on the MiniLM function: export -> registry -> `modelfn build` -> `sam build` ->
`sam local invoke` and `sam local start-api`, answers checked against sentence-transformers.

Needs a Docker-compatible engine at DOCKER_HOST with the Lambda Python base image (or the stand-in:
`eval "$(scripts/podman-setup.sh)" && scripts/standin-base/build.sh`) and the SAM CLI.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.samlocal import (BASE_IMAGE, ROOT, SENTENCES, assert_parity, invoke_response,
                                        modelfn_build, predict_event, sam)

pytestmark = [pytest.mark.slow, pytest.mark.containers]

IMAGE = "minilmfunction"  # sam build names the image after the function's logical id
HEAVY = ("torch", "transformers", "optimum")


@pytest.fixture(scope="module")
def project(tmp_path_factory, image_python, minilm_bundle, minilm_spec):
    """A project folder after push, promote, `modelfn build` and `sam build`."""
    from infra.registry import open_registry

    work = tmp_path_factory.mktemp("project")
    registry = open_registry(str(work / "registry"))
    registry.promote(minilm_spec.name, minilm_spec.alias, registry.push(minilm_spec.name, minilm_bundle).version)
    modelfn_build(work, str(work / "registry"), image_python)
    sam(work, "build", timeout=900)
    return work


def test_sam_local_invoke_answers_within_parity(project, reference, minilm_spec):
    proc = sam(project, "local", "invoke", "MinilmFunction", "--event", str(predict_event(project / "event.json")))
    response = invoke_response(proc)
    assert response["statusCode"] == 200, response
    assert_parity(json.loads(response["body"]), reference, minilm_spec)


def test_sam_local_start_api_serves_predict_and_embeddings(project, reference, minilm_spec):
    import httpx

    from infra.local import StartApi

    with StartApi(project) as api:
        predict = httpx.post(f"{api.url}/models/minilm/predict", json={"inputs": SENTENCES}, timeout=60)
        assert predict.status_code == 200, predict.text
        assert_parity(predict.json(), reference, minilm_spec)
        embeddings = httpx.post(f"{api.url}/v1/embeddings", json={"input": SENTENCES, "model": "minilm"}, timeout=60)
        assert embeddings.status_code == 200, embeddings.text
        data = sorted(embeddings.json()["data"], key=lambda item: item["index"])
        assert_parity([item["embedding"] for item in data], reference, minilm_spec)
        info = httpx.get(f"{api.url}/models/minilm", timeout=30).json()
        assert (info["name"], str(info["version"])) == ("minilm", "1")


def test_image_has_no_training_stack_and_size_is_reported(project, engine, image_python):
    image = engine.images.get(f"{IMAGE}:minilm-v1")
    # ...and the runtime's bytecode is compiled in the image (Lambda's task root is read-only).
    probe = ("import importlib.util as u, json, os; "
             f"found = {{m: u.find_spec(m) is not None for m in {HEAVY + ('onnxruntime', 'tokenizers')!r}}}; "
             "found['pyc'] = os.path.isfile(u.cache_from_source('/var/task/functions/handler.py')); "
             "print(json.dumps(found))")
    out = engine.containers.run(image.id, entrypoint="python3", command=["-c", probe], remove=True,
                                environment={"PYTHONPATH": "/var/task"}, working_dir="/var/task")
    found = json.loads(out.decode().strip().splitlines()[-1])
    assert found["onnxruntime"] and found["tokenizers"], found  # the probe sees the task root
    assert found["pyc"], found
    assert not any(found[m] for m in HEAVY), found
    base = engine.images.get(BASE_IMAGE)
    size, base_size = image.attrs["Size"], base.attrs["Size"]
    bundle = sum(f.stat().st_size for f in (project / ".modelfn" / "build" / "minilm" / "model").iterdir())
    assert size < 1.5 * 2**30  # far under Lambda's 10 GB image limit; a leak of torch would be ~1 GB more
    _write_image_report(size, base_size, bundle, image_python)


def _write_image_report(size: int, base_size: int, bundle: int, python: str) -> None:
    mb = lambda n: f"{n / 1e6:.0f} MB"  # noqa: E731
    stand_in = "Debian stand-in" if python != "3.12" else "AWS"
    (ROOT / "bench" / "image.md").write_text(
        "# MiniLM function image\n\n"
        "Written by tests/integration/test_sam_local.py after `sam build` of the default models.yaml.\n\n"
        "| part | size |\n|---|---|\n"
        f"| whole image (`minilmfunction:minilm-v1`) | {mb(size)} |\n"
        f"| base image ({stand_in}, Python {python}) | {mb(base_size)} |\n"
        f"| runtime dependencies + functions/ + bundle | {mb(size - base_size)} |\n"
        f"| of which the int8 bundle | {mb(bundle)} |\n\n"
        "torch, transformers and optimum are absent from the image (checked inside it by the same test).\n")


def test_modelfn_call_and_the_client_through_start_api(project, reference, minilm_spec, capsys):
    """infra.client and `modelfn call` against `sam local start-api` (no auth locally)."""
    from infra.cli import main as modelfn
    from infra.client import Client
    from infra.local import StartApi

    with StartApi(project) as api:
        with Client(api.url, timeout=120) as client:
            assert_parity(client.predict("minilm", SENTENCES), reference, minilm_spec)
            assert_parity(client.embed(SENTENCES, model="minilm"), reference, minilm_spec)
        capsys.readouterr()
        assert modelfn(["call", "minilm", SENTENCES[0], "--url", api.url, "--timeout", "120"]) == 0
        assert capsys.readouterr().out.startswith("dimension 384, norm 1.0000: [")


def test_64_clients_through_start_api_get_no_errors(project, minilm_spec):
    from infra.local import StartApi
    from tests.loadgen import record, run_load

    with StartApi(project) as api:
        # sam local runs one warm container per function and queues the rest: latencies show the queue.
        result = run_load(f"{api.url}/models/minilm/predict", {"inputs": SENTENCES[:2]}, clients=64, per_client=2,
                          check=lambda payload: isinstance(payload, list) and len(payload) == 2)
    assert result.errors == [], result.errors[:5]
    assert len(result.latencies_ms) == result.requests == 128
    record("sam local start-api (MiniLM int8, podman, 2 texts)", result,
           note="one warm container: requests queue behind each other")

"""The GPU container server: the SageMaker contract (functions/adapters/sagemaker.py, functions/serve.py)
over real uvicorn servers, in a thread or as the `serve` process receiving a real SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from functions.adapters.sagemaker import SageMakerApp
from functions.errors import ConfigError
from functions.http import dumps
from functions.providers import CPU, CUDA, TENSORRT, choose_provider, session_providers
from functions.service import ModelService
from functions.settings import SAGEMAKER_MODEL_DIR, ServerSettings
from tests.functions.servers import free_port, serving, start_process, wait_for, wait_until_ready


@pytest.fixture(scope="module")
def embedder(tiny_bundle) -> ModelService:
    return ModelService.load(tiny_bundle("feature-extraction", quantization="none"), name="embed")


@pytest.fixture(scope="module")
def classifier(tiny_bundle) -> ModelService:
    return ModelService.load(tiny_bundle("text-classification", quantization="none"), name="sentiment")


@pytest.fixture(scope="module")
def embed_server(embedder):
    with serving(SageMakerApp(lambda: embedder), lifespan="on") as url:
        wait_until_ready(url)
        yield url


def test_ping_is_503_until_the_model_is_loaded_and_warmed(embedder):
    gate, ran = threading.Event(), []

    def load():
        if not gate.wait(60):
            raise RuntimeError("test gate never opened")
        return embedder

    def run(feed):
        ran.append(feed["input_ids"].shape)
        return embedder.model.run(feed)

    with serving(SageMakerApp(load, run=run), lifespan="on") as url:
        ping = httpx.get(url + "/ping")
        assert ping.status_code == 503 and ping.json() == {"status": "loading"}
        for method, path in (("POST", "/invocations"), ("GET", "/health"), ("POST", "/v1/embeddings")):
            early = httpx.request(method, url + path, json={"input": "x"})
            assert early.status_code == 503 and early.headers["retry-after"] == "5"
            assert early.json()["error"]["code"] == "not_ready"
        assert ran == []
        gate.set()
        wait_until_ready(url)
        assert len(ran) == 1  # warmed: one inference ran before /ping said 200, and no request had
        assert httpx.get(url + "/ping").json() == {"status": "ok"}
        assert httpx.post(url + "/invocations", json={"input": "x"}).status_code == 200



@pytest.mark.parametrize("kind", ["vit", "clip", "clip-features", "whisper"])
def test_every_task_warms_up_with_its_sample_and_answers_as_unbatched(kind, tiny_image_bundle, tiny_speech_bundle):
    """Image and speech bundles too: the warm-up is the task's own sample request (it used to tokenize
    text, so these never said ready), and /invocations answers what the service answers alone."""
    bundle = {"vit": lambda: tiny_image_bundle("vit", quantization="none"),
              "clip": lambda: tiny_image_bundle("clip", quantization="none"),
              "clip-features": lambda: tiny_image_bundle("clip", quantization="none", task="image-feature-extraction"),
              "whisper": lambda: tiny_speech_bundle(quantization="none")}[kind]()
    service = ModelService.load(bundle, name="m")
    runs = []

    def run(feed):
        runs.append(1)
        return service.model.run(feed)

    with serving(SageMakerApp(lambda: service, run=run), lifespan="on") as url:
        wait_until_ready(url)
        assert runs  # the sample ran before /ping said 200
        assert httpx.get(url + "/health").json()["batching"]["batches"] == 0  # and is not counted
        answer = httpx.post(url + "/invocations", json=service.task.sample)
        assert answer.status_code == 200, answer.text
        alone = service.predict("m", "application/json", json.dumps(service.task.sample).encode())
        assert answer.json() == json.loads(dumps(alone.payload))

def test_invocations_dispatch_by_body_shape(embed_server):
    url = embed_server
    texts = ["the city", "paris is the capital of france"]
    predicted = httpx.post(url + "/invocations", json={"inputs": texts})
    assert predicted.status_code == 200
    assert predicted.json() == httpx.post(url + "/models/embed/predict", json={"inputs": texts}).json()
    embedded = httpx.post(url + "/invocations", json={"input": texts, "dimensions": 8})
    assert embedded.status_code == 200 and embedded.json()["object"] == "list"
    assert embedded.json() == httpx.post(url + "/v1/embeddings", json={"input": texts, "dimensions": 8}).json()
    assert len(embedded.json()["data"][0]["embedding"]) == 8


@pytest.mark.parametrize("content, headers, status, code, says", [
    # A chat body reaches /v1/chat/completions, which an embedding model does not serve (as on Lambda).
    (b'{"messages": [{"role": "user", "content": "hi"}]}', {}, 404, "not_found", "serves text-generation models"),
    (b'{"question": "hi"}', {}, 400, "bad_request", '"inputs", "input", "messages", "prompt"'),
    (b'{"inputs": ', {}, 400, "bad_request", "not valid JSON"),
    (b"[1, 2]", {}, 400, "bad_request", "must be a JSON object"),
    (b"inputs=x", {"content-type": "text/plain"}, 415, "unsupported_media_type", "text/plain"),
    (b'{"inputs": "x", "parameters": {"top_k": 1}}', {}, 400, "bad_request", "unknown parameter 'top_k'"),
], ids=["chat-not-served", "no-known-key", "bad-json", "array", "form", "bad-parameter"])
def test_invocations_answers_bad_bodies_in_the_error_shape(embed_server, content, headers, status, code, says):
    response = httpx.post(embed_server + "/invocations", content=content,
                          headers={"content-type": "application/json", **headers})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and says in response.json()["error"]["message"]



@pytest.mark.parametrize("path", ["/invocations", "/v1/embeddings", "/models/embed/predict"])
def test_a_body_declared_over_the_limit_is_413_before_it_is_read(embed_server, embedder, path):
    """As on Lambda and the plain app: the batched routes and /invocations refuse by Content-Length,
    at once, instead of waiting for (and holding) the whole body."""
    host, port = embed_server.removeprefix("http://").split(":")
    declared = embedder.max_body_bytes + 1
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     f"content-length: {declared}\r\n\r\n{{".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                re.search(rb"content-length: (\d+)", answer.partition(b"\r\n\r\n")[0]).group(1)):
            chunk = conn.recv(65536)
            assert chunk, answer  # the server answered before the body it never got
            answer += chunk
    head, _, payload = answer.decode("latin-1").partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413"), head
    assert json.loads(payload)["error"]["code"] == "payload_too_large"


def test_a_body_over_the_limit_without_a_length_is_413_too(embed_server, embedder):
    def chunks():
        yield b'{"input": "'
        for _ in range(embedder.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    answer = httpx.post(embed_server + "/invocations", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "payload_too_large"

def test_contract_routes_refuse_other_methods(embed_server):
    wrong = httpx.get(embed_server + "/invocations")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert httpx.post(embed_server + "/ping").status_code == 405


def test_embeddings_body_on_a_classifier_is_the_services_404(classifier):
    with serving(SageMakerApp(lambda: classifier), lifespan="on") as url:
        wait_until_ready(url)
        response = httpx.post(url + "/invocations", json={"input": "hello"})
        assert response.status_code == 404 and "text-classification" in response.json()["error"]["message"]
        scored = httpx.post(url + "/invocations", json={"inputs": "I love this movie"})
        assert scored.status_code == 200 and scored.json()[0]["label"] in ("negative", "positive", "neutral")


def test_every_regular_route_is_served_too(embed_server):
    info = httpx.get(embed_server + "/models/embed").json()
    assert info["name"] == "embed" and info["provider"] == CPU
    before = httpx.get(embed_server + "/health").json()["batching"]["requests"]
    assert httpx.post(embed_server + "/v1/embeddings", json={"input": "counted"}).status_code == 200
    health = httpx.get(embed_server + "/health").json()
    assert health["status"] == "ok" and health["batching"]["requests"] == before + 1
    paths = httpx.get(embed_server + "/openapi.json").json()["paths"]
    assert {"/models/{name}/predict", "/v1/embeddings", "/models/{name}", "/health"} <= set(paths)
    assert httpx.get(embed_server + "/models/other").status_code == 404
    assert httpx.get(embed_server + "/nowhere").json()["error"]["code"] == "not_found"


def test_a_bundle_that_cannot_load_keeps_ping_503_and_says_why(tmp_path):
    from functions.serve import build_app

    with serving(build_app(ServerSettings.resolve(tmp_path / "absent")), lifespan="on") as url:
        deadline = time.monotonic() + 30
        while httpx.get(url + "/ping").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        ping = httpx.get(url + "/ping")
        assert ping.status_code == 503 and ping.json() == {"status": "failed"}
        answer = httpx.post(url + "/invocations", json={"inputs": "x"})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_unavailable"
        assert "manifest.json is missing" in answer.json()["error"]["message"]


@pytest.fixture
def registry_with_embedder(tiny_bundle, tmp_path):
    from infra.registry import open_registry

    registry = open_registry(str(tmp_path / "registry"))
    version = registry.push("embed", tiny_bundle("feature-extraction", quantization="none")).version
    return tmp_path / "registry", version


def test_an_empty_model_dir_is_filled_from_the_registry_at_start(registry_with_embedder, tmp_path, monkeypatch):
    from functions.serve import build_app

    root, version = registry_with_embedder
    (tmp_path / "opt-ml-model").mkdir()  # SageMaker creates it even without model data
    for key, value in {"MODELFN_REGISTRY_URI": str(root), "MODELFN_MODEL_NAME": "embed",
                       "MODELFN_MODEL_VERSION": str(version), "MODELFN_FETCH_DIR": str(tmp_path / "fetch")}.items():
        monkeypatch.setenv(key, value)
    with serving(build_app(ServerSettings.resolve(tmp_path / "opt-ml-model")), lifespan="on") as url:
        wait_until_ready(url)
        info = httpx.get(url + "/models/embed").json()
        assert info["version"] == str(version)
    assert (tmp_path / "fetch" / "embed" / str(version) / "model.onnx").is_file()


def test_a_corrupted_registry_file_is_refused_at_start(registry_with_embedder, tmp_path, monkeypatch):
    from functions.serve import build_app

    root, version = registry_with_embedder
    stored = next((root / "models" / "embed" / "versions" / str(version)).glob("tokenizer.json"))
    stored.write_text(stored.read_text().replace("paris", "pariz"))
    for key, value in {"MODELFN_REGISTRY_URI": str(root), "MODELFN_MODEL_NAME": "embed",
                       "MODELFN_MODEL_VERSION": str(version), "MODELFN_FETCH_DIR": str(tmp_path / "fetch")}.items():
        monkeypatch.setenv(key, value)
    with serving(build_app(ServerSettings.resolve(tmp_path / "absent")), lifespan="on") as url:
        deadline = time.monotonic() + 30
        while httpx.get(url + "/ping").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        answer = httpx.post(url + "/invocations", json={"inputs": "x"})
        assert answer.status_code == 503 and "tokenizer.json" in answer.json()["error"]["message"]



def test_a_corrupted_model_data_file_is_refused_at_start(tiny_bundle, tmp_path):
    """Model data SageMaker copied to /opt/ml/model is checked against the manifest's sha256s too."""
    import shutil

    from functions.serve import build_app

    model_data = tmp_path / "opt-ml-model"
    shutil.copytree(tiny_bundle("feature-extraction", quantization="none"), model_data)
    with serving(build_app(ServerSettings.resolve(model_data)), lifespan="on") as url:
        wait_until_ready(url)  # intact: served
    tokenizer = model_data / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace("paris", "pariz"))
    with serving(build_app(ServerSettings.resolve(model_data)), lifespan="on") as url:
        deadline = time.monotonic() + 30
        while httpx.get(url + "/ping").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/ping").json() == {"status": "failed"}
        answer = httpx.post(url + "/invocations", json={"inputs": "x"})
        assert answer.status_code == 503
        assert "tokenizer.json does not match its sha256" in answer.json()["error"]["message"]

# -- the serve process and SIGTERM ------------------------------------------------------------------
def _serve(bundle, log, **env) -> tuple:
    port = free_port()
    proc = start_process(["-m", "functions.serve"], {"MODELFN_BUNDLE_DIR": str(bundle), "MODELFN_MODEL_NAME": "embed",
                                                     "SAGEMAKER_BIND_TO_PORT": str(port), **env}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc=proc)
    except Exception:
        proc.kill()
        raise
    return proc, url, port


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True




def test_sigterm_stops_accepting_drains_the_in_flight_request_and_exits(tiny_bundle, tmp_path):
    proc, url, port = _serve(tiny_bundle("feature-extraction", quantization="none"), tmp_path / "serve.log")
    try:
        body = json.dumps({"inputs": ["an answer owed", "to a client mid-upload"]}).encode()
        client = socket.create_connection(("127.0.0.1", port))
        # The predict route admits a request before reading its body, so /health shows it in flight.
        client.sendall(b"POST /models/embed/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                       b"content-length: %d\r\n\r\n" % len(body) + body[:10])
        wait_for(lambda: httpx.get(url + "/health").json()["batching"]["in_flight"] == 1, "the request to be in flight")

        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: _refused(port), "the server to stop accepting")
        assert proc.poll() is None  # still draining
        client.sendall(body[10:])
        client.settimeout(30)
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.split(b"\r\n\r\n", 1)[1]) < _length(raw):
            chunk = client.recv(65536)
            assert chunk, raw
            raw += chunk
        head, payload = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert len(json.loads(payload)) == 2
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        records = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()
                   if line.startswith("{")]
        assert any(r.get("message") == "request" and r.get("path") == "/models/embed/predict" and r["status"] == 200
                   for r in records)  # logged by the server as it drained
    finally:
        proc.kill()
        proc.wait()


def _length(raw: bytes) -> int:
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def test_sigterm_does_not_wait_past_the_drain_timeout_for_a_stalled_client(tiny_bundle, tmp_path):
    proc, url, port = _serve(tiny_bundle("feature-extraction", quantization="none"), tmp_path / "serve.log",
                             MODELFN_DRAIN_TIMEOUT_S="2")
    try:
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /models/embed/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                        b"content-length: 100\r\n\r\n{")
        wait_for(lambda: httpx.get(url + "/health").json()["batching"]["in_flight"] == 1, "the request to be in flight")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        proc.kill()
        proc.wait()


# -- settings and providers -------------------------------------------------------------------------
def test_server_settings_resolve_argument_then_environment_then_default(monkeypatch):
    for name in ("MODELFN_BUNDLE_DIR", "SAGEMAKER_BIND_TO_PORT", "MODELFN_MAX_BATCH_TOKENS", "MODELFN_PROVIDER",
                 "MODELFN_MAX_BATCH_REQUESTS", "MODELFN_MAX_CONCURRENT_REQUESTS", "MODELFN_DRAIN_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    default = ServerSettings.resolve()
    assert (default.bundle_dir, default.port, default.max_batch_tokens, default.max_concurrent_requests,
            default.provider, default.drain_timeout_s) == (SAGEMAKER_MODEL_DIR, 8080, 16384, 512, "auto", 25)
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9090")
    monkeypatch.setenv("MODELFN_MAX_BATCH_TOKENS", "4096")
    monkeypatch.setenv("MODELFN_MAX_BATCH_REQUESTS", "16")
    monkeypatch.setenv("MODELFN_MAX_CONCURRENT_REQUESTS", "64")
    monkeypatch.setenv("MODELFN_PROVIDER", "CPU")
    from_env = ServerSettings.resolve()
    assert (from_env.port, from_env.max_batch_tokens, from_env.max_batch_requests, from_env.max_concurrent_requests,
            from_env.provider) == (9090, 4096, 16, 64, "cpu")
    assert ServerSettings.resolve(max_batch_tokens=512, port=1234).max_batch_tokens == 512
    monkeypatch.setenv("MODELFN_MAX_CONCURRENT_REQUESTS", "lots")
    with pytest.raises(ConfigError, match="MODELFN_MAX_CONCURRENT_REQUESTS"):
        ServerSettings.resolve()
    with pytest.raises(ConfigError, match="rocm"):
        ServerSettings.resolve(provider="rocm", max_concurrent_requests=1)


def test_provider_preference_is_tensorrt_then_cuda_then_cpu():
    assert choose_provider("auto", [TENSORRT, CUDA, CPU]) == TENSORRT
    assert choose_provider("auto", [CUDA, CPU]) == CUDA
    assert choose_provider("auto", ["AzureExecutionProvider", CPU]) == CPU
    assert choose_provider("cuda", [TENSORRT, CUDA, CPU]) == CUDA
    with pytest.raises(ConfigError, match="not available"):
        choose_provider("cuda", [CPU])
    chain = session_providers(TENSORRT, inputs=["input_ids", "attention_mask"], max_rows=64, max_tokens=512)
    assert chain[1:] == [CUDA, CPU]  # nodes TensorRT cannot run fall to CUDA, then the CPU
    options = chain[0][1]
    assert options["trt_profile_max_shapes"] == "input_ids:64x512,attention_mask:64x512"
    assert session_providers(CPU, inputs=["input_ids"], max_rows=1, max_tokens=8) == [CPU]


def test_lambda_keeps_the_cpu_provider_and_auto_falls_back_to_it_here(tiny_bundle):
    import onnxruntime as ort

    bundle = tiny_bundle("feature-extraction", quantization="none")
    assert ModelService.load(bundle).model.provider == CPU  # the Lambda default
    expected = TENSORRT if TENSORRT in ort.get_available_providers() else (
        CUDA if CUDA in ort.get_available_providers() else CPU)
    if expected != CPU:
        pytest.skip("a GPU build of onnxruntime: tests/functions/test_gpu.py covers it")
    assert ModelService.load(bundle, provider="auto").model.provider == CPU
    with pytest.raises(ConfigError):
        ModelService.load(bundle, provider="cuda")




def test_a_gpu_provider_that_falls_back_to_the_cpu_is_refused(tiny_bundle, monkeypatch):
    """onnxruntime-gpu on a host whose GPU it cannot start (no device, a driver too old for CUDA 13)
    falls back to the CPU by itself: the server refuses to load rather than serve a GPU endpoint on its
    CPU. Here the CPU build is told it offers CUDA, and its session falls back exactly so."""
    from functions import providers

    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [CUDA, CPU])
    bundle = tiny_bundle("feature-extraction", quantization="none")
    with pytest.raises(ConfigError, match="offers CUDAExecutionProvider but could not start it") as refused:
        ModelService.load(bundle, provider="auto")
    assert "MODELFN_PROVIDER=cpu" in str(refused.value)
    assert ModelService.load(bundle, provider="cpu").model.provider == CPU  # the way out it names
    with serving(SageMakerApp(lambda: ModelService.load(bundle, provider="auto")), lifespan="on") as url:
        deadline = time.monotonic() + 30
        while httpx.get(url + "/ping").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/ping").json() == {"status": "failed"}

@pytest.mark.parametrize("task", ["feature-extraction", "token-classification", "question-answering"])
def test_the_io_binding_path_answers_as_session_run(tiny_bundle, task):
    """The GPU path's IO binding (inputs bound from the host, outputs left on the device and copied
    back once), run here with "cpu" as the output device: the same outputs as session.run."""
    service = ModelService.load(tiny_bundle(task, quantization="none"), name="m")
    model = service.model
    assert model.output_device is None  # the CPU provider runs plain session.run
    body = json.dumps(service.task.sample).encode()
    pending = service.begin_predict("m", "application/json", body)
    plain = [model.run(feed) for feed in pending.prepared.feeds]
    model.output_device = "cpu"
    try:
        bound = [model.run(feed) for feed in pending.prepared.feeds]
    finally:
        model.output_device = None
    assert [sorted(o) for o in bound] == [sorted(o) for o in plain]
    for got, want in zip(bound, plain):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])

@pytest.mark.parametrize("route, method_status", [
    ("/models/{name}", 200), ("/health", 200), ("/models/{name}/predict", 200), ("/v1/embeddings", 200),
    ("/models/{name}/v1/embeddings", 200),  # the model's own OpenAI route (functions/routes.py's scoped twin)
])
def test_invocations_follow_the_route_api_gateway_names(embed_server, route, method_status):
    """The template's InvokeEndpoint integration sends the route it was called on as a custom
    attribute (an info or health GET with the body {}); the server answers that route."""
    name = httpx.get(embed_server + "/health").json()["model"]
    path = route.format(name=name)
    body = {"/models/{name}/predict": {"inputs": "hi"}, "/v1/embeddings": {"input": "hi"},
            "/models/{name}/v1/embeddings": {"input": "hi"}}.get(route, {})
    response = httpx.post(embed_server + "/invocations", json=body,
                          headers={"X-Amzn-SageMaker-Custom-Attributes": f"modelfn-route={path}"})
    assert response.status_code == method_status, response.text
    direct = httpx.request("POST" if body else "GET", embed_server + path, json=body or None)
    assert response.json() == direct.json()


def test_invocations_with_an_unknown_named_route_is_404(embed_server):
    response = httpx.post(embed_server + "/invocations", json={},
                          headers={"X-Amzn-SageMaker-Custom-Attributes": "modelfn-route=/admin"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"

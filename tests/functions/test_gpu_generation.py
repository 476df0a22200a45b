"""Text-generation models on the GPU server: the SageMaker contract over a bounded pool of generators
(functions/generation/scheduler.py), on the CPU provider here and on CUDA where onnxruntime-genai has it."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from functions.adapters.sagemaker import SageMakerApp
from functions.errors import ConfigError
from functions.generation.model import generation_provider
from functions.providers import CPU, CUDA
from functions.service import ModelService
from functions.settings import ServerSettings
from tests.functions.servers import serving, wait_for, wait_until_ready
from tests.gpus import nvidia_gpu

CHAT = {"messages": [{"role": "user", "content": "what is the capital of france?"}], "max_tokens": 12,
        "temperature": 0}


@pytest.fixture(scope="module")
def lm(gen_bundle) -> ModelService:
    return ModelService.load(gen_bundle("llama"), name="tiny-llama", provider="auto")


def _lambda_answer(service: ModelService, route: str, body: dict) -> dict:
    call = service.chat_completions if route == "chat" else service.completions
    answer = call("application/json", json.dumps(body).encode())
    assert answer.status == 200
    return answer.payload


def _server(service: ModelService, *, slots: int = 1, max_requests: int = 512):
    from functions.batching import BatchLimits

    return serving(SageMakerApp(lambda: service, BatchLimits(max_concurrent_requests=max_requests),
                                generation_slots=lambda provider: slots), lifespan="on")


def test_auto_runs_on_the_cpu_here_and_a_forced_provider_must_exist():
    assert generation_provider("auto", cuda_available=False) == CPU
    assert generation_provider("auto", cuda_available=True) == CUDA
    assert generation_provider("cpu", cuda_available=True) == CPU
    with pytest.raises(ConfigError, match="'cuda' is not available"):
        generation_provider("cuda", cuda_available=False)
    with pytest.raises(ConfigError, match="does not run text-generation"):
        generation_provider("tensorrt", cuda_available=True)


def test_generation_slots_come_from_the_setting_else_the_provider(monkeypatch):
    monkeypatch.delenv("MODELFN_MAX_CONCURRENT_GENERATIONS", raising=False)
    unset = ServerSettings.resolve("/tmp/b")
    assert unset.max_concurrent_generations is None
    assert unset.generation_slots(CPU) == 1 and unset.generation_slots(CUDA) == 8
    monkeypatch.setenv("MODELFN_MAX_CONCURRENT_GENERATIONS", "3")
    assert ServerSettings.resolve("/tmp/b").generation_slots(CUDA) == 3
    assert ServerSettings.resolve("/tmp/b", max_concurrent_generations=5).generation_slots(CPU) == 5
    monkeypatch.setenv("MODELFN_MAX_CONCURRENT_GENERATIONS", "0")
    with pytest.raises(ConfigError):
        ServerSettings.resolve("/tmp/b")


def test_chat_on_the_gpu_server_answers_as_lambda_does_through_the_openai_client(lm):
    from openai import OpenAI

    expected = _lambda_answer(lm, "chat", CHAT)["choices"][0]["message"]["content"]
    with _server(lm) as url:
        wait_until_ready(url)
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="tiny-llama", **CHAT)
        assert reply.choices[0].message.content == expected
        pieces = [chunk.choices[0].delta.content or "" for chunk in
                  client.chat.completions.create(model="tiny-llama", stream=True, **CHAT) if chunk.choices]
        assert "".join(pieces) == expected
        # SageMaker's /invocations with a chat body, as API Gateway's integration sends it.
        invoked = httpx.post(url + "/invocations", json=CHAT, timeout=60)
        assert invoked.status_code == 200
        assert invoked.json()["choices"][0]["message"]["content"] == expected
        health = httpx.get(url + "/health").json()["generation"]
        assert health["requests"] == 3 and health["streams"] == 1 and health["completed"] == 3
        assert health["running"] == 0 and health["waiting"] == 0 and health["max_concurrent_generations"] == 1


def test_requests_beyond_the_slots_wait_and_answers_do_not_depend_on_each_other(lm, monkeypatch):
    bodies = [{"prompt": prompt, "max_tokens": 8, "temperature": 0}
              for prompt in ("the quick brown", "paris is", "hello world", "one, two", "serverless")]
    expected = [_lambda_answer(lm, "completions", body)["choices"][0]["text"] for body in bodies]
    gate, inside, lock = threading.Event(), [], threading.Lock()
    real = lm.completions

    def held(content_type, body):
        with lock:
            inside.append(1)
        try:
            if not gate.wait(60):
                raise RuntimeError("test gate never opened")
            return real(content_type, body)
        finally:
            with lock:
                inside.pop()

    with _server(lm, slots=2) as url:
        wait_until_ready(url)
        monkeypatch.setattr(lm, "completions", held)
        results: dict[int, httpx.Response] = {}

        def send(i):
            results[i] = httpx.post(url + "/v1/completions", json=bodies[i], timeout=60)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        wait_for(lambda: httpx.get(url + "/health").json()["generation"]["waiting"] == 3, "the server's counters")
        health = httpx.get(url + "/health").json()["generation"]
        assert health["running"] == 2 and len(inside) == 2  # two generators at once, never more
        gate.set()
        for t in threads:
            t.join(60)
        assert [results[i].json()["choices"][0]["text"] for i in range(len(bodies))] == expected


def test_past_max_concurrent_requests_the_server_answers_429(lm, monkeypatch):
    gate = threading.Event()
    real = lm.completions
    monkeypatch.setattr(lm, "completions", lambda ct, body: (gate.wait(60), real(ct, body))[1])
    body = {"prompt": "hello", "max_tokens": 2, "temperature": 0}
    with _server(lm, slots=1, max_requests=2) as url:
        wait_until_ready(url)
        first = []
        threads = [threading.Thread(target=lambda: first.append(httpx.post(url + "/v1/completions", json=body,
                                                                            timeout=60))) for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: httpx.get(url + "/health").json()["generation"]["waiting"] == 1, "the server's counters")
        refused = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_requests"
        gate.set()
        for t in threads:
            t.join(60)
        assert [r.status_code for r in first] == [200, 200]
        assert httpx.get(url + "/health").json()["generation"]["rejected"] == 1


def test_a_stream_whose_client_leaves_frees_its_generator_for_the_next_request(lm, monkeypatch):
    left, closed = threading.Event(), threading.Event()
    real = lm.completions

    def slow_stream(content_type, body):
        answer = real(content_type, body)
        if answer.stream is None:
            return answer

        def pieces():
            try:
                for i, piece in enumerate(answer.stream):
                    if i == 1 and not left.wait(60):  # the second piece waits until the client has left
                        raise RuntimeError("test gate never opened")
                    yield piece
            finally:
                closed.set()

        return answer._replace(stream=pieces())

    monkeypatch.setattr(lm, "completions", slow_stream)
    body = {"prompt": "the quick brown", "max_tokens": 50, "temperature": 0, "stream": True}
    with _server(lm, slots=1) as url:
        wait_until_ready(url)
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            next(response.iter_lines())  # the first event arrived; now leave
        left.set()
        wait_for(lambda: httpx.get(url + "/health").json()["generation"]["running"] == 0, "the server's counters")
        health = httpx.get(url + "/health").json()["generation"]
        assert health["abandoned"] == 1 and health["completed"] == 0
        assert closed.wait(10)  # the generator was closed, not left to the garbage collector
        # The one slot is free again: a new request is answered.
        monkeypatch.setattr(lm, "completions", real)
        again = httpx.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 2, "temperature": 0},
                           timeout=60)
        assert again.status_code == 200



def test_prompts_are_read_one_at_a_time_while_generators_decode_side_by_side(lm, monkeypatch):
    """The GPU memory check counts room for one prompt read (its logits span every prompt position):
    with four slots, prompt reads never overlap, yet the generators' later steps do."""
    model = lm.model
    real = model._generator
    lock = threading.Lock()
    now = {"read": 0, "decode": 0}
    most = {"read": 0, "decode": 0}

    def enter(kind):
        with lock:
            now[kind] += 1
            most[kind] = max(most[kind], now[kind])

    def leave(kind):
        with lock:
            now[kind] -= 1

    class Watched:
        def __init__(self, generator):
            self._generator, self._steps = generator, 0

        def __getattr__(self, name):
            return getattr(self._generator, name)

        def generate_next_token(self):
            kind = "read" if self._steps == 0 else "decode"
            self._steps += 1
            enter(kind)
            try:
                threading.Event().wait(0.02)  # long enough for the others to arrive
                self._generator.generate_next_token()
            finally:
                leave(kind)

    def watched(*args):
        enter("read")  # appending the prompt counts as reading it too
        try:
            return Watched(real(*args))
        finally:
            leave("read")

    monkeypatch.setattr(model, "_generator", watched)
    bodies = [{"prompt": f"prompt number {i} is", "max_tokens": 6, "temperature": 0} for i in range(4)]
    with _server(lm, slots=4) as url:
        wait_until_ready(url)
        results = [None] * 4

        def ask(i):
            results[i] = httpx.post(url + "/v1/completions", json=bodies[i], timeout=60)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert [r.status_code for r in results] == [200] * 4
    assert most["read"] == 1, most
    assert most["decode"] > 1, most


def test_a_whole_answer_whose_client_leaves_stops_and_frees_its_slot(lm, monkeypatch):
    """Not streamed: API Gateway gives up at 29 s, InvokeEndpoint at 60 s; the generation must not go
    on decoding for nobody, holding its slot and KV cache."""
    model = lm.model
    real = model._generator
    steps = []

    class Slow:
        def __init__(self, generator):
            self._generator = generator

        def __getattr__(self, name):
            return getattr(self._generator, name)

        def generate_next_token(self):
            steps.append(1)
            threading.Event().wait(0.05)
            self._generator.generate_next_token()

    monkeypatch.setattr(model, "_generator", lambda *args: Slow(real(*args)))
    body = {"prompt": "the quick brown", "max_tokens": 100, "temperature": 0}  # about 5 s of steps
    with _server(lm, slots=1) as url:
        wait_until_ready(url)
        steps.clear()  # the warm-up's
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/completions", json=body, timeout=0.5)
        wait_for(lambda: httpx.get(url + "/health").json()["generation"]["running"] == 0, "the slot to be freed",
                 timeout=3)
        health = httpx.get(url + "/health").json()["generation"]
        assert health["abandoned"] == 1 and health["completed"] == 0
        assert len(steps) < 40, len(steps)  # stopped within a token or two of the client leaving, not at 100
        monkeypatch.setattr(model, "_generator", real)
        again = httpx.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 2, "temperature": 0},
                           timeout=60)
        assert again.status_code == 200



def test_a_stream_closed_after_the_pool_has_stopped_is_still_closed():
    """SIGTERM with a stream longer than the drain timeout: the lifespan may stop the pool before the
    cancelled stream is cleaned up. Its generator is still closed (its KV cache freed), without an error."""
    import asyncio

    from functions.generation.scheduler import GenerationScheduler

    closed = threading.Event()

    def pieces():
        try:
            for i in range(100):
                yield f"piece {i} "
        finally:
            closed.set()

    async def scenario():
        scheduler = GenerationScheduler()
        await scheduler._slots.acquire()  # the slot serve() holds for a stream
        scheduler._running += 1
        stream = scheduler._hold(pieces())
        assert await stream.__anext__() == "piece 0 "
        await scheduler.stop()  # the lifespan's shutdown, before the stream's cleanup
        await stream.aclose()  # the cancelled response closes its body iterator
        return scheduler.snapshot()

    snapshot = asyncio.run(scenario())
    assert closed.is_set()
    assert snapshot["running"] == 0 and snapshot["abandoned"] == 1

def test_bad_generation_requests_get_the_error_shape_through_the_scheduler(lm):
    with _server(lm) as url:
        wait_until_ready(url)
        bad = httpx.post(url + "/v1/chat/completions", json={"messages": "hi"}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
        big = httpx.post(url + "/v1/completions", content=b"{" + b" " * (lm.max_body_bytes + 1) + b"}",
                         headers={"content-type": "application/json"}, timeout=60)
        assert big.status_code == 413
        assert httpx.get(url + "/health").json()["generation"]["running"] == 0


def _has_cuda_genai() -> bool:
    try:
        import onnxruntime_genai as og
    except ImportError:
        return False
    # onnxruntime-genai-cuda says CUDA is available on a machine without a GPU too
    return bool(og.is_cuda_available()) and nvidia_gpu()


@pytest.mark.skipif(not _has_cuda_genai(), reason="onnxruntime-genai has no CUDA or no NVIDIA GPU here (the GPU "
                                                    "image installs onnxruntime-genai-cuda)")
def test_on_cuda_greedy_answers_equal_the_cpu_ones(gen_bundle):
    on_gpu = ModelService.load(gen_bundle("llama"), name="tiny-llama", provider="cuda")
    # not the `lm` fixture: its "auto" is CUDA too where this test runs
    on_cpu = ModelService.load(gen_bundle("llama"), name="tiny-llama", provider="cpu")
    assert on_gpu.model.provider == CUDA and on_cpu.model.provider == CPU
    assert _lambda_answer(on_gpu, "chat", CHAT)["choices"][0]["message"]["content"] == \
        _lambda_answer(on_cpu, "chat", CHAT)["choices"][0]["message"]["content"]

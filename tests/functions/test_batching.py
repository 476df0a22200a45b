"""The token-budget batch scheduler (functions/batching.py) with real tiny models and real servers.

Batched answers equal unbatched ones for every encoder task, with inputs of mixed lengths sharing
batches; batches respect the token budget and group similar lengths; a disconnected client's
request is never run; past the concurrency limit the answer is 429 with Retry-After; and a
loopback load test (32 clients) runs with zero errors and a mean batch size above 1.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import httpx
import pytest

from functions.app import build_app
from functions.batching import Batcher, BatchLimits, mixes_requests
from functions.service import ModelService
from tests.functions.servers import serving, wait_for

JSON = "application/json"
WORDS = "the model serve fast cold start lambda function paris london berlin capital france germany".split()


def text(n: int, offset: int = 0) -> str:
    """A sentence of n vocabulary words (one token each in the tiny WordPiece vocabulary)."""
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


CONTEXT = ("john lives in paris . mary works in berlin , the capital of germany . " * 6).strip()

# task -> (route kind, body) of requests with very different lengths and parameters
REQUESTS = {
    "feature-extraction": [
        ("predict", {"inputs": text(2)}),
        ("predict", {"inputs": [text(40, 1), text(3, 2), text(17, 3)]}),
        ("predict", {"inputs": text(90, 4), "parameters": {"normalize": False}}),
        ("embeddings", {"input": [text(5, 5), text(60, 6)]}),
        ("embeddings", {"input": text(12, 7), "dimensions": 8}),
        ("embeddings", {"input": [text(33, 8)], "encoding_format": "base64"}),
    ],
    "text-classification": [
        ("predict", {"inputs": text(3)}),
        ("predict", {"inputs": [text(50, 1), text(4, 2)], "parameters": {"top_k": 2}}),
        ("predict", {"inputs": {"text": text(6, 3), "text_pair": text(30, 4)}}),
        ("predict", {"inputs": text(80, 5), "parameters": {"function_to_apply": "sigmoid", "top_k": None}}),
        ("predict", {"inputs": [text(9, 6), text(21, 7), text(2, 8)]}),
    ],
    "token-classification": [
        ("predict", {"inputs": "john lives in paris"}),
        ("predict", {"inputs": [CONTEXT, "mary"], "parameters": {"aggregation_strategy": "simple"}}),
        ("predict", {"inputs": text(70, 2), "parameters": {"aggregation_strategy": "average", "ignore_labels": []}}),
        ("predict", {"inputs": [text(5, 3), text(25, 4)], "parameters": {"aggregation_strategy": "first"}}),
    ],
    "question-answering": [
        ("predict", {"inputs": {"question": "where does john live ?", "context": CONTEXT}}),
        ("predict", {"inputs": {"question": "who works in berlin ?", "context": CONTEXT},
                     "parameters": {"max_seq_len": 24, "doc_stride": 8, "top_k": 3}}),
        ("predict", {"inputs": [{"question": "what city ?", "context": "paris is the capital of france"},
                                {"question": "where ?", "context": CONTEXT}],
                     "parameters": {"max_seq_len": 32, "doc_stride": 10, "handle_impossible_answer": True}}),
        ("predict", {"inputs": {"question": "capital ?", "context": text(8)}}),
    ],
}


def begin(service: ModelService, kind: str, body: dict):
    raw = json.dumps(body).encode()
    if kind == "predict":
        return service.begin_predict(service.name, JSON, raw)
    return service.begin_embeddings(JSON, raw)


def unbatched(service: ModelService, kind: str, body: dict):
    return begin(service, kind, body).run(service.model).payload


def assert_close(a, b, where="answer"):
    """Equal JSON; floats within tolerance (padding changes the summation order, not the numbers)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, str) and isinstance(b, str) and a != b and where.endswith("embedding"):
        import base64

        import numpy as np

        va, vb = (np.frombuffer(base64.b64decode(s), dtype="<f4") for s in (a, b))
        np.testing.assert_allclose(va, vb, rtol=1e-4, atol=1e-5)
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def services(tiny_bundle):
    """task -> a service over the tiny model exported unquantized, as GPU bundles are (fp16 needs a GPU
    to be fast; fp32 is the same float path): see test_dynamic_int8_bundles_never_mix_requests."""
    cache: dict[str, ModelService] = {}

    def get(task: str) -> ModelService:
        if task not in cache:
            cache[task] = ModelService.load(tiny_bundle(task, quantization="none"), max_batch=8)
        return cache[task]

    return get


async def run_batched(service: ModelService, calls: list[tuple[str, dict]], limits: BatchLimits, run=None):
    batcher = Batcher(service.model, limits, run=run)

    async def one(kind, body):
        pending = begin(service, kind, body)
        feeds, outputs = await batcher.submit(pending.prepared)
        return pending.finish(outputs, feeds).payload

    answers = await asyncio.gather(*(one(kind, body) for kind, body in calls))
    await batcher.stop()
    return answers, batcher.stats


@pytest.mark.parametrize("task", list(REQUESTS))
def test_batched_answers_equal_unbatched(services, task):
    service = services(task)
    calls = REQUESTS[task] * 2 + REQUESTS[task][::-1]  # the same bodies in other batches and orders
    expected = [unbatched(service, kind, body) for kind, body in calls]
    shapes = []

    def run(feed):
        shapes.append(feed["input_ids"].shape)
        return service.model.run(feed)

    budget = 1024
    answers, stats = asyncio.run(run_batched(service, calls, BatchLimits(max_batch_tokens=budget), run=run))
    for i, (got, want) in enumerate(zip(answers, expected)):
        assert_close(got, want, f"{task} request {i}")
    assert stats.requests == len(calls) and stats.batches < len(calls), stats  # rows of requests shared runs
    assert len(shapes) >= stats.batches  # a request running alone runs each of its own feeds
    assert all(rows * width <= budget for rows, width in shapes), shapes


def test_question_answering_windows_map_back_when_split_across_batches(services):
    """Each question's windows ride in a batch with other requests' rows; answers still map back."""
    service = services("question-answering")
    body = {"inputs": {"question": "where does mary work ?", "context": CONTEXT},
            "parameters": {"max_seq_len": 20, "doc_stride": 6, "top_k": 2}}
    calls = [("predict", body), ("predict", {"inputs": {"question": "who ?", "context": text(4)}})] * 4
    expected = [unbatched(service, kind, b) for kind, b in calls]
    answers, stats = asyncio.run(run_batched(service, calls, BatchLimits(max_batch_tokens=2048)))
    assert_close(answers, expected)
    assert stats.rows > stats.requests  # the long context was split into several windows


def test_a_batch_takes_the_oldest_request_and_the_closest_lengths(services):
    from functions.tasks import encode_texts

    model = services("feature-extraction").model
    gate, shapes = threading.Event(), []

    def run(feed):
        shapes.append(feed["input_ids"].shape)
        if not gate.wait(60):
            raise RuntimeError("test gate never opened")
        return model.run(feed)

    async def plan():
        batcher = Batcher(model, BatchLimits(max_batch_tokens=3 * 14, max_batch_requests=8), run=run)
        first = asyncio.ensure_future(batcher.submit(encode_texts(model, [text(3)])))
        while not shapes:  # the session is busy with the first request while the others queue
            await asyncio.sleep(0.01)
        words = [10, 60, 11, 58, 12]  # + [CLS] and [SEP]: 12, 62, 13, 60, 14 tokens, oldest first
        rest = [asyncio.ensure_future(batcher.submit(encode_texts(model, [text(n)]))) for n in words]
        while batcher.snapshot()["queued"] < len(words):
            await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *rest)
        await batcher.stop()

    asyncio.run(plan())
    # The oldest (12 tokens) with the two nearest lengths fills the 42-token budget exactly; each
    # long one alone exceeds it, so they run alone, the older first.
    assert shapes == [(1, 5), (3, 14), (1, 62), (1, 60)]


def test_a_request_over_the_budget_runs_alone_on_its_own_feeds(services):
    service = services("text-classification")
    calls = [("predict", {"inputs": [text(60, i) for i in range(8)]}), ("predict", {"inputs": text(3)})]
    expected = [unbatched(service, kind, body) for kind, body in calls]
    shapes = []

    def run(feed):
        shapes.append(feed["input_ids"].shape)
        return service.model.run(feed)

    answers, stats = asyncio.run(run_batched(service, calls, BatchLimits(max_batch_tokens=100), run=run))
    assert_close(answers, expected)
    assert stats.batches == 2 and sorted(shapes) == sorted([(8, 62), (1, 5)])


def test_dynamic_int8_bundles_never_mix_requests(tiny_bundle):
    """Dynamic int8 scales activations over the whole batch: mixing requests would move their numbers,
    so such a bundle runs each request alone and answers exactly as unbatched."""
    bundle = tiny_bundle("token-classification", strategy="fixed:int8-dynamic-per-tensor-avx2", allow_drift=True,
                         search_budget_s=0)
    service = ModelService.load(bundle, max_batch=8)
    assert not mixes_requests(service.model), service.model.manifest.quantization.chosen
    calls = REQUESTS["token-classification"] * 2
    expected = [unbatched(service, kind, body) for kind, body in calls]
    answers, stats = asyncio.run(run_batched(service, calls, BatchLimits()))
    assert answers == expected  # bit for bit: each request ran its own feeds
    assert stats.batches == stats.requests == len(calls)

    async def forced_mix():
        batcher = Batcher(service.model, BatchLimits(), mix=True)
        pending = [begin(service, kind, body) for kind, body in calls]
        results = await asyncio.gather(*(batcher.submit(p.prepared) for p in pending))
        await batcher.stop()
        return [p.finish(outputs, feeds).payload for p, (feeds, outputs) in zip(pending, results)], batcher.stats

    mixed, mixed_stats = asyncio.run(forced_mix())
    assert mixed_stats.batches < len(calls)
    with pytest.raises(AssertionError):  # the reason for the rule: mixed answers drift past float noise
        assert_close(mixed, expected)


# -- over HTTP: disconnects, admission, load ------------------------------------------------------
def _held_server(service: ModelService, limits: BatchLimits):
    """A server whose session calls wait for ``gate``; ``ran`` records each call's row count."""
    gate, ran = threading.Event(), []

    def run(feed):
        ran.append(len(feed["input_ids"]))
        if not gate.wait(60):
            raise RuntimeError("test gate never opened")
        return service.model.run(feed)

    batcher = Batcher(service.model, limits, run=run)
    return build_app(service, batcher=batcher), batcher, gate, ran




def test_a_disconnected_clients_request_is_dropped_before_it_runs(services):
    service = services("text-classification")
    app, batcher, gate, ran = _held_server(service, BatchLimits())
    path = f"/models/{service.name}/predict"
    with serving(app) as url:
        held: list[httpx.Response] = []
        holder = threading.Thread(target=lambda: held.append(httpx.post(url + path, json={"inputs": "held"}, timeout=60)))
        holder.start()
        wait_for(lambda: len(ran) == 1, "the first request to occupy the session")

        body = json.dumps({"inputs": [text(5), text(7)]}).encode()
        host, port = url.removeprefix("http://").split(":")
        leaver = socket.create_connection((host, int(port)))
        leaver.sendall(f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                       f"content-length: {len(body)}\r\n\r\n".encode() + body)
        wait_for(lambda: batcher.snapshot()["queued"] == 1, "the second request to queue")
        leaver.close()
        wait_for(lambda: batcher.snapshot()["in_flight"] == 1, "the server to notice the disconnect")

        gate.set()
        holder.join(timeout=60)
        assert held and held[0].status_code == 200
        wait_for(lambda: batcher.stats.dropped == 1, "the scheduler to drop the request")
        assert ran == [1]  # the two rows of the departed client never reached the session
        after = httpx.post(url + path, json={"inputs": [text(5), text(7)]}, timeout=60)
        assert after.status_code == 200 and ran == [1, 2]


def test_past_the_concurrency_limit_the_answer_is_429_with_retry_after(services):
    service = services("feature-extraction")
    app, batcher, gate, ran = _held_server(service, BatchLimits(max_concurrent_requests=2))
    with serving(app) as url:
        answers: list[httpx.Response] = []
        clients = [threading.Thread(target=lambda i=i: answers.append(
            httpx.post(url + "/v1/embeddings", json={"input": text(3 + i)}, timeout=60))) for i in range(2)]
        for client in clients:
            client.start()
        wait_for(lambda: batcher.snapshot()["in_flight"] == 2, "two requests in flight")
        refused = httpx.post(url + "/v1/embeddings", json={"input": "one too many"}, timeout=60)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_requests"
        assert "limit of 2" in refused.json()["error"]["message"]
        health = httpx.get(url + "/health", timeout=10).json()["batching"]
        assert health["rejected"] == 1 and health["in_flight"] == 2
        gate.set()
        for client in clients:
            client.join(timeout=60)
        assert [a.status_code for a in answers] == [200, 200]
        assert httpx.post(url + "/v1/embeddings", json={"input": "now"}, timeout=60).status_code == 200


def test_loopback_load_32_clients_zero_errors_and_batches_form(services, capsys):
    """640 requests from 32 concurrent clients through /invocations; every answer is the unbatched one."""
    from functions.adapters.sagemaker import SageMakerApp
    from tests.functions.servers import wait_until_ready

    service = services("feature-extraction")
    texts = [text(2 + (i * 7) % 40, i) for i in range(16)]
    expected = {t: unbatched(service, "predict", {"inputs": t}) for t in texts}
    clients, per_client = 32, 20

    async def load(url: str) -> list[tuple[str, int, object]]:
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     limits=httpx.Limits(max_connections=clients)) as http:
            async def client(c: int):
                got = []
                for r in range(per_client):
                    t = texts[(c + r) % len(texts)]
                    response = await http.post("/invocations", json={"inputs": t})
                    got.append((t, response.status_code, response.json()))
                return got

            return [g for part in await asyncio.gather(*(client(c) for c in range(clients))) for g in part]

    with serving(SageMakerApp(lambda: service), lifespan="on") as url:
        wait_until_ready(url)
        results = asyncio.run(load(url))
        stats = httpx.get(url + "/health", timeout=10).json()["batching"]
    errors = [(t, status, body) for t, status, body in results if status != 200]
    assert len(results) == clients * per_client and errors == []
    for t, _, body in results:
        assert_close(body, expected[t])
    with capsys.disabled():
        print(f"\nload: {len(results)} requests, {clients} clients: {stats['batches']} batches, "
              f"mean {stats['mean_batch_requests']} requests / {stats['mean_batch_rows']} rows per batch, "
              f"padding {stats['padding_ratio']:.1%}")
    assert stats["requests"] == len(results) and stats["dropped"] == 0 and stats["rejected"] == 0
    assert stats["mean_batch_requests"] > 1

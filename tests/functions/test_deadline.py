"""The per-request time budget (functions/deadline.py): a request that would run past the function's
remaining time answers a clear 504 ``timeout``, and a generation near its deadline ends early with
``finish_reason: "length"``. Time is an injected clock and an injected Lambda context: nothing here
depends on how fast the machine is."""

from __future__ import annotations

import json
import math

import pytest

from functions import deadline
from functions.deadline import MARGIN_S, Deadline
from functions.errors import TimedOut
from functions.service import ModelService
from functions.settings import Settings
from tests.functions.conftest import FakeLambdaContext, call
from tests.functions.eventfiles import make_event

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Once upon a time"}]


class TickingClock:
    """A clock that moves ``tick`` seconds every time it is read: each generated token costs ticks."""

    def __init__(self, tick: float = 1.0):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


class ShortContext(FakeLambdaContext):
    def __init__(self, remaining_ms: int):
        super().__init__()
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture(scope="module")
def gen_service(gen_bundle):
    return ModelService.load(gen_bundle("llama"))


@pytest.fixture(scope="module")
def encoder_service(tiny_bundle):
    return ModelService.load(tiny_bundle("feature-extraction"))


def _chat(service, **fields) -> dict:
    body = json.dumps({"messages": USER, "temperature": 0, **fields}).encode()
    answer = service.chat_completions("application/json", body)
    if answer.stream is None:
        return answer.payload
    events = "".join(answer.stream).split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    return {"text": text, "finish_reason": chunks[-1]["choices"][0]["finish_reason"]}


# -- the deadline itself ---------------------------------------------------------------------
def test_deadline_is_the_tighter_of_lambda_time_and_the_budget():
    clock = lambda: 100.0
    assert Deadline.for_request(ShortContext(2000), None, clock).remaining() == pytest.approx(2.0 - MARGIN_S)
    assert Deadline.for_request(ShortContext(2000), 800, clock).remaining() == pytest.approx(0.8)
    assert Deadline.for_request(ShortContext(60_000), 800, clock).remaining() == pytest.approx(0.8)
    assert Deadline.for_request(None, 300, clock).remaining() == pytest.approx(0.3)
    assert Deadline.for_request(object(), None, clock).remaining() == math.inf  # not a Lambda context
    assert not Deadline.for_request(None, None, clock).bounded


def test_time_budget_setting_is_read_and_validated(monkeypatch):
    from functions.errors import ConfigError

    monkeypatch.setenv("MODELFN_TIME_BUDGET_MS", "2500")
    assert Settings.resolve().time_budget_ms == 2500
    monkeypatch.setenv("MODELFN_TIME_BUDGET_MS", "-1")
    with pytest.raises(ConfigError, match="MODELFN_TIME_BUDGET_MS"):
        Settings.resolve()
    monkeypatch.delenv("MODELFN_TIME_BUDGET_MS")
    assert Settings.resolve().time_budget_ms is None


# -- text generation ---------------------------------------------------------------------------
def test_generation_near_its_deadline_ends_with_length(gen_service):
    full = _chat(gen_service, max_tokens=40)
    text = full["choices"][0]["message"]["content"]
    assert full["usage"]["completion_tokens"] == 40 and len(text) > 0  # the untimed answer uses its tokens
    answers = []
    for seconds in (12.0, 24.0):  # each token costs two ticks (its start and its end)
        with deadline.scope(Deadline(seconds, TickingClock())):
            answers.append(_chat(gen_service, max_tokens=40))
    short, longer = answers
    for answer in answers:
        assert answer["choices"][0]["finish_reason"] == "length"
        assert text.startswith(answer["choices"][0]["message"]["content"])  # greedy: a prefix of the whole
        assert 0 < answer["usage"]["completion_tokens"] < 40
    assert short["usage"]["completion_tokens"] < longer["usage"]["completion_tokens"]


def test_streamed_generation_near_its_deadline_closes_the_stream_with_length(gen_service):
    with deadline.scope(Deadline(16.0, TickingClock())):
        plain = _chat(gen_service, max_tokens=40)
    with deadline.scope(Deadline(16.0, TickingClock())):
        streamed = _chat(gen_service, max_tokens=40, stream=True)
    assert streamed == {"text": plain["choices"][0]["message"]["content"], "finish_reason": "length"}
    assert plain["usage"]["completion_tokens"] < 40


def test_a_prompt_whose_measured_prefill_would_not_fit_is_refused_before_generating(gen_bundle):
    service = ModelService.load(gen_bundle("llama"))
    model = service.model
    with deadline.scope(Deadline(100.0, TickingClock(1.0))):  # the first step reads the clock twice: 1 s
        first = _chat(service, max_tokens=2)
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert model.prefill_rate.estimate(prompt_tokens) == pytest.approx(1.0)
    with deadline.scope(Deadline(0.9, lambda: 0.0)), pytest.raises(TimedOut, match="token prompt") as refused:
        _chat(service, max_tokens=2)  # 0.9 s left, 1 s needed to read the prompt
    assert refused.value.status == 504
    with deadline.scope(Deadline(1.1, lambda: 0.0)):
        assert _chat(service, max_tokens=2)["usage"]["completion_tokens"] == 2


def test_generation_without_time_left_is_a_504_through_the_handler(load_handler, gen_bundle):
    module = load_handler(gen_bundle("llama"))
    for stream in (False, True):
        event = make_event("POST", CHAT, {"messages": USER, "max_tokens": 8, "stream": stream})
        # Less than the margin left: nothing could be answered in time.
        status, body, _ = call(module, event, ShortContext(int(MARGIN_S * 1000) - 100))
        assert status == 504, body
        assert body["error"]["code"] == "timeout" and "time budget" in body["error"]["message"]
    status, body, _ = call(module, make_event("POST", CHAT, {"messages": USER, "max_tokens": 4}),
                           ShortContext(30_000))
    assert status == 200 and body["usage"]["completion_tokens"] == 4


# -- encoders --------------------------------------------------------------------------------
def test_encoder_run_is_refused_when_the_measured_rate_says_it_will_not_fit(encoder_service):
    body = json.dumps({"inputs": ["a short sentence", "and another one"]}).encode()
    name = encoder_service.name
    units = encoder_service.begin_predict(name, "application/json", body).prepared.feeds[0]["input_ids"].size
    with deadline.scope(Deadline(100.0, TickingClock(1.0))):  # the run reads the clock twice: 1 s measured
        assert encoder_service.predict(name, "application/json", body).status == 200
    assert encoder_service.rate.estimate(units) == pytest.approx(1.0)
    # 0.5 s left, 1 s needed
    with deadline.scope(Deadline(0.5, lambda: 0.0)), pytest.raises(TimedOut, match="time budget") as refused:
        encoder_service.predict(name, "application/json", body)
    assert (refused.value.status, refused.value.code) == (504, "timeout")
    with deadline.scope(Deadline(1.5, lambda: 0.0)):
        assert encoder_service.predict(name, "application/json", body).status == 200


def test_encoder_timeout_through_the_handler_and_the_configured_budget(load_handler, tiny_bundle, monkeypatch):
    module = load_handler(tiny_bundle("feature-extraction"), MODELFN_TIME_BUDGET_MS=60_000)
    service = module.load()
    event = make_event("POST", f"/models/{service.name}/predict", {"inputs": ["x y z"]})
    service.rate.observe(1, 120.0)  # as if the last run took two minutes a token
    status, body, _ = call(module, event, ShortContext(900_000))
    assert status == 504 and body["error"]["code"] == "timeout", body  # the 60 s budget, not Lambda's 15 min
    service.rate.observe(1, 0.0)
    status, _, _ = call(module, event, ShortContext(900_000))
    assert status == 200
    # Without an adapter's deadline (the ASGI app), the configured budget alone bounds the request.
    service.rate.observe(1, 120.0)
    with pytest.raises(TimedOut):
        service.predict(service.name, "application/json", json.dumps({"inputs": ["x y z"]}).encode())


def test_streaming_runtime_loop_answers_504_when_no_time_is_left(load_handler, gen_bundle):
    from functions.response_stream import stream_answer

    load_handler(gen_bundle("llama"))
    event = make_event("POST", CHAT, {"messages": USER, "max_tokens": 8, "stream": True})
    prelude, chunks = stream_answer(event, ShortContext(100))
    body = json.loads(b"".join(chunks))
    assert prelude["statusCode"] == 504 and body["error"]["code"] == "timeout"
    prelude, chunks = stream_answer(event, ShortContext(30_000))
    events = b"".join(chunks).decode()
    assert prelude["statusCode"] == 200 and events.endswith("data: [DONE]\n\n")

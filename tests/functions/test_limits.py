"""Limits are checked before work: texts are cut before tokenizing, question-answering windows are
capped, and answers within the limits do not change."""

from __future__ import annotations

import json

import pytest

from functions.model import MAX_CHARS_PER_TOKEN
from functions.service import ModelService
from functions.tasks.qa import MAX_WINDOWS


class RecordingTokenizer:
    """Wraps the real tokenizer and records the length of every text it is asked to encode."""

    def __init__(self, real):
        self.real, self.lengths = real, []

    def _note(self, item):
        parts = item if isinstance(item, (tuple, list)) else (item,)
        self.lengths.append(max(len(p) for p in parts))

    def encode(self, *args):
        self._note(args)
        return self.real.encode(*args)

    def encode_batch(self, items):
        for item in items:
            self._note(item)
        return self.real.encode_batch(items)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _service(bundle, **kwargs) -> ModelService:
    return ModelService.load(bundle, **kwargs)


def _predict(service: ModelService, payload: dict):
    return service.predict(service.name, "application/json", json.dumps(payload).encode()).payload


@pytest.fixture(scope="module")
def services(tiny_bundle):
    return {task: _service(tiny_bundle(task)) for task in
            ("text-classification", "token-classification", "feature-extraction")}


TEXT = "the quick brown fox jumps over the lazy dog near the river bank. " * 50_000  # ~3.3 MB


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "feature-extraction"])
def test_a_huge_text_answers_as_its_truncated_form_without_tokenizing_it_whole(services, task):
    service = services[task]
    limit = service.model.limits.max_chars
    assert limit == service.model.limits.max_tokens * MAX_CHARS_PER_TOKEN
    recorder = RecordingTokenizer(service.model.tokenizer)
    service.model.tokenizer = recorder
    try:
        huge = _predict(service, {"inputs": TEXT})
        cut = _predict(service, {"inputs": TEXT[:limit]})
        short = _predict(service, {"inputs": TEXT[:service.model.limits.max_tokens * 8]})
    finally:
        service.model.tokenizer = recorder.real
    assert huge == cut == short
    assert max(recorder.lengths) <= limit  # the 3 MB text never reached the tokenizer


def test_pairs_are_cut_per_text(services):
    service = services["text-classification"]
    pair = {"text": TEXT, "text_pair": "a short second text"}
    limit = service.model.limits.max_chars
    assert _predict(service, {"inputs": pair}) == _predict(service, {"inputs": {**pair, "text": TEXT[:limit]}})


def test_without_truncation_a_text_past_the_character_bound_is_a_422_before_tokenizing(tiny_bundle):
    service = _service(tiny_bundle("text-classification"), truncate=False)
    recorder = RecordingTokenizer(service.model.tokenizer)
    service.model.tokenizer = recorder
    from functions.errors import Unprocessable

    with pytest.raises(Unprocessable, match="characters"):
        _predict(service, {"inputs": ["fine", TEXT]})
    assert recorder.lengths == []
    with pytest.raises(Unprocessable, match="tokens"):  # within the bound but over max_tokens: as before
        _predict(service, {"inputs": "paris " * service.model.limits.max_tokens})


@pytest.fixture(scope="module")
def qa_service(tiny_bundle):
    return _service(tiny_bundle("question-answering"))


def test_question_answering_windows_are_capped(qa_service):
    from functions.errors import PayloadTooLarge

    max_tokens = qa_service.model.limits.max_tokens
    # Within the cap: answered.
    ok = _predict(qa_service, {"inputs": {"question": "where?", "context": "in paris. " * (max_tokens * 2)}})
    assert "answer" in ok
    # Too many windows after tokenizing (ordinary text, under the character bound).
    words = "in paris. " * (max_tokens * MAX_WINDOWS)
    with pytest.raises(PayloadTooLarge, match=f"more than {MAX_WINDOWS} windows"):
        _predict(qa_service, {"inputs": {"question": "where?", "context": words}})
    # Past the character bound: refused before the tokenizer sees it.
    recorder = RecordingTokenizer(qa_service.model.tokenizer)
    qa_service.model._pair_tokenizer, real = None, qa_service.model._pair_tokenizer
    try:
        with pytest.raises(PayloadTooLarge, match="characters in all"):
            _predict(qa_service, {"inputs": [{"question": "where?", "context": TEXT}]})
        assert qa_service.model._pair_tokenizer is None  # never built: nothing was tokenized
    finally:
        qa_service.model._pair_tokenizer = real
    assert recorder.lengths == []
    # Still answering afterwards.
    assert _predict(qa_service, {"inputs": {"question": "where?", "context": "in paris."}})["answer"] is not None


def test_dimensions_past_the_vector_width_is_refused_before_inference(services):
    from functions.errors import BadRequest

    service = services["feature-extraction"]
    width = service._embeddings.dimension
    assert width == 32  # the tiny model's hidden size, read from the graph's output shape
    runs = []
    real_run = service.model.run
    service.model.run = lambda feed: runs.append(1) or real_run(feed)
    try:
        with pytest.raises(BadRequest, match=f"from 1 to {width}"):
            service.embeddings("application/json", json.dumps({"input": "x", "dimensions": width + 1}).encode())
        assert runs == []
        answer = service.embeddings("application/json", json.dumps({"input": "x", "dimensions": width}).encode())
        assert len(answer.payload["data"][0]["embedding"]) == width and runs == [1]
    finally:
        del service.model.run

"""The runtime answers like transformers' pipelines and sentence-transformers on the same tiny models.

fp32 bundles (quantization="none") must agree closely (scores 1e-4, same labels, offsets and
words); the default int8 bundles within the drift quantization allows.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from fastapi.testclient import TestClient

os.environ["HF_HUB_OFFLINE"] = "1"

from functions.app import create_app  # noqa: E402

TEXTS = ["John lives in Paris", "mary loves the city of berlin", "Google is a new york company", "what a terrible film!",
         "unheard-of wörds xylophone"]
CONTEXT = ("paris is the capital of france . berlin is the capital of germany . the river in london is "
           "great . john and mary like to go to the mountain when it is a good day . ") * 4
QUESTIONS = [{"question": "what is the capital of france?", "context": CONTEXT},
             {"question": "where do john and mary go?", "context": CONTEXT}]


def _served(bundle, **kwargs):
    app = create_app(bundle, **kwargs)
    return TestClient(app), app.state.model.manifest.name


def predict(client, name, inputs, **params):
    response = client.post(f"/models/{name}/predict", json={"inputs": inputs, "parameters": params})
    assert response.status_code == 200, response.text
    return response.json()


def _pipeline(task, model_dir, **kwargs):
    from transformers import pipeline

    return pipeline(task, model=str(model_dir), tokenizer=str(model_dir), device="cpu", **kwargs)


def _close_entities(ours, theirs, atol):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert set(a) == set(b)
        for key in a:
            if key == "score":
                assert a[key] == pytest.approx(float(b[key]), abs=atol)
            else:
                assert a[key] == b[key], (key, a, b)


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_embeddings_match_sentence_transformers(tiny_bundle, tiny_model_dir, quantization):
    from sentence_transformers import SentenceTransformer

    client, name = _served(tiny_bundle("feature-extraction", quantization=quantization))
    ours = np.array(predict(client, name, TEXTS))
    theirs = SentenceTransformer(str(tiny_model_dir("feature-extraction")), device="cpu").encode(TEXTS)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() > (0.99999 if quantization == "none" else 0.97)
    if quantization == "none":
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("quantization", ["none", "int8"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_text_classification_matches_pipeline(tiny_bundle, tiny_model_dir, quantization, multi_label):
    client, name = _served(tiny_bundle("text-classification", quantization=quantization, multi_label=multi_label))
    pipe = _pipeline("text-classification", tiny_model_dir("text-classification", multi_label=multi_label))
    atol = 1e-4 if quantization == "none" else 0.05
    for params in ({}, {"top_k": 2}, {"top_k": None}, {"function_to_apply": "sigmoid", "top_k": None}):
        for inputs in (TEXTS[0], TEXTS):
            ours, theirs = predict(client, name, inputs, **params), pipe(inputs, **params)
            flat_ours = ours if not ours or isinstance(ours[0], dict) else [x for row in ours for x in row]
            flat_theirs = theirs if not theirs or isinstance(theirs[0], dict) else [x for row in theirs for x in row]
            assert len(flat_ours) == len(flat_theirs)
            for a, b in zip(flat_ours, flat_theirs):
                assert a["score"] == pytest.approx(b["score"], abs=atol)
                if quantization == "none":
                    assert a["label"] == b["label"]


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_matches_pipeline(tiny_bundle, tiny_model_dir, strategy):
    client, name = _served(tiny_bundle("token-classification", quantization="none"))
    pipe = _pipeline("token-classification", tiny_model_dir("token-classification"), aggregation_strategy=strategy)
    ours = predict(client, name, TEXTS, aggregation_strategy=strategy, ignore_labels=[])
    theirs = pipe(TEXTS, ignore_labels=[])
    for a, b in zip(ours, theirs):
        _close_entities(a, b, 1e-4)
    default_ours = predict(client, name, TEXTS[1], aggregation_strategy=strategy)
    _close_entities(default_ours, pipe(TEXTS[1]), 1e-4)


def test_token_classification_int8_offsets_are_exact(tiny_bundle):
    client, name = _served(tiny_bundle("token-classification"))
    for text, entities in zip(TEXTS, predict(client, name, TEXTS, ignore_labels=[])):
        for e in entities:
            piece = text[e["start"]:e["end"]]
            assert 0 <= e["start"] < e["end"] <= len(text)
            if piece.isascii():  # the tokenizer strips accents, so only ASCII pieces read back verbatim
                assert piece.lower() == e["word"].removeprefix("##")


@pytest.mark.parametrize("params", [
    {},
    {"top_k": 3},
    {"top_k": 2, "max_seq_len": 48, "doc_stride": 16, "max_answer_len": 5},
    {"handle_impossible_answer": True, "top_k": 2},
    {"align_to_words": False, "top_k": 2},
])
def test_question_answering_matches_pipeline(tiny_bundle, tiny_model_dir, params):
    client, name = _served(tiny_bundle("question-answering", quantization="none"))
    pipe = _pipeline("question-answering", tiny_model_dir("question-answering"))
    for inputs in (QUESTIONS[0], QUESTIONS):
        ours = predict(client, name, inputs, **params)
        theirs = pipe(inputs, **params) if isinstance(inputs, dict) else [pipe(q, **params) for q in inputs]
        flat = (lambda r: [r] if isinstance(r, dict) else r)
        pairs = [(ours, theirs)] if isinstance(inputs, dict) else list(zip(ours, theirs))
        for a, b in pairs:
            a, b = flat(a), flat(b)
            assert [(x["start"], x["end"], x["answer"]) for x in a] == [(x["start"], x["end"], x["answer"]) for x in b]
            assert [x["score"] for x in a] == pytest.approx([x["score"] for x in b], abs=1e-4)


def test_question_answering_int8_answers_are_spans_of_the_context(tiny_bundle):
    client, name = _served(tiny_bundle("question-answering"))
    for answer in predict(client, name, QUESTIONS, top_k=3, max_seq_len=48, doc_stride=16):
        for a in answer:
            assert CONTEXT[a["start"]:a["end"]] == a["answer"] and 0 <= a["score"] <= 1

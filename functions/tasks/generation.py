"""text-generation in the Hugging Face shape: POST /models/{name}/predict.

    {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 20, "do_sample": false}}
    -> [{"generated_text": "Once upon a time, ..."}]

As in transformers' pipeline, decoding is greedy unless ``do_sample`` is true, and the answer
repeats the prompt unless ``return_full_text`` is false. A list of inputs answers a list of such
lists. Every prompt is tokenized and checked against the context window before any is generated.
The model here is a functions.generation.GenerationModel; the OpenAI routes live in
functions/generation/openai.py.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import BadRequest
from ..generation.options import boolean, check_known, number, sampling
from ..tasknames import TEXT_GENERATION
from . import CHAT_ROUTE, COMPLETIONS_ROUTE, TEXT, Prepared, register

PARAMETERS = ("max_new_tokens", "temperature", "top_p", "top_k", "do_sample", "return_full_text", "stop",
              "seed", "repetition_penalty")


def _params(raw: dict) -> dict:
    check_known(raw, PARAMETERS, where="parameter")
    where = "parameters."
    do_sample = boolean(raw, "do_sample", False, where=where)
    options = sampling(raw, max_tokens_key="max_new_tokens", max_tokens_default=None, where=where)
    if do_sample:
        if number(raw, "temperature", 1.0, lo=0.0, hi=2.0, where=where) == 0.0:
            raise BadRequest("parameters.temperature must be greater than 0 when do_sample is true")
    else:  # transformers ignores the sampling knobs when do_sample is false
        options = replace(options, temperature=0.0)
    return {"options": options, "return_full_text": boolean(raw, "return_full_text", True, where=where)}


def _preprocess(model, items: list, params: dict) -> Prepared:
    options = params["options"]
    generations = [model.start(model.encode(text), options) for text in items]
    return Prepared(feeds=[], tokens=sum(g.prompt_tokens for g in generations), extra=list(zip(items, generations)))


def _shape(results: list, single: bool, params: dict):
    return results[0] if single else results


def _openai_routes(runtime) -> tuple[str, ...]:
    # /v1/chat/completions needs a chat template; /v1/completions takes any prompt.
    chat = runtime is None or bool(runtime.chat_template)
    return (CHAT_ROUTE, COMPLETIONS_ROUTE) if chat else (COMPLETIONS_ROUTE,)


@register(TEXT_GENERATION, inputs=TEXT, parse_params=_params, preprocess=_preprocess, shape=_shape,
          synonyms=("causal-lm", "text-generation-with-past", "chat", "generation"),
          params_schema={"max_new_tokens": {"type": "integer", "minimum": 1},
                         "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                         "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                         "top_k": {"type": "integer", "minimum": 0}, "do_sample": {"type": "boolean"},
                         "return_full_text": {"type": "boolean"},
                         "stop": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                         "seed": {"type": "integer"},
                         "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "maximum": 10}},
          openai_routes=_openai_routes,
          sample={"inputs": "The capital of France is", "parameters": {"max_new_tokens": 8}}, streams=True)
def postprocess(model, prepared: Prepared, outputs: list, params: dict) -> list:
    # Decoding happens here: a generative task has no single feed for the service to run.
    results = []
    for text, generation in prepared.extra:
        answer = generation.text()
        results.append([{"generated_text": text + answer if params["return_full_text"] else answer}])
    return results

"""Each model's own OpenAI API (``/models/{name}/v1``) in a multi-model stack, end to end: the official
``openai`` client against the template's API (tests/infra/gateway.py routes by the generated
template, with its auth) in front of the real tiers. Two chat models and two embedding models, one
of each on Lambda (the Lambda handler) and one on a GPU endpoint (the GPU server; chat through the
stream relay, the rest through InvokeEndpoint): the client reaches each at its own base URL without
telling the tiers apart, the stack-wide /v1 still reaches the first of each, and a body naming
another model gets the stack-wide route's 404."""

from __future__ import annotations

import threading

import boto3
import openai
import pytest
from botocore.config import Config

from functions.adapters.sagemaker import SageMakerApp
from functions.handler import handler_for
from functions.relay import Relay
from functions.service import ModelService
from infra.spec import parse_models_file
from infra.template import Deployment, generate_template
from tests.functions.sagemaker_runtime import SageMakerRuntime
from tests.functions.servers import serving, wait_until_ready
from tests.infra.gateway import Gateway

KEY = "stack-key"
# models.yaml order decides who answers the stack-wide routes: embed-a (Lambda), chat-a (GPU, relayed).
MODELS = parse_models_file({"registry": "s3://bucket/prefix", "models": [
    {"name": "embed-a", "source": "x", "task": "feature-extraction"},
    {"name": "chat-a", "source": "x", "task": "text-generation", "target": "gpu"},
    {"name": "embed-b", "source": "x", "task": "feature-extraction", "target": "gpu"},
    {"name": "chat-b", "source": "x", "task": "text-generation"},
]})
MESSAGES = [{"role": "user", "content": "what is the capital of france?"}]


@pytest.fixture(scope="module")
def template() -> dict:
    deployments = [Deployment(spec=s, version=1, context=f".modelfn/build/{s.name}") for s in MODELS.models]
    return generate_template(MODELS, deployments, MODELS.registry)


@pytest.fixture(scope="module")
def stack(template, tiny_bundle, gen_bundle):
    """(API URL, gateway): the template's API over the four models' real tiers."""
    embedder, llama, qwen = tiny_bundle("feature-extraction"), gen_bundle("llama"), gen_bundle("qwen2")
    lambdas = {"EmbedA": handler_for(ModelService.load(embedder, name="embed-a")),
               "ChatB": handler_for(ModelService.load(llama, name="chat-b"))}
    gpu_chat = SageMakerApp(lambda: ModelService.load(qwen, name="chat-a", provider="cpu"))
    gpu_embed = SageMakerApp(lambda: ModelService.load(embedder, name="embed-b", provider="cpu"))
    with serving(gpu_chat) as chat_url, serving(gpu_embed) as embed_url:
        wait_until_ready(chat_url)
        wait_until_ready(embed_url)
        runtime = SageMakerRuntime(chat_url, "stack-chat-a")
        threading.Thread(target=runtime.serve_forever, daemon=True).start()
        client = boto3.client("sagemaker-runtime", endpoint_url=runtime.url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing",
                              config=Config(retries={"total_max_attempts": 1}))
        gateway = Gateway(template, lambdas=lambdas, relays={"ChatA": Relay(client, "stack-chat-a")},
                          endpoints={"chat-a": chat_url, "embed-b": embed_url}, api_key=KEY)
        try:
            with serving(gateway, lifespan="off") as url:
                yield url, gateway
        finally:
            runtime.shutdown()
            runtime.server_close()


def _client(base_url: str, key: str = KEY) -> openai.OpenAI:
    # The API key goes as API Gateway reads it; the OpenAI client's own bearer token is not used.
    return openai.OpenAI(base_url=base_url, api_key="unused", default_headers={"x-api-key": key},
                         max_retries=0, timeout=120)


@pytest.mark.parametrize("name, tier", [("chat-a", "Relay"), ("chat-b", "Lambda")])
def test_the_openai_client_reaches_each_chat_model_at_its_own_base_url(stack, name, tier):
    url, gateway = stack
    client = _client(f"{url}/models/{name}/v1")
    whole = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=8, temperature=0)
    assert whole.model == name and whole.choices[0].message.content
    streamed = client.chat.completions.create(messages=MESSAGES, max_tokens=8, temperature=0, stream=True,
                                              model=name)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
        whole.choices[0].message.content
    completion = client.completions.create(model=name, prompt="the capital of france is", max_tokens=4,
                                           temperature=0)
    assert completion.model == name and completion.object == "text_completion"
    assert [m.id for m in client.models.list()] == [name]
    answered = {(path, how) for _, path, how in gateway.calls}
    assert (f"/models/{name}/v1/chat/completions", tier) in answered
    assert (f"/models/{name}/v1/models", "InvokeEndpoint" if tier == "Relay" else "Lambda") in answered


@pytest.mark.parametrize("name, tier", [("embed-a", "Lambda"), ("embed-b", "InvokeEndpoint")])
def test_the_openai_client_reaches_each_embedding_model_at_its_own_base_url(stack, name, tier):
    url, gateway = stack
    answer = _client(f"{url}/models/{name}/v1").embeddings.create(model=name, input=["the city", "paris"],
                                                                   dimensions=8)
    assert answer.model == name and [len(d.embedding) for d in answer.data] == [8, 8]
    assert gateway.calls[-1] == ("POST", f"/models/{name}/v1/embeddings", tier)
    # Its own model list too (the stack-wide /v1/models stays with the first text-generation model).
    assert [m.id for m in _client(f"{url}/models/{name}/v1").models.list()] == [name]
    assert gateway.calls[-1] == ("GET", f"/models/{name}/v1/models", tier)


def test_the_stack_wide_routes_still_reach_the_first_model_of_each_kind(stack):
    url, _ = stack
    client = _client(f"{url}/v1")
    assert client.embeddings.create(model="embed-a", input="x").model == "embed-a"
    chat = client.chat.completions.create(model="chat-a", messages=MESSAGES, max_tokens=4, temperature=0)
    assert chat.model == "chat-a"
    # The second chat model is only reachable at its own base URL: the stack-wide route names the first.
    with pytest.raises(openai.NotFoundError, match="this function serves 'chat-a'"):
        client.chat.completions.create(model="chat-b", messages=MESSAGES, max_tokens=4)


@pytest.mark.parametrize("name, other", [("chat-a", "chat-b"), ("chat-b", "chat-a")])
def test_a_body_naming_another_model_gets_the_stack_wide_routes_404(stack, name, other):
    url, _ = stack
    with pytest.raises(openai.NotFoundError) as scoped:
        _client(f"{url}/models/{name}/v1").chat.completions.create(model=other, messages=MESSAGES, max_tokens=4)
    with pytest.raises(openai.NotFoundError) as stack_wide:  # /v1 answers for chat-a: a body naming chat-b
        _client(f"{url}/v1").chat.completions.create(model="chat-b", messages=MESSAGES, max_tokens=4)
    assert scoped.value.body["code"] == stack_wide.value.body["code"] == "not_found"
    assert scoped.value.body["message"] == f"no model named {other!r} here (this function serves {name!r})"
    if name == "chat-a":  # the same model behind both routes: the same answer, word for word
        assert scoped.value.body == stack_wide.value.body


@pytest.mark.parametrize("name", ["embed-a", "embed-b"])
def test_an_embeddings_body_naming_another_model_is_refused_on_either_tier(stack, name):
    url, _ = stack
    with pytest.raises(openai.NotFoundError, match=f"no model named 'embed-x' here.*{name}"):
        _client(f"{url}/models/{name}/v1").embeddings.create(model="embed-x", input="x")


def test_the_model_scoped_routes_need_the_api_key_as_every_route_does(stack):
    url, _ = stack
    for base in (f"{url}/models/embed-b/v1", f"{url}/models/embed-a/v1", f"{url}/v1"):
        with pytest.raises(openai.PermissionDeniedError):
            _client(base, key="wrong").embeddings.create(input="x", model="embed-a")
    for name in ("chat-a", "chat-b"):
        with pytest.raises(openai.PermissionDeniedError):
            _client(f"{url}/models/{name}/v1", key="wrong").models.list()
        with pytest.raises(openai.PermissionDeniedError):
            _client(f"{url}/models/{name}/v1", key="wrong").chat.completions.create(model=name, messages=MESSAGES)

"""The chat path through `sam local start-api` (issue #12): a tiny text-generation bundle ->
registry -> `modelfn build --no-stream` -> `sam build` -> `sam local start-api`, called with the
official openai client, and the answer compared with the host runtime's greedy answer.

The quickstart exercises the same path with the real SmolLM2; this test keeps it in CI with a model
built from a config in the test run (tests/tinylms.py), so it needs no download and builds fast.
Needs a Docker-compatible engine at DOCKER_HOST (`eval "$(bash scripts/containers-env.sh)"`).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.integration.samlocal import BASE_IMAGE, ROOT, sam

pytestmark = [pytest.mark.slow, pytest.mark.containers]

NAME = "tinychat"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def chat_bundle(tmp_path_factory):
    from tests.genbundles import build_generation_bundle
    from tests.tinylms import build_tiny_lm

    root = tmp_path_factory.mktemp("tinychat")
    hf_dir = build_tiny_lm(root / "hf", "llama")
    return hf_dir, build_generation_bundle(hf_dir, root / "bundle", name=NAME, family="llama")


@pytest.fixture(scope="module")
def project(tmp_path_factory, image_python, chat_bundle):
    """A project folder after push, promote, `modelfn build --no-stream` and `sam build`."""
    from infra.cli import main as modelfn
    from infra.registry import open_registry

    hf_dir, bundle = chat_bundle
    work = tmp_path_factory.mktemp("chat-project")
    registry = open_registry(str(work / "registry"))
    registry.promote(NAME, "prod", registry.push(NAME, bundle).version)
    (work / "models.yaml").write_text(yaml.safe_dump({"registry": str(work / "registry"), "models": [{
        "name": NAME, "source": str(hf_dir), "task": "text-generation", "target": "lambda",
        "context_length": 256, "memory_mb": 1024, "timeout_s": 60, "max_tokens": 64, "alias": "prod"}]}))
    code = modelfn(["build", "--models-file", str(work / "models.yaml"), "--registry", str(work / "registry"),
                    "--out", str(work / ".modelfn" / "build"), "--template", str(work / "template.yaml"),
                    "--python-version", image_python, "--base-image", BASE_IMAGE,
                    "--wheelhouse", str(ROOT / ".wheelhouse"), "--no-stream"])
    assert code == 0
    sam(work, "build", timeout=900)
    return work


def _host_answer(bundle) -> dict:
    """The host runtime's greedy answer to QUESTION: what the function must say."""
    from functions.service import ModelService

    service = ModelService.load(bundle, name=NAME)
    body = json.dumps({"model": NAME, "messages": QUESTION, "max_tokens": MAX_TOKENS, "temperature": 0}).encode()
    return service.chat_completions("application/json", body).payload


def test_sam_local_start_api_answers_chat_like_the_host_runtime(project, chat_bundle):
    import openai

    from infra.local import StartApi

    expected = _host_answer(chat_bundle[1])
    assert expected["usage"]["completion_tokens"] > 0  # the comparison below is not between two empty answers
    with StartApi(project) as api:
        client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="unused-locally", timeout=120, max_retries=0)
        reply = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)
    choice = reply.choices[0]
    assert choice.message.content == expected["choices"][0]["message"]["content"]
    assert choice.finish_reason == expected["choices"][0]["finish_reason"]
    assert reply.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    assert reply.usage.completion_tokens == expected["usage"]["completion_tokens"]

"""The official ``openai`` client against the ASGI app served by uvicorn on a loopback port:
chat streamed and not, completions, the model list and an error, as a user's code would call them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from infra.emulator import free_port

ROOT = Path(__file__).resolve().parents[2]




@pytest.fixture(scope="module")
def server(gen_bundle):
    """uvicorn serving the tiny Llama bundle in a thread of this process."""
    import uvicorn

    from functions.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(gen_bundle("llama"), name="tiny"), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0, timeout=60)


MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is the capital of france? 🙂"}]


def test_chat_not_streamed(client):
    answer = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20, temperature=0)
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == "tiny"
    assert choice.message.role == "assistant" and choice.message.content and choice.finish_reason == "length"
    assert answer.usage.completion_tokens == 20 and answer.usage.total_tokens == answer.usage.prompt_tokens + 20


def test_chat_streamed_equals_not_streamed(client):
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 20 and len(chunks) > 4


def test_completions(client):
    answer = client.completions.create(model="tiny", prompt="the capital of france is", max_tokens=8, temperature=0,
                                       stop=["\n"])
    assert answer.object == "text_completion" and answer.choices[0].finish_reason in ("stop", "length")
    assert "\n" not in answer.choices[0].text
    streamed = client.completions.create(model="tiny", prompt="the capital of france is", max_tokens=8,
                                         temperature=0, stop=["\n"], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == answer.choices[0].text


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_errors_reach_the_client_as_api_errors(client):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=100_000)
    assert "context window" in err.value.body["message"] or "at most" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="tiny", input="x")


SCRIPT = r"""
import json, sys
from functions.handler import handler
from tests.functions.eventfiles import make_event
body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0, "stream": True}
response = handler(make_event("POST", "/v1/chat/completions", body), None)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "optimum", "fastapi", "pydantic"})
print("RESULT " + json.dumps({"status": response["statusCode"], "type": response["headers"]["content-type"],
                              "done": response["body"].endswith("data: [DONE]\n\n"), "heavy": heavy}))
"""


def test_lambda_path_for_generation_loads_no_torch_or_web_framework(gen_bundle):
    env = {**os.environ, "MODELFN_BUNDLE_DIR": str(gen_bundle("llama")), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert result == {"status": 200, "type": "text/event-stream; charset=utf-8", "done": True, "heavy": []}


def test_encoder_functions_do_not_load_onnxruntime_genai_or_jinja(tiny_bundle):
    script = ("import sys; from functions.service import ModelService; ModelService.load(sys.argv[1]); "
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'onnxruntime_genai', 'jinja2'}))")
    done = subprocess.run([sys.executable, "-c", script, str(tiny_bundle("feature-extraction"))], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"

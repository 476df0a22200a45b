"""`modelfn call`: the real app over tiny bundles of each task on loopback, a stack on moto, a fake
chat route streaming server-sent events, and every failure as one line without a traceback."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import uuid
from contextlib import ExitStack

import pytest

from infra.cli import main
from infra.emulator import free_port
from tests.infra.clientfixtures import create_stack, template_outputs
from tests.infra.servers import FakeChat, Scripted, serve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def task_server(tiny_bundle):
    """Factory: task -> base URL of the real app serving a tiny bundle of it as "tiny"."""
    from functions.app import create_app

    urls: dict[str, str] = {}
    with ExitStack() as stack:
        def make(task: str) -> str:
            if task not in urls:
                urls[task] = stack.enter_context(serve(create_app(tiny_bundle(task), name="tiny")))
            return urls[task]

        yield make


def call(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `modelfn call ARGV`. The servers run in this process, so their
    one-line request logs (functions/observability.py) share stdout; they are set apart here."""
    code = main(["call", *argv])
    captured = capsys.readouterr()
    out = "".join(line for line in captured.out.splitlines(keepends=True) if not _is_request_log(line))
    return code, out, captured.err


def _is_request_log(line: str) -> bool:
    if not line.startswith('{"level":'):
        return False
    try:
        return json.loads(line).get("message") == "request"
    except ValueError:
        return False


def test_embeddings_show_dimension_and_norm(no_aws_creds, plain_url, capsys):
    code, out, _ = call(capsys, "tiny", "a cold start", "--url", plain_url, "--json")
    raw = json.loads(out)
    code, out, _ = call(capsys, "tiny", "a cold start", "--url", plain_url)
    assert code == 0
    norm = math.sqrt(sum(x * x for x in raw[0]))
    assert out.startswith(f"dimension {len(raw[0])}, norm {norm:.4f}: [{raw[0][0]:.4f}, ")


def test_a_batch_shows_each_input(no_aws_creds, plain_url, capsys):
    code, out, _ = call(capsys, "tiny", "first text", "second text", "--url", plain_url)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "[0] first text" and lines[2] == "[1] second text"
    assert lines[1].startswith("    dimension ") and lines[3].startswith("    dimension ")


def test_labels_with_scores(no_aws_creds, task_server, capsys):
    url = task_server("text-classification")
    code, out, _ = call(capsys, "tiny", "great movie", "--url", url, "--param", "top_k=2", "--json")
    raw = json.loads(out)
    assert code == 0 and len(raw) == 2
    code, out, _ = call(capsys, "tiny", "great movie", "--url", url, "--param", "top_k=2")
    assert [line.split() for line in out.splitlines()] == [[r["label"], f"{r['score']:.4f}"] for r in raw]


def test_entities_with_spans(no_aws_creds, task_server, capsys):
    url = task_server("token-classification")
    text = "Ada Lovelace lived in London"
    code, out, _ = call(capsys, "tiny", text, "--url", url, "--param", "aggregation_strategy=simple", "--json")
    raw = json.loads(out)
    code, out, _ = call(capsys, "tiny", text, "--url", url, "--param", "aggregation_strategy=simple")
    assert code == 0
    if not raw:
        assert out.strip() == "(no entities)"
        return
    lines = out.splitlines()
    assert lines[0].split() == ["ENTITY", "WORD", "SCORE", "SPAN"]
    for line, entity in zip(lines[1:], raw):
        assert line.split()[0] == entity["entity_group"]
        assert line.endswith(f"{entity['score']:.4f}  {entity['start']}-{entity['end']}")


def test_answers_with_spans(no_aws_creds, task_server, capsys):
    url = task_server("question-answering")
    args = ["tiny", "--question", "Where did Ada live?", "--context", "Ada Lovelace lived in London.", "--url", url]
    code, out, _ = call(capsys, *args, "--json")
    raw = json.loads(out)
    code, out, _ = call(capsys, *args)
    assert code == 0
    assert out.strip() == f"{raw['answer']!r}  score {raw['score']:.4f}, span {raw['start']}-{raw['end']}"


def test_input_from_stdin_and_a_file(no_aws_creds, task_server, capsys, monkeypatch, tmp_path):
    url = task_server("text-classification")
    body = {"inputs": ["good", "bad"], "parameters": {"top_k": 1}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(body)))
    code, out, _ = call(capsys, "tiny", "--url", url, "--json")
    from_stdin = json.loads(out)
    assert code == 0 and len(from_stdin) == 2 and all(len(r) == 1 for r in from_stdin)

    text = tmp_path / "review.txt"
    text.write_text("a long review\nover two lines\n")
    code, out, _ = call(capsys, "tiny", "--file", str(text), "--url", url, "--json")
    code2, expected, _ = call(capsys, "tiny", "a long review\nover two lines", "--url", url, "--json")
    assert code == code2 == 0 and json.loads(out) == json.loads(expected)


def test_chat_text_streams_and_json_is_the_raw_completion(no_aws_creds, capsys):
    app = FakeChat("chat", ["Paris", " is", " the", " capital."])
    with serve(app) as url:
        code, out, _ = call(capsys, "chat", "What is the capital of France?", "--url", url, "--system", "Be brief",
                            "--param", "max_tokens=16")
        assert code == 0 and out == "Paris is the capital.\n"
        assert app.bodies[-1] == {"messages": [{"role": "system", "content": "Be brief"},
                                               {"role": "user", "content": "What is the capital of France?"}],
                                  "stream": True, "model": "chat", "max_tokens": 16}
        code, out, _ = call(capsys, "chat", "Capital?", "--url", url, "--json")
        assert json.loads(out)["choices"][0]["message"]["content"] == "Paris is the capital."
        assert app.bodies[-1]["stream"] is False
        assert app.paths == ["/models/chat/v1/chat/completions"] * 2  # the model's own route, streamed or not


def test_call_through_a_stack_signs_with_iam(aws_creds, moto_url, signed_server, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    url, check = signed_server
    name = "modelfn-" + uuid.uuid4().hex[:8]
    models = [{"name": "tiny", "source": "/unused", "task": "feature-extraction"}]
    create_stack(moto_url, name, template_outputs(models, url))
    code, out, _ = call(capsys, "tiny", "hello", "--stack-name", name)
    assert code == 0 and out.startswith("dimension ")
    assert check.verified[-1]["authorization"].startswith("AWS4-HMAC-SHA256 ")
    code, _, err = call(capsys, "other", "hello", "--stack-name", name)
    assert code == 2 and err == f"modelfn: error: no model named 'other' in stack {name} (us-east-1) (models: tiny)\n"


def _unreachable(request) -> list[str]:
    return ["tiny", "x", "--url", f"http://127.0.0.1:{free_port()}"]


@pytest.mark.parametrize("case, exit_code, start", [
    ("missing credentials", 2, "modelfn: error: no AWS credentials found to sign the request to "),
    ("wrong credentials", 1, "modelfn: error: 403 INVALID_SIGNATURE from GET "),
    ("unknown model", 1, "modelfn: error: 404 not_found from GET "),
    ("unreachable", 1, "modelfn: error: cannot connect to http://127.0.0.1:"),
    ("timeout", 1, "modelfn: error: no answer from GET "),
    ("throttled", 1, "modelfn: error: 429 THROTTLED from GET "),
    ("no input", 2, "modelfn: error: no input (give TEXT"),
])
def test_each_failure_is_one_clear_line(case, exit_code, start, no_aws_creds, monkeypatch, signed_server,
                                        plain_url, capsys):
    with ExitStack() as stack:
        if case == "missing credentials":
            argv = ["tiny", "x", "--url", signed_server[0], "--auth", "iam"]
        elif case == "wrong credentials":
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDMODELFNTEST")
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
            argv = ["tiny", "x", "--url", signed_server[0], "--auth", "iam"]
        elif case == "unknown model":
            argv = ["nope", "x", "--url", plain_url]
        elif case == "unreachable":
            argv = _unreachable(None)
        elif case == "timeout":
            url = stack.enter_context(serve(Scripted((200, {}, {"task": "x"}), delay_s=2)))
            argv = ["tiny", "x", "--url", url, "--timeout", "0.2"]
        elif case == "throttled":
            url = stack.enter_context(serve(Scripted(
                (429, {"Retry-After": "0.1"}, {"error": {"code": "THROTTLED", "message": "Too Many Requests"}}))))
            argv = ["tiny", "x", "--url", url, "--retries", "1"]
        else:
            class Terminal(io.StringIO):
                def isatty(self):
                    return True

            monkeypatch.setattr(sys, "stdin", Terminal())
            argv = ["tiny", "--url", plain_url]
        code, out, err = call(capsys, *argv)
    assert code == exit_code, err
    assert err.startswith(start) and err.count("\n") == 1 and "Traceback" not in err, err
    if case == "throttled":
        assert "after 2 attempts" in err


def test_a_failing_call_in_a_fresh_process_prints_no_traceback(no_aws_creds):
    port = free_port()
    result = subprocess.run([sys.executable, "-c", "import sys; from infra.cli import main; sys.exit(main())",
                             "call", "tiny", "hello", "--url", f"http://127.0.0.1:{port}"],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(f"modelfn: error: cannot connect to http://127.0.0.1:{port}/models/tiny")
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_task_option_skips_the_info_call(no_aws_creds, capsys):
    server = Scripted((200, {}, [[0.6, 0.8]]))
    with serve(server) as url:
        code, out, _ = call(capsys, "m", "x", "--url", url, "--task", "embeddings")  # a synonym
    assert code == 0 and out == "dimension 2, norm 1.0000: [0.6000, 0.8000]\n"
    assert [(method, path) for method, path, _, _ in server.requests] == [("POST", "/models/m/predict")]

"""`modelfn call NAME [TEXT ...]`: call one model of a deployed stack or a local server, and print its
answer readably (``--json``: as the API sent it).

Input, first found: TEXT arguments (several make a batch), ``--question``/``--context``, ``--file``
(``-`` for stdin), or stdin when it is not a terminal. A file or stdin holding JSON is a request
body when it has ``inputs`` (or ``messages``), else the inputs; other text is one input.
Text-generation models are called through their own /models/NAME/v1/chat/completions and their
text is printed as it streams. The URL and auth come from ``--url`` / ``--stack-name`` (see infra.client.Client).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from functions.errors import ConfigError
from functions.tasknames import TEXT_GENERATION

from .. import defaults
from .endpoints_cmd import add_stack_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "call", help="call a model of a deployed stack or a local server",
        description="Call model NAME and print its answer. The URL: --url, else --stack-name's ApiUrl output, "
                    f"else ${defaults.URL_ENV}, else the stack named in {defaults.SAMCONFIG}. Requests are "
                    "SigV4-signed from the AWS credential chain when the API uses IAM auth, or carry x-api-key.")
    p.add_argument("name", help="the model's name (as in models.yaml)")
    p.add_argument("text", nargs="*", help="input text; several make a batch")
    p.add_argument("--file", help="read the input from FILE ('-' for stdin): JSON body or inputs, or plain text")
    p.add_argument("--question", help="question-answering: the question")
    p.add_argument("--context", help="question-answering: the context")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a request parameter (JSON value or text), e.g. top_k=3 or max_tokens=64; repeatable")
    p.add_argument("--system", help="text-generation: a system message before the user's")
    p.add_argument("--task", help="the model's task, to skip asking GET /models/NAME")
    p.add_argument("--json", action="store_true", help="print the API's raw JSON answer")
    add_client_arguments(p)
    p.set_defaults(func=run)


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    """Where the API is and how to authenticate (shared with other commands that call it)."""
    p.add_argument("--url", help=f"base URL of the API, e.g. http://127.0.0.1:3000 (default: ${defaults.URL_ENV})")
    add_stack_arguments(p)
    p.add_argument("--auth", choices=("auto", "iam", "api-key", "none"), default="auto",
                   help="auto: an API key if given, else the stack's AuthMode, else SigV4 for execute-api URLs")
    p.add_argument("--api-key", help=f"API Gateway API key, sent as x-api-key (default: ${defaults.API_KEY_ENV})")
    p.add_argument("--timeout", type=float, default=defaults.CALL_TIMEOUT_S, help="seconds per request "
                                                                                   "(default: %(default)s)")
    p.add_argument("--retries", type=int, default=defaults.CALL_RETRIES,
                   help="retries on 429/502/503/504, honouring Retry-After (default: %(default)s)")


def open_client(args: argparse.Namespace):
    """The Client the arguments describe."""
    from infra.client import Client

    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout:g}")
    if args.retries < 0:
        raise ConfigError(f"--retries must be 0 or more, got {args.retries}")
    return Client(args.url, stack_name=args.stack_name, auth=args.auth, api_key=args.api_key, region=args.region,
                  endpoint_url=args.endpoint_url, timeout=args.timeout, retries=args.retries)


def run(args: argparse.Namespace) -> int:
    from infra.client.diagnose import diagnose_not_found, is_not_found
    from infra.client.errors import APIError

    request = read_request(args)
    with open_client(args) as client:
        try:
            return _call(client, args, request)
        except APIError as exc:
            # "Not found" for everything usually means a wrong URL, stage or model name: probe and say which.
            if is_not_found(exc):
                exc.hint = diagnose_not_found(client, args.name) or exc.hint
            raise


def _call(client, args: argparse.Namespace, request: dict) -> int:
    if client.endpoints is not None and client.endpoints.models() and args.name not in client.endpoints.models():
        raise ConfigError(f"no model named {args.name!r} in {client.endpoints.source}",
                          hint="models: " + ", ".join(client.endpoints.models()))
    if args.task:
        from functions.tasknames import resolve_task

        task = resolve_task(args.task)  # a synonym names the same task; an unknown one lists them
    else:
        task = client.info(args.name).get("task", "")
    if task == TEXT_GENERATION or "messages" in request:
        return _chat(client, args, request)
    inputs = request.get("inputs")
    answer = client.predict(args.name, inputs, request.get("parameters"))
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        from .answers import render

        print(render(task, inputs, answer))
    return 0


def _chat(client, args: argparse.Namespace, request: dict) -> int:
    from urllib.parse import quote

    from functions.routes import openai_base
    from infra.client.client import chat_body

    if "messages" in request:
        messages = request["messages"]
    else:
        inputs = request.get("inputs")
        if not isinstance(inputs, str):
            raise ConfigError("a text-generation model takes one text (or a JSON body with messages)")
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                   [{"role": "user", "content": inputs}]
    params = {k: v for k, v in request.items() if k not in ("messages", "inputs", "parameters", "stream", "model")}
    params.update(request.get("parameters") or {})
    if args.json:
        body = chat_body(messages, model=args.name, stream=False, **params)
        path = openai_base(quote(args.name, safe="")) + "/chat/completions"  # the model's own route
        answer = client.request("POST", path, body)
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return 0
    with client.chat(messages, model=args.name, **params) as stream:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def read_request(args: argparse.Namespace) -> dict:
    """{"inputs": ..., "parameters": {...}} (or a chat body with "messages") from the arguments."""
    params = dict(_param(p) for p in args.param)
    if args.question is not None or args.context is not None:
        if args.question is None or args.context is None or args.text or args.file:
            raise ConfigError("--question and --context go together, without TEXT or --file")
        request: dict[str, Any] = {"inputs": {"question": args.question, "context": args.context}}
    elif args.text:
        if args.file:
            raise ConfigError("give the input as TEXT or --file, not both")
        request = {"inputs": args.text[0] if len(args.text) == 1 else list(args.text)}
    elif args.file or not sys.stdin.isatty():
        request = _from_text(_read(args.file or "-"), args.file or "stdin")
    else:
        raise ConfigError("no input", hint="give TEXT, --question/--context, --file FILE, or pipe it on stdin")
    if params:
        request["parameters"] = {**(request.get("parameters") or {}), **params}
    return request


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _from_text(text: str, where: str) -> dict:
    stripped = text.strip()
    if not stripped:
        raise ConfigError(f"{where} is empty")
    try:
        data = json.loads(stripped)
    except ValueError:
        return {"inputs": stripped}
    if isinstance(data, dict) and ("inputs" in data or "messages" in data):
        return data
    return {"inputs": data}


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--param {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value

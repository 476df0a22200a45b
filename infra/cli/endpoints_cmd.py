"""`modelfn endpoints`: each model's URL and routes, from a deployed stack's outputs (``--stack-name``,
default samconfig.toml's) or for a local server (``--local URL``, routes from models.yaml)."""

from __future__ import annotations

import argparse
import json
import sys

from .. import defaults


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "endpoints", help="list each model's URL and routes (deployed stack or local server)",
        description="List the API's base URL, its auth mode and every route with its URL: from the CloudFormation "
                    f"stack's outputs (default stack: {defaults.SAMCONFIG}'s stack_name), or with --local URL "
                    "for a local server (`modelfn serve`, `sam local start-api`), from models.yaml.")
    add_stack_arguments(p)
    p.add_argument("--local", metavar="URL", help="a local server's base URL, e.g. http://127.0.0.1:3000")
    p.add_argument("--models-file", default=defaults.MODELS_FILE, help="with --local (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--check", action="store_true",
                   help="also call GET /health and each model's GET /models/NAME; when they answer \"not found\", "
                        "say why (wrong URL or stage, wrong model name, API not deployed) and exit 1")
    p.set_defaults(func=run)


def add_stack_arguments(p: argparse.ArgumentParser) -> None:
    """Which CloudFormation stack, and where to read it."""
    p.add_argument("--stack-name", help=f"the deployed stack (default: {defaults.SAMCONFIG}'s stack_name, else "
                                        f"{defaults.STACK_NAME})")
    p.add_argument("--region", help="the stack's AWS region (default: the AWS configuration's)")
    p.add_argument("--endpoint-url", help="CloudFormation/API Gateway API endpoint (default: AWS)")


def run(args: argparse.Namespace) -> int:
    from infra.client.endpoints import default_stack_name, local_endpoints, stack_endpoints

    stack_name = None if args.local else (args.stack_name or default_stack_name())
    if args.local:
        endpoints = local_endpoints(args.local, args.models_file)
    else:
        endpoints = stack_endpoints(stack_name, region=args.region, endpoint_url=args.endpoint_url)
    if args.json:
        print(json.dumps(endpoints.to_dict(), indent=2))
        return _check(args, stack_name, endpoints) if args.check else 0
    auth = f", auth {endpoints.auth_mode}" if endpoints.auth_mode else ""
    print(f"{endpoints.source}{auth}: {endpoints.base_url}")
    from .registry_cmd import _table  # the CLI's one table layout

    print(_table([[r.model or "-", r.method, r.url] for r in endpoints.routes], ["MODEL", "METHOD", "URL"]))
    if endpoints.openai_base_urls:  # OpenAI(base_url=...) for one model of a multi-model stack
        print("\n" + _table([list(pair) for pair in endpoints.openai_base_urls], ["MODEL", "OPENAI BASE_URL"]))
    return _check(args, stack_name, endpoints) if args.check else 0


def _check(args: argparse.Namespace, stack_name: str | None, endpoints) -> int:
    """Probe the routes listed; one line per probe, then the likely cause of a failure."""
    from infra.client import Client
    from infra.client.diagnose import check_endpoints

    with Client(args.local, stack_name=stack_name, region=args.region, endpoint_url=args.endpoint_url) as client:
        lines, problem = check_endpoints(client, endpoints.models())
    print("\n".join(lines), file=sys.stderr if args.json else sys.stdout)  # --json keeps stdout JSON
    if problem:
        print(f"modelfn: error: {problem}", file=sys.stderr)
        return 1
    return 0

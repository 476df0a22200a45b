"""The `modelfn` command. Subcommands live in their own modules and import heavy code only when run.

Errors are rendered here and nowhere else: a ModelfnError becomes one line on stderr and its
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from functions.errors import ModelfnError

# module -> it defines register(subparsers); each subparser sets `func(args) -> int`.
_COMMAND_MODULES = (
    "infra.cli.export_cmd",
    "infra.cli.eval_cmd",
    "infra.cli.registry_cmd",
    "infra.cli.build_cmd",
    "infra.cli.quickstart_cmd",
    "infra.cli.endpoints_cmd",
    "infra.cli.call_cmd",
    "infra.cli.serve_cmd",
    "infra.cli.bench_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelfn",
        description="Hugging Face models as quantized, parity-gated ONNX functions on AWS Lambda.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not part of this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ModelfnError as exc:
        print(f"modelfn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("modelfn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

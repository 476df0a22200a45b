"""Regenerate the committed template.yaml for a models.yaml without a registry or image builds:

    python -m infra.template [--models-file models.yaml] [--out template.yaml]

Every Lambda model is assumed at version 1, baked in (see committed_deployments). `modelfn build`
writes the same template with the versions the registry actually holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from functions.errors import ModelfnError
from infra.spec import load_models_file

from . import committed_deployments, generate_template, write_template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.template", description=__doc__.splitlines()[0])
    parser.add_argument("--models-file", default="models.yaml")
    parser.add_argument("--out", default="template.yaml")
    args = parser.parse_args(argv)
    try:
        models_file = load_models_file(args.models_file)
        template = generate_template(models_file, committed_deployments(models_file), models_file.registry)
        print(write_template(template, Path(args.out)))
    except ModelfnError as exc:
        print(f"modelfn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

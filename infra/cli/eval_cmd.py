"""`modelfn eval NAME [--version V] --eval-file F`: re-check a registered bundle on your own inputs.

Pulls the version (sha256-checked) from the registry, runs the parity gate of export against the
source model on the JSONL inputs, and prints the same table (with the worst inputs and their
class). Exit 0 when the bundle passes its manifest's thresholds on them, 3 when it does not.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
import tempfile
from pathlib import Path

from infra.spec import DEFAULT_MODELS_FILE


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="re-check a registered bundle against its source model on your own inputs",
        description="Pull NAME (version, alias or 'latest') from the registry and score it against the "
                    "source model on --eval-file with the export's parity gate.")
    p.add_argument("name", metavar="NAME", help="model name in the registry")
    p.add_argument("--version", default=None, metavar="V",
                   help="version number, alias or 'latest' (default: models.yaml's alias for NAME, else latest)")
    p.add_argument("--eval-file", required=True,
                   help="JSONL: {\"text\", \"label\"} per line, or {\"question\", \"context\"}")
    p.add_argument("--source", help="the Hugging Face model directory (default: models.yaml's, else the manifest's)")
    p.add_argument("--models-file", default=DEFAULT_MODELS_FILE, help="default: %(default)s")
    p.add_argument("--registry", metavar="URI", help="s3://bucket/prefix or a directory (default: models.yaml's)")
    p.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--threads", type=int, default=2, help="threads for the latency columns (default 2)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)


def _declared(args):
    """NAME's models.yaml entry and the file's registry, when there is such a file and entry."""
    from functions.errors import ConfigError
    from infra.spec import load_models_file

    if not Path(args.models_file).is_file():
        return None, None
    models = load_models_file(args.models_file)
    try:
        return models.get(args.name), models.registry
    except ConfigError:
        return None, models.registry


def run(args) -> int:
    from export.errors import ParityGateError
    from export.recheck import recheck_bundle
    from infra.registry import open_registry

    spec, declared_registry = _declared(args)
    registry = open_registry(args.registry or declared_registry or "./.modelfn/registry",
                             endpoint_url=args.endpoint_url)
    ref = args.version or (spec.alias if spec else "latest")
    version = registry.resolve(args.name, int(ref) if str(ref).isdigit() else ref)
    source = args.source or (spec.source_dir() if spec else None)
    with tempfile.TemporaryDirectory(prefix="modelfn-eval-") as tmp:
        bundle = registry.pull(args.name, version, Path(tmp) / "bundle")
        print(f"modelfn eval: {args.name} version {version} vs {source or 'the manifest source'} "
              f"on {args.eval_file}", file=sys.stderr)
        result = recheck_bundle(bundle, args.eval_file, source=source, threads=args.threads)
    p = result.manifest.parity
    if args.json:
        json.dump({"name": args.name, "version": version, "passed": result.passed, "samples": result.samples,
                   "classes": result.classes, "candidate": asdict(result.candidate),
                   "thresholds": p.thresholds}, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(f"{args.name} version {version} ({result.manifest.quantization.chosen}) on {result.samples} inputs "
              f"of yours: {'PASS' if result.passed else 'FAIL'}")
        print(result.table)
    if not result.passed:
        raise ParityGateError(f"{args.name} version {version} drifts past its parity thresholds on your inputs",
                              hint="see the table; re-export with --eval-file to gate on these inputs")
    return 0

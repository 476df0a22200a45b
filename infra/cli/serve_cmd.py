"""`modelfn serve NAME`: the GPU container's server (functions/serve.py) on this machine.

The same server SageMaker runs: /ping, /invocations, every regular route, the token-budget batch
scheduler, and the best execution provider onnxruntime offers here (the CPU one without a GPU).
The bundle is --bundle DIR, else .modelfn/bundles/NAME (what `modelfn export NAME` writes), else
the registry version NAME's alias points at, pulled (every file's sha256 checked) into
.modelfn/pulled/NAME-vVERSION. NAME's limits in models.yaml (max_tokens, truncate, max_batch, the
batching limits) apply as on the deployed endpoint, unless an option or the environment sets them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from functions.errors import ConfigError
from functions.serve import add_server_options
from infra.spec import DEFAULT_MODELS_FILE

from .. import defaults

PULLED = defaults.PULLED_DIR


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model locally with the GPU server (SageMaker contract, batching)",
        description="Serve NAME's bundle with the GPU container's server: GET /ping, POST /invocations, "
                    "/models/NAME/predict, /v1/embeddings (and the model's own /models/NAME/v1/...), /models/NAME, "
                    "/health, /openapi.json.")
    p.add_argument("name", metavar="NAME", help="the model's name (served as /models/NAME)")
    p.add_argument("--bundle", help="bundle directory (default: .modelfn/bundles/NAME, else pulled from the registry)")
    p.add_argument("--models-file", default=DEFAULT_MODELS_FILE, help="default: %(default)s")
    p.add_argument("--registry", help="registry URI (default: models.yaml's, else ./.modelfn/registry)")
    p.add_argument("--alias", help="registry alias to pull (default: NAME's alias in models.yaml, else prod)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, help="default: $SAGEMAKER_BIND_TO_PORT or 8080")
    add_server_options(p)
    p.set_defaults(func=run)


def _declared(args):
    """NAME's models.yaml entry and the file's registry, or (None, None) when there is no such file/entry."""
    if not os.path.exists(args.models_file):
        return None, None
    from infra.spec import load_models_file

    models = load_models_file(args.models_file)
    spec = next((s for s in models.models if s.name == args.name), None)
    return spec, models.registry


def locate(args) -> tuple[Path, str | None]:
    """(bundle directory, registry version or None) for the command's arguments."""
    if args.bundle:
        return Path(args.bundle), None
    exported = defaults.BUNDLES_DIR / args.name
    if exported.is_dir():
        return exported, None
    from infra.registry import NotInRegistry, open_registry

    spec, declared_registry = _declared(args)
    uri = args.registry or declared_registry or defaults.REGISTRY
    alias = args.alias or (spec.alias if spec else "prod")
    registry = open_registry(uri)
    try:
        version = registry.resolve(args.name, alias)
    except NotInRegistry:
        raise ConfigError(f"nothing to serve for {args.name!r}: no --bundle, no {exported}, and no alias "
                          f"{alias!r} in the registry {uri}",
                          hint=f"run `modelfn export {args.name}`, or push and promote a version") from None
    dest = PULLED / f"{args.name}-v{version}"
    from functions.errors import BundleError
    from functions.manifest import verify_bundle

    try:
        verify_bundle(dest)  # pulled before and intact: no second download
    except BundleError:
        registry.pull(args.name, version, dest)
    return dest, str(version)


def declared_limits(args) -> dict[str, str]:
    """NAME's limits from models.yaml, as the deployed model gets them (infra.template.served_limits), less
    those this environment sets: options, then environment, then models.yaml, then the defaults."""
    spec, _ = _declared(args)
    if spec is None:
        return {}
    from infra.template import served_limits

    return {name: value for name, value in served_limits(spec).items() if name not in os.environ}


def run(args: argparse.Namespace) -> int:
    from functions.serve import run as serve, settings_from

    bundle, version = locate(args)
    limits = declared_limits(args)
    os.environ.update(limits)  # read by the server's and the model's settings, as on the endpoint
    settings = settings_from(args, bundle)
    print(f"modelfn serve: {args.name} from {bundle}{f' (version {version})' if version else ''} "
          f"at http://{args.host}:{settings.port} (provider {settings.provider}; Ctrl-C stops)", file=sys.stderr)
    if limits:
        print(f"modelfn serve: limits from {args.models_file}: "
              + ", ".join(f"{k.removeprefix('MODELFN_').lower()}={v}" for k, v in sorted(limits.items())),
              file=sys.stderr)
    serve(settings, host=args.host, name=args.name, version=version)
    return 0

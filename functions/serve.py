"""`serve`: the GPU container's entry point (``python -m functions.serve``; the image's `serve`).

SageMaker starts the container as ``docker run IMAGE serve`` and expects the contract of
functions/adapters/sagemaker.py on port $SAGEMAKER_BIND_TO_PORT (default 8080), all interfaces.
The bundle is MODELFN_BUNDLE_DIR, else /opt/ml/model (SageMaker's model data), else, when that
holds nothing and MODELFN_REGISTRY_URI is set, the registry version fetched at start (functions/bundle.py,
as on Lambda). Either way every file is checked against its sha256 in the manifest before loading.

SIGTERM (SageMaker's stop, 30 s before SIGKILL): uvicorn stops accepting connections, waits up to
MODELFN_DRAIN_TIMEOUT_S (default 25) for in-flight requests, then the batcher stops and the process
exits, re-raising the signal as uvicorn does (exit status -SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

from .errors import ModelfnError
from .settings import PROVIDER_CHOICES, ServerSettings

if TYPE_CHECKING:
    from .adapters.sagemaker import SageMakerApp
    from .service import ModelService


def build_app(settings: ServerSettings, *, name: str | None = None, version: str | None = None) -> "SageMakerApp":
    """The server's ASGI app; the bundle is located and loaded once the server listens."""
    # Imported here: `modelfn --help` imports this module for its options and must stay instant.
    from . import observability
    from .adapters.sagemaker import SageMakerApp
    from .batching import BatchLimits
    from .bundle import locate_bundle
    from .manifest import verify_bundle
    from .service import ModelService

    def load() -> "ModelService":
        bundle = locate_bundle(settings.bundle_dir)
        checked_ms = None
        if bundle == settings.bundle_dir:
            # Model data SageMaker copied (or a directory given to `modelfn serve`) has not been checked
            # on its way here, as a fetched version has: every file against its sha256 before loading.
            started = time.perf_counter()
            verify_bundle(bundle)
            checked_ms = round((time.perf_counter() - started) * 1000, 1)
        service = ModelService.load(bundle, name=name, version=version, provider=settings.provider,
                                    max_rows=settings.max_batch_requests)
        observability.set_model(service.name, service.version)
        observability.log("INFO", "model loaded", bundle=str(bundle), provider=service.model.provider,
                          requested_provider=settings.provider, sha256_checked_ms=checked_ms)
        return service

    limits = BatchLimits(max_batch_tokens=settings.max_batch_tokens, max_batch_requests=settings.max_batch_requests,
                         max_concurrent_requests=settings.max_concurrent_requests)
    return SageMakerApp(load, limits, generation_slots=settings.generation_slots)


def run(settings: ServerSettings, *, host: str = "0.0.0.0", name: str | None = None,
        version: str | None = None) -> None:
    """Serve until SIGTERM / SIGINT (blocking)."""
    import uvicorn

    config = uvicorn.Config(build_app(settings, name=name, version=version), host=host, port=settings.port,
                            lifespan="on", access_log=False, timeout_graceful_shutdown=settings.drain_timeout_s)
    uvicorn.Server(config).run()


def parser(prog: str = "serve") -> argparse.ArgumentParser:
    """The command line of `serve` (every option defaults to its environment variable, then default)."""
    p = argparse.ArgumentParser(prog=prog, description="Serve a model bundle with the SageMaker container contract.")
    # SageMaker passes the word "serve" as the container's argument.
    p.add_argument("mode", nargs="?", choices=["serve"], help=argparse.SUPPRESS)
    add_server_options(p)
    p.add_argument("--host", default="0.0.0.0", help="interface to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, help="default: $SAGEMAKER_BIND_TO_PORT or 8080")
    p.add_argument("--bundle", help="bundle directory (default: $MODELFN_BUNDLE_DIR or /opt/ml/model)")
    return p


def add_server_options(p: argparse.ArgumentParser) -> None:
    """The batching and provider options, shared with `modelfn serve`."""
    p.add_argument("--provider", choices=PROVIDER_CHOICES, help="execution provider (default: $MODELFN_PROVIDER or auto)")
    p.add_argument("--max-batch-tokens", type=int, help="padded tokens per batch (default 16384)")
    p.add_argument("--max-batch-requests", type=int, help="rows per batch (default 256)")
    p.add_argument("--max-concurrent-requests", type=int, help="requests in flight before 429 (default 512)")
    p.add_argument("--max-concurrent-generations", type=int,
                   help="text-generation: generators decoding at once (default 1 on CPU, 8 on a GPU)")
    p.add_argument("--drain-timeout-s", type=int, help="seconds to finish in-flight requests on SIGTERM (default 25)")


def settings_from(args: argparse.Namespace, bundle: str | Path | None) -> ServerSettings:
    """ServerSettings from parsed options (unset ones fall back to the environment, then defaults)."""
    return ServerSettings.resolve(bundle, port=args.port, max_batch_tokens=args.max_batch_tokens,
                                  max_batch_requests=args.max_batch_requests,
                                  max_concurrent_requests=args.max_concurrent_requests, provider=args.provider,
                                  drain_timeout_s=args.drain_timeout_s,
                                  max_concurrent_generations=args.max_concurrent_generations)


def main(argv: list[str] | None = None) -> int:
    """The `serve` entry point."""
    args = parser().parse_args(argv)
    try:
        settings = settings_from(args, args.bundle)
    except ModelfnError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return exc.exit_code
    run(settings, host=args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())

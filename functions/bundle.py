"""Where the served bundle comes from: a directory in the image (or SageMaker's model data), else
the registry at start.

One function for every entry point (the Lambda handler, the GPU server): if the bundle directory
holds nothing and ``MODELFN_REGISTRY_URI`` is set, version ``MODELFN_MODEL_VERSION`` of
``MODELFN_MODEL_NAME`` is fetched into ``MODELFN_FETCH_DIR`` (sha256 of every file checked by
functions.fetch) and that directory is served instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import constants as env
from .errors import ConfigError


def _is_empty(directory: Path) -> bool:
    # SageMaker creates /opt/ml/model even for a Model without ModelDataUrl.
    return not directory.exists() or (directory.is_dir() and not any(directory.iterdir()))


def locate_bundle(bundle_dir: Path) -> Path:
    """``bundle_dir`` if it holds anything or no registry is configured; else the fetched version's directory."""
    registry = os.environ.get(env.REGISTRY_URI)
    if not registry or not _is_empty(bundle_dir):
        return bundle_dir
    name, version = os.environ.get(env.MODEL_NAME), os.environ.get(env.MODEL_VERSION)
    if not name or not version or not (version.isascii() and version.isdigit()):
        raise ConfigError(f"{env.REGISTRY_URI} is set but {env.MODEL_NAME} / {env.MODEL_VERSION} are not",
                          hint="the generated template sets both")
    from .fetch import (COLD_START_CONNECT_TIMEOUT_S, COLD_START_MAX_ATTEMPTS, COLD_START_READ_TIMEOUT_S,
                        clean_staging, fetch_bundle)  # only functions that fetch at start pay for boto3

    dest = Path(os.environ.get(env.FETCH_DIR) or "/tmp/modelfn") / name / version
    clean_staging(dest)  # left by a process killed mid-fetch in this environment; nothing else fetches here
    # Bounded: a registry that does not answer must not hold a cold start for minutes.
    read_timeout = float(os.environ.get(env.FETCH_TIMEOUT) or COLD_START_READ_TIMEOUT_S)
    options = {"connect_timeout": min(COLD_START_CONNECT_TIMEOUT_S, read_timeout), "read_timeout": read_timeout,
               "max_attempts": COLD_START_MAX_ATTEMPTS}
    return fetch_bundle(registry, name, int(version), dest, client_options=options, replace_invalid=True)


__all__ = ["locate_bundle"]

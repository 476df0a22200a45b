"""The stream relay's code folder (its CodeUri, infra/template/_relay.py), written by `modelfn build`
when a gpu text-generation model streams through one:

    <out>/_relay/functions/        the runtime package, Python sources only (the relay imports the
                                   stdlib, boto3 from the managed runtime, and a few of its modules)
    <out>/_relay/relay-bootstrap   the AWS_LAMBDA_EXEC_WRAPPER script that starts the streaming loop

`sam build` copies it as a zip function's source (no requirements.txt: nothing to install).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..template._names import RELAY_DIR
from ..template._relay import RELAY_BOOTSTRAP, RELAY_BOOTSTRAP_SCRIPT
from .context import _copy_runtime_code, publish_context


def write_relay_code(out: Path) -> Path:
    """Write (replace) ``out``/_relay; returns it. Staged beside it first, like the build contexts."""
    dest = Path(out) / RELAY_DIR
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _copy_runtime_code(staging / "functions")
        bootstrap = staging / RELAY_BOOTSTRAP
        bootstrap.write_text(RELAY_BOOTSTRAP_SCRIPT)
        bootstrap.chmod(0o755)  # the managed runtime refuses a wrapper it cannot execute
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return publish_context(staging, dest)


__all__ = ["write_relay_code"]

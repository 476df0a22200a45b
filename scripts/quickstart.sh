#!/usr/bin/env bash
# The main job, end to end on embedded defaults: install, then export the bundled MiniLM, push it to
# the local registry, promote it, build the function and serve it with sam local start-api (or under
# the Lambda Runtime Interface Emulator when no container engine can be had), and call it over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
if containers=$(bash scripts/containers-env.sh); then
  eval "$containers"
else
  echo "modelfn: no container engine; the function will run under the emulator on this host" >&2
fi
exec modelfn quickstart "$@"

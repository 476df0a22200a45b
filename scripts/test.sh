#!/usr/bin/env bash
# Install everything (idempotent), prepare the container engine when this machine can, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# shellcheck disable=SC1091
. .venv/bin/activate
# Container tests need a Docker-API engine and the Lambda base image (podman and a stand-in here);
# without them they skip, saying why.
if containers=$(bash scripts/containers-env.sh); then
  eval "$containers"
elif [ "${MODELFN_REQUIRE_CONTAINERS:-0}" = 1 ]; then
  echo "modelfn: MODELFN_REQUIRE_CONTAINERS=1 but no container engine could be set up" >&2
  exit 1
else
  echo "modelfn: no container engine; container tests will be skipped" >&2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "modelfn: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"

#!/usr/bin/env bash
# Make `sam build` / `sam local` usable here and print the environment to eval:
#   eval "$(bash scripts/containers-env.sh)"
# With a working Docker engine it prints nothing and changes nothing. Otherwise (as root) it sets up
# podman behind a Docker-API socket and builds the stand-in Lambda base image when the AWS one is
# absent, and a CPU stand-in for the CUDA base of GPU images. Exits non-zero, with the reason on
# stderr, when no engine can be had.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DOCKER_HOST:-}" ] && docker info >/dev/null 2>&1; then
  exit 0  # a real Docker engine: sam uses it as is
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "containers: no Docker engine and not root, so podman cannot be set up" >&2
  exit 1
fi
setup=$(bash scripts/podman-setup.sh)
eval "$setup"
base=$(bash scripts/standin-base/build.sh)  # prints the image's Python for `modelfn build`
gpu=$(bash scripts/standin-base/cuda.sh)  # the CPU stand-in for the CUDA base of GPU images
echo "$setup"
echo "$base"
echo "$gpu"

#!/usr/bin/env bash
# Build the CPU stand-in for the CUDA base of GPU images over the Lambda stand-in (build.sh), with no
# registry access: see cuda-standin.Containerfile. Idempotent (--force rebuilds).
#
#   eval "$(sudo scripts/standin-base/cuda.sh [--force])"
#
# Its stdout is the settings `modelfn build` needs for gpu models over it; progress goes to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LAMBDA_TAG="${MODELFN_STANDIN_TAG:-localhost/modelfn/lambda-python-standin:bookworm}"
CUDA_TAG="${MODELFN_CUDA_STANDIN_TAG:-localhost/modelfn/cuda-standin:bookworm}"
log() { echo "standin-base: $*" >&2; }

if [ "${1:-}" = "--force" ] || ! podman image exists "$CUDA_TAG"; then
  podman image exists "$LAMBDA_TAG" || bash "$HERE/build.sh" >/dev/null
  log "building $CUDA_TAG over $LAMBDA_TAG"
  podman build --quiet --build-arg "LAMBDA_BASE=$LAMBDA_TAG" -f "$HERE/cuda-standin.Containerfile" \
    -t "$CUDA_TAG" "$HERE" >&2
else
  log "$CUDA_TAG already present; nothing to do (--force rebuilds)"
fi
echo "export MODELFN_GPU_BASE_IMAGE=$CUDA_TAG MODELFN_GPU_RUNTIME=onnxruntime"

#!/usr/bin/env bash
# Time the container part of CI from a machine with podman installed: podman setup (idempotent
# path), a forced rebuild of the stand-in base image, and an uncached `sam build` (the fresh base
# invalidates every cached layer) of the project in PROJECT_DIR, which must have run `modelfn build`.
# Writes bench/image-build.md.
#
#   sudo bench/image_build.sh [PROJECT_DIR]     # default: the repository root
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJECT="${1:-$ROOT}"
SAM="${SAM:-$ROOT/.venv/bin/sam}"
export AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0

seconds() { local start=$SECONDS; "$@" >/dev/null 2>&1; echo $((SECONDS - start)); }

eval "$("$ROOT/scripts/podman-setup.sh" 2>/dev/null)"
t_setup=$(seconds "$ROOT/scripts/podman-setup.sh")
t_standin=$(seconds "$ROOT/scripts/standin-base/build.sh" --force)
t_sam=$(seconds bash -c "cd '$PROJECT' && '$SAM' build")
image_size=$(podman image inspect --format '{{.Size}}' minilmfunction:minilm-v1 2>/dev/null || echo 0)

cat >"$ROOT/bench/image-build.md" <<EOF
# Container build times (CI's container part)

Measured by bench/image_build.sh on $(nproc) cores, $(date -u +%Y-%m-%d).

| step | seconds |
|---|---|
| scripts/podman-setup.sh, already installed (service check only) | $t_setup |
| scripts/standin-base/build.sh --force (debootstrap + awslambdaric + import) | $t_standin |
| sam build, uncached (MiniLM function image on the stand-in) | $t_sam |

Image minilmfunction:minilm-v1: $((image_size / 1000000)) MB.
A first run of podman-setup.sh also installs podman, runc, debootstrap and iptables with apt
(about 20 s from the Debian mirror here).
EOF
cat "$ROOT/bench/image-build.md"

#!/usr/bin/env bash
# Build a stand-in for the AWS Lambda Python base image where public.ecr.aws cannot be reached:
# a debootstrapped Debian bookworm rootfs with python3, awslambdaric and the Lambda Runtime
# Interface Emulator that ships inside the aws-sam-cli wheel, tagged as the AWS base so generated
# Dockerfiles build unchanged. Its python is 3.11 (Debian's), not 3.12: build contexts for it need
# `modelfn build --python-version 3.11`.
#
#   eval "$(sudo scripts/standin-base/build.sh [--force])"
#
# The only stdout line is `export MODELFN_IMAGE_PYTHON=3.11`, the setting `modelfn build` needs for
# this base; progress goes to stderr.
# Idempotent: skips everything when the tag already exists (unless --force). Needs root, podman
# (scripts/podman-setup.sh), debootstrap, the project venv (for pip and the emulator binary) and
# the Debian mirror apt is configured with.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
AWS_TAG="${MODELFN_STANDIN_AWS_TAG:-public.ecr.aws/lambda/python:3.12}"
OWN_TAG="${MODELFN_STANDIN_TAG:-localhost/modelfn/lambda-python-standin:bookworm}"
SUITE="${MODELFN_STANDIN_SUITE:-bookworm}"
# A Python with aws-sam-cli (for the emulator binary) and pip: the project venv when there is one.
VENV_PY="${MODELFN_VENV_PYTHON:-}"
if [ -z "$VENV_PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then VENV_PY="$ROOT/.venv/bin/python"; else VENV_PY="$(command -v python3)"; fi
fi
WORK="${MODELFN_STANDIN_WORKDIR:-$ROOT/.cache/standin-base}"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { echo "standin-base: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (debootstrap and chroot)"
  exit 1
fi
if [ "$(uname -m)" != "x86_64" ]; then
  log "only an x86_64 stand-in is supported (host is $(uname -m))"
  exit 1
fi
if [ "$FORCE" -eq 0 ] && podman image exists "$AWS_TAG" && podman image exists "$OWN_TAG"; then
  log "$AWS_TAG already present; nothing to do (--force rebuilds)"
  pyver="$(podman run --rm --entrypoint python3 "$OWN_TAG" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  echo "export MODELFN_IMAGE_PYTHON=$pyver"
  exit 0
fi

# The mirror apt already uses (it is the one reachable from here): first deb822 URIs or one-line
# `deb` entry that serves the suite, skipping security/updates suites and disabled files.
mirror="${MODELFN_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(python3 - "$SUITE" <<'PY'
import glob, sys
suite = sys.argv[1]
files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
    + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in text.split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.split()
            if suite in fields.get("suites", []) and "deb" in fields.get("types", []) \
                    and fields.get("enabled", ["yes"])[0] != "no":
                print(fields["uris"][0]); sys.exit(0)
    else:
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            parts = [p for p in parts if not p.startswith("[")]
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                print(parts[1]); sys.exit(0)
sys.exit(1)
PY
)" || { log "no Debian mirror for $SUITE in /etc/apt/sources.list(.d); set MODELFN_DEBIAN_MIRROR"; exit 1; }
fi

rie="$("$VENV_PY" -c 'import pathlib, samcli; print(pathlib.Path(samcli.__file__).parent / "local/rapid/aws-lambda-rie-x86_64")')"
[ -x "$rie" ] || { log "Runtime Interface Emulator not found at $rie (is aws-sam-cli installed in the venv?)"; exit 1; }

rootfs="$WORK/rootfs"
rm -rf "$rootfs"
mkdir -p "$WORK"
log "debootstrap $SUITE from $mirror into $rootfs"
debootstrap --variant=minbase --include=python3,ca-certificates "$SUITE" "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
  || { log "debootstrap failed; see $WORK/debootstrap.log"; tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }

pyver="$(chroot "$rootfs" /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
wheels="$ROOT/.wheelhouse/standin-x86_64-py$pyver"
log "rootfs python is $pyver; wheelhouse $wheels"
"$VENV_PY" -m pip download --quiet --only-binary=:all: --implementation cp --python-version "$pyver" \
  --platform manylinux2014_x86_64 --platform "manylinux_2_28_x86_64" -d "$wheels" pip awslambdaric >&2

# The AWS base lets `pip install` write anywhere; Debian's PEP 668 marker would refuse.
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
mkdir -p "$rootfs/tmp/wheels"
cp "$wheels"/*.whl "$rootfs/tmp/wheels/"
pipwhl="$(cd "$rootfs/tmp/wheels" && ls pip-*.whl | head -n1)"
chroot "$rootfs" /usr/bin/python3 "/tmp/wheels/$pipwhl/pip" install --quiet --no-cache-dir --no-index \
  --find-links /tmp/wheels pip awslambdaric >&2
rm -rf "$rootfs/tmp/wheels"

install -m 0755 "$rie" "$rootfs/usr/local/bin/aws-lambda-rie"
install -m 0755 "$HERE/lambda-entrypoint.sh" "$rootfs/lambda-entrypoint.sh"
mkdir -p "$rootfs/var/task" "$rootfs/var/runtime"
# Size: nothing at runtime reads these.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*

log "importing as $OWN_TAG and $AWS_TAG"
tar -C "$rootfs" --numeric-owner -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV TZ=:/etc/localtime' \
  --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
  --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
  --change 'WORKDIR /var/task' \
  --change 'ENTRYPOINT ["/lambda-entrypoint.sh"]' \
  --change 'CMD ["functions.handler.handler"]' \
  --message "modelfn stand-in for $AWS_TAG: Debian $SUITE, python $pyver, awslambdaric, aws-lambda-rie" \
  - "$OWN_TAG" >&2
podman tag "$OWN_TAG" "$AWS_TAG"
# Also under its true Python version, which `modelfn build --python-version 3.11` picks by default.
podman tag "$OWN_TAG" "public.ecr.aws/lambda/python:$pyver"
rm -rf "$rootfs"
log "done: $(podman image inspect --format '{{.Size}}' "$OWN_TAG") bytes; build contexts for it need Python $pyver"
echo "export MODELFN_IMAGE_PYTHON=$pyver"

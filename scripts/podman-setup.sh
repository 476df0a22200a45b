#!/usr/bin/env bash
# Make `sam build` / `sam local invoke` / `sam local start-api` work on a machine with no Docker
# engine: podman behind a Docker-compatible API socket. Idempotent; run as root.
#
#   eval "$(sudo scripts/podman-setup.sh)"   # exports DOCKER_HOST
#
# Progress goes to stderr; the only stdout line is the `export DOCKER_HOST=...` to eval.
set -euo pipefail

SOCK_PATH="${MODELFN_PODMAN_SOCK:-/run/modelfn-podman.sock}"
SOCK_URI="unix://${SOCK_PATH}"
CONF=/etc/containers/containers.conf
LOG=/var/log/modelfn-podman-service.log

log() { echo "podman-setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it installs packages and writes ${CONF})"
  exit 1
fi

missing=()
# netavark (podman's network backend) shells out to iptables; without it every container start
# fails with "netavark: No such file or directory".
for tool in podman runc debootstrap iptables; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  # apt's progress (a hundred dpkg lines) goes to a log, shown only when the install fails.
  apt_log=/var/log/modelfn-apt.log
  log "installing ${missing[*]} (apt log: ${apt_log})"
  export DEBIAN_FRONTEND=noninteractive
  started=$SECONDS
  if ! { apt-get update -qq \
         && { apt-get install -y -qq --no-install-recommends podman runc debootstrap \
                uidmap slirp4netns fuse-overlayfs netavark aardvark-dns iptables catatonit \
              || apt-get install -y -qq podman runc debootstrap iptables; }; } >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    log "installing packages failed; the whole log is in ${apt_log}"
    exit 1
  fi
  log "installed in $((SECONDS - started))s"
else
  log "podman, runc, debootstrap and iptables already installed"
fi

# Set KEY = VALUE under [SECTION] of containers.conf, adding the section or key when absent.
# crun cannot set up containers on this kernel and the default nofile ulimits exceed what the
# sandbox allows, hence runc and no default ulimits.
set_conf() {
  local section="$1" key="$2" value="$3"
  python3 - "$CONF" "$section" "$key" "$value" <<'PY'
import re, sys
path, section, key, value = sys.argv[1:]
try:
    lines = open(path).read().splitlines()
except FileNotFoundError:
    lines = []
out, in_section, seen_section, done = [], False, False, False
for line in lines:
    header = re.match(r"^\s*\[([^\]]+)\]\s*$", line)
    if header:
        if in_section and not done:
            out.append(f"{key} = {value}")
            done = True
        in_section = header.group(1).strip() == section
        seen_section = seen_section or in_section
    elif in_section and re.match(rf"^\s*#?\s*{re.escape(key)}\s*=", line):
        if not done:
            out.append(f"{key} = {value}")
            done = True
        continue
    out.append(line)
if not done:
    if not seen_section:
        out.append(f"[{section}]")
    out.append(f"{key} = {value}")
open(path, "w").write("\n".join(out) + "\n")
PY
}
mkdir -p "$(dirname "$CONF")"
set_conf containers default_ulimits '[]'
set_conf engine runtime '"runc"'
log "configured ${CONF} (runtime runc, default_ulimits [])"

answering() {
  curl -sf --max-time 3 --unix-socket "$SOCK_PATH" http://d/_ping >/dev/null 2>&1
}

service_cwd_gone() {
  local pid
  pid=$(pgrep -f "system service --time=0 ${SOCK_URI}" | head -n 1) || return 1
  [ -n "$pid" ] && [[ "$(readlink "/proc/$pid/cwd")" == *" (deleted)" ]]
}

if answering && service_cwd_gone; then
  # An older setup started the service inside a directory that has since been deleted (see below).
  log "podman API service runs in a deleted directory; restarting it"
  pkill -f "system service --time=0 ${SOCK_URI}" || true
  sleep 1
fi
if answering; then
  log "podman API already answering on ${SOCK_URI}"
else
  rm -f "$SOCK_PATH"
  log "starting podman system service on ${SOCK_URI} (log: ${LOG})"
  # From /: the service outlives this shell, and conmon needs its working directory to exist for every
  # container it starts; a service started inside a checkout that is later deleted fails every start
  # with "write child: broken pipe".
  # The subshell's own descriptors are redirected too, so nothing keeps a caller's pipe open (callers
  # read this script's output with $(...), which waits for every writer to close).
  (cd / && exec nohup setsid podman --runtime runc system service --time=0 "$SOCK_URI") >"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    answering && break
    sleep 0.5
  done
  if ! answering; then
    log "podman API did not answer on ${SOCK_URI}; see ${LOG}"
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
  log "podman API answering"
fi

echo "export DOCKER_HOST=${SOCK_URI}"

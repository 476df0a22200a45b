#!/usr/bin/env bash
# On the GPU machine, from the repo root: install the carried wheels, show the GPU and ONNX
# Runtime's providers, run the GPU tests and bench/gpu.py, start the GPU server (`serve`) on the
# bench's MiniLM bundle, and copy what they wrote to $OUT.
#   bash scripts/gpu-kit/run.sh --receive K/N   a call that only carries folder K (says what is here)
#   bash scripts/gpu-kit/run.sh                 the last call: install (idempotent), test, bench
# Stops with a clear message if a carry folder is missing (the machine was given back between
# calls). Environment: GPU_KIT_BENCH=full|quick|none (default full), GPU_KIT_BENCH_TIMEOUT seconds
# (default 420), GPU_KIT_SITE (default /tmp/site), GPU_KIT_PYTHON (default python3).
# GPU_KIT_DRY=1 is the CPU-only rehearsal here: install, imports, tests that must skip; no bench.
set -uo pipefail
cd "$(dirname "$0")/../.."
KIT=.gpu-kit
PY=${GPU_KIT_PYTHON:-python3}
SITE=${GPU_KIT_SITE:-/tmp/site}
DRY=${GPU_KIT_DRY:-0}
BENCH=${GPU_KIT_BENCH:-full}
[ "$DRY" = 1 ] && BENCH=none
OUT=${OUT:-$(mktemp -d /tmp/gpu-kit-out.XXXX)}
mkdir -p "$OUT"

if [ "${1:-}" = "--receive" ]; then
  nvidia-smi -L 2>&1 | head -2  # no GPU here would make the rest of the calls pointless
  "$PY" scripts/gpu-kit/pack.py status "$KIT" || exit 1
  exit 0
fi

step() { echo; echo "== $*"; }
step "kit: reassemble and check (scripts/gpu-kit/pack.py)"
"$PY" scripts/gpu-kit/pack.py status "$KIT" || exit 1
"$PY" scripts/gpu-kit/pack.py assemble "$KIT" /tmp/gpu-kit/files >/dev/null || exit 1
# Install once per kit: the marker holds the plan's digest, so a rerun after a finished install
# skips it, and one after a broken install (no marker) installs again over what is there.
stamp=$(sha256sum "$(ls $KIT/part*/kit.json | head -1)" | cut -d' ' -f1)
if [ "$(cat "$SITE/.gpu-kit" 2>/dev/null)" != "$stamp" ]; then
  step "wheels: install into $SITE"
  rm -f "$SITE/.gpu-kit"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    /tmp/gpu-kit/files/*.whl || { echo "gpu-kit: pip install failed (see above)"; exit 1; }
  tar -C /tmp/gpu-kit -xf /tmp/gpu-kit/files/genbundles.tar || exit 1
  echo "$stamp" > "$SITE/.gpu-kit"
else
  echo "wheels already installed in $SITE (this kit)"
fi
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# the tiny LM built by prepare.sh with our onnxruntime-genai builder (tests/conftest.py gen_bundle)
export MODELFN_TEST_GEN_BUNDLES=/tmp/gpu-kit/genbundles
# onnxruntime-gpu dlopens CUDA 13 and cuDNN 9 by name: the image has them as nvidia-* wheels
# (torch's own), outside the loader's path.
nvlibs=$("$PY" - <<'PY'
import os
try:
    import nvidia
except ImportError:
    raise SystemExit
dirs = {root for base in nvidia.__path__ for root, _, files in os.walk(base) if any(".so" in f for f in files)}
print(":".join(sorted(dirs)))
PY
)
[ -n "$nvlibs" ] && export LD_LIBRARY_PATH="$nvlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

step "machine"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi / no GPU"
  "$PY" - <<'PY'
import platform, onnxruntime as ort, transformers, huggingface_hub, tokenizers
print("python", platform.python_version(), "| onnxruntime", ort.__version__, ort.__file__)
print("providers:", ort.get_available_providers())
print("transformers", transformers.__version__, "| huggingface_hub", huggingface_hub.__version__,
      "| tokenizers", tokenizers.__version__)
try:
    import torch
    print("torch", torch.__version__, "cuda:", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except ImportError:
    print("torch: not installed")
if "CUDAExecutionProvider" in ort.get_available_providers():
    # one Add on CUDA: says at once whether the CUDA provider's libraries load (the tests say why not)
    import numpy as np, onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "smoke", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    print("a CUDA session got:", session.get_providers(), session.run(None, {"x": np.ones(2, np.float32)})[0])
try:
    import onnxruntime_genai as og
    print("onnxruntime_genai", og.__version__, "cuda available:", og.is_cuda_available())
except ImportError as e:
    print("onnxruntime_genai: not importable:", e)
# the runtime (and the GPU server's app) imports with the carried packages
import functions.service, functions.app, functions.adapters.sagemaker, functions.serve, uvicorn
print("functions.service, functions.app, functions.serve import")
PY
} 2>&1 | tee "$OUT/machine.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "gpu-kit: the environment check failed (see above)"; exit 1; }

step "GPU tests"
# Every module marked gpu, plus the GPU cases of unmarked modules (they skipif without CUDA).
# addopts is reset: it names pytest-randomly's seed, and that plugin is not on the machine.
tests=$(grep -rlE "pytestmark = pytest.mark.gpu|@pytest.mark.gpu" tests --include='test_*.py' | sort)
"$PY" -m pytest -o addopts="" -ra -q -p no:cacheprovider $tests \
  "tests/export/test_bundle.py::test_gpu_export_is_gated_on_cuda_where_there_is_one" \
  "tests/functions/test_gpu_generation.py::test_on_cuda_greedy_answers_equal_the_cpu_ones" 2>&1 | tee "$OUT/pytest.txt"
tests_rc=${PIPESTATUS[0]}

bench_rc=0
if [ "$BENCH" != none ]; then
  step "bench/gpu.py ($BENCH)"
  flag=""; [ "$BENCH" = quick ] && flag="--quick"
  timeout "${GPU_KIT_BENCH_TIMEOUT:-420}" "$PY" bench/gpu.py $flag 2>&1 | tee "$OUT/bench.log"
  bench_rc=${PIPESTATUS[0]}
  [ "$bench_rc" = 124 ] && echo "gpu-kit: bench/gpu.py ran out of time; rerun with GPU_KIT_BENCH=quick"
  cp bench/gpu.json bench/gpu.md "$OUT/" 2>/dev/null
fi

serve_rc=0
bundle=.modelfn/bench-gpu/bundles/minilm-fp16
if [ "$DRY" != 1 ] && [ -f "$bundle/manifest.json" ]; then
  step "serve: the GPU server on the bench's MiniLM fp16 bundle (/ping, /invocations, GET /models/minilm)"
  "$PY" -m functions.serve --bundle "$bundle" --host 127.0.0.1 --port 8089 > "$OUT/serve.log" 2>&1 &
  server=$!
  "$PY" - <<'PY' 2>&1 | tee -a "$OUT/serve.log"
import httpx
from tests.functions.servers import wait_until_ready
url = "http://127.0.0.1:8089"
wait_until_ready(url, timeout=60)
answer = httpx.post(url + "/invocations", json={"inputs": ["a gpu endpoint", "hello"]}, timeout=60)
info = httpx.get(url + "/models/minilm", timeout=10).json()
print("invocations:", answer.status_code, "vectors", len(answer.json()), "x", len(answer.json()[0]))
print("provider:", info["provider"], "| quantization:", info["quantization"]["chosen"])
raise SystemExit(0 if answer.status_code == 200 and info["provider"] != "CPUExecutionProvider" else 1)
PY
  serve_rc=${PIPESTATUS[0]}
  kill -TERM "$server" 2>/dev/null; wait "$server"
fi

step "done: tests exit $tests_rc, bench exit $bench_rc, serve exit $serve_rc; files in $OUT"
ls -la "$OUT"
# the recap, last in the output the device tool returns
tail -n 12 "$OUT/pytest.txt"
[ -f "$OUT/gpu.md" ] && sed -n '/^## Summary/,/^## [^S]/p' "$OUT/gpu.md"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$serve_rc" = 0 ]

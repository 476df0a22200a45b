"""bench/warm_latency.py's breakdown times the real handler's calls: it must keep running as the
handler changes (it once reached into a private function that was renamed, and nobody noticed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "warm_latency.py"


def test_breakdown_runs_the_handler_and_accounts_for_every_stage(tiny_bundle):
    bundle = tiny_bundle("feature-extraction")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MODELFN_BUNDLE_DIR": str(bundle), "MODELFN_MODEL_NAME": "minilm"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--breakdown-child", "40"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import warm_latency
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert set(result) == set(warm_latency.STAGES) | {"handler (whole, same loop)"}
    # Every probe was reached: a call the handler no longer makes would leave its stage at zero, and an
    # inner call wrapped twice (or counted outside its caller) would make an exclusive stage negative.
    for stage in ("tokenize", "feed", "session.run", "output check", "postprocess (pool, normalize, tolist)",
                  "response JSON", "log + EMF line"):
        assert result[stage] > 0, stage
    assert all(value >= 0 for value in result.values()), result

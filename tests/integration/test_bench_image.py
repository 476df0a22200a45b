"""`modelfn bench` in the built image (infra/bench/image.py and container.py) on a tiny model's
function image: cold start through the image's Runtime Interface Emulator, split by the RIE's reports
and by probe.py in the same image, warm latency, and Lambda sizes under the engine's --cpus/--memory limits.

The image shares its dependency stage (same pins, same wheels) with the MiniLM image the other
container tests build, so the engine's layer cache makes the build a few COPY steps. Figures are
checked for sense and for one ratio (a 0.29 vCPU quota initializes slower than a whole CPU), never
against a wall-clock time.
"""

from __future__ import annotations

import pytest

from tests.integration.samlocal import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.containers]

SIZES = [512, 1769]


@pytest.fixture(scope="module")
def tiny_spec(tiny_model_dir, tmp_path_factory):
    from infra.spec import load_models_file

    work = tmp_path_factory.mktemp("bench-image")
    (work / "models.yaml").write_text(
        "models:\n  - name: tiny\n"
        f"    source: {tiny_model_dir('feature-extraction')}\n    task: feature-extraction\n    max_tokens: 64\n",
        encoding="utf-8")
    return load_models_file(work / "models.yaml").get("tiny"), work


@pytest.fixture(scope="module")
def measured(engine, tiny_spec, tiny_bundle):
    from infra.bench.image import measure_image
    from infra.bench.measure import Way

    spec, work = tiny_spec
    env = {"MODELFN_MODEL_NAME": "tiny", "MODELFN_MAX_TOKENS": "64", "MODELFN_MAX_BATCH": "8"}
    lines: list[str] = []
    bundle = tiny_bundle("feature-extraction")
    host = Way("modelfn", {"kind": "handler", "name": "tiny"}, {**env, "MODELFN_BUNDLE_DIR": str(bundle)})
    result = measure_image(spec, bundle, env, cold_reps=2, reps=6, sizes=SIZES, size_reps=3, rounds=1,
                           progress=lines.append, host=host, context_root=work / "contexts",
                           wheelhouse_root=ROOT / ".wheelhouse")
    return result, lines


def test_cold_start_in_the_image_has_sane_phases(measured):
    result, lines = measured
    cold, split = result["cold_start"], result["cold_split"]
    assert cold["n"] == 2 and split["n"] == 2
    # The RIE's INIT REPORT and INVOKE RTDONE were found and fit inside the measured total.
    assert cold["engine_s"] > 0 and cold["init_s"] > 0 and cold["first_s"] > 0 and cold["rest_s"] >= 0
    assert cold["engine_s"] + cold["init_s"] + cold["first_s"] <= cold["total_s"]
    assert cold["init_s"] > cold["first_s"]  # a model load and imports against one tiny request
    assert cold["rss_mib"] > 20  # the runtime's own peak (numpy + onnxruntime alone are more), not the RIE's
    # probe.py in the same image: container start + interpreter, imports, model load, first answer.
    assert all(split[k] > 0 for k in ("interpreter_s", "import_s", "load_s", "first_s"))
    assert split["total_s"] == pytest.approx(
        split["interpreter_s"] + split["import_s"] + split["load_s"] + split["first_s"], rel=0.05)
    warm = result["warm"]["b1 short"]
    assert warm["n"] == 6 and warm["p99_ms"] >= warm["p50_ms"] > 0
    assert result["image"]["tag"].startswith("modelfn-bench-tiny:") and result["image"]["size_mb"] > 100
    # The in-process twin, run between the containers: the same handler on this host.
    twin = result["host"]
    # (probe.py's size mode: at least the 3 requests asked for per process, back to back for at least 0.3 s)
    assert twin["cold_start"]["n"] == 2 and twin["cold_start"]["load_s"] > 0 and twin["warm"]["b1 short"]["n"] >= 6
    assert any(line.startswith("image cold start 2/2") for line in lines)


def test_lambda_sizes_run_under_the_engine_limits(measured):
    result, _ = measured
    enforced = result["limits_enforced"]
    if not (enforced["cpu"] and enforced["memory"]):
        assert result["sizes"] == []  # the in-process emulation stands alone; the report says so
        pytest.skip(f"this engine does not enforce --cpus/--memory: {enforced}")
    assert enforced["seen"] == {"cpus": 0.5, "memory_mb": 1024.0}
    rows = {row["memory_mb"]: row for row in result["sizes"]}
    assert sorted(rows) == SIZES
    for row in rows.values():
        assert row["fits"] is True and row["failed"] is None
        assert row["b1 short"]["n"] == 3 and row["b8 long"]["n"] == 1 and row["rss_mib"] > 20
    # 512 MB is a 0.29 vCPU quota, 1769 MB one whole CPU: the same init takes longer under the quota.
    assert rows[512]["init_s"] > rows[1769]["init_s"]


def test_a_memory_limit_under_the_runtime_kills_it_and_is_reported(measured, engine, tiny_spec):
    from infra.bench.container import run_container

    result, _ = measured
    # The tiny runtime peaks near 70 MiB RSS, much of it file-backed pages the kernel can drop under a
    # limit: it survives 40 MB and is killed at 32 MB here. 24 MB kills it and leaves the RIE (12 MiB) up.
    run = run_container(engine, result["image"]["tag"], "tiny", {"MODELFN_MAX_TOKENS": "64"}, memory_mb=24,
                        vcpus=1.0)
    assert run["failed"] == "killed (out of memory)", run

"""`modelfn bench`: cost arithmetic, size picking, the CPU-share emulation, and the command end to end
on a tiny MiniLM-like model (structure and ratios only: no test asserts a wall-clock time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.bench import cost, sizing
from infra.cli import main

# --- cost arithmetic, against values computed by hand ----------------------------------------------


def test_cost_per_million_rounds_each_request_up_and_bills_init_on_cold_starts():
    # billed 3, 3, 1 ms -> mean 7/3 ms; init 250.3 ms -> 251 ms on 1% of requests; 1 GB at x86_64:
    # 0.20 + 1e6 * 0.0000166667 * (0.0023333 + 0.00251) = 0.20 + 0.0807223
    assert cost.cost_per_million(1024, [2.2, 3.0, 0.4], 250.3) == pytest.approx(0.2807223, rel=1e-6)
    # arm64: 0.20 + 1e6 * 0.0000133334 * 0.00484333 = 0.20 + 0.0645781
    assert cost.cost_per_million(1024, [2.2, 3.0, 0.4], 250.3, architecture="arm64") == pytest.approx(
        0.2645781, rel=1e-6)
    # No cold starts, 512 MB, every request 1 ms: 0.20 + 1e6 * 0.5 * 0.0000166667 * 0.001 = 0.2083333
    assert cost.cost_per_million(512, [0.3, 1.0], 900.0, cold_rate=0.0) == pytest.approx(0.2083333, rel=1e-6)


def test_billed_ms_is_at_least_one_and_rounds_up():
    assert [cost.billed_ms(x) for x in (0.01, 1.0, 1.0001, 2.5)] == [1, 1, 2, 3]


def test_gpu_monthly_and_break_even():
    # 1 req/s per instance, 1.5 req/s on average -> 2 instances x $1/h x 730 h.
    assert cost.gpu_monthly(1.0, 1.5 * 730 * 3600, 1.0) == pytest.approx(1460.0)
    assert cost.gpu_monthly(1.0, 10, None, min_instances=2) == pytest.approx(1460.0)
    # $730/month against $0.50 per million Lambda requests: 1.46 billion requests.
    assert cost.break_even_requests(0.5, 1.0) == pytest.approx(1.46e9)


def _row(memory_mb, p99_ms, fits, usd):
    return {"memory_mb": memory_mb, "p99_ms": p99_ms, "fits": fits, "cost_per_million_x86_64": usd}


def test_pick_size_takes_the_cheapest_size_that_meets_p99_and_fits():
    rows = [_row(512, 40.0, False, 0.21),  # cheapest, but its peak RSS does not fit
            _row(1024, 12.0, True, 0.25),
            _row(1769, 6.0, True, 0.24),
            _row(3008, 4.0, True, 0.33)]
    assert cost.pick_size(rows, 15.0).memory_mb == 1769
    assert cost.pick_size(rows, 5.0).memory_mb == 3008
    assert cost.pick_size(rows, 3.0) is None


def test_the_recommended_size_comes_from_the_built_image_where_it_ran_the_sizes():
    """The emulated rows pick 512 MB, the image under real engine limits needs 1024 MB: models.yaml
    gets the image's 1024, the emulated pick stays beside it, and the report says which is which."""
    from infra.bench import report
    from infra.bench.run import size_choices

    def row(mb, p99, usd, fits=True):
        return {"memory_mb": mb, "p99_ms": p99, "fits": fits, "cost_per_million_x86_64": usd}

    emulated = [row(512, 40.0, 0.30), row(1024, 30.0, 0.35)]
    image = {"sizes": [row(512, 80.0, 0.31), row(1024, 45.0, 0.36), {"memory_mb": 128, "p99_ms": None}]}
    choices = size_choices(emulated, image, 50.0)
    assert choices["choice"]["memory_mb"] == 1024 and choices["choice"]["measured_in"] == "built image"
    assert image["choice"] is choices["choice"]
    assert choices["emulated_choice"]["memory_mb"] == 512
    result = {"model": "minilm", **choices}
    assert report._choice_line(result).endswith("`memory_mb: 1024`")
    assert "in the built image" in report._choice_line(result)
    emulated_line = report._choice_line(result, result["emulated_choice"])
    assert "512 MB" in emulated_line and "models.yaml" not in emulated_line

    # No image sizes (no engine, or limits not enforced): the emulated rows decide, with the hint.
    for built in (None, {"sizes": []}):
        choices = size_choices(emulated, built, 50.0)
        assert choices["choice"] is choices["emulated_choice"] and choices["choice"]["memory_mb"] == 512
        assert report._choice_line({"model": "minilm", **choices}).endswith("`memory_mb: 512`")


def test_cpu_share_per_size_on_a_two_cpu_host():
    small = sizing.cpu_share(512, 2)
    assert (small.cpus, small.throttled, small.capped) == (1, True, False)
    assert small.vcpus == pytest.approx(512 / 1769)
    one = sizing.cpu_share(1769, 2)
    assert (one.cpus, one.vcpus, one.throttled) == (1, 1.0, False)
    mid = sizing.cpu_share(3008, 2)
    assert (mid.cpus, mid.throttled) == (2, True)
    big = sizing.cpu_share(5307, 2)
    assert (big.cpus, big.vcpus, big.throttled, big.capped) == (2, 2.0, False, True)


def test_bandwidth_governor_holds_a_busy_child_to_its_share():
    """A child that spins for 1.5 s of wall time gets at most about its quota of CPU time (an upper
    bound: a busy machine can only lower the share)."""
    spin = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass\n"
    cpu = min(os.sched_getaffinity(0))
    child = subprocess.Popen([sys.executable, "-c", spin], preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    stop = sizing.bandwidth_governor(0.25)(child.pid)
    start, used = time.monotonic(), 0.0
    try:
        while child.poll() is None:
            used = max(used, sizing._cpu_time_s(child.pid))
            time.sleep(0.05)
    finally:
        stop()
        child.wait()
    wall = time.monotonic() - start
    assert 0 < used / wall < 0.45


# --- the command end to end on a tiny model -------------------------------------------------------


@pytest.fixture
def tiny_project(tmp_path, tiny_model_dir, monkeypatch):
    """A project directory with models.yaml declaring the tiny model, and a GPU record."""
    source = tiny_model_dir("feature-extraction")
    (tmp_path / "models.yaml").write_text(
        "models:\n  - name: tiny\n"
        f"    source: {source}\n    task: feature-extraction\n    max_tokens: 64\n", encoding="utf-8")
    gpu = {"on_gpu": True, "device": "test record",
           "models": {"tiny": {"results": [{"way": "ort batched", "throughput": 500.0}]}}}
    (tmp_path / "gpu.json").write_text(json.dumps(gpu), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def bundle(tiny_bundle):
    return tiny_bundle("feature-extraction")


def _bench(capsys, *args):
    code = main(["bench", "tiny", "--reps", "2", "--cold-reps", "1", "--torch-reps", "1", "--size-reps", "2",
                 "--sizes", "512,1769", "--gpu-json", "gpu.json", "--json", *args])
    out = capsys.readouterr()
    return code, out


def test_bench_end_to_end_with_baselines_writes_json_results_and_charts(tiny_project, bundle, capsys):
    pytest.importorskip("matplotlib")
    project = tiny_project
    code, out = _bench(capsys, "--bundle", str(bundle), "--p99-ms", "100000", "--no-image")
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["schema"] == 1 and result["model"] == "tiny"
    assert result["built_image"] is None and "built image: not measured (--no-image)" in result["notes"]
    # The fp32 ONNX baseline is a way of its own unless the bundle is fp32 already (export may choose fp32
    # when a quantized candidate's lead is inside the timing noise of a loaded machine).
    from functions.manifest import read_manifest

    own_fp32 = read_manifest(bundle).quantization.chosen == "fp32"
    assert set(result["cold_start"]) == {"modelfn", "floor", "torch"} | (set() if own_fp32 else {"fp32 onnx"})
    for phases in result["cold_start"].values():
        assert {"interpreter_s", "import_s", "load_s", "first_s", "total_s", "rss_mib", "n"} <= set(phases)
        assert phases["total_s"] > 0 and phases["rss_mib"] > 0
    for way, cases in result["warm"].items():
        assert set(cases) == {"b1 short", "b1 long", "b8 short", "b8 long"}, way
        assert all(c["p50_ms"] > 0 and c["p99_ms"] >= c["p50_ms"] and c["n"] >= 1 for c in cases.values())
    assert [r["memory_mb"] for r in result["sizes"]] == [512, 1769]
    for row in result["sizes"]:
        assert row["cost_per_million_x86_64"] > row["cost_per_million_arm64"] > 0.2  # the request fee alone is 0.20
        assert isinstance(row["fits"], bool) and row["init_s"] > 0
    assert result["choice"]["memory_mb"] in (512, 1769)
    assert result["gpu"]["capacity_rps"] == 500.0 and result["gpu"]["on_gpu"] is True
    ratios = {g["goal"]: g["value"] for g in result["goals"]}
    assert all(v > 0 for v in ratios.values())
    assert any("torch" in g for g in ratios)
    assert result["image"]["total_mb"] > result["image"]["bundle_mb"] > 0
    assert result["image"]["torch_total_mb"] > result["image"]["site_packages_mb"]

    report = (project / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    assert report.startswith("# `modelfn bench tiny`") and "Reproduce: `modelfn" in report
    charts = [Path(p) for p in result["charts"]]
    assert {p.name for p in charts} == {"tiny-latency-by-memory.png", "tiny-cost-by-memory.png",
                                        "tiny-baselines.png", "tiny-lambda-or-gpu.png"}
    for chart in charts:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size < 200_000
        assert f"charts/{chart.name}" in report
    assert "modelfn bench:" in out.err  # progress lines while it runs


def test_bench_without_baselines_or_matplotlib_and_an_unmeetable_p99(tiny_project, bundle, capsys, monkeypatch):
    """A registry version is pulled and measured; the tables are written without matplotlib, with a
    one-line pointer to the bench extra; no size meets a p99 of 1 us, so the command exits 1."""
    project = tiny_project
    from infra.registry import open_registry

    open_registry(str(project / "registry")).push("tiny", bundle)  # the bundle comes from the registry
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setenv("DOCKER_HOST", f"unix://{project}/no-engine.sock")  # the built image is skipped, with why
    code, out = _bench(capsys, "--version", "latest", "--registry", str(project / "registry"), "--no-baselines",
                       "--p99-ms", "0.001",
                       "--out", "elsewhere/R.md", "--sizes", "1769")
    assert code == 1
    result = json.loads(out.out)
    assert set(result["warm"]) == {"modelfn"} and result["choice"]["memory_mb"] is None
    assert result["built_image"] is None
    assert any(n.startswith("built image: not measured, the container engine at unix://") and "not answering" in n
               for n in result["notes"]), result["notes"]
    assert result["charts"] == [] and "install modelfn[bench]" in out.err
    report = (project / "elsewhere" / "R.md").read_text(encoding="utf-8")
    assert "No measured size meets p99 <= 0.001 ms" in report and "install modelfn[bench]" in report
    assert not (project / "elsewhere" / "charts").exists()


def test_image_without_an_engine_is_one_line_error_before_measuring(tiny_project, bundle, capsys, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tiny_project}/no-engine.sock")
    assert main(["bench", "tiny", "--bundle", str(bundle), "--image"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelfn: error: --image: the container engine at unix://") and "not answering" in err
    assert "containers-env.sh" in err and "\n" not in err
    assert not (tiny_project / "bench").exists()  # nothing was measured or written


def test_unknown_model_is_one_line_error(tiny_project, capsys):
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelfn: error: models.yaml: no model named 'nope'") and "\n" not in err


def test_missing_bundle_is_one_line_error(tiny_project, capsys):
    assert main(["bench", "tiny", "--bundle", str(tiny_project / "no-such-bundle")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelfn: error: no bundle for tiny at") and "modelfn export tiny" in err
    assert "\n" not in err


def test_bad_sizes_are_a_usage_error(tiny_project, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "tiny", "--sizes", "64,abc"])
    assert exit_info.value.code == 2
    assert "sizes" in capsys.readouterr().err


def test_models_of_other_tasks_are_refused_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "models.yaml").write_text("models:\n  - name: img\n    source: somewhere\n"
                                          "    task: image-classification\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "img"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelfn: error: modelfn bench measures text models of one input and text-generation")
    assert "img is image-classification" in err and "\n" not in err


def test_image_contents_count_a_stripped_package_from_its_stripped_copy(tmp_path, monkeypatch):
    """The wheelhouse replaces its wheels whenever another image's requirements are fetched; the
    stripped copy (infra/build/strip.py's cache) is still the size the image installs. Without either,
    the figure is None and the method says the host's unstripped install was counted."""
    import zipfile

    from infra import defaults
    from infra.build.wheelhouse import wheelhouse_dir

    monkeypatch.setattr(defaults, "WHEELHOUSE", tmp_path)
    folder = wheelhouse_dir(tmp_path, "x86_64", "3.11")
    assert sizing._stripped_mb("onnxruntime-genai==0.12.2", (), "x86_64", "3.11") is None
    assert sizing._stripped_mb("numpy==2.4.6", (), "x86_64", "3.11") == 0.0  # not a stripped package
    (folder / "stripped").mkdir(parents=True)
    with zipfile.ZipFile(folder / "stripped" / "onnxruntime_genai-0.12.2-cp311-cp311-manylinux_2_28_x86_64.whl",
                         "w") as wheel:
        wheel.writestr("onnxruntime_genai/lib.so", b"x" * 2_000_000)
    assert sizing._stripped_mb("onnxruntime-genai==0.12.2", (), "x86_64", "3.11") == pytest.approx(2.0)
    assert sizing._stripped_mb("onnxruntime-genai==0.13.0", (), "x86_64", "3.11") is None  # another version

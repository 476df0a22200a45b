"""`modelfn bench` in the built image, without a container engine: the RIE log parsing, the
aggregation of container runs into cold-start and Lambda-size rows, and their report tables. The
runs themselves are in tests/integration/test_bench_image.py (containers)."""

from __future__ import annotations

import pytest

from infra.bench import container, image, report, sizing

# From a real run: the Runtime Interface Emulator's log of a cold start (functions' request line cut).
RIE_LOG = """\
05 Dec 2026 09:56:51,111 [INFO] (rapid) exec '/usr/bin/python3' (cwd=/var/task, handler=functions.handler.handler)
START RequestId: debf4480-5c79-4f91-8617-58a9c221a78d Version: $LATEST
05 Dec 2026 09:56:51,127 [INFO] (rapid) INIT START(type: on-demand, phase: init)
05 Dec 2026 09:56:51,472 [INFO] (rapid) INIT RTDONE(status: success)
05 Dec 2026 09:56:51,472 [INFO] (rapid) INIT REPORT(durationMs: 344.732000)
05 Dec 2026 09:56:51,472 [INFO] (rapid) INVOKE START(requestId: debf4480-5c79-4f91-8617-58a9c221a78d)
05 Dec 2026 09:56:51,477 [INFO] (rapid) INVOKE RTDONE(status: success, produced bytes: 0, duration: 4.852000ms)
END RequestId: debf4480-5c79-4f91-8617-58a9c221a78d
REPORT RequestId: debf4480-5c79-4f91-8617-58a9c221a78d	Init Duration: 0.06 ms	Duration: 349.89 ms	Billed Duration: 350 ms
05 Dec 2026 09:56:51,480 [INFO] (rapid) INVOKE RTDONE(status: success, produced bytes: 0, duration: 2.181000ms)
"""
KILLED_LOG = """\
05 Dec 2026 09:57:34,062 [INFO] (rapid) INIT REPORT(durationMs: 425.736000)
05 Dec 2026 09:57:34,208 [WARNING] (rapid) Process runtime-1 exited: signal: killed
05 Dec 2026 09:57:34,208 [ERROR] (rapid) Invoke DONE failed: Runtime.ExitError
"""


def test_rie_log_gives_the_init_and_the_first_invoke():
    # The REPORT line's "Init Duration" is the RIE's own (0.06 ms); the init is INIT REPORT's.
    assert container.parse_rie_log(RIE_LOG) == {"init_ms": 344.732, "first_invoke_ms": 4.852, "first_status": "success"}
    assert container.parse_rie_log(KILLED_LOG) == {"init_ms": 425.736, "first_invoke_ms": None, "first_status": None}
    assert container.parse_rie_log("") == {"init_ms": None, "first_invoke_ms": None, "first_status": None}


def _run(total, init, *, failed=None, rss=100.0, short=(3.0, 4.0), long=(50.0,)):
    return {"failed": failed, "engine_s": 0.1, "init_s": init, "first_s": 0.005, "rest_s": total - 0.105 - init,
            "total_s": total, "rss_mib": None if failed else rss,
            "samples_ms": {} if failed else {"b1 short": list(short), "b1 long": list(long), "b8 long": [400.0]}}


def test_cold_summary_takes_medians_of_the_runs_that_answered():
    runs = [_run(0.6, 0.3, rss=110.0), _run(0.9, 0.5), _run(0.7, 0.4, rss=120.0), _run(9.0, 8.0, failed="killed")]
    cold = image.cold_summary(runs)
    assert cold["n"] == 3 and cold["total_s"] == 0.7 and cold["init_s"] == 0.4 and cold["engine_s"] == 0.1
    assert cold["rss_mib"] == 120.0
    assert image.cold_summary([_run(1.0, 0.5, failed="killed (out of memory)")]) == {
        "n": 0, "failed": "killed (out of memory)"}


def test_a_size_row_prices_like_the_emulated_rows_and_a_killed_run_does_not_fit():
    share = sizing.cpu_share(512, 2)
    row = image.size_row(512, share, [_run(1.2, 0.9, short=(4.0, 6.0)), _run(1.0, 0.8, short=(5.0,))])
    assert row["fits"] is True and row["failed"] is None and row["rounds"] == 2
    assert row["vcpus"] == pytest.approx(0.289, abs=1e-3) and row["cpus"] == 1
    assert (row["cold_start_s"], row["init_s"]) == pytest.approx((1.1, 0.85))
    assert row["durations_ms"] == [4.0, 6.0, 5.0] and row["b1 short"]["n"] == 3 and row["b8 long"]["n"] == 2
    sizing.price_sizes([row], 0.01)
    assert row["p50_ms"] == 5.0 and row["cost_per_million_x86_64"] > row["cost_per_million_arm64"] > 0.2

    killed = image.size_row(128, sizing.cpu_share(128, 2), [_run(1.0, 0.5, failed="killed (out of memory)")])
    assert killed["fits"] is False and killed["failed"] == "killed (out of memory)"
    assert killed["cold_start_s"] is None and "b1 short" not in killed


def _result(sizes):
    handler = {"total_s": 0.25, "interpreter_s": 0.03, "import_s": 0.12, "load_s": 0.1, "first_s": 0.003,
               "rss_mib": 109.0, "n": 5}
    split = {**handler, "total_s": 0.5, "interpreter_s": 0.2}
    built = {"method": image.METHOD, "cold_start": image.cold_summary([_run(0.5, 0.3)]), "cold_split": split,
             "warm": {"b1 short": {"p50_ms": 5.0, "p99_ms": 9.0, "mean_ms": 5.5, "n": 50}}, "sizes": sizes,
             "image": {"tag": "modelfn-bench-tiny:0123", "size_mb": 340.0, "base_image": "base", "python": "3.11",
                       "reused": True, "build_s": 0.1},
             "limits_enforced": {"cpu": True, "memory": True, "seen": {"cpus": 0.5, "memory_mb": 1024.0}}}
    return {"cold_start": {"modelfn": handler}, "warm": {"modelfn": {"b1 short": {"p50_ms": 3.0, "p99_ms": 6.0,
                                                                                    "n": 50}}},
            "sizes": [{"memory_mb": 512, "p99_ms": 40.0}], "built_image": built}


def test_report_tables_of_the_built_image():
    row = image.size_row(512, sizing.cpu_share(512, 2), [_run(1.2, 0.9)])
    sizing.price_sizes([row], 0.01)
    killed = image.size_row(128, sizing.cpu_share(128, 2), [_run(1.0, 0.5, failed="killed (out of memory)")])
    result = _result([killed, row])
    blocks = {title: rows for title, _, rows, _ in report._image_blocks(result)}
    cold = blocks["Cold start in the image (median)"]
    assert cold[0][0].startswith("function image") and cold[0][8] == "2.00x"  # 0.5 s against 0.25 s in-process
    assert cold[1][4:6] == ["0.120", "0.100"]  # the probe row splits imports and model load
    sizes = blocks["Lambda sizes in the image (engine limits)"]
    assert sizes[0][10] == "NO: killed (out of memory)" and sizes[0][2] == "-"
    assert sizes[1][10] == "yes" and sizes[1][-1] == "40.00"  # the emulated p99 of the same size beside it
    facts = " ".join(report._image_facts(result))
    assert "enforces the limits here" in facts and "reused" in facts

    # The in-process twin measured between the image runs replaces the earlier table as the reference.
    twin = {k: v for k, v in result["cold_start"]["modelfn"].items() if k != "rss_mib"}
    result["built_image"]["host"] = {"cold_start": {**twin, "total_s": 1.0},
                                     "warm": {"b1 short": {"p50_ms": 4.0, "p99_ms": 7.0, "n": 10}}}
    blocks = {title: rows for title, _, rows, _ in report._image_blocks(result)}
    cold = blocks["Cold start in the image (median)"]
    assert cold[0][8] == "0.50x" and cold[2][0].startswith("in-process handler, a fresh process between")
    assert blocks["Warm latency in the image"][1][2:] == ["4.00", "7.00", "10"]

    result["built_image"]["limits_enforced"] = {"cpu": False, "memory": True, "seen": {"cpus": None}}
    result["built_image"]["sizes"] = []
    assert "does NOT enforce" in " ".join(report._image_facts(result))
    assert [title for title, *_ in report._image_blocks(result)] == [
        "Cold start in the image (median)", "Warm latency in the image"]
    assert report._image_blocks({"built_image": None}) == []

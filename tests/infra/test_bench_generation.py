"""`modelfn bench` on a text-generation model, end to end on a tiny random-weight Llama bundle (the
fixtures of tests/conftest.py): the real handler, the onnxruntime-genai floor and transformers
``generate``, with few reps. Structure and consistency only: no test asserts a wall-clock time."""

from __future__ import annotations

import json

import pytest

from infra.bench import genprobe
from infra.cli import main


@pytest.fixture
def gen_project(tmp_path, gen_hf_dir, monkeypatch):
    source = gen_hf_dir("llama")
    (tmp_path / "models.yaml").write_text(
        "models:\n  - name: tiny-llama\n"
        f"    source: {source}\n    task: text-generation\n    context_length: 256\n    max_tokens: 32\n",
        encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _bench(capsys, bundle, *args):
    code = main(["bench", "tiny-llama", "--bundle", str(bundle), "--reps", "1", "--cold-reps", "1",
                 "--torch-reps", "1", "--size-reps", "1", "--sizes", "1769", "--new-tokens", "6", "--json", *args])
    return code, capsys.readouterr()


def test_bench_text_generation_end_to_end_with_baselines(gen_project, gen_bundle, capsys):
    pytest.importorskip("matplotlib")
    code, out = _bench(capsys, gen_bundle("llama"), "--p99-ms", "1000000")
    assert code == 0, out.err
    result = json.loads(out.out)
    assert (result["schema"], result["model"], result["task"]) == (1, "tiny-llama", "text-generation")
    assert set(result["cold_start"]) == {"modelfn", "floor", "torch"}
    for way, phases in result["cold_start"].items():
        assert {"interpreter_s", "import_s", "load_s", "first_s", "total_s", "rss_mib", "n"} <= set(phases), way
        assert phases["total_s"] >= phases["load_s"] > 0 and phases["rss_mib"] > 0
    # The long prompt is the ~512-token case, filled up to the limit and no further.
    assert result["prompt_tokens"]["short"] < result["prompt_tokens"]["long"] <= 512
    assert set(result["generation"]) == {"modelfn", "floor", "torch"}
    for way, cases in result["generation"].items():
        assert set(cases) == {"short", "long"}, way
        for case in cases.values():
            assert case["ttft_ms"]["p50_ms"] > 0 and case["ttft_ms"]["p99_ms"] >= case["ttft_ms"]["p50_ms"]
            assert case["answer_ms"] > 0 and case["n"] == 1
    # floor and transformers are held to exactly --new-tokens; the handler may end its turn earlier.
    for way in ("floor", "torch"):
        assert {c["tokens"] for c in result["generation"][way].values()} == {6}
        # The rate is (n - 1) / (answer - first token): None only when noise on a tiny model made the
        # 6-token answer no slower than the 1-token one.
        assert all(c["decode_tokens_per_s"] is None or c["decode_tokens_per_s"] > 0
                   for c in result["generation"][way].values())
    assert all(1 <= c["tokens"] <= 6 for c in result["generation"]["modelfn"].values())
    [row] = result["sizes"]
    assert row["memory_mb"] == 1769 and row["cpus"] == 1 and isinstance(row["fits"], bool)
    assert row["cost_per_million_x86_64"] > row["cost_per_million_arm64"] > 0.2  # the request fee alone is 0.20
    assert row["p99_ms"] >= row["p50_ms"] > 0 and row["init_s"] > 0
    assert result["choice"]["memory_mb"] == 1769
    assert result["bundle"]["size_mb"] > 0 and result["image"]["total_mb"] > result["image"]["bundle_mb"]
    assert any("onnxruntime" in name for name, _ in result["image"]["largest"])
    goals = {g["goal"]: g for g in result["goals"]}
    assert any("decode" in g for g in goals) and any("cold start" in g for g in goals)
    assert goals["bundle <= 120 MB"]["met"] is True  # a tiny model

    report = (gen_project / "bench" / "RESULTS-tiny-llama.md").read_text(encoding="utf-8")
    assert report.startswith("# `modelfn bench tiny-llama` (text-generation)")
    assert "Reproduce: `modelfn" in report and "## Lambda memory sizes" in report
    assert not (gen_project / "bench" / "RESULTS.md").exists()  # the encoder record is left alone
    assert sorted(p.split("/")[-1] for p in result["charts"]) == [
        "tiny-llama-baselines.png", "tiny-llama-cost-by-memory.png", "tiny-llama-latency-by-memory.png"]


def test_bench_text_generation_without_baselines_prints_the_table(gen_project, gen_bundle, capsys):
    code = main(["bench", "tiny-llama", "--bundle", str(gen_bundle("llama")), "--reps", "1", "--cold-reps", "1",
                 "--size-reps", "1", "--sizes", "512", "--new-tokens", "4", "--no-baselines", "--threads", "1",
                 "--out", "out/gen.md"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Cold start (process start -> first generated token" in out.out
    assert "decode tok/s" in out.out and "baselines skipped" in out.out
    assert (gen_project / "out" / "gen.md").is_file()


def test_chat_event_is_a_greedy_chat_request_of_the_payload_2_shape():
    event = genprobe.chat_event("m", "hi", 3)
    assert event["requestContext"]["http"]["method"] == "POST" and event["rawPath"] == "/v1/chat/completions"
    assert json.loads(event["body"]) == {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                         "max_tokens": 3, "temperature": 0}


def test_rounds_summarize_to_medians_and_skip_rounds_without_a_decode_rate():
    from infra.bench.genrun import _ttft_decode

    rounds = [{"ttft_ms": 10.0, "answer_ms": 73.0, "tokens": 64, "decode_tokens_per_s": 1000.0},
              {"ttft_ms": 30.0, "answer_ms": 93.0, "tokens": 64, "decode_tokens_per_s": 3000.0},
              {"ttft_ms": 20.0, "answer_ms": 15.0, "tokens": 5, "decode_tokens_per_s": None}]
    summary = _ttft_decode(rounds)
    assert summary["ttft_ms"]["p50_ms"] == 20.0 and summary["answer_ms"] == 73.0
    assert summary["decode_tokens_per_s"] == 2000.0  # the median of the two rounds that have one
    assert (summary["tokens"], summary["n"]) == (5, 3)


def test_one_round_rate_is_new_tokens_after_the_first_over_the_extra_time():
    calls = []

    def call(text, n):  # a fake model whose time is counted in calls, not measured
        calls.append(n)
        return n

    out = genprobe.one_round(call, "hi", 8)
    assert calls == [1, 8] and out["tokens"] == 8
    assert out["decode_tokens_per_s"] is None or out["decode_tokens_per_s"] > 0

"""`modelfn export` end to end on a tiny model: models.yaml route, --json, progress and summary."""

from __future__ import annotations

import json

import pytest

from export.search import ineligible
from functions.manifest import Manifest, read_manifest, verify_bundle
from infra.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


def test_export_by_name_from_models_file_prints_json_only_on_stdout(tiny_model_dir, tmp_path, capsys, monkeypatch):
    source = tiny_model_dir("text-classification")
    models = tmp_path / "models.yaml"
    models.write_text(f"""
models:
  - name: tiny-sentiment
    source: {source}
    task: sentiment-analysis
    max_tokens: 64
    parity:
      agreement: 0.9
""", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = main(["export", "tiny-sentiment", "--models-file", str(models), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    bundle = tmp_path / ".modelfn" / "bundles" / "tiny-sentiment"
    manifest = verify_bundle(bundle)
    assert Manifest.from_dict(data["manifest"]) == manifest
    assert manifest.name == "tiny-sentiment" and manifest.task == "text-classification"
    assert manifest.runtime.max_length == 64 and manifest.parity.thresholds == {"agreement": 0.9}
    assert set(data["timings_s"]) == {"load", "export", "optimize", "quantize", "validate", "write"}
    for step in ("load", "export", "optimize", "quantize", "validate", "write"):
        assert step in err


def test_export_with_flags_prints_summary_with_the_chosen_candidate(tiny_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "b"
    code = main(["export", "--source", str(tiny_model_dir("token-classification")), "--task", "ner",
                 "--out", str(out_dir), "--strategy", "smallest-passing", "--parity", "agreement=0.95",
                 "--search-budget-s", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    manifest = read_manifest(out_dir)
    assert manifest.quantization.strategy == "smallest-passing"
    assert "int8-static-qdq" not in {c.name for c in manifest.quantization.candidates}  # search off: base preset
    table = manifest.quantization.candidates
    fp32 = next(c for c in table if c.name == "fp32")
    passing = [c for c in table if c.passed and not ineligible(c, fp32)]  # VNNI-tuned ones are never automatic
    assert manifest.quantization.chosen == min(passing, key=lambda c: (c.size_bytes, c.latency_ms, c.name)).name
    marked = [line for line in out.splitlines() if line.startswith("*")]
    assert len(marked) == 1 and manifest.quantization.chosen in marked[0]
    assert "parity" in out and "latency" in out and "size" in out


def test_previous_and_no_previous_say_which_earlier_choice_a_re_export_weighs(tiny_model_dir, tmp_path, capsys):
    source, first = str(tiny_model_dir("feature-extraction")), tmp_path / "first"
    flags = ["export", "--source", source, "--task", "feature-extraction", "--search-budget-s", "0"]
    assert main(flags + ["--out", str(first)]) == 0
    capsys.readouterr()
    # --no-previous: the bundle being replaced is not weighed
    assert main(flags + ["--out", str(first), "--overwrite", "--no-previous"]) == 0
    assert read_manifest(first).quantization.previous == ""
    capsys.readouterr()
    # --previous naming a bundle of other settings: not weighed, and the output says why
    second = tmp_path / "second"
    assert main(flags + ["--out", str(second), "--previous", str(first), "--strategy", "smallest-passing"]) == 0
    err = capsys.readouterr().err
    assert "previous choice: not weighed" in err and "strategy fastest-passing -> smallest-passing" in err
    assert read_manifest(second).quantization.previous == ""
    # the same settings: weighed, and recorded
    assert main(flags + ["--out", str(tmp_path / "third"), "--previous", str(first / "manifest.json")]) == 0
    assert read_manifest(tmp_path / "third").quantization.previous == read_manifest(first).quantization.chosen
    # both flags at once is a usage error
    with pytest.raises(SystemExit) as usage:
        main(flags + ["--out", str(tmp_path / "x"), "--previous", str(first), "--no-previous"])
    assert usage.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_name_and_source_together_is_a_config_error(tmp_path, capsys):
    assert main(["export", "minilm", "--source", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_eval_file_texts_and_labels_join_the_parity_set(tiny_model_dir, tiny_bundle, tmp_path, capsys):
    builtin = read_manifest(tiny_bundle("text-classification")).parity
    rows = [{"text": "a great movie", "label": "positive"}, {"text": "a terrible film", "label": "negative"},
            {"text": "paris is a city", "label": "neutral"}]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "bundle"
    code = main(["export", "--source", str(tiny_model_dir("text-classification")), "--task", "text-classification",
                 "--out", str(out), "--eval-file", str(eval_file), "--json"])
    assert code == 0, capsys.readouterr().err
    parity = read_manifest(out).parity
    assert parity.samples == builtin.samples + len(rows)
    assert parity.classes["user"] == len(rows) and "user" not in builtin.classes
    assert "accuracy" in parity.metrics  # the built-in sentiment texts carry gold labels too
    assert 0.0 <= parity.metrics["accuracy"] <= 1.0 and parity.metrics["agreement"] >= 0.99


def test_a_malformed_eval_file_is_one_line_naming_the_line(tiny_model_dir, tmp_path, capsys):
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text('{"text": "fine"}\nnot json\n', encoding="utf-8")
    code = main(["export", "--source", str(tiny_model_dir("text-classification")), "--task", "text-classification",
                 "--out", str(tmp_path / "bundle"), "--eval-file", str(eval_file)])
    err = capsys.readouterr().err
    assert code == 2 and f"{eval_file}:2" in err and "Traceback" not in err
    assert not (tmp_path / "bundle").exists()

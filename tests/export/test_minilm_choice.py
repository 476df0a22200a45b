"""Issue 13: exporting the real all-MiniLM-L6-v2 three times in a row writes the same model.onnx and
tokenizer.json, and chooses the same candidate: the first export chooses (on CPU time per call, which
load barely moves; export/measure.py), and a re-export keeps that choice unless a candidate is more
than 1.25x faster than it (export/search.py), which MiniLM's candidates near the tie band are not.

Three full exports take about 4.5 minutes on this project's 2-core machine (125 s cold, 72-75 s warm,
measured with the default settings, search off), past what one CI test may take. So the work is
shared: export 1 is the session's ``minilm_bundle`` (the default models.yaml settings, search off);
exports 2 and 3 repeat the steps whose results could differ between runs. The graphs are rebuilt
once from the source by the exporter's own steps (Optimum export, optimization, every candidate of
the preset) and must be byte-identical to export 1's (the bundle's sha256 for the chosen one, the
recorded sizes for the rest): identical graphs on the same samples give the same parity metrics,
so the only part of the choice left to chance is the timing, and that is measured again twice, side
by side, and the choice made again each time with export's own function, weighing the previous
choice as a re-export into the same bundle directory does.
"""

from __future__ import annotations

import os
import shutil

import pytest

from functions.manifest import MODEL_FILE, TOKENIZER_FILE, read_manifest, sha256_file

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


def test_three_exports_choose_the_same_candidate_and_write_the_same_model(minilm_bundle, minilm_spec, tmp_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from export import candidates as registry
    from export import convert, measure
    from export.evaluate import Evaluator
    from export.exporter import DEFAULT_THREADS, time_and_choose
    from export.samples import calibration_samples, gather_samples
    from export.source import inspect_source

    manifest = read_manifest(minilm_bundle)
    q = manifest.quantization
    assert manifest.parity.passed and q.candidates[0].name == "fp32"
    # export 2 and 3's graphs: the source through export's own steps, every candidate of the preset
    src = inspect_source(minilm_spec.source_dir(), manifest.task, max_tokens=manifest.runtime.max_length)
    fp32 = convert.save_single_file(convert.optimize_onnx(convert.export_onnx(src, tmp_path), src,
                                                          tmp_path / "optimized.onnx"), tmp_path / "fp32.onnx")
    tokenizer, _ = convert.build_tokenizer(src, tmp_path / TOKENIZER_FILE)
    assert sha256_file(tmp_path / TOKENIZER_FILE) == manifest.files[TOKENIZER_FILE].sha256
    evaluator = Evaluator(src, gather_samples(manifest.task), tokenizer, dict(manifest.parity.thresholds),
                          DEFAULT_THREADS, calibration_samples(manifest.task))
    ctx = registry.BuildContext(workdir=tmp_path / "candidates", calibration=evaluator.calibration)
    names = tuple(c.name for c in q.candidates)  # the preset, in export's order
    built = {n: registry.build(n, fp32, ctx) for n in names}
    # The bundle holds the chosen graph with its large weights moved beside it (convert.store_weights_beside).
    chosen_copy = tmp_path / "chosen" / MODEL_FILE
    chosen_copy.parent.mkdir()
    shutil.copyfile(built[q.chosen], chosen_copy)
    data = convert.store_weights_beside(chosen_copy)
    assert data is not None and data.name in manifest.files
    for file in (chosen_copy, data):
        assert sha256_file(file) == manifest.files[file.name].sha256, f"the chosen graph's {file.name} differs between exports"
    assert {n: p.stat().st_size for n, p in built.items()} == {c.name: c.size_bytes for c in q.candidates}
    # identical graphs: export 1's parity results stand; only the timing can differ, so it is redone twice
    rows = {c.name: dict(path=built[c.name], metrics=dict(c.metrics), note="", worst=c.worst,
                         one_row=c.one_row_per_run) for c in q.candidates}
    sessions = {n: measure.session(p, DEFAULT_THREADS) for n, p in built.items()}
    chosen, reasons = [q.chosen], [q.reason]
    for _ in range(2):
        choice, table = time_and_choose(evaluator, rows, sessions, names, q.strategy, q.requested,
                                        latency_budget_s=20.0, timed_here=True, previous=chosen[-1])
        assert choice.passed and [c.passed for c in table] == [c.passed for c in q.candidates]
        chosen.append(choice.name)
        reasons.append(choice.reason)
        assert all(c.cpu_ms > 0 and len(c.cpu_rounds_ms) == len(c.latency_rounds_ms) >= 3 for c in table)
    assert "cpu_ms" in q.timing and all(c.cpu_ms > 0 for c in q.candidates)  # the manifest says what was measured
    # MiniLM's weight-only int8 candidate leads fp32 by only 1.11-1.24x (measured in CI and by hand), at
    # the 10% tie band's edge: fresh choices split once in CI ([b32, fp32, b32]). A re-export keeps the
    # previous choice unless it is beaten by more than 1.25x, so the three agree.
    assert len(set(chosen)) == 1, list(zip(chosen, reasons))

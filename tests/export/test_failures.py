"""What export refuses: drifting models, bad input, failed writes. Each leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from export import candidates
from export.errors import ExportError, OutputError, ParityGateError, SourceError, TaskMismatchError
from export.exporter import export_bundle
from functions.manifest import read_manifest
from infra.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


def _nothing_written(parent, name="bundle"):
    return not [p.name for p in parent.iterdir() if name in p.name]


@pytest.fixture
def damaged_candidate():
    """A candidate whose every weight matrix is scrambled: a quantizer bug made concrete."""
    import onnx
    from onnx import numpy_helper

    def build(fp32, out, ctx):
        model = onnx.load(str(fp32))
        rng = np.random.default_rng(0)
        for init in model.graph.initializer:
            array = numpy_helper.to_array(init)
            if array.ndim == 2 and array.dtype == np.float32:
                init.CopyFrom(numpy_helper.from_array(rng.permutation(array.ravel()).reshape(array.shape), init.name))
        onnx.save_model(model, str(out))
        return out

    candidates.register("test-damaged")(build)
    yield "test-damaged"
    candidates.REGISTRY.pop("test-damaged")


def test_gate_failure_exits_3_prints_table_writes_nothing(tiny_model_dir, tmp_path, capsys, damaged_candidate):
    code = main(["export", "--source", str(tiny_model_dir("feature-extraction")), "--task", "feature-extraction",
                 "--out", str(tmp_path / "bundle"), "--strategy", f"fixed:{damaged_candidate}"])
    err = capsys.readouterr().err
    assert code == 3
    assert "parity gate failed" in err.splitlines()[-1] and err.splitlines()[-1].startswith("modelfn: error:")
    table = [line for line in err.splitlines() if damaged_candidate in line]
    assert table and any("FAIL" in line for line in table)
    assert "Traceback" not in err
    assert _nothing_written(tmp_path)


def test_allow_drift_writes_and_records_it(tiny_model_dir, tmp_path, damaged_candidate):
    manifest = export_bundle(tiny_model_dir("feature-extraction"), "feature-extraction", tmp_path / "bundle",
                             strategy=f"fixed:{damaged_candidate}", allow_drift=True)
    assert manifest.quantization.chosen == damaged_candidate
    assert manifest.parity.allowed_drift and not manifest.parity.passed
    assert manifest.parity.metrics["min_cosine"] < manifest.parity.thresholds["min_cosine"]
    assert read_manifest(tmp_path / "bundle") == manifest


def test_impossible_threshold_fails_every_candidate(tiny_model_dir, tmp_path):
    with pytest.raises(ParityGateError) as info:
        export_bundle(tiny_model_dir("token-classification"), "token-classification", tmp_path / "bundle",
                      thresholds={"agreement": 1.01})
    assert info.value.exit_code == 3
    assert {c.name for c in info.value.candidates} >= {"fp32", "int8-weight-only-b32-a4"}
    assert not any(c.passed for c in info.value.candidates)
    assert _nothing_written(tmp_path)


@pytest.mark.parametrize("case, error", [
    ("missing", SourceError), ("empty", SourceError), ("wrong-task", TaskMismatchError),
    ("architecture", ExportError), ("under-a-file", OutputError), ("not-empty", OutputError),
])
def test_bad_input_is_one_line_and_writes_nothing(case, error, tiny_model_dir, tmp_path, capsys):
    source, task, out = tiny_model_dir("feature-extraction"), "feature-extraction", tmp_path / "out" / "bundle"
    extra = []
    if case == "missing":
        source = tmp_path / "no-such-dir"
    elif case == "empty":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "wrong-task":
        task = "question-answering"  # a BertModel has no QA head
    elif case == "architecture":
        extra = ["--architecture", "sparc"]
    elif case == "under-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "bundle"
    elif case == "not-empty":
        out.mkdir(parents=True)
        (out / "keep.txt").write_text("mine")
    with pytest.raises(error):
        export_bundle(source, task, out, **({"architecture": "sparc"} if extra else {}))
    code = main(["export", "--source", str(source), "--task", task, "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("modelfn: error:") and "Traceback" not in "\n".join(err)
    if case == "not-empty":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    elif case != "under-a-file":
        assert not (tmp_path / "out").exists()


def test_failure_while_writing_leaves_nothing(tiny_model_dir, tmp_path):
    def fail_once_staged(event):
        if event.step == "write" and event.state == "info":
            raise RuntimeError("disk vanished")

    with pytest.raises(RuntimeError, match="disk vanished"):
        export_bundle(tiny_model_dir("question-answering"), "question-answering", tmp_path / "bundle",
                      progress=fail_once_staged, quantization="none")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_bundle(tiny_bundle, tmp_path):
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle("question-answering"), out)
    before = read_manifest(out)

    def fail(event):
        if event.step == "write" and event.state == "info":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_bundle(before.source, "question-answering", out, overwrite=True, progress=fail, quantization="none")
    assert read_manifest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]

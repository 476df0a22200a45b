"""Candidate builders: weight-only and static int8 store the fused embedding tables in uint8 too."""

from __future__ import annotations

import pytest

from export import candidates as registry
from functions.manifest import MODEL_FILE

pytestmark = pytest.mark.filterwarnings("ignore")


def _fp32_initializers(path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path))
    return {i.name: i.data_type for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}


@pytest.mark.parametrize("name", ["int8-weight-only-b32-a4", "int8-static-qdq"])
def test_embedding_tables_are_stored_in_uint8_and_the_candidate_passes_the_gate(name, tiny_bundle, tiny_model_dir,
                                                                               tmp_path):
    import onnx

    from export.exporter import export_bundle

    fp32 = tiny_bundle("feature-extraction", quantization="none") / MODEL_FILE
    source = onnx.load(str(fp32))
    fused = [n for n in source.graph.node if n.op_type == "EmbedLayerNormalization"]
    assert len(fused) == 1  # the optimizer fuses the tiny BERT's embeddings as it does MiniLM's
    word_table = fused[0].input[2]
    assert word_table in _fp32_initializers(fp32)

    manifest = export_bundle(tiny_model_dir("feature-extraction"), "feature-extraction", tmp_path / "b",
                             strategy=f"fixed:{name}", search_budget_s=0)
    graph = onnx.load(str(tmp_path / "b" / MODEL_FILE))
    assert [n.op_type for n in graph.graph.node].count("QEmbedLayerNormalization") == 1
    assert "EmbedLayerNormalization" not in {n.op_type for n in graph.graph.node}
    assert word_table not in _fp32_initializers(tmp_path / "b" / MODEL_FILE)
    row = next(c for c in manifest.quantization.candidates if c.name == name)
    assert row.passed and manifest.parity.passed
    assert not row.one_row_per_run  # only looked-up rows are dequantized: answers stay independent of batch-mates


def test_graphs_without_the_fused_embedding_are_left_as_they_are(tiny_bundle, tmp_path):
    fp32 = tiny_bundle("feature-extraction", quantization="none") / MODEL_FILE
    ctx = registry.BuildContext(workdir=tmp_path)
    plain = registry.build(registry.FP32, fp32, ctx)
    # the fused node kept in fp32 by name: nothing to quantize, the file is untouched
    import onnx

    fused = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "EmbedLayerNormalization")
    before = plain.read_bytes()
    assert registry._quantize_embedding_table(plain, registry.BuildContext(workdir=tmp_path,
                                                                          nodes_to_exclude=(fused,))) == plain
    assert plain.read_bytes() == before

"""Bundle graphs keep their large weights in ``<graph>.data`` beside them, page-aligned, so ONNX
Runtime maps them instead of copying (export/convert.py store_weights_beside)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.convert import WEIGHTS_BESIDE_MIN_BYTES, store_weights_beside


def _graph(path, rows: int, columns: int = 1024) -> dict[str, np.ndarray]:
    """y = Gather(table, ids) @ w + b: a table of ``rows`` x 256 floats, a 256 x ``columns`` weight
    (1 MiB at 1024) and a small bias."""
    rng = np.random.default_rng(3)
    weights = {"table": rng.standard_normal((rows, 256)).astype(np.float32),
               "w": rng.standard_normal((256, columns)).astype(np.float32),
               "b": rng.standard_normal(columns).astype(np.float32)}
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, columns])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return weights


def _run(path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": np.array([0, 5, 2999], np.int64)})[0]


def test_large_weights_move_page_aligned_and_the_graph_answers_the_same(tmp_path):
    path = tmp_path / "model.onnx"
    weights = _graph(path, rows=3001)  # 3001 x 256 x 4 bytes: 3 MiB, not a whole number of pages
    before = _run(path)
    data = store_weights_beside(path)
    assert data == tmp_path / "model.onnx.data"
    graph = onnx.load(str(path), load_external_data=False)
    placed = {t.name: {e.key: e.value for e in t.external_data} for t in graph.graph.initializer
              if t.data_location == TensorProto.EXTERNAL}
    assert set(placed) == {"table", "w"}  # the 4 KiB bias stays inline
    assert weights["w"].nbytes == WEIGHTS_BESIDE_MIN_BYTES
    raw = data.read_bytes()
    for name, where in placed.items():
        offset, length = int(where["offset"]), int(where["length"])
        assert where["location"] == "model.onnx.data" and offset % 4096 == 0 and length == weights[name].nbytes
        assert raw[offset:offset + length] == weights[name].tobytes()
    assert path.stat().st_size < 64 * 1024
    np.testing.assert_array_equal(_run(path), before)
    # Once outside, the graph is left as it is (a second pass, or a builder's own external data).
    assert store_weights_beside(path) is None


def test_a_graph_without_large_weights_is_left_alone(tmp_path):
    path = tmp_path / "model.onnx"
    _graph(path, rows=10, columns=1023)  # the weight is one column short of 1 MiB
    before = path.read_bytes()
    assert store_weights_beside(path) is None
    assert path.read_bytes() == before and not (tmp_path / "model.onnx.data").exists()

"""The GPU verification kit's packing (scripts/gpu-kit/pack.py): wheels cut into carry folders that
each fit one device call, and put back together byte for byte on the other side."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_kit_pack", ROOT / "scripts" / "gpu-kit" / "pack.py")
pack = sys.modules["gpu_kit_pack"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up there
_spec.loader.exec_module(pack)


def test_big_wheels_are_cut_and_every_folder_fits_the_budget():
    sizes = {"big.whl": 2500, "mid.whl": 700, "a.whl": 250, "b.whl": 40, "exact.whl": 1000}
    folders = pack.group(pack.cut(sizes, 1000), 1000)
    assert all(sum(p.size for p in folder) <= 1000 for folder in folders)
    assert len(folders) == 5  # three full pieces, 700 + 250 + 40, and big.whl's last 500
    for wheel, size in sizes.items():
        pieces = sorted((p for folder in folders for p in folder if p.file == wheel), key=lambda p: p.offset)
        assert [p.offset for p in pieces] == [sum(q.size for q in pieces[:i]) for i in range(len(pieces))]
        assert sum(p.size for p in pieces) == size
        assert all(p.part == k for k, folder in enumerate(folders, 1) for p in folder)
    assert [p.name for p in pack.cut({"big.whl": 2500}, 1000)] == ["big.whl.000", "big.whl.001", "big.whl.002"]
    assert [p.name for p in pack.cut({"exact.whl": 1000}, 1000)] == ["exact.whl"]


def test_a_budget_with_no_room_is_refused():
    with pytest.raises(ValueError, match="no room"):
        pack.cut({"a.whl": 10}, 0)


@pytest.fixture
def kit(tmp_path):
    wheels = tmp_path / "files"
    wheels.mkdir()
    originals = {"onnxruntime_gpu-1-cp312.whl": os.urandom(2300), "small-1-py3.whl": os.urandom(300),
                 "tiny-1-py3.whl": os.urandom(20)}
    for name, data in originals.items():
        (wheels / name).write_bytes(data)
    plan = pack.pack(wheels, tmp_path / "kit", budget=1000)
    return tmp_path / "kit", originals, plan


def test_packed_folders_reassemble_into_the_same_wheels(kit, tmp_path):
    folder, originals, plan = kit
    assert plan["parts"] == 3 and sorted(p.name for p in folder.iterdir()) == ["part1", "part2", "part3"]
    for part in folder.iterdir():
        assert (part / pack.PLAN_FILE).is_file()
        assert sum(f.stat().st_size for f in part.iterdir() if f.name != pack.PLAN_FILE) <= 1000
    built = pack.assemble(folder, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in built} == originals
    stamp = {p.name: p.stat().st_mtime_ns for p in built}
    pack.assemble(folder, tmp_path / "out")  # a rerun keeps what is already right
    assert {p.name: p.stat().st_mtime_ns for p in built} == stamp


def test_a_missing_folder_is_named_before_anything_is_built(kit, tmp_path):
    folder, _, _ = kit
    for piece in (folder / "part2").iterdir():
        if piece.name != pack.PLAN_FILE:
            piece.unlink()
    with pytest.raises(SystemExit, match=r"carry folder\(s\) part2 of 3 missing"):
        pack.assemble(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert pack.missing_parts(folder, pack.read_plan(folder)) == [2]


def test_no_folder_at_all_says_to_start_again(tmp_path):
    with pytest.raises(SystemExit, match="no carry folder of the kit has arrived"):
        pack.assemble(tmp_path / "kit", tmp_path / "out")


def test_a_damaged_piece_fails_its_checksum(kit, tmp_path):
    folder, _, plan = kit
    piece = plan["files"]["small-1-py3.whl"]["pieces"][0]
    path = folder / f"part{piece['part']}" / piece["name"]
    path.write_bytes(bytes(b ^ 1 for b in path.read_bytes()))
    with pytest.raises(SystemExit, match="small-1-py3.whl does not match its sha256"):
        pack.assemble(folder, tmp_path / "out")


def test_every_call_carries_one_folder_and_the_last_runs_the_kit(kit):
    folder, _, _ = kit
    sequence = pack.calls(folder)
    assert [c["carry"] for c in sequence] == [[".gpu-kit/part1"], [".gpu-kit/part2"], [".gpu-kit/part3"]]
    assert [c["command"] for c in sequence] == ["bash scripts/gpu-kit/run.sh --receive 1/3",
                                                "bash scripts/gpu-kit/run.sh --receive 2/3",
                                                "bash scripts/gpu-kit/run.sh"]

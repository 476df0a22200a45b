"""Which files an ONNX model in a bundle reads besides itself (external tensor data), and whether
the manifest lists them.

A model saved with external data names its weight files inside the graph. A bundle whose manifest
omits one would pass every sha256 check and fail only when a function loads it; one that names a
path outside the bundle would read whatever that path holds. Push and verify refuse both.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from functions.fetch import safe_file_name
from functions.manifest import Manifest

__all__ = ["external_data_problems"]


def _locations(model_path: Path) -> set[str]:
    try:
        import onnx  # build-time dependency; parsed without loading the external tensors themselves
        from onnx.external_data_helper import _get_all_tensors
    except ImportError:  # a runtime-only install: nothing to check with; the sha256 checks still hold
        return set()
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX protobuf: it names no external data (the registry stores bytes)
        return set()
    found = set()
    for tensor in _get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            found.update(entry.value for entry in tensor.external_data if entry.key == "location")
    return found


def external_data_problems(bundle: Path, manifest: Manifest) -> list[str]:
    """One line per external data reference that is outside the bundle or not in the manifest."""
    problems = []
    for file_name in sorted(manifest.files):
        if not file_name.endswith(".onnx"):
            continue
        parent = PurePosixPath(file_name).parent
        for location in sorted(_locations(bundle / file_name)):
            relative = str(parent / location) if str(parent) != "." else location
            if not safe_file_name(location) or not safe_file_name(relative):
                problems.append(f"{file_name} reads external data from {location!r}, outside the bundle")
            elif relative not in manifest.files:
                problems.append(f"{file_name} reads external data {relative!r} that the manifest does not list")
    return problems

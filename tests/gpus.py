"""Whether this machine can run the CUDA tests: an NVIDIA GPU that nvidia-smi lists, and an
onnxruntime with the CUDA provider. onnxruntime-gpu lists CUDAExecutionProvider on any machine, GPU
or not (it names what it was built with), so the provider list alone does not say a GPU is here."""

from __future__ import annotations

import shutil
import subprocess


def nvidia_gpu() -> bool:
    """nvidia-smi is installed and lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True, timeout=30).returncode == 0


def cuda_skip_reason() -> str | None:
    """Why the CUDA tests cannot run here, or None when they can."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDA provider (the GPU image installs onnxruntime-gpu)"
    if not nvidia_gpu():
        return "no NVIDIA GPU here"
    return None

"""Every default of the build-time tools in one place: where models.yaml, the registry, bundles,
build contexts and the wheel cache live, and the image's Python. Each resolves as: explicit
argument (a CLI flag), then environment variable (names in functions/constants.py), then default."""

from __future__ import annotations

import os
from pathlib import Path

from functions import constants

MODELS_FILE = "models.yaml"
REGISTRY = "./.modelfn/registry"
BUNDLES_DIR = Path(".modelfn") / "bundles"
BUILD_DIR = Path(".modelfn") / "build"
QUICKSTART_DIR = Path(".modelfn") / "quickstart"
PULLED_DIR = Path(".modelfn") / "pulled"  # registry versions `modelfn serve` pulled
WHEELHOUSE = Path(".wheelhouse")
# The AWS Lambda Python base image's Python; the podman stand-in runs 3.11 (MODELFN_IMAGE_PYTHON).
IMAGE_PYTHON = "3.12"
# Bundles larger than this are fetched from the registry at cold start instead of baked in.
BAKE_LIMIT_MB = 200.0
# GPU images (target: gpu): a CUDA 13 runtime with cuDNN on Ubuntu 24.04 (Python 3.12), and the ONNX
# Runtime they install. onnxruntime-gpu is not installed here (no CUDA), so it is pinned to the
# newest release on PyPI, built for CUDA 13; over the CPU stand-in of the base it is `onnxruntime`.
GPU_BASE_IMAGE = "nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04"
GPU_RUNTIME = "onnxruntime-gpu==1.31.1"
# Text-generation on GPU images: onnxruntime-genai's CUDA package. 0.18.0 is the first built for CUDA 13
# (0.12.2's links libcublas.so.12); it needs onnxruntime-gpu>=1.31. Bundles come from the 0.12.2
# builder (0.18's fails to import with transformers 4.57); the 0.18 runtime serves them with the same
# greedy tokens (checked on the CPU package). Over the CPU stand-in the CPU package installed here.
GPU_GENAI_RUNTIME = "onnxruntime-genai-cuda==0.18.0"


def image_python(explicit: str | None = None) -> str:
    """The Python version of the function images: --python-version, $MODELFN_IMAGE_PYTHON, 3.12."""
    return explicit or os.environ.get(constants.IMAGE_PYTHON) or IMAGE_PYTHON


def base_image(explicit: str | None = None) -> str | None:
    """The images' base: --base-image, $MODELFN_BASE_IMAGE, else None (the AWS base for the Python)."""
    return explicit or os.environ.get(constants.BASE_IMAGE) or None


def gpu_base_image(explicit: str | None = None) -> str:
    """The GPU images' base: --gpu-base-image, $MODELFN_GPU_BASE_IMAGE, the CUDA 13 runtime."""
    return explicit or os.environ.get(constants.GPU_BASE_IMAGE) or GPU_BASE_IMAGE


def gpu_runtime(explicit: str | None = None) -> str:
    """The GPU images' ONNX Runtime: --gpu-runtime, $MODELFN_GPU_RUNTIME, onnxruntime-gpu pinned."""
    return explicit or os.environ.get(constants.GPU_RUNTIME) or GPU_RUNTIME


# Calling deployed endpoints (`modelfn endpoints`, `modelfn call`, infra.client): the stack `sam
# deploy` made (samconfig.toml's stack_name), and the client's settings; the environment names are
# the CLI's own, read by infra.client only.
SAMCONFIG = "samconfig.toml"
STACK_NAME = "modelfn"
# The API Gateway stage the template deploys: deployed URLs end in /prod; local servers have no stage.
STAGE_NAME = "prod"
API_KEY_ENV = "MODELFN_API_KEY"  # sent as x-api-key (AuthMode API_KEY)
URL_ENV = "MODELFN_URL"  # a base URL to call instead of the stack's (a local server)
CALL_TIMEOUT_S = 60.0  # per request; a Lambda cold start of a large model takes tens of seconds
CALL_RETRIES = 3  # retries after the first try on 429, 502, 503, 504

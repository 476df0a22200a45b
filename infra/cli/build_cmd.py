"""`modelfn build`: one container build context per model from models.yaml and the registry, and
the SAM template.yaml that deploys them. Then `sam build` builds the images."""

from __future__ import annotations

import argparse

from functions.constants import BASE_IMAGE, GPU_BASE_IMAGE, GPU_RUNTIME, IMAGE_PYTHON

from .. import defaults


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build", help="write build contexts and template.yaml for every model in models.yaml",
        description="Resolve each model's alias in the registry, write one container build context per "
                    "model (runtime code, bundle, pinned wheels, Dockerfile) and template.yaml. "
                    "Then run `sam build`.")
    p.add_argument("--models-file", default=defaults.MODELS_FILE, help="default: %(default)s")
    p.add_argument("--registry", help="registry URI (s3://bucket/prefix or a directory); default: models.yaml's")
    p.add_argument("--endpoint-url", help="S3 API endpoint for the registry (default: AWS)")
    p.add_argument("--out", default=str(defaults.BUILD_DIR), help="build contexts folder (default: %(default)s)")
    p.add_argument("--template", default="template.yaml", help="template to write (default: %(default)s)")
    p.add_argument("--python-version",
                   help=f"Python of the base image; wheels are fetched for it (default: ${IMAGE_PYTHON} or "
                        f"{defaults.IMAGE_PYTHON}, "
                        "the AWS base; 3.11 for the podman stand-in)")
    p.add_argument("--base-image", help=f"BASE_IMAGE default in the Dockerfiles (default: ${BASE_IMAGE} or "
                                        "public.ecr.aws/lambda/python:<version>[-arm64])")
    p.add_argument("--gpu-base-image", help=f"BASE_IMAGE default in the GPU Dockerfiles (default: ${GPU_BASE_IMAGE} or "
                                            f"{defaults.GPU_BASE_IMAGE})")
    p.add_argument("--gpu-runtime", help=f"ONNX Runtime of the GPU images, a pin (default: ${GPU_RUNTIME} or "
                                         f"{defaults.GPU_RUNTIME}); `onnxruntime` over a CPU stand-in base")
    p.add_argument("--bake-limit-mb", type=float, default=defaults.BAKE_LIMIT_MB,
                   help="bundles larger than this are fetched from the registry at cold start instead of "
                        "baked into the image (default: %(default)s)")
    p.add_argument("--wheelhouse", default=str(defaults.WHEELHOUSE), help="host wheel cache (default: %(default)s)")
    p.add_argument("--no-stream", dest="stream", action="store_false",
                   help="buffer generated answers (no Lambda response streaming, no GPU stream relay): for "
                        "sam local, which invokes functions buffered only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..build import BuildSettings, build

    build(BuildSettings(
        models_file=Path(args.models_file), registry=args.registry, endpoint_url=args.endpoint_url,
        out=Path(args.out), template=Path(args.template),
        python_version=defaults.image_python(args.python_version),
        base_image=defaults.base_image(args.base_image),
        bake_limit_mb=args.bake_limit_mb, wheelhouse=Path(args.wheelhouse),
        gpu_base_image=defaults.gpu_base_image(args.gpu_base_image),
        gpu_runtime=defaults.gpu_runtime(args.gpu_runtime), stream=args.stream))
    return 0

"""Build contexts (Lambda images, and GPU images for gpu models: gpu_image.py) and template.yaml for
`modelfn build` (see pipeline.py for the order of checks)."""

from .context import default_base_image, publish_context, render_dockerfile, stage_context
from .gpu_image import render_gpu_dockerfile
from .pipeline import BuildResult, BuildSettings, build, plan_deployments
from .requirements import gpu_requirements, pinned_requirements
from .wheelhouse import WheelhouseError, prepare_wheelhouse

__all__ = [
    "BuildResult", "BuildSettings", "WheelhouseError", "build",
    "default_base_image", "gpu_requirements", "pinned_requirements", "plan_deployments", "prepare_wheelhouse",
    "publish_context", "render_dockerfile", "render_gpu_dockerfile", "stage_context",
]

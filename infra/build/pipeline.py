"""`modelfn build`: models.yaml + registry -> one build context per model + template.yaml.

Everything that can be wrong is checked before anything is written: models.yaml, every model and
alias in the registry, manifests matching models.yaml, each function's memory against what its
bundle needs at models.yaml's limits (memory.py; ``memory_mb: auto`` takes the estimate), each gpu
model's GPU memory against one GPU of its instance (gpu_memory.py), /tmp for
fetched bundles, wheels for the image's platform, and each image's contents (budget.py: never torch,
transformers or optimum; within ``image_budget_mb``). Only then are contexts and the template written.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from functions.errors import ConfigError
from infra.spec import load_models_file

from ..template import Deployment, generate_template, write_template
from ..template._function import ephemeral_need_mb
from .budget import check_image_budget, image_contents, refuse_forbidden
from .context import default_base_image, publish_context, stage_context
from .gpu_memory import check_gpu_memory, estimate_gpu
from .memory import LAMBDA_MAX_MB, check_lambda_memory, estimate
from .requirements import gpu_requirements, installer_requirements, pinned_requirements, task_requirements
from .. import defaults
from .wheelhouse import prepare_wheelhouse


@dataclass(frozen=True)
class BuildSettings:
    models_file: Path = Path(defaults.MODELS_FILE)
    registry: str | None = None          # overrides models.yaml's registry
    endpoint_url: str | None = None      # S3 API endpoint (tests, S3-compatible stores)
    out: Path = defaults.BUILD_DIR
    template: Path = Path("template.yaml")
    python_version: str = defaults.IMAGE_PYTHON
    base_image: str | None = None        # default: the AWS Lambda Python base for the version/arch
    bake_limit_mb: float = defaults.BAKE_LIMIT_MB
    wheelhouse: Path = defaults.WHEELHOUSE
    gpu_base_image: str = defaults.GPU_BASE_IMAGE  # a CUDA 13 runtime; the CPU stand-in in CI
    gpu_runtime: str = defaults.GPU_RUNTIME  # "onnxruntime" over the CPU stand-in of the CUDA base
    stream: bool = True  # generative models stream their answers; off for sam local (buffered only)


@dataclass(frozen=True)
class BuildResult:
    template: Path
    deployments: list[Deployment] = field(default_factory=list)
    contexts: dict[str, Path] = field(default_factory=dict)


def _check_manifest(spec, version: int, manifest) -> None:
    for attribute in ("task", "architecture", "target"):
        found, wanted = getattr(manifest, attribute), getattr(spec, attribute)
        if found != wanted:
            raise ConfigError(
                f"model {spec.name!r} version {version} in the registry has {attribute} {found}, "
                f"models.yaml says {wanted}",
                hint=f"export and push a {wanted} version, then promote it to {spec.alias!r}")


def plan_deployments(settings: BuildSettings, registry, models_file, template_dir: Path) -> list[Deployment]:
    """Resolve every model's alias to a version; raises before anything is written."""
    deployments = []
    for spec in models_file.models:
        version = registry.resolve(spec.name, spec.alias)
        info = registry.show(spec.name, version)
        _check_manifest(spec, version, info.manifest)
        context = Path(os.path.relpath(Path(settings.out).resolve() / spec.name, template_dir.resolve()))
        fetch = info.size_bytes > settings.bake_limit_mb * 2**20
        deployments.append(Deployment(
            spec=spec, version=version, bundle_bytes=info.size_bytes,
            fetch=fetch, context=context.as_posix(),
            runtime=info.manifest.runtime, stream=settings.stream,
            memory_mb=_lambda_memory(spec, registry, version, info, fetch) if spec.target == "lambda" else 0,
            **(_gpu_memory(spec, registry, version, info) if spec.target == "gpu" else {})))
    return deployments


def _gpu_memory(spec, registry, version: int, info) -> dict:
    """The Deployment's GPU sizing facts; refuses (one line) a model its instance's GPU cannot hold."""
    need = estimate_gpu(info.manifest, lambda file: registry.read_file(spec.name, version, info.manifest, file),
                        max_batch=spec.max_batch, max_tokens=spec.max_tokens, context_length=spec.context_length,
                        max_batch_tokens=spec.max_batch_tokens, max_batch_requests=spec.max_batch_requests,
                        max_concurrent_generations=spec.max_concurrent_generations)
    fit = check_gpu_memory(spec.name, spec.instance_type, need, max_batch=spec.max_batch)
    return {"max_concurrent_generations": fit.generations, "gpu_sizing": fit.describe()}


def _lambda_memory(spec, registry, version: int, info, fetch: bool) -> int:
    """The function's memory: models.yaml's when it covers the estimate, the estimate for auto.
    Refuses (one line) what Lambda cannot hold: memory, or /tmp for a fetched bundle."""
    need = estimate(info.manifest, lambda file: registry.read_file(spec.name, version, info.manifest, file),
                    max_batch=spec.max_batch, max_tokens=spec.max_tokens, context_length=spec.context_length)
    if fetch and ephemeral_need_mb(info.size_bytes) > LAMBDA_MAX_MB:
        raise ConfigError(f"model {spec.name!r}: the fetched bundle needs {ephemeral_need_mb(info.size_bytes)} MB of /tmp "
                          f"(bundle {info.size_bytes / 2**20:.0f} MB + headroom), over Lambda's {LAMBDA_MAX_MB} MB; "
                          f"fix: a smaller quantization, or target: gpu")
    return check_lambda_memory(spec.name, spec.memory_mb, need)


def build(settings: BuildSettings, *, log: Callable[[str], None] = print) -> BuildResult:
    """Write build contexts and the template. Raises ModelfnError (one line) on any problem."""
    from ..registry import open_registry  # boto3 only when building

    if settings.bake_limit_mb <= 0:
        raise ConfigError(f"bake limit must be positive, got {settings.bake_limit_mb}")
    models_file = load_models_file(settings.models_file)
    registry_uri = settings.registry or models_file.registry
    registry = open_registry(registry_uri, endpoint_url=settings.endpoint_url)
    template_path = Path(settings.template)
    deployments = plan_deployments(settings, registry, models_file, template_path.parent)
    template = generate_template(models_file, deployments, registry_uri)  # validates before writing

    # One pin set per (image kind, architecture, fetching, task extras) and one wheelhouse per kind and
    # architecture, holding the wheels of every pin set that uses it.
    requirements: dict[tuple[str, str, bool, tuple[str, ...]], list[str]] = {}
    wheelhouses: dict[tuple[str, str], Path] = {}
    for kind, arch in sorted({(d.spec.target, d.spec.architecture) for d in deployments}):
        mine = [d for d in deployments if (d.spec.target, d.spec.architecture) == (kind, arch)]
        download: set[str] = set()
        for deployment in mine:
            extras = task_requirements(deployment.spec.task)
            if kind == "gpu":
                # SageMaker brings a bundle that is not baked in (model data): no S3 client in the image.
                pins = gpu_requirements(settings.python_version, runtime=settings.gpu_runtime, extra=extras)
                download.update(installer_requirements())
            else:
                pins = pinned_requirements(settings.python_version, arch, fetch=deployment.fetch, extra=extras)
            refuse_forbidden(deployment.spec.name, pins)
            requirements[(kind, arch, deployment.fetch, extras)] = pins
            download.update(pins)
        wheelhouses[(kind, arch)] = prepare_wheelhouse(
            sorted(download), architecture=arch, python_version=settings.python_version,
            root=settings.wheelhouse, flavour="gpu" if kind == "gpu" else "")

    for deployment in deployments:
        spec = deployment.spec
        contents = image_contents(requirements[(spec.target, spec.architecture, deployment.fetch,
                                                task_requirements(spec.task))],
                                  wheelhouses[(spec.target, spec.architecture)],
                                  bundle_bytes=0 if deployment.fetch else deployment.bundle_bytes)
        check_image_budget(spec.name, contents, spec.image_budget_mb)
        memory = f", memory {deployment.memory_size} MB" if not deployment.is_gpu else f"; {deployment.gpu_sizing}"
        log(f"{spec.name}: image contents {contents.describe()}{memory}")

    # Every context is staged (bundles pulled and sha256-checked) before any is published, so a
    # failure on one model leaves the previous build and template.yaml as they were.
    staged: dict[str, Path] = {}
    try:
        for deployment in deployments:
            spec = deployment.spec
            where = "fetched at cold start" if deployment.fetch else "baked in"
            log(f"{spec.name}: version {deployment.version} ({deployment.bundle_bytes / 2**20:.1f} MB, {where})")
            pull = None if deployment.fetch else \
                (lambda dest, s=spec, v=deployment.version: registry.pull(s.name, v, dest))
            gpu = spec.target == "gpu"
            if gpu:
                base_image = settings.gpu_base_image
            else:
                base_image = settings.base_image or default_base_image(settings.python_version, spec.architecture)
            staged[spec.name] = stage_context(
                Path(settings.out) / spec.name, name=spec.name, version=deployment.version,
                requirements=requirements[(spec.target, spec.architecture, deployment.fetch,
                                           task_requirements(spec.task))],
                wheelhouse=wheelhouses[(spec.target, spec.architecture)], python_version=settings.python_version,
                architecture=spec.architecture, base_image=base_image, pull_bundle=pull,
                gpu=gpu, installer=installer_requirements() if gpu else [], streams=deployment.streams)
    except BaseException:
        for folder in staged.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    contexts = {name: publish_context(folder, Path(settings.out) / name) for name, folder in staged.items()}
    if any(d.relays for d in deployments):
        from .relay_code import write_relay_code

        log(f"stream relay code: {write_relay_code(Path(settings.out))}")
    template_path.parent.mkdir(parents=True, exist_ok=True)
    write_template(template, template_path)
    log(f"wrote {template_path} and {len(contexts)} build context(s) under {settings.out}; "
        f"next: sam build -t {template_path} (images FROM {settings.base_image or 'the AWS Lambda Python base'}, "
        f"Python {settings.python_version})")
    for deployment in deployments:
        if deployment.spec.target == "gpu":
            # sam builds and pushes Lambda images only; a SageMaker model names its image in ECR.
            log(f"{deployment.spec.name}: GPU image, not built by sam: docker build --platform linux/amd64 "
                f"-t $ECR/$REPOSITORY:{deployment.docker_tag} {contexts[deployment.spec.name]} && docker push "
                f"$ECR/$REPOSITORY:{deployment.docker_tag}, then sam deploy with GpuImageRepository=$REPOSITORY")
    return BuildResult(template=template_path, deployments=deployments, contexts=contexts)

"""`modelfn build`: models.yaml + registry -> one build context per model + template.yaml.

Everything that can be wrong is checked before anything is written: models.yaml, every model and
alias in the registry, manifests matching models.yaml, wheels for the image's platform. Only then
are contexts and the template written.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from functions.errors import ConfigError
from functions.spec import load_models_file

from ..template import Deployment, generate_template, write_template
from .context import default_base_image, publish_context, stage_context
from .requirements import pinned_requirements, takes_images
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
    """Resolve every Lambda model's alias to a version; raises before anything is written."""
    deployments = []
    for spec in models_file.models:
        if spec.target != "lambda":
            continue
        version = registry.resolve(spec.name, spec.alias)
        info = registry.show(spec.name, version)
        _check_manifest(spec, version, info.manifest)
        context = Path(os.path.relpath(Path(settings.out).resolve() / spec.name, template_dir.resolve()))
        deployments.append(Deployment(
            spec=spec, version=version, bundle_bytes=info.size_bytes,
            fetch=info.size_bytes > settings.bake_limit_mb * 2**20, context=context.as_posix(),
            runtime=info.manifest.runtime))
    if not deployments:
        raise ConfigError(f"{models_file.path}: no model with target lambda; nothing to build")
    return deployments


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

    requirements = {}
    wheelhouses = {}
    for arch in sorted({d.spec.architecture for d in deployments}):
        fetching = any(d.fetch for d in deployments if d.spec.architecture == arch)
        imaging = any(takes_images(d.spec.task) for d in deployments if d.spec.architecture == arch)
        everything = pinned_requirements(settings.python_version, arch, fetch=fetching, images=imaging)
        wheelhouses[arch] = prepare_wheelhouse(everything, architecture=arch,
                                               python_version=settings.python_version, root=settings.wheelhouse)
    for d in deployments:  # each image gets only what its model needs (Pillow only for image models)
        key = (d.spec.architecture, d.fetch, takes_images(d.spec.task))
        if key not in requirements:
            requirements[key] = pinned_requirements(settings.python_version, key[0], fetch=key[1], images=key[2])

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
            staged[spec.name] = stage_context(
                Path(settings.out) / spec.name, name=spec.name, version=deployment.version,
                requirements=requirements[(spec.architecture, deployment.fetch, takes_images(spec.task))],
                wheelhouse=wheelhouses[spec.architecture], python_version=settings.python_version,
                architecture=spec.architecture,
                base_image=settings.base_image or default_base_image(settings.python_version, spec.architecture),
                pull_bundle=pull)
    except BaseException:
        for folder in staged.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    contexts = {name: publish_context(folder, Path(settings.out) / name) for name, folder in staged.items()}
    template_path.parent.mkdir(parents=True, exist_ok=True)
    write_template(template, template_path)
    log(f"wrote {template_path} and {len(contexts)} build context(s) under {settings.out}; "
        f"next: sam build -t {template_path} (images FROM {settings.base_image or 'the AWS Lambda Python base'}, "
        f"Python {settings.python_version})")
    return BuildResult(template=template_path, deployments=deployments, contexts=contexts)

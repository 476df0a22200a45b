"""One `modelfn bench` run: resolve the model and its baselines, measure everything side by side,
price it, and return one result dict (report.py renders it; its keys are the --json schema)."""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from functions.errors import BundleError, ConfigError, ModelfnError
from functions.tasknames import TEXT_GENERATION

from .. import defaults
from . import cost, measure, sizing
from .measure import Way

SCHEMA_VERSION = 1
BENCH_DIR = Path(".modelfn") / "bench"  # fp32 exports made for the baseline, reused across runs


@dataclass
class Options:
    name: str
    models_file: str = defaults.MODELS_FILE
    bundle: str | None = None
    version: str | None = None
    registry: str | None = None
    endpoint_url: str | None = None
    reps: int = 50
    cold_reps: int = 5
    torch_reps: int = 3
    sizes: list[int] = field(default_factory=lambda: list(cost.DEFAULT_SIZES))
    size_reps: int = 30
    cold_rate: float = cost.DEFAULT_COLD_RATE
    p99_ms: float | None = None
    baselines: bool = True
    gpu_json: str = "bench/gpu.json"
    command: str = ""
    new_tokens: int = 64  # text-generation: the tokens of one chat answer (one request)
    threads: int | None = None  # text-generation: MODELFN_THREADS for the warm and cold ways (None: every CPU)
    image: bool | None = None  # the built image too: None when a container engine is usable, True insists
    image_rounds: int = 2  # fresh containers per Lambda size in the image


def _spec(options: Options):
    from infra.spec import load_models_file

    if not Path(options.models_file).is_file():
        raise ConfigError(f"{options.models_file}: no such file", hint="pass --models-file")
    models = load_models_file(options.models_file)
    spec = models.get(options.name)  # ConfigError naming the declared models
    if spec.task not in ("feature-extraction", "text-classification", "token-classification", TEXT_GENERATION):
        raise ConfigError(f"modelfn bench measures text models of one input and {TEXT_GENERATION} models so far; "
                          f"{spec.name} is {spec.task}")
    return spec, models.registry


def _bundle(options: Options, registry_uri: str, tmp: Path) -> Path:
    """--bundle DIR; else --version REF pulled from the registry; else .modelfn/bundles/NAME."""
    if options.bundle:
        path = Path(options.bundle)
    elif options.version:
        from infra.registry import open_registry

        registry = open_registry(options.registry or registry_uri, endpoint_url=options.endpoint_url)
        path = registry.pull(options.name, options.version, tmp / "bundle")
    else:
        path = defaults.BUNDLES_DIR / options.name
    if not (path / "manifest.json").is_file():
        raise BundleError(f"no bundle for {options.name} at {path}",
                          hint=f"run `modelfn export {options.name}`, or pass --bundle DIR or --version REF")
    return path.absolute()


def _fp32_onnx(spec, manifest, bundle: Path, models_file: str,
               progress: Callable[[str], None]) -> tuple[Path | None, str]:
    """The fp32 ONNX model: the bundle's own when it is fp32, else an fp32 export cached under
    .modelfn/bench/NAME-fp32. (path or None, how it was obtained or why not)."""
    if manifest.quantization.chosen == "fp32":
        return bundle / "model.onnx", "the bundle itself is fp32"
    out = (BENCH_DIR / f"{spec.name}-fp32").absolute()
    if not (out / "manifest.json").is_file():
        progress(f"exporting the fp32 baseline to {out} (once; reused by later runs)")
        # `modelfn export` in its own process: torch stays out of this one, whose children fork from it.
        done = subprocess.run([sys.executable, "-m", "infra.cli", "export", spec.name, "--models-file", models_file,
                               "--out", str(out), "--quantization", "none", "--search-budget-s", "0", "--overwrite"],
                              env=measure.child_environment({}),
                              capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"fp32 export failed: {tail[:300]}"
    return out / "model.onnx", f"exported with `quantization: none` into {os.path.relpath(out)}"


def size_choices(rows: list[dict], built_image: dict | None, p99_ms: float) -> dict:
    """``choice``, the size to put in models.yaml, and ``emulated_choice``, from the in-process rows.
    Where the built image ran the sizes under the engine's enforced limits, the choice is the
    image's (the real runtime under a real CPU quota); the emulated rows' choice is kept beside it.
    Each says where it was measured."""
    emulated = {**cost.choice_facts(rows, p99_ms), "measured_in": "emulated CPU share"}
    image_rows = [r for r in ((built_image or {}).get("sizes") or []) if r.get("p99_ms") is not None]
    if not image_rows:
        return {"choice": emulated, "emulated_choice": emulated}
    built_image["choice"] = {**cost.choice_facts(image_rows, p99_ms), "measured_in": "built image"}
    return {"choice": built_image["choice"], "emulated_choice": emulated}


def _gpu(spec, options: Options, rows: list[dict]) -> dict | None:
    """Lambda-or-GPU break-even, when a GPU measurement of the model is on record."""
    path = Path(options.gpu_json)
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    model = (record.get("models") or {}).get(spec.name)
    if not model:
        return None
    batched = [r for r in model.get("results", []) if r.get("way") == "ort batched"]
    capacity = max((r["throughput"] for r in batched), default=None)
    instance = spec.instance_type
    if instance not in cost.PRICES:
        return {"instance_type": instance, "note": f"no price on record for {instance} (infra/bench/cost.py)"}
    hourly = cost.price(instance)
    floor = spec.min_instances if spec.target == "gpu" else 1
    crossings = {}
    grid = [10 ** (k / 20) for k in range(4 * 20, 11 * 20 + 1)]  # 1e4 .. 1e11 requests/month
    for row in rows:
        cheaper = next((r for r in grid if cost.gpu_monthly(hourly, r, capacity, min_instances=floor)
                        < row["cost_per_million_x86_64"] * r / 1e6), None)
        crossings[str(row["memory_mb"])] = cheaper
    at_capacity = hourly / (capacity * 3600) * 1e6 if capacity else None
    return {"instance_type": instance, "hourly_usd": hourly, "min_instances": floor,
            "capacity_rps": capacity, "usd_per_million_at_capacity": at_capacity,
            "on_gpu": bool(record.get("on_gpu")), "source": str(path),
            "device": record.get("device", ""), "gpu_cheaper_above": crossings}


def _image_problem(spec, options: Options) -> str | None:
    """Why the built image cannot be measured here (None: it can); with --image, a ConfigError."""
    from . import image as image_bench

    problem = image_bench.engine_problem(spec.architecture)
    if problem and options.image:
        raise ConfigError(f"--image: {problem}", hint='eval "$(bash scripts/containers-env.sh)" sets up podman here')
    return problem


def _built_image(spec, bundle: Path, handler_env: dict, options: Options, notes: list[str],
                 progress: Callable[[str], None], host: Way) -> dict | None:
    """The same model in its function image under the container engine (image.py), or None with a
    note saying why not: --no-image, no usable engine, or the image failing (the in-process figures
    still stand). --image makes a missing engine or a failure an error."""
    from . import image as image_bench

    if options.image is False:
        notes.append("built image: not measured (--no-image)")
        return None
    problem = _image_problem(spec, options)
    if problem:
        notes.append(f"built image: not measured, {problem} (Lambda sizes are emulated in-process only)")
        return None
    try:
        measured = image_bench.measure_image(
            spec, bundle, handler_env, cold_reps=options.cold_reps, reps=options.reps, sizes=options.sizes,
            size_reps=options.size_reps, rounds=options.image_rounds, progress=progress, host=host)
    except (image_bench.ImageRunFailed, ModelfnError) as exc:  # e.g. no wheels for the image's platform
        if options.image:
            raise ConfigError(f"--image: {exc}") from None
        notes.append(f"built image: not measured, {exc}")
        return None
    # Sizes whose runtime was killed have no latency to price.
    sizing.price_sizes([r for r in measured["sizes"] if "b1 short" in r], options.cold_rate)
    for row in measured["sizes"]:
        row.pop("durations_ms")
    return measured


def _goals(result: dict) -> list[dict]:
    """The issue's acceptance goals, met or not, from this run's figures."""
    cold, warm, goals = result["cold_start"], result["warm"], []

    def goal(text, value, ok, unit="x"):
        goals.append({"goal": text, "value": round(value, 3), "unit": unit, "met": bool(ok)})

    if "floor" in cold:
        r = cold["modelfn"]["total_s"] / cold["floor"]["total_s"]
        goal("cold start <= 1.5x the floor", r, r <= 1.5)
    if "torch" in cold:
        r = cold["torch"]["total_s"] / cold["modelfn"]["total_s"]
        goal("cold start >= 10x faster than torch", r, r >= 10)
    if "torch" in warm:
        for case, need in (("b1 short", 5), ("b1 long", 2)):
            r = warm["torch"][case]["p50_ms"] / warm["modelfn"][case]["p50_ms"]
            goal(f"warm p50 {case} >= {need}x faster than torch fp32", r, r >= need)
    first = result["cold_start"]["modelfn"]["rss_mib"]
    goal("peak RSS <= 160 MiB (cold start to the first answer)", first, first <= 160, "MiB")
    if result["sizes"]:
        # Not the goal, but what a memory size must hold: the largest request the bench sends.
        batch = max(row["rss_mib"] for row in result["sizes"])
        goal("peak RSS <= 160 MiB after a batch of 8 x 256-token texts (the size runs)", batch, batch <= 160, "MiB")
    image = result["image"]
    goal("image contents <= 200 MB", image["total_mb"], image["total_mb"] <= 200, "MB")
    if "torch_total_mb" in image:
        goal("torch handler image contents > 1 GB", image["torch_total_mb"], image["torch_total_mb"] > 1000, "MB")
    return goals


def run_bench(options: Options, progress: Callable[[str], None]) -> dict:
    """Measure ``options.name`` and its baselines; the result dict of the --json output."""
    from functions.manifest import read_manifest

    spec, registry_uri = _spec(options)
    with tempfile.TemporaryDirectory(prefix="modelfn-bench-") as tmp:
        bundle = _bundle(options, registry_uri, Path(tmp))
        manifest = read_manifest(bundle)
        if spec.task == TEXT_GENERATION:
            from .genrun import measure_generation

            if options.image:
                raise ConfigError(f"--image: the built image is measured for text models of one input so far; "
                                  f"{spec.name} is {TEXT_GENERATION}", hint="leave --image out")

            return measure_generation(spec, manifest, bundle, options, progress)
        return _measure(spec, manifest, bundle, options, progress)


def _measure(spec, manifest, bundle: Path, options: Options, progress: Callable[[str], None]) -> dict:
    from functions.settings import available_cpus

    if options.image:
        _image_problem(spec, options)  # --image without an engine fails before minutes of measuring
    notes: list[str] = []
    handler_env = {"MODELFN_BUNDLE_DIR": str(bundle), "MODELFN_MODEL_NAME": spec.name,
                   "MODELFN_MAX_TOKENS": str(spec.max_tokens), "MODELFN_MAX_BATCH": str(max(8, spec.max_batch)),
                   "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    common = {"task": spec.task, "max_tokens": spec.max_tokens}
    # The floor opens its session bare; it gets the spinning the handler's runtime chooses here.
    spinning = measure.host_spinning(available_cpus())
    ways = [Way("modelfn", {"kind": "handler", "name": spec.name}, handler_env)]
    tokenizer = bundle / "tokenizer.json"
    if options.baselines:
        ways.append(Way("floor", {"kind": "floor", "model_onnx": str(bundle / "model.onnx"),
                                  "tokenizer": str(tokenizer), **common}, spinning))
        fp32, how = _fp32_onnx(spec, manifest, bundle, options.models_file, progress)
        notes.append(f"fp32 ONNX baseline: {how}")
        if fp32 is not None and fp32 != bundle / "model.onnx":
            ways.append(Way("fp32 onnx", {"kind": "floor", "model_onnx": str(fp32), "tokenizer": str(tokenizer),
                                          **common}, spinning))
        try:
            source = spec.source_dir()
            ways.append(Way("torch", {"kind": "torch", "source": str(source), **common}, {}))
        except ConfigError as exc:
            source = None
            notes.append(f"torch baseline skipped: {exc}")
    else:
        source = None
        notes.append("baselines skipped (--no-baselines)")

    # The image ships functions/ compiled (infra/build/context.py); so do the handler's cold starts here.
    compileall.compile_dir(str(measure.ROOT / "functions"), quiet=1)
    progress(f"modelfn bench {spec.name}: bundle {bundle} ({manifest.quantization.chosen}), "
             f"{available_cpus()} usable CPUs; ways: {', '.join(w.label for w in ways)}")
    cold = measure.cold_starts(ways, options.cold_reps, torch_reps=min(options.torch_reps, options.cold_reps),
                               progress=progress)
    warm, torch_threads = measure.warm_latency(ways, options.reps, env=handler_env, progress=progress)
    if torch_threads:
        notes.append(f"torch warm latency at its fastest thread count on this machine: {torch_threads} "
                     "(1 or all usable CPUs, picked by a short trial in the same process)")
    rows = sizing.size_runs(ways[0], options.sizes, options.size_reps, progress=progress)
    sizing.price_sizes(rows, options.cold_rate)
    built_image = _built_image(spec, bundle, handler_env, options, notes, progress, host=ways[0])
    bundle_mb = sizing.directory_mb(bundle)
    progress("sizing the image contents")
    image = sizing.image_contents(spec.task, spec.architecture, bundle_mb)
    if source is not None:
        image["torch_model_mb"] = sizing.directory_mb(source)
        image["torch_total_mb"] = image["torch_site_packages_mb"] + image["torch_model_mb"]
    for row in rows:
        row.pop("durations_ms")
    result = {
        "schema": SCHEMA_VERSION, "model": spec.name, "task": spec.task, "command": options.command,
        "bundle": {"path": str(bundle), "quantization": manifest.quantization.chosen, "size_mb": bundle_mb},
        "machine": measure.machine_facts(),
        "settings": {"reps": options.reps, "cold_reps": options.cold_reps, "torch_reps": options.torch_reps,
                     "size_reps": options.size_reps, "cold_rate": options.cold_rate, "sizes": options.sizes},
        "cold_start": cold, "warm": warm, "sizes": rows, "sizing_method": sizing.METHOD, "image": image,
        "built_image": built_image, **cost.price_facts(), "notes": notes,
    }
    if options.p99_ms is not None:
        result.update(size_choices(rows, built_image, options.p99_ms))
    result["gpu"] = _gpu(spec, options, rows)
    result["goals"] = _goals(result)
    return result

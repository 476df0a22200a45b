"""`modelfn export`: a declared model (NAME from models.yaml) or a bare --source/--task into a model bundle.

Progress goes to stderr step by step; the closing summary to stdout, or with --json the manifest
and step timings as one JSON object on stdout and nothing else there.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from functions.errors import ConfigError
from export.choices import QUANTIZATIONS, TARGETS

from .. import defaults

LAMBDA_MB_PER_VCPU = 1769  # Lambda grants one vCPU per 1769 MB of memory, up to 6


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to a quantized, parity-gated ONNX bundle",
        description="Export a Hugging Face model to a model bundle (model.onnx, tokenizer.json, manifest.json). "
                    "Either NAME from models.yaml, or --source DIR --task TASK --out DIR.")
    p.add_argument("name", nargs="?", metavar="NAME", help="model declared in models.yaml")
    p.add_argument("--models-file", default=defaults.MODELS_FILE, help="default: %(default)s")
    p.add_argument("--out", help="bundle directory (default with NAME: .modelfn/bundles/NAME)")
    p.add_argument("--source", help="Hugging Face model directory or installed package shipping one "
                                     "(text-generation: also a .gguf file)")
    p.add_argument("--task", help="the task, or a synonym of one (the task registry, functions/tasks/, decides; "
                                   "an unknown name is answered with the list)")
    p.add_argument("--target", choices=TARGETS)
    p.add_argument("--architecture", help="x86_64 or arm64 (the function's Architectures)")
    p.add_argument("--quantization", choices=QUANTIZATIONS)
    p.add_argument("--strategy",
                   help="fastest-passing, smallest-passing or fixed:CANDIDATE (default fastest-passing; "
                        "text-generation on lambda: smallest-passing)")
    p.add_argument("--parity", action="append", default=[], metavar="METRIC=VALUE",
                   help="gate threshold, e.g. min_cosine=0.98 (repeatable; default models.yaml or built-in)")
    p.add_argument("--search-budget-s", type=float,
                   help="safety stop in seconds for the int8 quantization search (mixed precision), which runs "
                        "a fixed number of steps; 0 turns it off (default 600)")
    p.add_argument("--eval-file", help="JSONL of your own texts: {\"text\", \"label\"} or {\"question\", \"context\"}; "
                                       "text-generation: {\"prompt\"} (raw text) or {\"chat\"} (a user message)")
    p.add_argument("--max-tokens", type=int, help="truncation length (default: models.yaml or the model's own)")
    p.add_argument("--context-length", type=int,
                   help="text-generation: prompt + new tokens (default: models.yaml or the model's own)")
    p.add_argument("--threads", type=int, help="threads for latency measurement (default: the function's vCPUs)")
    p.add_argument("--allow-drift", action="store_true", help="write the bundle even when the parity gate fails")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    previous = p.add_mutually_exclusive_group()
    previous.add_argument("--previous", metavar="DIR",
                          help="encoder, image and speech tasks: bundle of an earlier export (e.g. the registry's current version, pulled) whose "
                               "quantization choice to keep unless a candidate is more than 1.25x faster "
                               "(default: the bundle --overwrite replaces)")
    previous.add_argument("--no-previous", action="store_true",
                          help="choose afresh, ignoring the choice of the bundle being replaced")
    p.add_argument("--json", action="store_true", help="print the manifest and step timings as JSON on stdout")
    p.set_defaults(func=run)


def _settings(args) -> dict:
    """export_bundle keyword arguments from models.yaml (NAME) or the flags alone; flags win."""
    if args.name and args.source:
        raise ConfigError("give either NAME (from models.yaml) or --source, not both")
    if args.name:
        from infra.spec import load_models_file

        spec = load_models_file(args.models_file).get(args.name)
        settings = dict(source=spec.source_dir(), task=spec.task, out=args.out or defaults.BUNDLES_DIR / spec.name,
                        name=spec.name, target=spec.target, architecture=spec.architecture,
                        quantization=spec.quantization, thresholds=dict(spec.parity), max_tokens=spec.max_tokens,
                        threads=min(6, max(1, math.ceil(spec.planned_memory_mb / LAMBDA_MB_PER_VCPU))),
                        context_length=spec.context_length or None)
    else:
        missing = [flag for flag, value in (("--source", args.source), ("--task", args.task), ("--out", args.out))
                   if not value]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}", hint="give NAME from models.yaml, or --source, --task and --out")
        from export.source import resolve_source

        settings = dict(source=resolve_source(args.source), task=args.task, out=args.out)
    for key in ("target", "architecture", "quantization", "max_tokens", "threads", "search_budget_s", "context_length"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.parity:
        settings["thresholds"] = {**settings.get("thresholds", {}), **_parse_parity(args.parity)}
    settings.update(strategy=args.strategy, eval_file=args.eval_file, allow_drift=args.allow_drift,
                    overwrite=args.overwrite)
    if args.previous or args.no_previous:
        settings["previous"] = "" if args.no_previous else args.previous
    return settings


def _parse_parity(items: list[str]) -> dict[str, float]:
    thresholds = {}
    for item in items:
        metric, sep, value = item.partition("=")
        try:
            thresholds[metric.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--parity {item!r}: expected METRIC=NUMBER, e.g. min_cosine=0.98")
    return thresholds


class _StderrProgress:
    def __init__(self, stream=None):
        self._stream = stream

    @property
    def stream(self):
        return self._stream or sys.stderr

    def __call__(self, event) -> None:
        if event.state == "start":
            print(f"  {event.step:<9} ...     {event.message}", file=self.stream, flush=True)
        elif event.state == "done":
            print(f"  {event.step:<9} {event.seconds:6.1f}s", file=self.stream, flush=True)
        elif event.state == "warn":
            print(f"  warning: {event.message}", file=self.stream, flush=True)
        elif event.step in ("load", "validate"):  # what was weighed, and the per-candidate results
            print(f"            {event.message}", file=self.stream, flush=True)


def run(args) -> int:
    from export.errors import ParityGateError
    from export.exporter import export_bundle

    settings = _settings(args)
    render = _StderrProgress()
    timings: dict[str, float] = {}

    def progress(event) -> None:
        if event.state == "done":
            timings[event.step] = round(event.seconds, 3)
        render(event)

    print(f"modelfn export: {settings.get('name') or settings['source']} -> {settings['out']}", file=sys.stderr)
    try:
        manifest = export_bundle(progress=progress, **settings)
    except ParityGateError as exc:
        print(exc.table, file=sys.stderr)
        raise
    if args.json:
        json.dump({"bundle": str(Path(settings["out"]).absolute()), "manifest": manifest.to_dict(),
                   "timings_s": timings}, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(summary(manifest, Path(settings["out"]), timings))
    return 0


def summary(manifest, out: Path, timings: dict[str, float]) -> str:
    from export.report import candidates_table, human_size

    q, p = manifest.quantization, manifest.parity
    by_name = {c.name: c for c in q.candidates}
    chosen, fp32 = by_name.get(q.chosen), by_name.get("fp32")
    lines = [f"bundle    {out}  ({manifest.name}: {manifest.task}, {manifest.target}/{manifest.architecture})"]
    if chosen and fp32:
        ratio = fp32.size_bytes / chosen.size_bytes if chosen.size_bytes else 0
        lines.append(f"size      fp32 {human_size(fp32.size_bytes)} -> {q.chosen} {human_size(chosen.size_bytes)}"
                     f" ({ratio:.1f}x smaller)")
        if chosen.latency_ms > 0 and fp32.latency_ms > 0 and manifest.task == "text-generation":
            lines.append(f"decode    {1000 / chosen.latency_ms:.1f} tokens/s greedy "
                         f"(fp32 {1000 / fp32.latency_ms:.1f} tokens/s, {fp32.latency_ms / chosen.latency_ms:.2f}x)")
        elif chosen.latency_ms > 0 and fp32.latency_ms > 0:
            lines.append(f"latency   {chosen.latency_ms:.2f} ± {chosen.latency_spread_ms:.2f} ms per call at batch 1 "
                         f"(fp32 {fp32.latency_ms:.2f} ± {fp32.latency_spread_ms:.2f} ms, "
                         f"{fp32.latency_ms / chosen.latency_ms:.2f}x); batch of 8 {chosen.batch_latency_ms:.2f} ms "
                         f"(fp32 {fp32.batch_latency_ms:.2f} ms)"
                         + (", one row per call" if chosen.one_row_per_run else ""))
    # max_* thresholds (max_kl_mean, max_wer) are maxima; every other one a minimum
    gate = "  ".join(f"{m} {v:.4f}" + (f" ({'<=' if m.startswith('max_') else '>='} {p.thresholds[m]:g})"
                                       if m in p.thresholds else "") for m, v in sorted(p.metrics.items()))
    verdict = "PASS" if p.passed else "DRIFT ALLOWED" if p.allowed_drift else "FAIL"
    lines.append(f"parity    {gate}  {verdict} on {p.samples} samples vs {p.reference}")
    if p.classes:
        lines.append("samples   " + ", ".join(f"{k} {v}" for k, v in p.classes.items()))
    lines.append(f"chosen    {q.chosen}: {q.reason}")
    if q.host_cpu_features:
        lines.append(f"host      measured on a CPU with {' '.join(q.host_cpu_features)}")
    lines.append(f"time      {sum(timings.values()):.1f}s (" + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()) + ")")
    lines.append("")
    lines.append(candidates_table(q.candidates, chosen=q.chosen, thresholds=p.thresholds))
    return "\n".join(lines)

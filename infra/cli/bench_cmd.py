"""`modelfn bench NAME`: measure a model before deploying it.

Cold start, warm latency, peak RSS, bundle and image size, and cost per million requests per
Lambda memory size, side by side with the fp32 ONNX, transformers + torch and bare onnxruntime
baselines, in one run on this machine (infra/bench). Prints a table (or --json), writes
bench/RESULTS.md and PNG charts. With --p99-ms it prints the models.yaml `memory_mb` to set, and
exits 1 when no size meets the goal.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from infra import defaults


def _sizes(text: str) -> list[int]:
    import argparse

    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be comma-separated MB, like 512,1769; got {text!r}") from None
    if not sizes or any(not 128 <= s <= 10240 for s in sizes):
        raise argparse.ArgumentTypeError(f"Lambda memory sizes are 128 to 10240 MB; got {text!r}")
    return sorted(set(sizes))


def _positive(kind):
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
        return value
    return parse


def register(subparsers) -> None:
    from infra.bench.cost import DEFAULT_COLD_RATE, DEFAULT_SIZES

    p = subparsers.add_parser(
        "bench", help="measure cold start, latency, memory, size and cost per Lambda size of a model",
        description="Measure NAME's bundle on this machine, side by side with its baselines, and price it per "
                    "Lambda memory size.")
    p.add_argument("name", metavar="NAME", help="model name in models.yaml")
    p.add_argument("--models-file", default=defaults.MODELS_FILE, help="default: %(default)s")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--bundle", metavar="DIR", help="bundle directory (default: .modelfn/bundles/NAME)")
    where.add_argument("--version", metavar="REF", help="pull this version, alias or 'latest' from the registry")
    p.add_argument("--registry", metavar="URI", help="s3://bucket/prefix or a directory (default: models.yaml's)")
    p.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--reps", type=_positive(int), default=50, help="warm rounds (default %(default)s)")
    p.add_argument("--cold-reps", type=_positive(int), default=5, help="cold starts per way (default %(default)s)")
    p.add_argument("--torch-reps", type=_positive(int), default=3, help="cold starts of torch (default %(default)s)")
    p.add_argument("--size-reps", type=_positive(int), default=30,
                   help="warm requests per Lambda size (default %(default)s)")
    p.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                   help="Lambda memory sizes in MB (default %s)" % ",".join(map(str, DEFAULT_SIZES)))
    p.add_argument("--cold-rate", type=_positive(float), default=DEFAULT_COLD_RATE,
                   help="share of requests that are cold starts, for init cost (default %(default)s)")
    p.add_argument("--p99-ms", type=_positive(float), metavar="X", help="pick the cheapest size with p99 <= X ms")
    p.add_argument("--no-baselines", action="store_true", help="measure the bundle only")
    image = p.add_mutually_exclusive_group()
    image.add_argument("--image", dest="image", action="store_true", default=None,
                       help="also measure the built function image under the container engine (cold start "
                            "through its Runtime Interface Emulator, warm latency, Lambda sizes under --cpus/--memory); "
                            "an error when no engine is usable (default: measured when one is)")
    image.add_argument("--no-image", dest="image", action="store_false", help="skip the built image")
    p.add_argument("--gpu-json", default="bench/gpu.json", help="GPU measurement on record (default %(default)s)")
    p.add_argument("--new-tokens", type=_positive(int), default=64,
                   help="text-generation: tokens of one chat answer, the request priced (default %(default)s)")
    p.add_argument("--threads", type=_positive(int), metavar="N",
                   help="text-generation: intra-op threads of the handler and the floor (MODELFN_THREADS; default: "
                        "every usable CPU, as the runtime); a Lambda size uses this many or its own CPU count if fewer")
    p.add_argument("--out", help="markdown report (default bench/RESULTS.md; text-generation models: "
                                 "bench/RESULTS-NAME.md, so the encoder record is not overwritten)")
    p.add_argument("--charts", metavar="DIR", help="PNG charts (default: charts/ next to --out)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from functions.errors import ConfigError
    from functions.tasknames import TEXT_GENERATION
    from infra.bench import charts, genreport, report
    from infra.bench.run import Options, run_bench

    if args.cold_rate > 1:
        raise ConfigError(f"--cold-rate is a share from 0 to 1, got {args.cold_rate}")
    argv = sys.argv[1:] if sys.argv and Path(sys.argv[0]).name in ("modelfn", "__main__.py") else []
    command = "modelfn " + shlex.join(argv) if argv else f"modelfn bench {args.name}"
    options = Options(name=args.name, models_file=args.models_file, bundle=args.bundle, version=args.version,
                      registry=args.registry, endpoint_url=args.endpoint_url, reps=args.reps, cold_reps=args.cold_reps,
                      torch_reps=args.torch_reps, sizes=args.sizes, size_reps=args.size_reps,
                      cold_rate=args.cold_rate, p99_ms=args.p99_ms, baselines=not args.no_baselines,
                      gpu_json=args.gpu_json, command=command, new_tokens=args.new_tokens,
                      threads=args.threads, image=args.image)

    def progress(line: str) -> None:
        print(f"modelfn bench: {line}", file=sys.stderr, flush=True)

    result = run_bench(options, progress)
    generation = result["task"] == TEXT_GENERATION
    render = genreport if generation else report
    out = Path(args.out or (f"bench/RESULTS-{args.name}.md" if generation else "bench/RESULTS.md"))
    chart_dir = Path(args.charts) if args.charts else out.parent / "charts"
    written, chart_note = [], None
    try:
        written = (charts.write_generation_charts if generation else charts.write_charts)(result, chart_dir)
    except ConfigError as exc:
        chart_note = f"No charts: {exc}."
        progress(f"{exc}: writing the tables without charts")
    result["charts"] = [str(p) for p in written]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render.markdown(result, written, out, chart_note), encoding="utf-8")
    progress(f"wrote {out}" + (f" and {len(written)} charts in {chart_dir}" if written else ""))
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(render.terminal(result))
    choice = result.get("choice")
    return 1 if choice is not None and choice["memory_mb"] is None else 0

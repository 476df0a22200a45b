"""Decode speed of a text-generation bundle on CPU: which builder recipe and which session options make
onnxruntime-genai decode faster, each measured side by side in one run, with transformers fp32
``generate`` beside them. Writes bench/generation.md.

    python bench/generation.py [--name smollm] [--bundle DIR] [--reps 3]

The bundle vs transformers comparison itself (cold start to first token, time to first token, decode
tokens/s through the real handler, Lambda sizes and cost) is `modelfn bench NAME`
(bench/RESULTS-NAME.md); this script reuses its measuring code (infra/bench/genprobe.py: every
variant is a "floor" way, bare onnxruntime-genai + tokenizers, with its own genai_config overlay or
its own build; all answer the same prompts in turn in one process, so load hits all alike).

Variants:
- session options over the bundle as the handler loads it (2 intra-op threads, 1 inter-op):
  1 thread, no past/present buffer sharing, no CPU memory arena. (Thread spinning cannot be set:
  onnxruntime-genai 0.12.2's session_options take no config entries; its JSON reader rejects
  ``config_entries``.)
- builder recipes (export/generation/candidates.py), built here into .modelfn/bench/NAME-variants/
  and run through the generation gate (export/generation/parity.py, the thresholds of
  export/choices.py) against the PyTorch fp32 model, as export would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

THREADS = 2  # what a 2048 MB Lambda function has (ceil of 1.16 vCPU)
NEW_TOKENS = 64
HANDLER_OPTIONS = {"intra_op_num_threads": THREADS, "inter_op_num_threads": 1}  # functions/generation/model.py
SESSION_VARIANTS = {
    "bundle (handler settings)": {},
    "1 intra-op thread": {"intra_op_num_threads": 1},
    "no CPU memory arena": {"enable_cpu_mem_arena": False},
}
SEARCH_VARIANTS = {"no past/present buffer sharing": {"past_present_share_buffer": False}}
RECIPE_VARIANTS = ("int4-b32-all-acc1", "int4-b64-all")
GOAL_DECODE = 5.0


def _overlay(session: dict | None = None, search: dict | None = None) -> dict:
    overlay = {"model": {"decoder": {"session_options": {**HANDLER_OPTIONS, **(session or {})}}}}
    if search:
        overlay["search"] = search
    return overlay


def build_variant(recipe_name: str, hf_dir: Path, bundle: Path, manifest, cache: Path) -> Path:
    """The recipe built into ``cache``/NAME (reused when present), laid out to run like the bundle."""
    from export.generation import bundle as genbundle
    from export.generation import candidates

    out = cache / recipe_name
    if not (out / "genai_config.json").is_file() or not (out / "model.onnx").is_file():
        shutil.rmtree(out, ignore_errors=True)
        candidates.build(candidates.RECIPES[recipe_name], hf_dir, out)
    # As export writes the bundle: its eos ids and context in genai_config.json, its tokenizer.
    genbundle.configure_genai(out, manifest.runtime)
    shutil.copy2(bundle / "tokenizer.json", out / "tokenizer.json")
    return out


def gate(model_dirs: dict[str, Path], source: str, context_length: int) -> dict[str, dict]:
    """Generation-gate metrics and verdict per directory, as export computes them."""
    from tokenizers import Tokenizer

    from export.choices import GENERATION_THRESHOLDS
    from export.generation import parity
    from export.generation.exporter import MAX_NEW_TOKENS
    from export.generation.prompts import builtin_prompts, encode
    from export.generation.source import _special_strings, inspect_generation_source

    src = inspect_generation_source(source, context_length=context_length)
    tokenizer = Tokenizer.from_file(str(src.path / "tokenizer.json"))
    config_file = src.path / "tokenizer_config.json"
    special = _special_strings(json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {})
    prompt_ids = [encode(tokenizer, p, src.chat_template, special) for p in builtin_prompts(bool(src.chat_template))]
    reference = parity.torch_reference(src.path, prompt_ids, eos_ids=src.runtime.eos_token_ids,
                                       pad_id=src.runtime.pad_token_id, max_new_tokens=MAX_NEW_TOKENS,
                                       threads=1)  # torch's OpenMP pool stalls at 2 threads on a busy host
    out = {}
    for label, path in model_dirs.items():
        metrics = parity.compare(reference, parity.teacher_forced_logits(path / "model.onnx", reference, THREADS),
                                 parity.genai_greedy(path, prompt_ids, MAX_NEW_TOKENS))
        out[label] = {"metrics": metrics, "passed": parity.passes(metrics, GENERATION_THRESHOLDS)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="smollm", help="model in models.yaml (default %(default)s)")
    parser.add_argument("--models-file", default="models.yaml")
    parser.add_argument("--bundle", help="bundle directory (default .modelfn/bundles/NAME)")
    parser.add_argument("--reps", type=int, default=3, help="rounds per variant (default %(default)s)")
    parser.add_argument("--no-gate", action="store_true", help="skip the gate of the built variants")
    parser.add_argument("--out", default=str(ROOT / "bench" / "generation.md"))
    args = parser.parse_args(argv)

    from functions.manifest import read_manifest
    from infra.bench import genrun, measure
    from infra.spec import load_models_file

    spec = load_models_file(args.models_file).get(args.name)
    bundle = Path(args.bundle or Path(".modelfn") / "bundles" / args.name).absolute()
    manifest = read_manifest(bundle)
    hf_dir = genrun.torch_source(spec)
    cache = Path(".modelfn/bench").absolute() / f"{args.name}-variants"
    progress = lambda line: print(f"bench/generation.py: {line}", file=sys.stderr, flush=True)

    ways: dict[str, dict] = {}
    for label, session in SESSION_VARIANTS.items():
        ways[label] = {"kind": "floor", "bundle": str(bundle), "overlay": _overlay(session)}
    for label, search in SEARCH_VARIANTS.items():
        ways[label] = {"kind": "floor", "bundle": str(bundle), "overlay": _overlay(search=search)}
    built: dict[str, Path] = {}
    for recipe in RECIPE_VARIANTS:
        progress(f"building {recipe} (cached in {cache})")
        built[f"recipe {recipe}"] = build_variant(recipe, hf_dir, bundle, manifest, cache)
        ways[f"recipe {recipe}"] = {"kind": "floor", "bundle": str(built[f"recipe {recipe}"]),
                                    "overlay": _overlay()}
    ways["transformers fp32"] = {"kind": "torch", "source": str(hf_dir)}

    questions, rendered, prompt_tokens = genrun.prompts(bundle, manifest, NEW_TOKENS)
    progress(f"{len(ways)} ways x {args.reps} rounds x 2 prompts ({prompt_tokens}), {NEW_TOKENS} new tokens")
    _, warm = measure.run_child("genwarm", {"questions": questions, "rendered": rendered, "ways": ways,
                                            "cases": ["short", "long"], "reps": args.reps,
                                            "new_tokens": NEW_TOKENS}, {"MODELFN_THREADS": str(THREADS)})
    figures = {label: {case: genrun._ttft_decode(rounds) for case, rounds in cases.items()}
               for label, cases in warm["samples"].items()}
    # Kept before the (slow) gate runs: the timings of a long run survive a failure there.
    (cache / "speed.json").write_text(json.dumps({"figures": figures, "torch_threads": warm["torch_threads"]}),
                                      encoding="utf-8")
    gates = {}
    if not args.no_gate:
        progress("generation gate of the bundle and the built variants vs PyTorch fp32")
        gates = gate({"bundle (handler settings)": bundle, **built}, spec.source, spec.context_length or None)
    (Path(args.out)).write_text(_markdown(args, manifest, figures, gates, prompt_tokens, warm), encoding="utf-8")
    progress(f"wrote {args.out}")
    return 0


def _markdown(args, manifest, figures: dict, gates: dict, prompt_tokens: dict, warm: dict) -> str:
    import transformers

    from export.choices import GENERATION_THRESHOLDS

    base = figures["bundle (handler settings)"]
    torch = figures["transformers fp32"]

    def rate(label, case):
        return figures[label][case]["decode_tokens_per_s"]

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    rows = []
    for label in figures:
        g = gates.get(label)
        verdict = ("pass" if g["passed"] else "FAIL") + " (top1 {top1_agreement:.3f}, KL {kl_mean:.3f}, greedy "\
            "{greedy_match:.3f})".format(**g["metrics"]) if g else ("same weights as the bundle" if label != \
            "transformers fp32" else "reference")
        rows.append(f"| {label} | {_f(rate(label, 'short'))} | {ratio(rate(label, 'short'), base['short']['decode_tokens_per_s'])} | "
                    f"{ratio(rate(label, 'short'), torch['short']['decode_tokens_per_s'])} | {_f(rate(label, 'long'))} | "
                    f"{ratio(rate(label, 'long'), torch['long']['decode_tokens_per_s'])} | "
                    f"{figures[label]['short']['ttft_ms']['p50_ms']:.0f} | {figures[label]['long']['ttft_ms']['p50_ms']:.0f} | "
                    f"{verdict} |")
    ours, theirs = base["short"]["decode_tokens_per_s"], torch["short"]["decode_tokens_per_s"]
    best = max((l for l in figures if l != "transformers fp32" and rate(l, "short")), key=lambda l: rate(l, "short"))
    lines = [
        f"# Decode speed of `{args.name}` on CPU: recipes and session options, side by side", "",
        f"Generated by `python bench/generation.py --name {args.name} --reps {args.reps}` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Bundle `{manifest.quantization.chosen}` "
        f"(onnxruntime-genai {manifest.tools.get('onnxruntime-genai', '?')}), transformers {transformers.__version__}.",
        "",
        f"Every row is bare onnxruntime-genai + tokenizers (the floor of `modelfn bench`) with {THREADS} intra-op "
        "threads and 1 inter-op thread (the handler's settings, functions/generation/model.py) unless the row "
        f"changes them; greedy, exactly {NEW_TOKENS} new tokens, batch 1; a short chat question "
        f"({prompt_tokens['short']} tokens) and a ~512-token one ({prompt_tokens['long']} tokens); {args.reps} "
        "alternating rounds in one process (medians). Decode tok/s = (n - 1) / (answer time - time to first token). "
        f"transformers: fp32 `generate` at its fastest thread count here ({warm['torch_threads']}).",
        "",
        "| variant | decode tok/s, short | vs bundle | vs transformers | decode tok/s, 512 | vs transformers | "
        "first token ms, short | first token ms, 512 | generation gate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Gate thresholds (export/choices.py): {', '.join(f'{k} {v:g}' for k, v in GENERATION_THRESHOLDS.items())}; "
        "metrics on export's built-in prompts against the PyTorch fp32 model.",
        "",
        f"Bundle vs transformers, decode (short prompt): {ratio(ours, theirs)} (goal >= {GOAL_DECODE:g}x: "
        f"{'met' if ours and theirs and ours / theirs >= GOAL_DECODE else 'not met'}); fastest variant here: "
        f"{best}, {ratio(rate(best, 'short'), theirs)}. The whole comparison through the handler, with cold start "
        f"and Lambda sizes: `modelfn bench {args.name}` (bench/RESULTS-{args.name}.md).",
        "",
    ]
    return "\n".join(lines)


def _f(value) -> str:
    return f"{value:.1f}" if value else "-"


if __name__ == "__main__":
    raise SystemExit(main())

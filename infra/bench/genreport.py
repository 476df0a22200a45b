"""Render a text-generation bench result (infra/bench/genrun.py): the terminal table and the markdown
report. Shared pieces (table layout, the size choice, prices) come from report.py."""

from __future__ import annotations

import os
from pathlib import Path

from .report import _choice_line, _plain, _table

WAY_NAMES = {
    "modelfn": "modelfn `handler` (bundle, API Gateway chat event in, response out)",
    "floor": "floor: bare onnxruntime-genai + tokenizers, same bundle",
    "torch": "transformers fp32 `generate` (the usual way)",
}
COLD_HEADER = ["runtime", "to first token s", "interpreter s", "imports s", "model load s", "first token ms",
               "peak RSS MiB", "transformers / this", "n"]
GEN_HEADER = ["runtime", "prompt", "first token p50 ms", "first token p99 ms", "decode tok/s", "tok/s vs transformers",
              "answer ms", "new tokens", "n"]
SIZE_HEADER = ["memory MB", "vCPU", "cold start s", "first token ms", "answer p50 ms", "answer p99 ms", "decode tok/s",
               "peak RSS MiB", "fits", "USD/M x86_64", "USD/M arm64"]


def _cold_rows(result: dict) -> list[list[str]]:
    cold, torch = result["cold_start"], result["cold_start"].get("torch")
    return [[WAY_NAMES.get(way, way), f"{c['total_s']:.3f}", f"{c['interpreter_s']:.3f}", f"{c['import_s']:.3f}",
             f"{c['load_s']:.3f}", f"{c['first_s'] * 1000:.1f}", f"{c['rss_mib']:.0f}",
             f"{torch['total_s'] / c['total_s']:.2f}x" if torch else "-", str(c["n"])] for way, c in cold.items()]


def _rate(value) -> str:
    return f"{value:.1f}" if value else "-"


def _gen_rows(result: dict) -> list[list[str]]:
    gen, tokens = result["generation"], result["prompt_tokens"]
    torch = gen.get("torch")
    rows = []
    for way, cases in gen.items():
        for case in ("short", "long"):
            g = cases[case]
            theirs = torch[case]["decode_tokens_per_s"] if torch else None
            vs = f"{g['decode_tokens_per_s'] / theirs:.2f}x" if theirs and g["decode_tokens_per_s"] else "-"
            rows.append([WAY_NAMES.get(way, way), f"{case}, {tokens[case]} tokens", f"{g['ttft_ms']['p50_ms']:.1f}",
                         f"{g['ttft_ms']['p99_ms']:.1f}", _rate(g["decode_tokens_per_s"]), vs,
                         f"{g['answer_ms']:.0f}", str(g["tokens"]), str(g["n"])])
    return rows


def _size_rows(result: dict) -> list[list[str]]:
    choice = (result.get("choice") or {}).get("memory_mb")
    return [[f"{r['memory_mb']}" + (" (chosen)" if r["memory_mb"] == choice else ""),
             f"{r['vcpus']:.2f}" + (" (capped)" if r["capped"] else ""), f"{r['cold_start_s']:.2f}",
             f"{r['ttft_ms']:.0f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", _rate(r["decode_tokens_per_s"]),
             f"{r['rss_mib']:.0f}", "yes" if r["fits"] else "NO", f"{r['cost_per_million_x86_64']:.2f}",
             f"{r['cost_per_million_arm64']:.2f}"] for r in result["sizes"]]


def _value(goal: dict) -> str:
    return "not measured" if goal["value"] is None else f"{goal['value']:g} {goal['unit']}"


def _image_line(result: dict) -> str:
    image = result["image"]
    return (f"Image contents: {image['total_mb']:.0f} MB (site-packages {image['site_packages_mb']:.0f} MB + bundle "
            f"{image['bundle_mb']:.1f} MB)"
            + (f"; transformers + torch handler {image['torch_total_mb']:.0f} MB" if "torch_total_mb" in image else ""))


def terminal(result: dict) -> str:
    """The plain-text summary printed at the end of a run."""
    s = result["settings"]
    lines = [f"modelfn bench {result['model']} ({result['task']}, {result['bundle']['quantization']}, "
             f"{result['bundle']['size_mb']:.1f} MB bundle, {result['machine']['cpus']} CPUs)", "",
             "Cold start (process start -> first generated token, median):"]
    lines += _plain(COLD_HEADER, _cold_rows(result))
    lines += ["", f"Warm, batch 1 (each way in processes of its own, in round-robin turns; answers of "
                  f"{s['new_tokens']} tokens):"]
    lines += _plain(GEN_HEADER, _gen_rows(result))
    if result["sizes"]:
        lines += ["", f"Lambda sizes (a request = a chat answer of {s['new_tokens']} tokens; {result['sizing_method']}):"]
        lines += _plain(SIZE_HEADER, _size_rows(result))
    lines += ["", _image_line(result)]
    lines += [line for line in (_choice_line(result),) if line]
    lines += ["", "Goals:"] + [f"  [{'met' if g['met'] else 'NOT met'}] {g['goal']}: {_value(g)}"
                                for g in result["goals"]]
    lines += [f"Note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def markdown(result: dict, charts: list[Path], out: Path, charts_note: str | None = None) -> str:
    """The markdown report of a text-generation model (bench/RESULTS-NAME.md by default)."""
    m, s = result["machine"], result["settings"]
    lines = [f"# `modelfn bench {result['model']}` ({result['task']})", "",
             f"Reproduce: `{result['command']}`", "",
             f"Bundle `{result['bundle']['quantization']}`, {result['bundle']['size_mb']:.1f} MB. Machine: {m['cpus']} "
             f"usable CPUs, {m['machine']}, Python {m['python']}, load average {m['load_average'][0]:.1f} at the end "
             "(a shared machine: read the ratios measured side by side, not absolute times). Prompts: a short chat "
             f"question ({result['prompt_tokens']['short']} tokens) and a ~512-token one "
             f"({result['prompt_tokens']['long']} tokens), greedy, batch 1. Handler and floor threads: "
             f"{s.get('threads') or 'every usable CPU (the runtime default)'}. Cold starts: {s['cold_reps']} fresh "
             f"interpreters per way (transformers {min(s['torch_reps'], s['cold_reps'])}), round-robin; warm: "
             f"{s['reps']} rounds per way, each way in a process of its own (as a function's process holds one "
             f"model), in turns of a fresh process taken round-robin.", "", "## Goals", ""]
    lines += [f"- {'met' if g['met'] else '**NOT met**'}: {g['goal']} ({_value(g)})" for g in result["goals"]]
    lines += ["", "## Cold start: process start to the first generated token (median)", ""]
    lines += _table(COLD_HEADER, _cold_rows(result), "lrrrrrrrr")
    lines += ["", "Phases: interpreter start, imports (numpy, onnxruntime-genai, tokenizers, jinja2 and modelfn's "
                  "runtime modules; torch + transformers for transformers), model load (for modelfn `import "
                  "functions.handler`: model, tokenizer, chat template), first token (a one-token chat answer).", "",
              "## Warm: time to first token and decode speed (batch 1)", ""]
    lines += _table(GEN_HEADER, _gen_rows(result), "llrrrrrrr")
    lines += ["", "Time to first token: a request for one new token (prefill and the first step). Decode tok/s: "
                  f"(n - 1) / (time of an n-token answer - time to first token), n = {s['new_tokens']}, median over "
                  "rounds. The floor and transformers are held to exactly n tokens; the handler answers like a "
                  "client would see it and may end its turn earlier (the 'new tokens' column)."]
    if result["sizes"]:
        lines += ["", "## Lambda memory sizes", "",
                  f"A request is a chat answer of {s['new_tokens']} tokens to the short question. Method: "
                  f"{result['sizing_method']}. Each size runs in {result['sizes'][0]['rounds']} fresh processes, "
                  "round-robin across the sizes. Cost per million requests: request fee + billed duration of the "
                  f"answer + init billed on {s['cold_rate']:.0%} of requests; arm64 priced on the x86_64 durations "
                  "measured here.", ""]
        lines += _table(SIZE_HEADER, _size_rows(result), "lrrrrrrrlrr")
        lines += [line for line in ("", _choice_line(result)) if line is not None]
    image = result["image"]
    lines += ["", "## Sizes", "", f"- Bundle: {result['bundle']['size_mb']:.1f} MB.",
              f"- {_image_line(result)}. Largest: " + ", ".join(f"{p} {mb} MB" for p, mb in image["largest"]) + ".",
              f"- Peak RSS of the handler's warm processes: {result['peak_rss_mib_warm']:.0f} MiB.",
              f"- Method: {image['method']}."]
    lines += ["", "## Charts", ""]
    if charts:
        lines += [f"![{Path(r).stem}]({r})" for r in (os.path.relpath(p, out.parent) for p in charts)]
    else:
        lines.append(charts_note or "No charts written.")
    lines += ["", f"## Prices (us-east-1, read {result['prices_read']})", ""]
    lines += _table(["item", "USD", "unit", "source"],
                    [[k, f"{v['value']:.10g}", v["unit"], v["source"]] for k, v in result["prices"].items()], "lrll")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"

"""Render a bench result: the terminal table, and bench/RESULTS.md (tables, charts, the command)."""

from __future__ import annotations

import os
from pathlib import Path

WAY_NAMES = {
    "modelfn": "modelfn `handler` (bundle, API Gateway event in, response out)",
    "floor": "floor: bare onnxruntime + tokenizers, same model.onnx",
    "fp32 onnx": "fp32 ONNX: bare onnxruntime + tokenizers",
    "torch": "transformers + torch fp32 (AutoModel / AutoModelFor*, eager)",
}
CASES = (("b1 short", "1, short"), ("b1 long", "1, 256 tokens"), ("b8 short", "8, short"), ("b8 long", "8, 256 tokens"))


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _cold_rows(result: dict) -> list[list[str]]:
    cold, base = result["cold_start"], result["cold_start"].get("floor")
    rows = []
    for way, c in cold.items():
        rows.append([WAY_NAMES.get(way, way), f"{c['total_s']:.3f}", f"{c['interpreter_s']:.3f}", f"{c['import_s']:.3f}",
                     f"{c['load_s']:.3f}", f"{c['first_s'] * 1000:.1f}", f"{c['rss_mib']:.0f}",
                     f"{c['total_s'] / base['total_s']:.2f}x" if base else "-", str(c["n"])])
    return rows


def _warm_rows(result: dict) -> list[list[str]]:
    warm = result["warm"]
    torch = warm.get("torch")
    rows = []
    for way, cases in warm.items():
        for case, label in CASES:
            s = cases[case]
            vs = f"{torch[case]['p50_ms'] / s['p50_ms']:.1f}x" if torch else "-"
            rows.append([WAY_NAMES.get(way, way), label, f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", vs, str(s["n"])])
    return rows


def _size_rows(result: dict) -> list[list[str]]:
    choice = (result.get("emulated_choice") or result.get("choice") or {}).get("memory_mb")
    rows = []
    for r in result["sizes"]:
        mark = " (chosen)" if r["memory_mb"] == choice else ""
        rows.append([f"{r['memory_mb']}{mark}", f"{r['vcpus']:.2f}" + (" (capped)" if r["capped"] else ""),
                     f"{r['cold_start_s']:.2f}", f"{r['p50_ms']:.2f}", f"{r['b1 short']['mean_ms']:.2f}",
                     f"{r['p99_ms']:.2f}",
                     f"{r['b1 long']['p50_ms']:.1f}", f"{r['rss_mib']:.0f}", "yes" if r["fits"] else "NO",
                     f"{r['cost_per_million_x86_64']:.3f}", f"{r['cost_per_million_arm64']:.3f}"])
    return rows


COLD_HEADER = ["runtime", "total s", "interpreter s", "imports s", "model load s", "first answer ms", "peak RSS MiB",
               "vs floor", "n"]
WARM_HEADER = ["runtime", "batch, text", "p50 ms", "p99 ms", "torch p50 / this p50", "n"]
SIZE_HEADER = ["memory MB", "vCPU", "cold start s", "p50 ms", "mean ms", "p99 ms", "p50 256 tok ms", "peak RSS MiB", "fits",
               "USD/M x86_64", "USD/M arm64"]


IMAGE_COLD_HEADER = ["how", "total s", "engine create + start s", "init s (RIE)", "imports s", "model load s",
                     "first answer ms", "peak RSS MiB", "vs in-process handler", "n"]
IMAGE_WARM_HEADER = ["where", "batch, text", "p50 ms", "p99 ms", "n"]
IMAGE_SIZE_HEADER = ["memory MB", "--cpus", "cold start s", "init s", "p50 ms", "mean ms", "p99 ms", "p50 256 tok ms",
                     "8 x 256 tok ms", "peak RSS MiB", "fits", "USD/M x86_64", "in-process p99 ms"]


def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _image_blocks(result: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """The built image's tables: (title, header, rows, alignment) each."""
    built = result.get("built_image")
    if not built:
        return []
    # The in-process twin measured between the image runs, under the same load, when there is one.
    twin = built.get("host")
    handler = twin["cold_start"] if twin else result["cold_start"]["modelfn"]
    where = "in-process handler, a fresh process between the image runs" if twin else \
        "in-process handler (the cold start table above)"
    rie, split = built["cold_start"], built["cold_split"]
    cold = [["function image, invoked through its RIE", f"{rie['total_s']:.3f}", f"{rie['engine_s']:.3f}",
             f"{rie['init_s']:.3f}", "-", "-", f"{rie['first_s'] * 1000:.1f}", _f(rie.get("rss_mib"), ".0f"),
             f"{rie['total_s'] / handler['total_s']:.2f}x", str(rie["n"])],
            ["same image, probe.py as the container's command", f"{split['total_s']:.3f}",
             f"{split['interpreter_s']:.3f} (with interpreter)", "-", f"{split['import_s']:.3f}", f"{split['load_s']:.3f}",
             f"{split['first_s'] * 1000:.1f}", f"{split['rss_mib']:.0f}",
             f"{split['total_s'] / handler['total_s']:.2f}x", str(split["n"])],
            [where, f"{handler['total_s']:.3f}",
             f"{handler['interpreter_s']:.3f} (interpreter)", "-", f"{handler['import_s']:.3f}",
             f"{handler['load_s']:.3f}", f"{handler['first_s'] * 1000:.1f}",
             f"{result['cold_start']['modelfn']['rss_mib']:.0f}", "1.00x",
             str(handler["n"])]]
    in_process = twin["warm"]["b1 short"] if twin else result["warm"]["modelfn"]["b1 short"]
    warm = [["function image, through its RIE (HTTP on this host)", "1, short", f"{c['p50_ms']:.2f}",
             f"{c['p99_ms']:.2f}", str(c["n"])] for c in [built["warm"]["b1 short"]]]
    warm.append([where.replace(" (the cold start table above)", " (the warm table above)"), "1, short", f"{in_process['p50_ms']:.2f}", f"{in_process['p99_ms']:.2f}",
                 str(in_process["n"])])
    emulated = {r["memory_mb"]: r for r in result["sizes"]}
    sizes = []
    for r in built["sizes"]:
        long, batch = r.get("b1 long") or {}, r.get("b8 long") or {}
        other = emulated.get(r["memory_mb"])
        sizes.append([str(r["memory_mb"]), f"{r['vcpus']:.2f}" + (" (capped)" if r["capped"] else ""),
                      _f(r["cold_start_s"], ".2f"), _f(r["init_s"], ".2f"), _f(r.get("p50_ms"), ".2f"),
                      _f((r.get("b1 short") or {}).get("mean_ms"), ".2f"), _f(r.get("p99_ms"), ".2f"),
                      _f(long.get("p50_ms"), ".1f"), _f(batch.get("p50_ms"), ".0f"), _f(r.get("rss_mib"), ".0f"),
                      "yes" if r["fits"] else f"NO: {r['failed']}", _f(r.get("cost_per_million_x86_64"), ".3f"),
                      _f(other and other["p99_ms"], ".2f")])
    blocks = [("Cold start in the image (median)", IMAGE_COLD_HEADER, cold, "lrrrrrrrrr"),
              ("Warm latency in the image", IMAGE_WARM_HEADER, warm, "llrrr")]
    if sizes:
        blocks.append(("Lambda sizes in the image (engine limits)", IMAGE_SIZE_HEADER, sizes, "lrrrrrrrrrlrr"))
    return blocks


def _image_facts(result: dict) -> list[str]:
    built = result["built_image"]
    image, enforced = built["image"], built["limits_enforced"]
    how = "reused" if image["reused"] else f"built in {image['build_s']:.0f} s"
    took = f" The image part of the run took {built['wall_s']:.0f} s." if "wall_s" in built else ""
    facts = [f"Image `{image['tag']}` ({image['size_mb']:.0f} MB, FROM `{image['base_image']}`, Python "
             f"{image['python']}; {how}).{took}",
             f"Method: {built['method']}."]
    if enforced is None:
        facts.append("No Lambda sizes were asked for.")
    elif enforced["cpu"] and enforced["memory"]:
        facts.append(f"The engine enforces the limits here: a container run with --cpus=0.5 --memory=1024m sees a CPU "
                     f"quota of {enforced['seen']['cpus']:g} CPU and a memory limit of "
                     f"{enforced['seen']['memory_mb']:.0f} MiB in its cgroup. The runtime sizes its thread pool "
                     "from that quota (functions/settings.available_cpus), as on Lambda.")
    else:
        facts.append(f"The engine does NOT enforce --cpus/--memory here ({enforced}); the Lambda sizes are "
                     "the in-process emulation above only.")
    if built.get("choice"):
        facts.append(_choice_line(result, built["choice"]))
    return facts


def _choice_line(result: dict, choice: dict | None = None) -> str | None:
    """One size choice (default: the recommended one) in a sentence; the recommended one, which
    is the built image's where it ran the sizes (run.size_choices), also gives the models.yaml line."""
    recommended = result.get("choice")
    choice = choice or recommended
    if not choice:
        return None
    where = ("in the built image, under the engine's limits" if choice.get("measured_in") == "built image"
             else "with the emulated CPU share")
    if choice["memory_mb"] is None:
        return f"No measured size meets p99 <= {choice['p99_ms_goal']:g} ms {where} with its peak RSS in memory."
    line = (f"Cheapest size meeting p99 <= {choice['p99_ms_goal']:g} ms {where}: {choice['memory_mb']} MB "
            f"(p99 {choice['p99_ms']:.2f} ms, ${choice['cost_per_million']:.3f} per million, x86_64).")
    if choice is recommended:
        line += f" In models.yaml, under `- name: {result['model']}`: `memory_mb: {choice['memory_mb']}`"
    return line


def _gpu_line(result: dict) -> str | None:
    gpu = result.get("gpu")
    if not gpu:
        return None
    if not gpu.get("hourly_usd"):
        return gpu["note"]
    cheaper = {mb: r for mb, r in gpu["gpu_cheaper_above"].items() if r}
    measured = "GPU" if gpu["on_gpu"] else "CPU provider: no GPU was measured, so the capacity is a CPU figure"
    head = (f"An always-on {gpu['instance_type']} costs ${gpu['hourly_usd']}/h (at least {gpu['min_instances']}); "
            f"one serves {gpu['capacity_rps'] or '?'} req/s ({gpu['source']}, {measured})")
    if gpu.get("usd_per_million_at_capacity"):
        head += f", ${gpu['usd_per_million_at_capacity']:.2f} per million requests when fully busy"
    if not cheaper:
        return head + ". It is not cheaper than any measured Lambda size at any volume from 10k to 100G requests/month."
    where = "; ".join(f"{mb} MB above {_count(r)}" for mb, r in cheaper.items())
    others = [mb for mb, r in gpu["gpu_cheaper_above"].items() if not r]
    return (head + f". It becomes cheaper than Lambda above these requests per month: {where}"
            + (f"; never for {', '.join(others)} MB" if others else "") + ".")


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def terminal(result: dict) -> str:
    """The plain-text summary printed at the end of a run."""
    lines = [f"modelfn bench {result['model']} ({result['bundle']['quantization']}, "
             f"{result['bundle']['size_mb']:.1f} MB bundle, {result['machine']['cpus']} CPUs)", "",
             "Cold start (process start -> first answer, median):"]
    lines += _plain(COLD_HEADER, _cold_rows(result))
    lines += ["", "Warm latency (each way in its own process, turns round-robin):"]
    lines += _plain(WARM_HEADER, _warm_rows(result))
    lines += ["", f"Lambda sizes ({result['sizing_method']}):"]
    lines += _plain(SIZE_HEADER, _size_rows(result))
    image = result["image"]
    lines += ["", f"Image contents: {image['total_mb']:.0f} MB (site-packages {image['site_packages_mb']:.0f} MB + "
                  f"bundle {image['bundle_mb']:.1f} MB)"
              + (f"; torch handler {image['torch_total_mb']:.0f} MB" if "torch_total_mb" in image else "")]
    lines += [line for line in (_choice_line(result, result.get("emulated_choice")), _gpu_line(result)) if line]
    for title, header, rows, _ in _image_blocks(result):
        lines += ["", f"{title}:"] + _plain(header, rows)
    if result.get("built_image"):
        lines += _image_facts(result)
    lines += ["", "Goals:"] + [f"  [{'met' if g['met'] else 'NOT met'}] {g['goal']}: {g['value']:g} {g['unit']}"
                                for g in result["goals"]]
    lines += [f"Note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def _plain(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return ["  " + fmt.format(*header)] + ["  " + fmt.format(*r) for r in rows]


def markdown(result: dict, charts: list[Path], out: Path, charts_note: str | None = None) -> str:
    """bench/RESULTS.md: every table, the charts (paths relative to ``out``), prices and the command."""
    m, s = result["machine"], result["settings"]
    lines = [f"# `modelfn bench {result['model']}`", "",
             f"Reproduce: `{result['command']}`", "",
             f"Bundle `{result['bundle']['quantization']}`, {result['bundle']['size_mb']:.1f} MB ({result['task']}). "
             f"Machine: {m['cpus']} usable CPUs, {m['machine']}, Python {m['python']}, load average "
             f"{m['load_average'][0]:.1f} at the end (a shared machine: ratios measured side by side are the figures "
             f"to read, not absolute times). Cold starts: {s['cold_reps']} fresh interpreters per way "
             f"(torch {min(s['torch_reps'], s['cold_reps'])}), round-robin; warm: {s['reps']} rounds per way, each "
             "way in a process of its own (as a function's process holds one model), in turns of a fresh process "
             "taken round-robin.", "", "## Goals", ""]
    lines += [f"- {'met' if g['met'] else '**NOT met**'}: {g['goal']} ({g['value']:g} {g['unit']})" for g in result["goals"]]
    lines += ["", "## Cold start: process start to first answer (median)", ""]
    lines += _table(COLD_HEADER, _cold_rows(result), "lrrrrrrrr")
    lines += ["", "Phases: interpreter start (spawn to the child's first line), imports (numpy, onnxruntime, tokenizers "
                  "and modelfn's runtime modules; torch + transformers for torch), model load (session + tokenizer: for "
                  "modelfn `import functions.handler`), first answer.", "",
              "## Warm latency (batch 1 and 8, short and 256-token texts)", ""]
    lines += _table(WARM_HEADER, _warm_rows(result), "llrrrr")
    lines += ["", "## Lambda memory sizes", "", f"Method: {result['sizing_method']}. Each size runs in "
              f"{result['sizes'][0]['rounds'] if result['sizes'] else 0} fresh processes, taken round-robin across the "
              "sizes: cold start (median), then batch-1 requests (short; 256 tokens every third), then one batch of 8 "
              "256-token texts, whose peak RSS (largest) decides `fits`. Requests run back to back, so a throttled "
              "size uses up its quota and waits for the next period: that shows in the mean (which the cost uses) "
              "and the p99, while the p50 can be the unthrottled speed. Cost per million requests: request fee + billed "
              "duration (each request rounded up to 1 ms, short text, batch 1) + init billed on "
              f"{s['cold_rate']:.0%} of requests. arm64 is priced on the x86_64 durations measured here.", ""]
    lines += _table(SIZE_HEADER, _size_rows(result), "lrrrrrrrlrr")
    lines += [line for line in ("", _choice_line(result, result.get("emulated_choice"))) if line is not None]
    if result.get("built_image"):
        lines += ["", "## In the built image", ""] + _image_facts(result)
        for title, header, rows, align in _image_blocks(result):
            lines += ["", f"### {title}", ""] + _table(header, rows, align)
        lines += ["", "Phases: engine create + start (the engine's API calls until the container runs), init (the RIE's "
                      "INIT REPORT: the runtime's interpreter, imports and model load, Lambda's billed Init Duration), "
                      "first answer (the RIE's first INVOKE RTDONE); the total also holds the RIE's start and the HTTP "
                      "round trip. The probe row runs infra/bench/probe.py's cold mode in the same image (mounted "
                      "read-only) to split imports from model load; the init the RIE reports is the figure Lambda bills. Peak RSS: the runtime process's VmHWM read inside "
                      "the container (the cgroup's figure would add the page cache). Each size runs "
                      f"{result['built_image']['sizes'][0]['rounds'] if result['built_image']['sizes'] else 0} fresh "
                      "containers; fits = the runtime was not killed, up to one batch of 8 256-token texts; costs as "
                      "in the emulated table, from these durations and inits."]
    image = result["image"]
    lines += ["", "## Sizes", "",
              f"- Bundle: {result['bundle']['size_mb']:.1f} MB.",
              f"- Image contents: {image['total_mb']:.0f} MB = site-packages {image['site_packages_mb']:.0f} MB + "
              f"bundle {image['bundle_mb']:.1f} MB. Largest: "
              + ", ".join(f"{p} {mb} MB" for p, mb in image["largest"]) + "."]
    if "torch_total_mb" in image:
        lines.append(f"- torch handler: {image['torch_total_mb']:.0f} MB = site-packages "
                     f"{image['torch_site_packages_mb']:.0f} MB + model {image['torch_model_mb']:.0f} MB. Largest: "
                     + ", ".join(f"{p} {mb} MB" for p, mb in image["torch_largest"]) + ".")
    lines += [f"- Method: {image['method']}."]
    gpu_line = _gpu_line(result)
    if gpu_line:
        lines += ["", "## Lambda or GPU", "", gpu_line]
    lines += ["", "## Charts", ""]
    if charts:
        rel = [os.path.relpath(p, out.parent) for p in charts]
        lines += [f"![{Path(r).stem}]({r})" for r in rel]
    else:
        lines.append(charts_note or "No charts written.")
    lines += ["", f"## Prices (us-east-1, read {result['prices_read']})", ""]
    lines += _table(["item", "USD", "unit", "source"],
                    [[k, f"{v['value']:.10g}", v["unit"], v["source"]] for k, v in result["prices"].items()], "lrll")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"

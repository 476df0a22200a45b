"""`modelfn bench` for a text-generation model: cold start to the first token, time to first token
and decode tokens/s warm (a short question and a ~512-token one, batch 1), peak RSS, sizes, and the
cost per million chat answers per Lambda size, side by side with transformers fp32 ``generate`` and
the floor (bare onnxruntime-genai + tokenizers) in the same run. The children are
infra/bench/genprobe.py; the result dict (report: genreport.py) is the --json schema:

    schema, model, task, command, bundle {path, quantization, size_mb}, machine, settings,
    prompt_tokens {short, long},
    cold_start {way: {interpreter_s, import_s, load_s, first_s, total_s, rss_mib, n}},
    generation {way: {short|long: {ttft_ms {p50_ms, p99_ms, mean_ms, n}, answer_ms, decode_tokens_per_s, tokens, n}}},
    peak_rss_mib_warm, sizes [{memory_mb, vcpus, cpus, capped, rounds, init_s, cold_start_s, rss_mib, ttft_ms,
    decode_tokens_per_s, answer_tokens, answer {p50_ms, ...}, p50_ms, p99_ms, fits, cost_per_million_x86_64,
    cost_per_million_arm64}], sizing_method, image, prices, prices_read, notes, choice (with --p99-ms), gpu, goals

ways: "modelfn" (the handler), "floor", "torch"; a decode rate is None when an answer was no slower
than its first token (noise on a tiny model).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path

from functions.errors import ConfigError, ModelfnError

from . import cost, measure, sizing
from .measure import Way

SCHEMA_VERSION = 1
NEW_TOKENS = 64  # one request = a chat answer of this many tokens (the cost's unit)
LONG_PROMPT_TOKENS = 512
SHORT_QUESTION = "Write a long story about a lighthouse keeper and the sea."
# Repeated to LONG_PROMPT_TOKENS: a document to answer about, as a retrieval-augmented request would be.
_PARAGRAPH = ("A serverless function starts when a request arrives and no warm copy is waiting. It loads "
              "its runtime, reads its model from the image, and answers; later requests reuse the same "
              "process until it has been idle for a while. ")
LONG_ASK = "\n\nSummarize the text above in a long paragraph."
GOAL_SPEEDUP, GOAL_BUNDLE_MB = 5.0, 120.0


def prompts(bundle: Path, manifest, new_tokens: int) -> tuple[dict, dict, dict]:
    """(questions, rendered prompts, prompt token counts) for the short and long cases: the handler gets
    the question, the floor and torch the same text rendered with the bundle's chat template. The long
    prompt is LONG_PROMPT_TOKENS, or what the context window leaves beside ``new_tokens``."""
    from tokenizers import Tokenizer

    from functions.generation.chat import ChatTemplate
    from functions.manifest import CHAT_TEMPLATE_FILE

    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    runtime = manifest.runtime
    if not runtime.chat_template:
        raise ConfigError(f"{bundle} has no chat template; modelfn bench sends chat requests")
    eos = sorted(runtime.eos_token_ids)
    template = ChatTemplate((bundle / (runtime.chat_template or CHAT_TEMPLATE_FILE)).read_text(encoding="utf-8"),
                            bos_token=tokenizer.id_to_token(runtime.bos_token_id) or ""
                            if runtime.bos_token_id is not None else "",
                            eos_token=tokenizer.id_to_token(eos[0]) or "" if eos else "")

    def render(question: str) -> str:
        return template.render([{"role": "user", "content": question}])

    def count(question: str) -> int:
        return len(tokenizer.encode(render(question), add_special_tokens=False).ids)

    window = runtime.context_length or LONG_PROMPT_TOKENS + new_tokens
    longest = min(LONG_PROMPT_TOKENS, window - new_tokens)
    if count(SHORT_QUESTION) > longest:
        raise ConfigError(f"the context window of {window} tokens has no room for a {count(SHORT_QUESTION)}-token "
                          f"prompt and {new_tokens} new tokens", hint="lower --new-tokens")
    long_question, body = LONG_ASK, ""
    while count(body + _PARAGRAPH + LONG_ASK) <= longest:
        body += _PARAGRAPH
        long_question = body + LONG_ASK
    questions = {"short": SHORT_QUESTION, "long": long_question}
    return questions, {k: render(q) for k, q in questions.items()}, {k: count(q) for k, q in questions.items()}


def torch_source(spec) -> Path:
    """The Hugging Face directory transformers loads: a GGUF source's cached conversion (what export
    read), else the source directory."""
    from export.generation.source import inspect_generation_source

    return inspect_generation_source(spec.source, context_length=spec.context_length or None).path


def _ttft_decode(rounds: list[dict]) -> dict:
    """Median time to first token, answer time and decode rate of a list of genprobe rounds."""
    rates = [r["decode_tokens_per_s"] for r in rounds if r["decode_tokens_per_s"]]
    ttft = [r["ttft_ms"] for r in rounds]
    return {"ttft_ms": measure.summary(ttft), "answer_ms": statistics.median(r["answer_ms"] for r in rounds),
            "decode_tokens_per_s": statistics.median(rates) if rates else None,
            "tokens": min(r["tokens"] for r in rounds), "n": len(rounds)}


def _goals(result: dict) -> list[dict]:
    """Issue 12's goals for smollm, from this run's figures."""
    goals = []

    def goal(text, value, ok, unit="x"):
        goals.append({"goal": text, "value": None if value is None else round(value, 3), "unit": unit,
                      "met": bool(ok)})

    gen, cold = result["generation"], result["cold_start"]
    if "torch" in gen:
        for case in ("short", "long"):
            ours, theirs = gen["modelfn"][case]["decode_tokens_per_s"], gen["torch"][case]["decode_tokens_per_s"]
            ratio = ours / theirs if ours and theirs else None  # None: an answer no slower than its first token
            goal(f"decode tokens/s ({case} prompt) >= {GOAL_SPEEDUP:g}x transformers fp32", ratio,
                 ratio is not None and ratio >= GOAL_SPEEDUP)
    if "torch" in cold:
        r = cold["torch"]["total_s"] / cold["modelfn"]["total_s"]
        goal(f"cold start to first token >= {GOAL_SPEEDUP:g}x faster than transformers", r, r >= GOAL_SPEEDUP)
    size = result["bundle"]["size_mb"]
    goal(f"bundle <= {GOAL_BUNDLE_MB:g} MB", size, size <= GOAL_BUNDLE_MB, "MB")
    return goals


def measure_generation(spec, manifest, bundle: Path, options, progress: Callable[[str], None]) -> dict:
    """Measure a text-generation bundle and its baselines; the result dict of the --json output."""
    from functions.settings import available_cpus

    notes: list[str] = []
    new_tokens = options.new_tokens
    handler_env = {"MODELFN_BUNDLE_DIR": str(bundle), "MODELFN_MODEL_NAME": spec.name,
                   "MODELFN_MAX_TOKENS": str(max(spec.max_tokens, new_tokens)),
                   "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   **({"MODELFN_THREADS": str(options.threads)} if options.threads else {})}
    questions, rendered, prompt_tokens = prompts(bundle, manifest, new_tokens)
    ways = [Way("modelfn", {"kind": "handler", "name": spec.name}, handler_env)]
    if options.baselines:
        ways.append(Way("floor", {"kind": "floor", "bundle": str(bundle)},
                        {"MODELFN_THREADS": str(options.threads)} if options.threads else {}))
        try:
            ways.append(Way("torch", {"kind": "torch", "source": str(torch_source(spec))}, {}))
        except ModelfnError as exc:  # a source transformers cannot read (ConfigError, SourceError)
            notes.append(f"transformers baseline skipped: {exc}")
    else:
        notes.append("baselines skipped (--no-baselines)")
    config = {"questions": questions, "rendered": rendered}
    progress(f"modelfn bench {spec.name}: bundle {bundle} ({manifest.quantization.chosen}), {available_cpus()} usable "
             f"CPUs; ways: {', '.join(w.label for w in ways)}; prompts {prompt_tokens['short']} and "
             f"{prompt_tokens['long']} tokens, answers of {new_tokens} tokens")
    cold = measure.cold_starts(ways, options.cold_reps, torch_reps=min(options.torch_reps, options.cold_reps),
                               progress=progress, mode="gencold", config=config)
    progress(f"warm generation: {len(ways)} ways x {options.reps} rounds x 2 prompts, each way in a process of its own")
    samples, torch_threads, warm_rss = measure.in_turns(
        ways, options.reps, mode="genwarm", config={**config, "cases": ["short", "long"], "new_tokens": new_tokens},
        env=handler_env, progress=progress, what="warm generation")
    generation = {label: {case: _ttft_decode(rounds) for case, rounds in cases.items()}
                  for label, cases in samples.items()}
    if torch_threads:
        notes.append(f"transformers ran at its fastest thread count on this machine: {torch_threads} "
                     "(1 or all usable CPUs, picked by a short trial in its process)")
    short_tokens = generation["modelfn"]["short"]["tokens"]
    if short_tokens < new_tokens:
        notes.append(f"the handler's answer to the short question ended at {short_tokens} tokens (end of turn), "
                     f"before {new_tokens}: its decode rate is over those tokens")
    rows = _size_rows(ways[0], options, config, new_tokens, progress) if options.sizes else []
    bundle_mb = sizing.directory_mb(bundle)
    progress("sizing the image contents")
    image = sizing.image_contents(spec.task, spec.architecture, bundle_mb)
    if len(ways) > 2:
        source = Path(ways[2].config["source"])
        image["torch_model_mb"] = sizing.directory_mb(source)
        image["torch_total_mb"] = image["torch_site_packages_mb"] + image["torch_model_mb"]
    result = {
        "schema": SCHEMA_VERSION, "model": spec.name, "task": spec.task, "command": options.command,
        "bundle": {"path": str(bundle), "quantization": manifest.quantization.chosen, "size_mb": bundle_mb},
        "machine": measure.machine_facts(),
        "settings": {"reps": options.reps, "cold_reps": options.cold_reps, "torch_reps": options.torch_reps,
                     "size_reps": options.size_reps, "cold_rate": options.cold_rate, "sizes": options.sizes,
                     "new_tokens": new_tokens, "threads": options.threads},
        "prompt_tokens": prompt_tokens, "cold_start": cold, "generation": generation,
        "peak_rss_mib_warm": warm_rss["modelfn"], "sizes": rows, "sizing_method": sizing.METHOD, "image": image,
        **cost.price_facts(), "notes": notes,
    }
    if options.p99_ms is not None:
        result["choice"] = cost.choice_facts(rows, options.p99_ms)
    result["gpu"] = None
    result["goals"] = _goals(result)
    return result


def _size_rows(handler: Way, options, config: dict, new_tokens: int, progress: Callable[[str], None]) -> list[dict]:
    """Per Lambda size: cold start to the first token, time to first token, the chat answer's duration
    (p50, p99: what ``--p99-ms`` and the cost use), decode rate, peak RSS and cost per million answers."""
    rounds = 3
    runs = sizing.run_sizes(handler, options.sizes, rounds, "gensize",
                            {**config, "new_tokens": new_tokens, "reps": max(1, -(-options.size_reps // rounds))},
                            progress=progress)
    rows = []
    for memory_mb in options.sizes:
        share = sizing.cpu_share(memory_mb, len(os.sched_getaffinity(0)))
        results = runs[memory_mb]
        answers = [r for _, result in results for r in result["rounds"]]
        durations = [r["answer_ms"] for r in answers]
        summary = _ttft_decode(answers)
        init_s = statistics.median(r["t_load"] - spawn for spawn, r in results)
        row = {"memory_mb": memory_mb, "vcpus": round(share.vcpus, 3), "cpus": share.cpus, "capped": share.capped,
               "rounds": len(results), "init_s": init_s,
               "cold_start_s": statistics.median(r["t_first"] - spawn for spawn, r in results),
               "rss_mib": max(r["rss_mib"] for _, r in results),
               "ttft_ms": summary["ttft_ms"]["p50_ms"], "decode_tokens_per_s": summary["decode_tokens_per_s"],
               "answer_tokens": summary["tokens"], "answer": measure.summary(durations)}
        row["p50_ms"], row["p99_ms"] = row["answer"]["p50_ms"], row["answer"]["p99_ms"]
        row["fits"] = row["rss_mib"] <= memory_mb
        for arch in ("x86_64", "arm64"):
            row[f"cost_per_million_{arch}"] = cost.cost_per_million(memory_mb, durations, init_s * 1000,
                                                                    architecture=arch, cold_rate=options.cold_rate)
        rows.append(row)
    return rows


__all__ = ["NEW_TOKENS", "SCHEMA_VERSION", "measure_generation", "prompts", "torch_source"]

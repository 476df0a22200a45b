"""export_generation: a decoder-only Hugging Face model (or GGUF) in, a parity-gated onnxruntime-genai bundle out.

Steps: load (resolve the source, converting a GGUF once; read eos, context and chat template;
gather prompts), export (the builder's fp32 model), quantize (every other recipe of the target's
preset), validate (the PyTorch reference, each candidate's gate metrics and speed), write (the
chosen candidate's files staged beside ``out``, then one rename, as for encoder bundles).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from functions.manifest import Candidate, Manifest, Parity, Quantization
from ..choices import GENERATION_THRESHOLDS
from functions.tasknames import TEXT_GENERATION

from ..errors import ConversionError, ExportError
from ..progress import Progress, Tracker
from ..search import choose, host_architecture, parse_strategy
from . import bundle, candidates, measure, parity
from .prompts import Prompt, builtin_prompts, encode, load_eval_file
from .source import _special_strings, inspect_generation_source

QUANTIZATIONS = ("int4", "fp16", "none")
DEFAULT_QUANTIZATION = {"lambda": "int4", "gpu": "fp16"}
# Lambda pays for bundle bytes at every cold start (S3 pull, page-in) while decode speed of the
# int4 variants is close; so on Lambda the smallest passing candidate is the default.
DEFAULT_STRATEGY = {"lambda": "smallest-passing", "gpu": "fastest-passing"}
MAX_NEW_TOKENS = 32  # reference continuation length per prompt


def gate_thresholds(thresholds: dict[str, float] | None) -> dict[str, float]:
    """The generation gate's thresholds: defaults from export/choices.py, overridden per metric."""
    merged = dict(GENERATION_THRESHOLDS)
    for metric, value in (thresholds or {}).items():
        if metric not in GENERATION_THRESHOLDS:
            raise ExportError(f"unknown text-generation parity metric {metric!r}",
                              hint="known: " + ", ".join(GENERATION_THRESHOLDS))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ExportError(f"parity threshold {metric} must be a non-negative number, got {value!r}")
        merged[metric] = float(value)
    return merged


def export_generation(source: str | Path, out: str | Path, *, name: str | None = None, target: str = "lambda",
                      architecture: str = "x86_64", quantization: str | None = None,
                      thresholds: dict[str, float] | None = None, eval_file: str | Path | None = None,
                      allow_drift: bool = False, strategy: str | None = None, progress: Progress | None = None,
                      overwrite: bool = False, threads: int = 2, context_length: int | None = None,
                      max_new_tokens: int = MAX_NEW_TOKENS, speed_budget_s: float = 60.0) -> Manifest:
    """Export ``source`` as a text-generation bundle into ``out`` and return its manifest.

    Raises an ExportError subclass (one line) on bad input and ParityGateError (exit 3, with the
    candidate table) when the chosen candidate fails the gate and ``allow_drift`` is off.
    """
    from ..exporter import _check_choice, _check_output, enforce_gate, tool_versions, write_bundle

    quantization = quantization or DEFAULT_QUANTIZATION[target]
    _check_choice(f"quantization for {TEXT_GENERATION}", quantization, QUANTIZATIONS)
    if quantization == "fp16" and target != "gpu":
        raise ExportError("fp16 is for the gpu target", hint="use int4 or none on lambda")
    strategy = parse_strategy(strategy or DEFAULT_STRATEGY[target])
    gate = gate_thresholds(thresholds)
    out = Path(out).expanduser().absolute()
    _check_output(out, overwrite)
    names = candidates.preset(quantization, target)
    if strategy.startswith("fixed:") and strategy[6:] not in names:
        names += (strategy[6:],)  # a fixed choice outside the preset is built too, and still gated
    candidates.check_names(names)
    tracker = Tracker(progress)

    with tracker.step("load", str(source)):
        src = inspect_generation_source(source, context_length=context_length)
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(src.path / "tokenizer.json"))
        tokenizer_config = (json.loads((src.path / "tokenizer_config.json").read_text(encoding="utf-8"))
                            if (src.path / "tokenizer_config.json").is_file() else {})
        prompts: list[Prompt] = builtin_prompts(bool(src.chat_template))
        if eval_file is not None:
            prompts += load_eval_file(eval_file, bool(src.chat_template))
        special = _special_strings(tokenizer_config)
        prompt_ids = [encode(tokenizer, p, src.chat_template, special) for p in prompts]
        too_long = max(len(i) for i in prompt_ids) + max_new_tokens
        if too_long > src.runtime.context_length:
            raise ExportError(f"a gate prompt needs {too_long} tokens, over the context length "
                              f"{src.runtime.context_length}", hint="shorten the eval file's prompts")
    with tempfile.TemporaryDirectory(prefix="modelfn-genexport-") as tmp:
        work = Path(tmp)
        built: dict[str, Path | str] = {}
        with tracker.step("export", f"onnxruntime-genai model builder, {src.family} fp32"):
            built[candidates.FP32] = candidates.build(candidates.RECIPES[candidates.FP32], src.path, work / "fp32")
        with tracker.step("quantize", ", ".join(n for n in names if n != candidates.FP32)):
            for n in names:
                if n != candidates.FP32:
                    built[n] = _build(n, src.path, work)
        for path in built.values():
            if isinstance(path, Path):
                bundle.configure_genai(path, src.runtime, threads=threads)
        with tracker.step("validate", f"{len(prompts)} prompts, {max_new_tokens} greedy tokens each vs PyTorch fp32"):
            reference = parity.torch_reference(src.path, prompt_ids, eos_ids=src.runtime.eos_token_ids,
                                               pad_id=src.runtime.pad_token_id, max_new_tokens=max_new_tokens,
                                               threads=threads)
            rows = _validate(built, reference, prompt_ids, threads, max_new_tokens, tracker)
            timed_here = target != "gpu" and architecture == host_architecture()
            runnable = {n: built[n] for n, r in rows.items() if r["metrics"]}
            speed_ids = tokenizer.encode(measure.SPEED_PROMPT).ids
            speeds = measure.measure_speed(runnable, speed_ids, budget_s=speed_budget_s) if runnable else {}
            table = [_candidate(n, built[n], rows[n], speeds.get(n), gate) for n in names]
        choice = choose(table, strategy, requested=quantization, timed_here=timed_here,
                        preference=names[1:] + names[:1])
        chosen = enforce_gate(choice, table, gate, allow_drift, tracker)
        model_dir = built[choice.name]
        with tracker.step("write", str(out)):
            bundle.configure_genai(model_dir, src.runtime)
            files = bundle.bundle_files(model_dir, src.path / "tokenizer.json", src.chat_template, work)
            gated = {k: v for k, v in chosen.metrics.items() if k in ("top1_agreement", "kl_mean", "greedy_match",
                                                                       "greedy_exact")}
            manifest = write_bundle(out, overwrite, files, tracker, dict(
                name=name or out.name, task=TEXT_GENERATION, architecture=architecture, target=target,
                quantization=Quantization(requested=quantization, chosen=choice.name, reason=choice.reason,
                                          strategy=strategy, candidates=tuple(table)),
                parity=Parity(metrics=gated, thresholds=gate, passed=choice.passed, samples=len(prompts),
                              allowed_drift=allow_drift and not choice.passed),
                runtime=src.runtime, tools={**tool_versions(), **_genai_version()}, source=str(src.origin),
            ), graph=(bundle.INPUTS, bundle.OUTPUTS, bundle.opset(model_dir)))
    return manifest


def _build(name: str, hf_dir: Path, work: Path) -> Path | str:
    """A candidate directory, or the one-line reason it could not be built (only fp32 is required)."""
    try:
        return candidates.build(candidates.RECIPES[name], hf_dir, work / name)
    except ConversionError as exc:
        return f"build failed: {exc.message.split(': ', 1)[-1][:120]}"


def _validate(built: dict[str, Path | str], reference, prompt_ids, threads: int, max_new_tokens: int,
              tracker: Tracker) -> dict[str, dict]:
    rows = {}
    for name, path in built.items():
        if isinstance(path, str):
            rows[name] = dict(metrics={}, note=path)
            continue
        try:
            logits = parity.teacher_forced_logits(path / "model.onnx", reference, threads)
            greedy = parity.genai_greedy(path, prompt_ids, max_new_tokens)
        except Exception as exc:  # e.g. an fp16/CUDA graph on a CPU host: recorded, never chosen
            rows[name] = dict(metrics={}, note=f"cannot run here: {type(exc).__name__}: {str(exc)[:80]}")
            continue
        rows[name] = dict(metrics=parity.compare(reference, logits, greedy), note="")
        tracker.info("validate", f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name]["metrics"].items()))
    return rows


def _candidate(name: str, path: Path | str, row: dict, speed, gate: dict[str, float]) -> Candidate:
    metrics = {k: round(v, 6) for k, v in row["metrics"].items()}
    if speed is not None:
        metrics.update(decode_tokens_per_s=round(speed.decode_tokens_per_s, 2), prefill_ms=round(speed.prefill_ms, 2))
    return Candidate(name=name, size_bytes=bundle.model_size(path) if isinstance(path, Path) else 0,
                     latency_ms=round(1000.0 / speed.decode_tokens_per_s, 4) if speed else 0.0,
                     metrics=metrics, passed=parity.passes(row["metrics"], gate), note=row["note"])


def _genai_version() -> dict[str, str]:
    from importlib import metadata

    try:
        return {"onnxruntime-genai": metadata.version("onnxruntime-genai")}
    except metadata.PackageNotFoundError:
        return {}


__all__ = ["DEFAULT_QUANTIZATION", "DEFAULT_STRATEGY", "QUANTIZATIONS", "export_generation", "gate_thresholds"]

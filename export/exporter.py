"""export_bundle: a Hugging Face checkpoint in, a parity-gated ONNX model bundle out.

Steps: load (check the source), export (Optimum), optimize (portable fusions), quantize (every
candidate of the function's preset), validate (parity against PyTorch and batch-1 latency),
write (stage beside ``out``, then one rename). Any failure leaves ``out`` as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from functions.manifest import (MANIFEST_FILE, MODEL_FILE, PREPROCESSOR_FILE, TOKENIZER_FILE, Candidate, Manifest,
                                Parity, Quantization, describe_files, read_manifest)
from .choices import ARCHITECTURES, DEFAULT_THRESHOLDS, QUANTIZATIONS, TARGETS
from functions.tasknames import AUTOMATIC_SPEECH_RECOGNITION, TEXT_GENERATION, resolve_task

from . import candidates as registry
from . import convert, measure, mixed, parity, vision
from .errors import ConversionError, ExportError, OutputError, ParityGateError
from .evaluate import Evaluator, checks_for
from .progress import Progress, Tracker
from .report import candidates_table
from .samples import calibration_samples, gather_samples
from .search import choose, host_architecture, ineligible, parse_strategy
from .source import inspect_source

TOOLS = ("optimum", "optimum-onnx", "onnxruntime", "onnx", "torch", "transformers", "tokenizers", "modelfn")
DEFAULT_THREADS = 2  # what a 2048 MB Lambda function gets


def export_bundle(source: str | Path, task: str, out: str | Path, *, name: str | None = None,
                  target: str = "lambda", architecture: str = "x86_64", quantization: str | None = None,
                  thresholds: dict[str, float] | None = None, eval_file: str | Path | None = None,
                  allow_drift: bool = False, strategy: str | None = None, max_tokens: int | None = None,
                  progress: Progress | None = None, overwrite: bool = False, threads: int | None = None,
                  opset: int = convert.DEFAULT_OPSET, latency_budget_s: float = 20.0,
                  search_budget_s: float = 600.0, context_length: int | None = None,
                  previous: str | Path | None = None) -> Manifest:
    """Export ``source`` for ``task`` into the bundle directory ``out`` and return its manifest.

    Raises an ExportError subclass (one line) on bad input, ParityGateError (exit 3, with the
    candidate table) when nothing passes the gate and ``allow_drift`` is off. ``progress``
    receives export.progress.ProgressEvent objects. With ``quantization="int8"`` and
    ``search_budget_s > 0`` the preset is widened (per-tensor, other weight-only blocks, static
    QDQ) and mixed precision is searched when a dynamic int8 candidate fails the gate; the search runs
    a fixed number of steps, and ``search_budget_s`` is only a safety stop (warned about when hit).
    ``quantization`` and ``strategy`` default per task: int8 and fastest-passing for encoders.
    text-generation goes to export.generation (``context_length`` caps its KV cache; ``max_tokens``
    and the search budget do not apply there).
    ``previous`` is a bundle directory (or its manifest.json) whose choice a fastest-passing re-export keeps
    unless beaten decisively (export/search.py); by default the bundle ``out`` holds when overwriting it,
    "" for none. It counts only when exported with the same task, target, architecture, quantization
    and strategy.
    """
    task = resolve_task(task)
    _check_choice("target", target, TARGETS)
    _check_choice("architecture", architecture, ARCHITECTURES)
    if task == TEXT_GENERATION:
        from .generation import export_generation

        return export_generation(source, out, name=name, target=target, architecture=architecture,
                                 quantization=quantization, thresholds=thresholds, eval_file=eval_file,
                                 allow_drift=allow_drift, strategy=strategy, progress=progress, overwrite=overwrite,
                                 threads=threads or min(DEFAULT_THREADS, os.cpu_count() or 1),
                                 context_length=context_length)
    if task == AUTOMATIC_SPEECH_RECOGNITION:
        from .speech import export_speech

        return export_speech(source, out, name=name, target=target, architecture=architecture,
                             quantization=quantization, thresholds=thresholds, allow_drift=allow_drift,
                             progress=progress, overwrite=overwrite,
                             threads=threads or min(DEFAULT_THREADS, os.cpu_count() or 1), previous=previous)
    quantization = quantization or "int8"
    _check_choice("quantization", quantization, tuple(q for q in QUANTIZATIONS if q != "int4"))
    if target == "gpu" and architecture != "x86_64":
        raise ExportError("the gpu target runs on x86_64 only", hint="drop --architecture arm64 for gpu models")
    strategy = parse_strategy(strategy or "fastest-passing")
    checks = checks_for(task)  # export/vision.py for image tasks, export/parity.py + samples.py for text
    gate = checks.gate_thresholds(task, _merge_thresholds(thresholds))
    out = Path(out).expanduser().absolute()
    _check_output(out, overwrite)
    names = registry.preset(quantization, architecture, target)
    searching = quantization == "int8" and not strategy.startswith("fixed:") and search_budget_s > 0
    if searching:
        names += tuple(n for n in registry.SEARCH_EXTRAS[architecture] if n not in names)
    if strategy.startswith("fixed:") and strategy[6:] not in names:
        names += (strategy[6:],)  # a fixed choice outside the preset is built too, and still gated
        if strategy[6:] not in registry.REGISTRY:
            raise ExportError(f"unknown quantization candidate {strategy[6:]!r}",
                              hint="known: " + ", ".join(sorted(registry.REGISTRY)))
    threads = threads or min(DEFAULT_THREADS, os.cpu_count() or 1)
    tracker = Tracker(progress)
    kept = previous_choice(out if previous is None else previous, tracker, required=previous is not None,
                           task=task, target=target, architecture=architecture, requested=quantization,
                           strategy=strategy)

    with tracker.step("load", str(source)):
        src = inspect_source(source, task, max_tokens=max_tokens)
        if checks is vision:
            samples, calibration = vision.gather_samples(task, eval_file), ()
        else:
            samples, calibration = gather_samples(task, eval_file), calibration_samples(task)
    with tempfile.TemporaryDirectory(prefix="modelfn-export-") as tmp:
        work = Path(tmp)
        with tracker.step("export", f"Optimum ONNX export, opset {opset}"):
            tokenizer, companions = None, []
            if src.runtime.image is None or vision.has_text_tower(task):
                tokenizer, pad_id = convert.build_tokenizer(src, work / TOKENIZER_FILE)
                src = replace(src, runtime=replace(src.runtime, pad_token_id=pad_id))
                companions.append(work / TOKENIZER_FILE)
            if src.runtime.image is not None:  # image models ship their processor config
                companions.append(vision.copy_preprocessor(src.path, work / PREPROCESSOR_FILE))
            raw = convert.export_onnx(src, work, opset=opset)
        with tracker.step("optimize", "portable transformer fusions"):
            fp32 = convert.save_single_file(convert.optimize_onnx(raw, src, work / "optimized.onnx"),
                                            work / "fp32.onnx")
        with tracker.step("quantize", ", ".join(names)):
            evaluator = Evaluator(src, samples, tokenizer, gate, threads, calibration, measure.gate_provider(target))
            ctx = registry.BuildContext(workdir=work / "candidates", calibration=evaluator.calibration)
            built = {n: _build(n, fp32, ctx, required=n == registry.FP32) for n in names}
        with tracker.step("validate", f"{len(evaluator.samples)} samples on {evaluator.provider}, alone and in mixed "
                          f"batches of {parity.BATCH_SIZE}, latency at batch 1 and {parity.BATCH_SIZE} with {threads} threads"):
            rows, sessions = _validate(evaluator, built, tracker, latency_budget_s)
            timed_here = target != "gpu" and architecture == host_architecture()
            if searching and timed_here:
                _search(evaluator, rows, sessions, names, work, search_budget_s, tracker)
            choice, table = time_and_choose(evaluator, rows, sessions, names, strategy, quantization,
                                            latency_budget_s=latency_budget_s, timed_here=timed_here, previous=kept)
        chosen = enforce_gate(choice, table, gate, allow_drift, tracker)
        with tracker.step("write", str(out)):
            files, graph, runtime = {MODEL_FILE: rows[choice.name]["path"]}, None, src.runtime
            if vision.has_text_tower(task):  # CLIP: one graph per tower, gated again as they will be served
                files, graph, scale, metrics = vision.gate_towers(rows[choice.name]["path"], work / "towers", evaluator,
                                                                  threads, must_pass=choice.passed)
                runtime, chosen = replace(runtime, logit_scale=scale), replace(chosen, metrics=metrics)
            files.update({c.name: c for c in companions})
            manifest = write_bundle(out, overwrite, files, tracker, dict(
                name=name or out.name, task=task, architecture=architecture, target=target,
                quantization=Quantization(requested=quantization, chosen=choice.name, reason=choice.reason,
                                          strategy=strategy, candidates=tuple(table),
                                          host_cpu_features=measure.cpu_features(),
                                          timing=measure.timing_note(threads) if timed_here else "",
                                          previous=kept),
                parity=Parity(metrics=dict(chosen.metrics), thresholds=gate, passed=choice.passed,
                              samples=len(evaluator.samples), allowed_drift=allow_drift and not choice.passed,
                              classes=parity.classes(evaluator.samples), worst=chosen.worst,
                              provider=evaluator.provider),
                runtime=replace(runtime, one_row_per_run=chosen.one_row_per_run), tools=tool_versions(),
                source=str(src.path),
            ), graph)
    return manifest


def time_and_choose(evaluator: Evaluator, rows: dict[str, dict], sessions: dict[str, object], names: tuple[str, ...],
                    strategy: str, quantization: str, *, latency_budget_s: float, timed_here: bool,
                    previous: str = ""):
    """(Choice, table): every candidate that ran timed side by side (batch 1 and 8), then one chosen by
    ``strategy``. ``rows`` (candidate -> path, metrics, note, worst, one_row) hold the parity results;
    ``names`` is the preset in order (its order breaks ties when latency was not measured here);
    ``previous`` is the previous export's choice (kept unless beaten decisively)."""
    table = _table(evaluator, rows, sessions, latency_budget_s, timed_here)
    choice = choose(table, strategy, requested=quantization, timed_here=timed_here,
                    preference=names[1:] + names[:1], gated=evaluator.checks.gated(evaluator.src.task),
                    previous=previous)
    return choice, table


def previous_choice(where: str | Path, tracker: Tracker, *, required: bool = False, **settings: str) -> str:
    """The candidate chosen by the bundle at ``where`` (a bundle directory or its manifest.json; "": none)
    when it was exported with the same ``settings`` (task, target, architecture, requested quantization,
    strategy), else "". A path with no bundle is none, or an error when ``required`` (named by the user)."""
    path = Path(where).expanduser() if where not in ("", None) else None
    if path is not None and path.name == MANIFEST_FILE:
        path = path.parent
    if path is None or not (path / MANIFEST_FILE).is_file():
        if path is not None and required:
            raise ExportError(f"previous bundle {path}: no {MANIFEST_FILE} there",
                              hint="give the bundle directory of an earlier export (e.g. from `modelfn registry pull`)")
        return ""
    try:
        manifest = read_manifest(path)
    except Exception as exc:  # an unreadable old bundle is replaced, never a reason to stop
        tracker.info("load", f"previous choice: none ({path / MANIFEST_FILE} is unreadable: {exc})")
        return ""
    q = manifest.quantization
    had = dict(task=manifest.task, target=manifest.target, architecture=manifest.architecture, requested=q.requested,
               strategy=q.strategy)
    differ = [f"{k} {had[k]} -> {v}" for k, v in settings.items() if had.get(k) != v]
    if differ:
        tracker.info("load", f"previous choice: not weighed ({path} was exported with other settings: "
                     + ", ".join(differ) + ")")
        return ""
    tracker.info("load", f"previous choice: {q.chosen} (from {path}), kept unless a candidate is decisively faster")
    return q.chosen


def enforce_gate(choice, table: list[Candidate], gate: dict[str, float], allow_drift: bool,
                 tracker: Tracker) -> Candidate:
    """The chosen candidate, or ParityGateError (exit 3, the table, nothing written) when it failed the
    gate and drift is not allowed; warns when drift is allowed or the choice fell back."""
    if not choice.passed and not allow_drift:
        raise ParityGateError(f"parity gate failed: {choice.reason}; nothing written",
                              table=candidates_table(table, chosen=choice.name, thresholds=gate),
                              candidates=tuple(table), hint="see the table; --allow-drift writes it anyway")
    if not choice.passed:
        tracker.warn("validate", f"writing {choice.name} despite parity drift (--allow-drift)")
    elif choice.fell_back:
        tracker.warn("validate", choice.reason)
    return next(c for c in table if c.name == choice.name)


def _build(name: str, fp32: Path, ctx, *, required: bool) -> Path | str:
    """A candidate graph, or the one-line reason it could not be built (only fp32 is required)."""
    try:
        return registry.build(name, fp32, ctx)
    except ConversionError as exc:
        if required:
            raise
        return f"build failed: {exc.message.split(': ', 1)[-1][:120]}"


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ExportError(f"unknown {field} {value!r}", hint="choose one of " + ", ".join(allowed))


def _merge_thresholds(thresholds: dict[str, float] | None) -> dict[str, float]:
    merged = dict(DEFAULT_THRESHOLDS)
    for metric, value in (thresholds or {}).items():
        if metric not in DEFAULT_THRESHOLDS:
            raise ExportError(f"unknown parity metric {metric!r}", hint="known: " + ", ".join(DEFAULT_THRESHOLDS))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExportError(f"parity threshold {metric} must be a number, got {value!r}")
        merged[metric] = float(value)
    return merged


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"output {out} already exists and is not empty", hint="pass --overwrite to replace it")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {out}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: {ancestor} is not writable")


def _validate(evaluator: Evaluator, built: dict[str, Path | str], tracker: Tracker,
              budget_s: float) -> tuple[dict[str, dict], dict[str, object]]:
    """Parity of every built candidate; returns rows (path, metrics, note, worst, one_row) and the sessions that ran."""
    rows, sessions = {}, {}
    for name, path in built.items():
        if isinstance(path, str):  # the build failed; the message is the note
            rows[name] = dict(path=None, metrics={}, note=path)
            continue
        try:
            sessions[name], rows[name] = _score(evaluator, path)
        except Exception as exc:  # e.g. fp16 kernels missing on this CPU: recorded, never chosen
            rows[name] = dict(path=path, metrics={}, note=f"cannot run here: {type(exc).__name__}")
            continue
        tracker.info("validate", f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name]["metrics"].items()))
    return rows, sessions


def _score(evaluator: Evaluator, path: Path, note: str = "", ran: tuple | None = None) -> tuple[object, dict]:
    """(session, row) for one candidate graph: parity alone, and whether its rows depend on batch-mates.
    ``ran`` is (session, outputs) when the graph already ran on every sample alone."""
    session, outputs = ran or evaluator.run(path)
    if evaluator.checks is vision:  # image tasks: agreement on the synthetic images (export/vision.py)
        return session, dict(path=path, metrics=evaluator.metrics(outputs), note=note, worst=(), one_row=False)
    assessed = evaluator.assess(outputs)
    consistency = evaluator.batch_consistency(session, outputs, probe_first=True)
    # A graph whose answers move with the batch is served one row per call: then every input gets
    # exactly the answer the gate scored alone.
    one_row = consistency < parity.BATCH_INDEPENDENCE
    if one_row:
        note = "; ".join(filter(None, [note, f"rows depend on batch-mates (cosine {consistency:.4f} alone vs "
                                             "in a batch): served one row per call"]))
    metrics = {**assessed.metrics, "batch_min_cosine": consistency}
    return session, dict(path=path, metrics=metrics, note=note, worst=assessed.worst, one_row=one_row)


def _search(evaluator: Evaluator, rows: dict[str, dict], sessions: dict, names: tuple[str, ...], work: Path,
            budget_s: float, tracker: Tracker) -> None:
    """Mixed precision from the first dynamic int8 candidate of the preset that fails the gate (deterministic:
    a fixed number of steps; ``budget_s`` is only a safety stop, warned about when it cuts the search)."""
    # from a candidate an automatic choice may take: a VNNI-tuned base would give VNNI-tuned steps
    base = next((n for n in names if n.startswith("int8-dynamic-per-channel") and n in sessions
                 and not registry.requires_cpu(n) and not evaluator.passes(rows[n]["metrics"])), None)
    if base is None or "fp32" not in sessions:
        return
    tracker.info("validate", f"search: ranking node groups by sensitivity under {base} on {len(evaluator.probe)} "
                 f"probe samples, then up to {mixed.MAX_STEPS} exclusions (safety stop {budget_s:.0f}s)")
    search = mixed.run_search(base, rows["fp32"]["path"], evaluator, work / "search", budget_s)
    if search.ranking:
        tracker.info("validate", "search: most sensitive " + ", ".join(f"{g} {s:.2e}" for g, s in search.ranking[:5]))
    if search.stopped:
        tracker.warn("validate", f"search: {search.stopped}; a faster or quieter machine may search further")
    for step in search.steps:
        sessions[step.name], rows[step.name] = _score(evaluator, step.path, "fp32 groups: " + ", ".join(step.excluded),
                                                      ran=step.ran)
        tracker.info("validate", f"{step.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in step.metrics.items()))


def _table(evaluator: Evaluator, rows: dict[str, dict], sessions: dict, budget_s: float,
           timed_here: bool) -> list[Candidate]:
    timings = evaluator.timings(sessions, {n for n, r in rows.items() if r.get("one_row")}, budget_s=budget_s)
    table = []
    for n, r in rows.items():
        one, batch = timings.get(n, (None, None))
        table.append(Candidate(
            name=n, size_bytes=r["path"].stat().st_size if r["path"] else 0,
            latency_ms=round(one.median_ms, 4) if one else 0.0,
            metrics={k: round(v, 6) for k, v in r["metrics"].items()},
            passed=evaluator.passes(r["metrics"]), note=r["note"],
            latency_spread_ms=round(one.spread_ms, 4) if one else 0.0,
            latency_rounds_ms=tuple(round(t, 4) for t in one.rounds) if one else (),
            batch_latency_ms=round(batch.median_ms, 4) if batch else 0.0,
            one_row_per_run=bool(r.get("one_row")), requires_cpu=registry.requires_cpu(n),
            worst=tuple(r.get("worst", ())),
            cpu_ms=round(one.cpu_median_ms, 4) if one else 0.0, cpu_spread_ms=round(one.cpu_spread_ms, 4) if one else 0.0,
            cpu_rounds_ms=tuple(round(t, 4) for t in one.cpu_rounds) if one else (),
            batch_cpu_ms=round(batch.cpu_median_ms, 4) if batch else 0.0))
    fp32 = next((c for c in table if c.name == registry.FP32), None)
    return [replace(c, note="; ".join(filter(None, [c.note, ineligible(c, fp32, timed_here=timed_here)])))
            for c in table]


def write_bundle(out: Path, overwrite: bool, files: dict[str, Path], tracker: Tracker, fields: dict,
                 graph: tuple[tuple[str, ...], tuple[str, ...], int] | None = None) -> Manifest:
    """Copy ``files`` (bundle name -> path) into a stage beside ``out``, add the manifest, rename it into place.
    Each graph's large weights move to ``<graph>.data`` beside it (convert.store_weights_beside).

    ``graph`` is (inputs, outputs, opset) when the caller knows them; otherwise they are read from
    model.onnx. On any failure the stage is removed and ``out`` is left as it was."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    old = None
    try:
        for name, path in files.items():
            shutil.copyfile(path, stage / name)
            if name.endswith(".onnx"):
                convert.store_weights_beside(stage / name)
        inputs, outputs, opset = graph or convert.graph_io(stage / MODEL_FILE)
        manifest = Manifest(inputs=inputs, outputs=outputs, opset=opset, files=describe_files(stage),
                            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), **fields)
        manifest.write(stage)
        tracker.info("write", f"staged in {stage.name}")
        if out.exists():  # empty, or overwrite: move it aside so the swap is one rename
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        stage.rename(out)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None and not out.exists():
            old.rename(out)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return manifest


def tool_versions() -> dict[str, str]:
    versions = {}
    for dist in TOOLS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


__all__ = ["enforce_gate", "export_bundle", "time_and_choose", "tool_versions", "write_bundle"]

"""Re-check an exported bundle against its source model on the user's own inputs (``modelfn eval``).

The same gate as export: the bundle's graph runs every input alone and in mixed batches, is
compared with the PyTorch model through the task's own comparison, means are judged by their lower
confidence bound, and the table lists the worst inputs. The bundle's manifest supplies the
thresholds and the runtime config (pooling, labels, one row per call).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from functions.manifest import MODEL_FILE, TOKENIZER_FILE, Candidate, Manifest, read_manifest

from . import parity
from .errors import SourceError
from .evaluate import Evaluator
from .report import candidates_table
from .samples import load_eval_file
from .source import inspect_source


@dataclass(frozen=True)
class Recheck:
    manifest: Manifest
    candidate: Candidate  # the bundle's graph, measured on the user's inputs
    samples: int
    classes: dict[str, int]
    table: str

    @property
    def passed(self) -> bool:
        return self.candidate.passed


def recheck_bundle(bundle_dir: str | Path, eval_file: str | Path, *, source: str | Path | None = None,
                   threads: int = 2, latency_budget_s: float = 5.0) -> Recheck:
    """Score ``bundle_dir`` against ``source`` (default: the manifest's) on ``eval_file``'s inputs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tokenizers import Tokenizer

    bundle = Path(bundle_dir)
    manifest = read_manifest(bundle)
    src_path = Path(source or manifest.source)
    if not src_path.is_dir():
        raise SourceError(f"source model {src_path} is not here",
                          hint="pass --source DIR (the Hugging Face model the bundle was exported from)")
    src = inspect_source(src_path, manifest.task, max_tokens=manifest.runtime.max_length)
    src = replace(src, runtime=manifest.runtime)  # the bundle's config is what callers are served with
    samples = load_eval_file(eval_file, manifest.task)
    tokenizer = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    thresholds = parity.gate_thresholds(manifest.task, manifest.parity.thresholds)
    evaluator = Evaluator(src, samples, tokenizer, thresholds, threads)
    session, outputs = evaluator.run(bundle / MODEL_FILE)
    assessed = evaluator.assess(outputs)
    consistency = evaluator.batch_consistency(session, outputs)
    one_row = manifest.runtime.one_row_per_run
    note = ""
    if consistency < parity.BATCH_INDEPENDENCE:
        note = (f"rows depend on batch-mates (cosine {consistency:.4f}); "
                + ("served one row per call" if one_row else "the bundle serves batches whole: answers vary"))
    name = manifest.quantization.chosen
    timing = evaluator.timings({name: session}, {name} if one_row else set(), budget_s=latency_budget_s, rounds=5)
    one, batch = timing[name]
    metrics = {k: round(v, 6) for k, v in {**assessed.metrics, "batch_min_cosine": consistency}.items()}
    passed = evaluator.passes(metrics) and (one_row or consistency >= parity.BATCH_INDEPENDENCE)
    candidate = Candidate(name=name, size_bytes=(bundle / MODEL_FILE).stat().st_size,
                          latency_ms=round(one.median_ms, 4), metrics=metrics, passed=passed, note=note,
                          latency_spread_ms=round(one.spread_ms, 4), batch_latency_ms=round(batch.median_ms, 4),
                          one_row_per_run=one_row, worst=assessed.worst)
    table = candidates_table([candidate], chosen=name, thresholds=thresholds, worst=parity.WORST)
    return Recheck(manifest, candidate, len(evaluator.samples), parity.classes(evaluator.samples), table)


__all__ = ["Recheck", "recheck_bundle"]

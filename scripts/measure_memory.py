"""Measure a function's peak memory in fresh processes, to set and check infra/build/memory.py.

    python scripts/measure_memory.py baseline            # Python + onnxruntime + tokenizers + functions, no model
    python scripts/measure_memory.py bundle DIR [--batch N --tokens N]   # load DIR, run its largest request

Prints peak RSS (ru_maxrss) in MB next to modelfn's estimate for the same settings. Each figure
comes from a child interpreter, so nothing this script imported is counted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, resource, sys
mode, bundle, batch, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import numpy, onnxruntime, tokenizers
import functions.service
if mode == "genai":
    import onnxruntime_genai
if mode != "baseline" and mode != "genai":
    from functions.service import ModelService
    service = ModelService.load(bundle, max_batch=batch, max_tokens=tokens)
    from functions.manifest import read_manifest
    manifest = read_manifest(bundle)
    if manifest.task == "text-generation":
        # A prompt that fills the context window less the new tokens, then decode to its end.
        words = ("serverless functions load their model once and answer many requests " * 400).split()
        text = " ".join(words)
        ids = service.model.tokenizer.encode(text).ids if hasattr(service.model, "tokenizer") else None
        context = manifest.runtime.context_length
        body = {"model": manifest.name, "prompt": " ".join(words[: int((context - tokens) * 0.8)]),
                "max_tokens": tokens, "temperature": 0}
        service.completions("application/json", json.dumps(body).encode())
    else:
        text = " ".join(["word"] * (tokens * 2))
        body = {"model": manifest.name, "input": [text] * batch}
        answer = service.embeddings("application/json", json.dumps(body).encode())
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(mode: str, bundle: str = "", batch: int = 1, tokens: int = 1) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, bundle, str(batch), str(tokens)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["baseline", "bundle"])
    parser.add_argument("bundle", nargs="?")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    if args.what == "baseline":
        print(f"runtime baseline: {child('baseline'):.1f} MB peak RSS; with onnxruntime-genai: {child('genai'):.1f} MB")
        return
    from infra.build.memory import estimate_bundle

    peak = child("bundle", args.bundle, args.batch, args.tokens)
    estimate = estimate_bundle(Path(args.bundle), max_batch=args.batch, max_tokens=args.tokens)
    print(f"{args.bundle}: measured peak {peak:.1f} MB; estimate {estimate.describe()}")


if __name__ == "__main__":
    main()

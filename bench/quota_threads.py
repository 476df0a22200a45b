"""One intra-op thread or two under a fractional CPU quota, in the built function image.

    eval "$(bash scripts/containers-env.sh)"; modelfn bench minilm   # builds modelfn-bench-minilm:<digest>
    python bench/quota_threads.py [--cpus 1.16,1.36,1.7] [--rounds 2] [--tag IMAGE]

The runtime sizes its thread pool as the CPU quota rounded up (functions/settings.available_cpus), so
Lambda at 2,048 MB (1.16 vCPU) gets two threads. Each cell runs fresh containers of the function
image under the engine's --cpus (a real CFS quota) with MODELFN_THREADS forcing 1 or 2, invoked
through its Runtime Interface Emulator (infra/bench/container.py): 400 short requests and 24
256-token ones per container, cells taken round-robin. Writes bench/quota_threads.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REPOSITORY = "modelfn-bench-minilm"


def newest_tag(client) -> str:
    images = [i for i in client.images.list(name=REPOSITORY) if i.tags]
    if not images:
        raise SystemExit(f"no {REPOSITORY} image: run `modelfn bench minilm` with a container engine first")
    newest = max(images, key=lambda i: i.attrs.get("Created", ""))
    return next(t for t in newest.tags if REPOSITORY in t)


def main() -> int:
    import docker

    from infra.bench.container import run_container
    from infra.bench.measure import LONG, SHORT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", default="1.16,1.36,1.7")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tag")
    parser.add_argument("--out", default=str(ROOT / "bench" / "quota_threads.md"))
    args = parser.parse_args()
    client = docker.from_env(timeout=600)
    tag = args.tag or newest_tag(client)
    quotas = [float(q) for q in args.cpus.split(",")]
    warm = {"short": ([SHORT], 400), "256 tokens": ([LONG], 24)}
    samples: dict[tuple, list[float]] = {}
    for round_ in range(args.rounds):
        for quota in quotas:
            for threads in (1, 2):
                out = run_container(client, tag, "minilm", {"MODELFN_THREADS": str(threads)}, memory_mb=3008,
                                    vcpus=quota, warm=warm)
                if out["failed"]:
                    raise SystemExit(f"{quota} CPUs, {threads} threads: {out['failed']}")
                for case, values in out["samples_ms"].items():
                    samples.setdefault((quota, threads, case), []).extend(values)
        print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
    lines = ["# One thread or two under a fractional CPU quota (bench/quota_threads.py)", "",
             f"`python bench/quota_threads.py {' '.join(sys.argv[1:])}` on image `{tag}`: fresh containers under "
             f"the engine's --cpus (CFS quota), MODELFN_THREADS forced, requests through the RIE (HTTP included), "
             f"{args.rounds} containers per cell. Load average at the end {os.getloadavg()[0]:.1f}.", "",
             "| --cpus | threads | request | p50 ms | mean ms | p99 ms | n |", "|---:|---:|---|---:|---:|---:|---:|"]
    for (quota, threads, case), values in sorted(samples.items()):
        a = np.array(values)
        lines.append(f"| {quota:g} | {threads} | {case} | {np.percentile(a, 50):.2f} | {a.mean():.2f} | "
                     f"{np.percentile(a, 99):.2f} | {len(a)} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

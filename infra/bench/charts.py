"""PNG charts of a bench result (matplotlib, the `bench` extra): latency and cost against memory
size, the model against its baselines, and the Lambda-or-GPU break-even. Small figures at 80 dpi keep
each file well under 200 KB."""

from __future__ import annotations

from pathlib import Path

from functions.errors import ConfigError

from . import cost

DPI = 80


def _cost_by_memory(plt, name: str, result: dict, ylabel: str):
    """Cost per million requests against Lambda memory, x86_64 and arm64 (result["sizes"] rows)."""
    rows = result["sizes"]
    sizes = [r["memory_mb"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arch in ("x86_64", "arm64"):
        ax.plot(sizes, [r[f"cost_per_million_{arch}"] for r in rows], "o-", label=arch)
    ax.set(xlabel="Lambda memory (MB)", ylabel=ylabel,
           title=f"{name}: cost by memory size ({result['settings']['cold_rate']:.0%} cold starts)")
    ax.set_xticks(sizes)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _saver(plt, directory: Path, name: str, written: list[Path]):
    """``save(fig, stem)``: writes ``<name>-<stem>.png`` in ``directory``, closes the figure, records the path."""
    def save(fig, stem: str) -> None:
        path = directory / f"{name}-{stem}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        written.append(path)

    return save


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("charts need matplotlib", hint="install modelfn[bench]") from None
    matplotlib.use("Agg")  # files only: no display on a build machine
    import matplotlib.pyplot as plt

    return plt


def write_charts(result: dict, directory: Path) -> list[Path]:
    """Write the charts of ``result`` into ``directory``; return their paths. ConfigError (one line,
    "install modelfn[bench]") when matplotlib is missing."""
    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    name, written = result["model"], []
    rows = result["sizes"]
    sizes = [r["memory_mb"] for r in rows]
    save = _saver(plt, directory, name, written)

    if rows:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(sizes, [r["b1 short"]["p50_ms"] for r in rows], "o-", label="p50, short text")
        ax.plot(sizes, [r["b1 short"]["mean_ms"] for r in rows], "^:", label="mean, short text (billed)")
        ax.plot(sizes, [r["b1 short"]["p99_ms"] for r in rows], "o--", label="p99, short text")
        ax.plot(sizes, [r["b1 long"]["p50_ms"] for r in rows], "s-", label="p50, 256 tokens")
        # The built image under the engine's --cpus/--memory, where it was measured (killed sizes left out).
        image_rows = [r for r in ((result.get("built_image") or {}).get("sizes") or []) if r.get("p99_ms")]
        if image_rows:
            ax.plot([r["memory_mb"] for r in image_rows], [r["p99_ms"] for r in image_rows], "x--", color="black",
                    label="p99, short text, built image (engine limits)")
        ax.set(xlabel="Lambda memory (MB)", ylabel="ms per request (batch 1)", yscale="log",
               title=f"{name}: latency by memory "
                     + ("(emulated CPU share; x: the image)" if image_rows else "size (emulated CPU share)"))
        ax.set_xticks(sizes)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "latency-by-memory")

        save(_cost_by_memory(plt, name, result, "USD per million requests"), "cost-by-memory")

    labels = list(result["warm"])
    if len(labels) > 1:
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
        panels = ((axes[0], "cold start (s)", [result["cold_start"][w]["total_s"] for w in labels]),
                  (axes[1], "warm p50, short (ms)", [result["warm"][w]["b1 short"]["p50_ms"] for w in labels]),
                  (axes[2], "warm p50, 256 tokens (ms)", [result["warm"][w]["b1 long"]["p50_ms"] for w in labels]))
        for ax, title, values in panels:
            bars = ax.bar(labels, values, color=["#2a7", "#888", "#59c", "#c54"][:len(labels)])
            ax.bar_label(bars, fmt="%.3g", fontsize=7)  # torch dwarfs the others: the labels carry the figures
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        fig.suptitle(f"{name}: {result['bundle']['quantization']} vs baselines (batch 1)", fontsize=10)
        save(fig, "baselines")

    gpu = result.get("gpu") or {}
    if rows and gpu.get("hourly_usd"):
        fig, ax = plt.subplots(figsize=(6, 3.8))
        grid = [10 ** (k / 10) for k in range(40, 111)]
        for r in rows:
            ax.plot(grid, [r["cost_per_million_x86_64"] * x / 1e6 for x in grid], label=f"Lambda {r['memory_mb']} MB")
        ax.plot(grid, [cost.gpu_monthly(gpu["hourly_usd"], x, gpu["capacity_rps"],
                                        min_instances=gpu["min_instances"]) for x in grid],
                "k-", linewidth=2, label=f"{gpu['instance_type']} (x{gpu['min_instances']}+)")
        ax.set(xscale="log", yscale="log", xlabel="requests per month", ylabel="USD per month",
               title=f"{name}: Lambda or GPU endpoint"
               + ("" if gpu["on_gpu"] else "\n(endpoint capacity from a CPU-provider run: no GPU measured)"))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        save(fig, "lambda-or-gpu")
    return written


def write_generation_charts(result: dict, directory: Path) -> list[Path]:
    """The charts of a text-generation result (infra/bench/genrun.py): the bundle against its baselines
    (cold start to first token, time to first token, decode tokens/s) and, per Lambda size, the answer's
    latency and its cost. ConfigError when matplotlib is missing."""
    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    name, written = result["model"], []
    save = _saver(plt, directory, name, written)

    labels = list(result["generation"])
    if len(labels) > 1:
        gen = result["generation"]
        fig, axes = plt.subplots(1, 4, figsize=(11, 3.4))
        panels = ((axes[0], "cold start to first token (s)", [result["cold_start"][w]["total_s"] for w in labels]),
                  (axes[1], "first token, short prompt (ms)", [gen[w]["short"]["ttft_ms"]["p50_ms"] for w in labels]),
                  (axes[2], "decode tok/s, short prompt", [gen[w]["short"]["decode_tokens_per_s"] or 0 for w in labels]),
                  (axes[3], "decode tok/s, ~512-token prompt",
                   [gen[w]["long"]["decode_tokens_per_s"] or 0 for w in labels]))
        for ax, title, values in panels:
            bars = ax.bar(labels, values, color=["#2a7", "#888", "#c54"][:len(labels)])
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        fig.suptitle(f"{name}: {result['bundle']['quantization']} vs baselines (batch 1)", fontsize=10)
        save(fig, "baselines")

    rows = result["sizes"]
    if rows:
        sizes = [r["memory_mb"] for r in rows]
        tokens = result["settings"]["new_tokens"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(sizes, [r["p50_ms"] for r in rows], "o-", label=f"answer of {tokens} tokens, p50")
        ax.plot(sizes, [r["p99_ms"] for r in rows], "o--", label=f"answer of {tokens} tokens, p99")
        ax.plot(sizes, [r["ttft_ms"] for r in rows], "s-", label="first token, p50")
        ax.set(xlabel="Lambda memory (MB)", ylabel="ms per request", yscale="log",
               title=f"{name}: latency by memory size (emulated CPU share)")
        ax.set_xticks(sizes)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "latency-by-memory")

        save(_cost_by_memory(plt, name, result, f"USD per million {tokens}-token answers"), "cost-by-memory")
    return written

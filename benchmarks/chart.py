"""Draw the benchmark chart: MB/s per tool for each corpus, and rodin-async's concurrency sweep.

python benchmarks/chart.py [benchmarks/results/results.json] [-o docs/benchmark.png]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parent.parent
OURS = "#d9480f"  # rodin-async
PEER = "#868e96"
FAILED = "#fa5252"


def corpus_panel(ax, name: str, c: dict) -> None:  # type: ignore[no-untyped-def]
    rows = sorted(c["summary"].items(), key=lambda kv: kv[1].get("mbps", 0))
    names = [t for t, _ in rows]
    values = [r.get("mbps", 0.0) for _, r in rows]
    colors = [
        FAILED if r["verified_reps"] < r["reps"] else OURS if t.startswith("rodin-async") else PEER
        for t, r in rows
    ]
    bars = ax.barh(names, values, color=colors)
    for bar, (_, r) in zip(bars, rows, strict=True):
        label = f"{r['mbps']:.0f}" if "mbps" in r else "failed"
        if "mbps" in r and r["verified_reps"] < r["reps"]:
            label += " (failed verification)"
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {label}",
            va="center",
            fontsize=8,
        )
    gb = c["bytes"] / 1e9
    ax.set_title(f"{name}: {c['nfiles']} files, {gb:.2f} GB (median of {c['reps']})", fontsize=10)
    ax.set_xlabel("MB/s (higher is better)")
    ax.set_xlim(0, max([*values, 1]) * 1.25)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def sweep_panel(ax, sweep: dict, peers: dict | None) -> None:  # type: ignore[no-untyped-def]
    points = sorted((int(j), r) for j, r in sweep["summary"].items() if "mbps" in r)
    xs = [j for j, _ in points]
    ax.plot(xs, [r["mbps"] for _, r in points], "o-", color=OURS, label=sweep["tool"])
    for j, r in points:
        ax.annotate(
            f"{r['mbps']:.0f}",
            (j, r["mbps"]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    if peers:  # same-corpus references, as horizontal lines
        for tool, style in (("curl -Z", "--"), ("aiohttp", ":")):
            if "mbps" in peers.get(tool, {}):
                ax.axhline(peers[tool]["mbps"], ls=style, color=PEER, label=f"{tool} (-j16)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("concurrent transfers (-j)")
    ax.set_ylabel("MB/s")
    ax.set_ylim(0, None)
    ax.set_title(f"Concurrency sweep on {sweep['corpus']} (median of {sweep['reps']})", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "results",
        nargs="?",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "results.json",
    )
    ap.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "benchmark.png")
    args = ap.parse_args()
    results = json.loads(args.results.read_text())
    corpora = results["corpora"]
    panels = len(corpora) + (1 if results.get("sweep") else 0)
    cols = 2 if panels > 1 else 1
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.6 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, (name, c) in zip(flat, corpora.items(), strict=False):
        corpus_panel(ax, name, c)
    if results.get("sweep"):
        sweep = results["sweep"]
        sweep_panel(flat[len(corpora)], sweep, corpora.get(sweep["corpus"], {}).get("summary"))
    for ax in flat[panels:]:
        ax.axis("off")
    server = "nginx" if results["server"] == "nginx" else "bundled fake server (limits the figures)"
    v = results.get("versions", {})
    fig.suptitle(
        f"rodin-async bulk download vs peers — {server} on 127.0.0.1, {v.get('cpus', '?')} CPUs, "
        f"Python {v.get('python', '?')}, {results['started'][:10]}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.6 * rows)))  # room for the title
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

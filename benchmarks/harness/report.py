"""The report: per-corpus tables, the sweep, the core-scaling run, the packet-path runs, the
targets of issues 5 and 10, noise notes and versions, as Markdown (``results.md``)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import ssl
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .tools import BASELINE, REFERENCE, Tool

REPO = Path(__file__).resolve().parent.parent.parent
LIBRARY = "rodin-async library"


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def verified_cell(r: dict[str, Any]) -> str:
    if r["verified_reps"] == r["reps"]:
        return "yes"
    return f"**NO** ({r['verified_reps']}/{r['reps']} ok)"


def _ratio(rows: dict[str, Any], a: str, b: str, key: str = "wall") -> float | None:
    x, y = rows.get(a, {}).get(key), rows.get(b, {}).get(key)
    return x / y if x and y else None


# --------------------------------------------------------------------------- tables


def corpus_table(key: str, c: dict[str, Any]) -> str:
    rows = c["summary"]
    lines = [
        f"### {key}: {c['nfiles']} files, {c['bytes'] / 1e9:.2f} GB, "
        f"{c.get('transport_label', 'HTTP')}, {c['reps']} reps",
        "",
        "| tool | lists via API | median wall s | MB/s | CPU s/GB | CPU ms/file | peak RSS MiB "
        "| server CPUs | ÷ curl | ÷ rodin-async CLI | verified |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for tool, r in sorted(rows.items(), key=lambda kv: kv[1].get("wall", float("inf"))):
        lines.append(
            f"| {tool} | {'yes' if r['kind'] == 'api' else 'no'} | {fmt(r.get('wall'), '.2f')} "
            f"| {fmt(r.get('mbps'), '.0f')} | {fmt(r.get('cpu_per_gb'), '.2f')} "
            f"| {fmt(r.get('cpu_ms_per_file'), '.2f')} | {fmt(r.get('rss_mib'), '.0f')} "
            f"| {fmt(r.get('server_busy'), '.2f')} | {fmt(_ratio(rows, tool, BASELINE), '.2f')} "
            f"| {fmt(_ratio(rows, tool, REFERENCE), '.2f')} | {verified_cell(r)} |"
        )
    return "\n".join(lines)


def sweep_table(sweep: dict[str, Any]) -> str:
    lines = [
        f"### Concurrency sweep: {sweep['tool']} on {sweep['corpus']} "
        f"({sweep['bytes'] / 1e9:.2f} GB), {sweep['reps']} reps",
        "",
        "| -j | median wall s | MB/s | CPU s/GB | peak RSS MiB | verified |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for j, r in sweep["summary"].items():
        lines.append(
            f"| {j} | {fmt(r.get('wall'), '.2f')} | {fmt(r.get('mbps'), '.0f')} "
            f"| {fmt(r.get('cpu_per_gb'), '.2f')} | {fmt(r.get('rss_mib'), '.0f')} "
            f"| {verified_cell(r)} |"
        )
    return "\n".join(lines)


def scaling_table(s: dict[str, Any]) -> str:
    """Each tool pinned to 1, 2, ... cores; the gain is wall(fewest) ÷ wall(this many)."""
    counts = list(s["cpusets"])
    head = " | ".join(f"{n} core{'s' * (n != '1')}: wall s (CPU s/GB)" for n in counts)
    lines = [
        f"### Core scaling: {s['corpus']} over {s['transport']} "
        f"({s['bytes'] / 1e9:.2f} GB), {s['reps']} reps, `taskset -c` "
        + ", ".join(f"{n} → cpus {c}" for n, c in s["cpusets"].items()),
        "",
        f"| tool | {head} | gain {counts[0]} → {counts[-1]} | ÷ curl at {counts[-1]} | verified |",
        "|---|" + "---:|" * (len(counts) + 2) + "---|",
    ]
    for tool, by_n in s["summary"].items():
        cells = [
            f"{fmt(by_n[n].get('wall'), '.2f')} ({fmt(by_n[n].get('cpu_per_gb'), '.2f')})"
            for n in counts
        ]
        gain = _ratio(by_n, counts[0], counts[-1])
        to_curl = _ratio(
            {tool: by_n[counts[-1]], BASELINE: s["summary"].get(BASELINE, {}).get(counts[-1], {})},
            tool,
            BASELINE,
        )
        ok = all(by_n[n]["verified_reps"] == by_n[n]["reps"] for n in counts)
        lines.append(
            f"| {tool} | {' | '.join(cells)} | {fmt(gain, '.2f')}x | {fmt(to_curl, '.2f')} "
            f"| {'yes' if ok else '**NO**'} |"
        )
    if s.get("processes_passed"):
        lines += ["", "The CLI was given `--processes N` with N = the number of cores."]
    return "\n".join(lines)


def netns_table(corpora: dict[str, Any]) -> str:
    """The packet-path runs side by side: one row per rate and tool."""
    runs = [(k, c) for k, c in corpora.items() if c.get("netns")]
    if not runs:
        return ""
    lines = [
        "### Through a real packet path (namespace, veth, MTU 1500), HTTPS",
        "",
        "| rate | tool | median wall s | MB/s | CPU s | CPU s/GB | ÷ curl | verified |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for _, c in runs:
        rows = c["summary"]
        for tool, r in sorted(rows.items(), key=lambda kv: kv[1].get("wall", float("inf"))):
            lines.append(
                f"| {c['rate_label']} | {tool} | {fmt(r.get('wall'), '.2f')} "
                f"| {fmt(r.get('mbps'), '.0f')} | {fmt(r.get('cpu'), '.2f')} "
                f"| {fmt(r.get('cpu_per_gb'), '.2f')} | {fmt(_ratio(rows, tool, BASELINE), '.2f')} "
                f"| {verified_cell(r)} |"
            )
    lines += ["", runs[0][1].get("netns_note", "")]
    return "\n".join(lines)


# --------------------------------------------------------------------------- targets


def paired_ratio(runs: dict[str, list[dict[str, Any]]], a: str, b: str) -> float | None:
    """Median over repetitions of wall(a) / wall(b), both verified, in the same repetition."""
    pairs = [
        x["wall"] / y["wall"]
        for x, y in zip(runs.get(a, []), runs.get(b, []), strict=False)
        if x["verified"] and y["verified"]
    ]
    return statistics.median(pairs) if pairs else None


Check = tuple[str, str, str, str, Callable[[float], bool], Callable[[dict[str, Any]], bool]]


def _mix_over_loopback(c: dict[str, Any]) -> bool:
    return c["corpus"] == "mix" and not c.get("netns")


def _loopback_http(c: dict[str, Any]) -> bool:
    return c["transport"] == "http" and not c.get("netns")


def _netns_at(bits: int | None) -> Callable[[dict[str, Any]], bool]:
    return lambda c: bool(c.get("netns")) and c.get("rate") == bits


# (label, tool a, tool b, target, met?, applies to this corpus entry?)
WALL_TARGETS: list[Check] = [
    (
        "10: CLI ÷ curl",
        REFERENCE,
        BASELINE,
        "≤ 1.5 (stretch ≤ 1.1)",
        lambda x: x <= 1.5,
        _mix_over_loopback,
    ),
    (
        "10: library ÷ curl",
        LIBRARY,
        BASELINE,
        "≤ 1.5 (stretch ≤ 1.1)",
        lambda x: x <= 1.5,
        _mix_over_loopback,
    ),
    (
        "10: CLI ÷ curl",
        REFERENCE,
        BASELINE,
        "≤ 2",
        lambda x: x <= 2,
        lambda c: c["corpus"] == "small" and not c.get("netns"),
    ),
    ("10: CLI ÷ curl", REFERENCE, BASELINE, "≤ 1.05", lambda x: x <= 1.05, _netns_at(10**9)),
    ("10: CLI ÷ curl", REFERENCE, BASELINE, "≤ 1.5", lambda x: x <= 1.5, _netns_at(None)),
    (
        "5: docs-style requests ÷ CLI",
        "requests (docs style)",
        REFERENCE,
        "≥ 2",
        lambda x: x >= 2,
        _loopback_http,
    ),
    ("5: CLI ÷ parfive", REFERENCE, "parfive", "< 1", lambda x: x < 1, _loopback_http),
    ("5: CLI ÷ aiohttp", REFERENCE, "aiohttp", "≤ 1.2", lambda x: x <= 1.2, _loopback_http),
]


def targets(results: dict[str, Any]) -> str:
    lines = [
        "### Targets of issues 10 and 5 (wall-time ratios in the same run; paired = median "
        "of per-repetition ratios)",
        "",
        "| corpus | check | value | paired | target | met |",
        "|---|---|---:|---:|---|---|",
    ]
    for key, c in results["corpora"].items():
        s = c["summary"]
        for label, a, b, target, ok, applies in WALL_TARGETS:
            r = _ratio(s, a, b)
            if r is not None and applies(c):
                p = fmt(paired_ratio(c["runs"], a, b), ".2f")
                lines.append(f"| {key} | {label} | {r:.2f} | {p} | {target} | {_met(ok(r))} |")
        lines += _per_tool_targets(key, c)
    return "\n".join(lines)


def _per_tool_targets(key: str, c: dict[str, Any]) -> list[str]:
    s, lines = c["summary"], []
    if c["corpus"] == "small" and "cpu_ms_per_file" in s.get(REFERENCE, {}):
        ms = s[REFERENCE]["cpu_ms_per_file"]
        lines.append(
            f"| {key} | 10: CLI CPU ms per file | {ms:.2f} | | ≤ 1.5 | {_met(ms <= 1.5)} |"
        )
    if c.get("netns") and c.get("rate") == 5 * 10**8:
        for tool in (REFERENCE, BASELINE):
            if "cpu_per_gb" in s.get(tool, {}):
                v = s[tool]["cpu_per_gb"]
                lines.append(
                    f"| {key} | 10: {tool} CPU s/GB at 0.5 Gbit/s | {v:.2f} | | report | |"
                )
    for tool in (REFERENCE, LIBRARY):
        if "rss_mib" in s.get(tool, {}):
            rss = s[tool]["rss_mib"]
            lines.append(
                f"| {key} | {tool} peak RSS MiB | {rss:.0f} | | ≤ 100 | {_met(rss <= 100)} |"
            )
    return lines


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


# --------------------------------------------------------------------------- notes


def notes(runs: dict[str, list[dict[str, Any]]]) -> str:
    return "\n\n".join(n for n in (noise_note(runs), fingerprint_note(runs)) if n)


def noise_note(runs: dict[str, list[dict[str, Any]]]) -> str:
    """How much CPU the rest of the machine used during the runs (beyond tool + servers).

    It includes the kernel's page-cache writeback and some softirq time, so a few tenths of a
    CPU are normal; more means something else was running."""
    shares = [r["other_cpu"] / r["wall"] for rs in runs.values() for r in rs]
    if not shares:
        return ""
    note = (
        f"Other CPU use during the runs (not the tool, not the servers): median "
        f"{statistics.median(shares):.2f} CPUs, worst {max(shares):.2f} CPUs."
    )
    if max(shares) > 0.6:
        note = f"**WARNING**: {note} Something else was busy; treat these figures with care."
    return note


def fingerprint_note(runs: dict[str, list[dict[str, Any]]]) -> str:
    seen = {r.get("library") for rs in runs.values() for r in rs} - {None}
    if len(seen) <= 1:
        return ""
    return (
        f"**WARNING**: the rodin_async source changed during these runs ({len(seen)} versions: "
        f"{', '.join(sorted(seen))}); its repetitions ran different code."
    )


# --------------------------------------------------------------------------- the document


def markdown(results: dict[str, Any], tools: list[Tool]) -> str:
    v = results["versions"]
    server = (
        v.get("nginx", "nginx")
        if results["server"] == "nginx"
        else "the bundled fake server (**WARNING**: the server limits these figures)"
    )
    md = [
        f"## Benchmark results ({results['started']})",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Server: {server} (one worker) on 127.0.0.1 unless the table says otherwise. "
        "MB = 10^6 bytes; medians over verified reps; peak RSS = max over reps; ratios from "
        "the same run; server CPUs = nginx + API CPU seconds ÷ wall.",
        "",
    ]
    for key, c in results["corpora"].items():
        md += [corpus_table(key, c), "", notes(c["runs"]), ""]
    for section, table in (("sweep", sweep_table), ("scaling", scaling_table)):
        if results.get(section):
            md += [table(results[section]), "", notes(results[section]["runs"]), ""]
    if any(c.get("netns") for c in results["corpora"].values()):
        md += [netns_table(results["corpora"]), ""]
    if results["corpora"]:
        md += [targets(results), ""]
    md += ["### Tools", ""] + [f"- **{t.name}**: {t.note}" for t in tools]
    md += [
        "",
        "Tools that list via the API call `POST /download` for every task inside the timed run; "
        "the others get the URL list the harness made beforehand "
        "(`listing_seconds` in results.json is what listing costs). Over HTTPS every tool "
        "trusts the run's test CA; the API stand-in stays plain HTTP on loopback.",
        "",
        "### Versions",
        "",
    ]
    md += [f"- {k}: {val}" for k, val in v.items()]
    if results["skipped"]:
        md += ["", "### Skipped", ""] + [f"- {k}: {val}" for k, val in results["skipped"].items()]
    return "\n".join(md) + "\n"


def versions() -> dict[str, str]:
    out: dict[str, str] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "python ssl": ssl.OPENSSL_VERSION,
    }
    for pkg in (
        "rodin-async",
        "httpx",
        "httpcore",
        "h11",
        "h2",
        "anyio",
        "aiofiles",
        "uvloop",
        "sniffio",
        "requests",
        "urllib3",
        "aiohttp",
        "parfive",
        "trustme",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    for exe, flag in (("nginx", "-v"), ("curl", "--version"), ("aria2c", "--version")):
        if shutil.which(exe):
            p = subprocess.run([exe, flag], capture_output=True, text=True)
            out[exe] = (p.stdout or p.stderr).splitlines()[0].strip()
    git = ["git", "-C", str(REPO)]
    with contextlib.suppress(OSError):
        rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "rodin_async"], capture_output=True, text=True
        )
        changes = " (+ uncommitted changes in rodin_async/)" if dirty.stdout.strip() else ""
        out["rodin-async commit"] = rev.stdout.strip() + changes
    return out

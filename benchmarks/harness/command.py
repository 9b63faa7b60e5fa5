"""``benchmarks/run.py``'s command line: parse the options, set up, run the plan, report."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import netns, report
from .corpus import CORPORA
from .measurement import check_machine
from .plan import Bench, run_loopback, run_netns
from .servers import TRANSPORTS, LocalCA, Nginx, find_nginx, make_work_dir, remove_leftovers
from .tools import REFERENCE, TOOL_KEYS, TOOLS, by_keys, cli_options

HERE = Path(__file__).resolve().parent.parent


def _keys(text: str, known: dict[str, Any] | list[str], what: str) -> list[str]:
    items = [] if text == "none" else [x.strip() for x in text.split(",") if x.strip()]
    for x in items:
        if x not in known:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {x!r} (choose from {', '.join(known)})"
            )
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="run.py",
        description=sys.modules["__main__"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = ap.add_argument
    add("--quick", action="store_true", help="smoke test: 20 tasks of the mix over HTTP, 1 rep")
    add("--reps", type=int, help="repetitions per tool (default 3; quick 1)")
    add("--reps-large", type=int, help="repetitions on the large corpus (default --reps)")
    add("--corpus", help="comma list of mix,small,large (default all; quick: mix)")
    add(
        "--transport",
        help="comma list of http,https,h2 or none: how nginx serves the corpora "
        "on loopback (default http,https; quick: http)",
    )
    add("--tools", help=f"comma list of {','.join(TOOL_KEYS)} (default all)")
    add(
        "--cli-extra",
        default="",
        metavar="ARGS",
        help="more arguments for every rodin-async CLI run, e.g. '-j 16'",
    )
    add(
        "--sweep",
        help="rodin-async concurrencies on the mix over the first transport (default "
        "1,2,4,8,16,32; quick 2,8; 'none' skips)",
    )
    add("--sweep-reps", type=int, help="repetitions per sweep point (default 2; quick 1)")
    add("--sweep-tool", choices=["cli", "lib"], default="cli")
    add(
        "--scaling",
        help="core counts for the core-scaling run on the mix: each tool pinned "
        "with taskset to the first N CPUs (default 1,2 up to the CPU count; quick: none)",
    )
    add("--scaling-tools", default="cli,curl", help="tools of the scaling run (default cli,curl)")
    add("--scaling-transport", choices=list(TRANSPORTS), help="default: the first transport")
    add("--scaling-reps", type=int, help="repetitions of the scaling run (default --reps)")
    add(
        "--netns",
        metavar="RATES",
        help="root: also run over a real packet path (namespace, "
        "veth, MTU 1500, HTTPS) capped at each rate, e.g. 500mbit,1gbit,none",
    )
    add("--netns-tools", default="cli,lib,curl", help="tools of the packet-path runs")
    add("--netns-corpus", default="mix", choices=list(CORPORA))
    add("--netns-reps", type=int, help="repetitions of the packet-path runs (default --reps)")
    add(
        "--netns-offload",
        action="store_true",
        help="keep TSO/GSO on nginx's veth (64 KiB segments instead of 1500-byte packets)",
    )
    add(
        "--cleanup",
        action="store_true",
        help="root: remove benchmark namespaces a killed run left behind, then exit",
    )
    add(
        "--server",
        choices=["auto", "nginx", "fake"],
        default="auto",
        help="file server: nginx (default when installed) or the bundled fake server",
    )
    add(
        "--corpus-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "rodin-async-bench-corpus",
        help="where the corpora are generated, and kept for the next run",
    )
    add(
        "--out",
        type=Path,
        default=HERE / "results",
        help="results folder (default benchmarks/results)",
    )
    add(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before starting, wait up to this long for other CPU use to stop",
    )
    add("--timeout", type=float, default=600, help="kill a run after this many seconds")
    args = ap.parse_args(argv)
    try:
        _resolve(args)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        ap.error(str(exc))
    return args


def _resolve(args: argparse.Namespace) -> None:
    """Fill in the defaults that depend on --quick, and check every list."""
    q = args.quick
    args.reps = args.reps or (1 if q else 3)
    args.reps_large = args.reps_large or args.reps
    args.corpus = _keys(args.corpus or ("mix" if q else "mix,small,large"), CORPORA, "corpus")
    args.transport = _keys(
        args.transport or ("http" if q else "http,https"), TRANSPORTS, "transport"
    )
    args.tools = by_keys(_keys(args.tools, TOOL_KEYS, "tool")) if args.tools else list(TOOLS)
    args.cli_extra = shlex.split(args.cli_extra)
    spec = args.sweep or ("2,8" if q else "1,2,4,8,16,32")
    args.sweep = [] if spec == "none" else [int(x) for x in spec.split(",")]
    args.sweep_reps = args.sweep_reps or (1 if q else 2)
    ncpu = os.cpu_count() or 1
    default_scaling = "none" if q or ncpu < 2 else "1,2"
    spec = args.scaling or default_scaling
    args.scaling = [] if spec == "none" else [int(x) for x in spec.split(",")]
    if any(n < 1 or n > ncpu for n in args.scaling):
        raise ValueError(f"--scaling: core counts must be between 1 and {ncpu}")
    args.scaling_tools = by_keys(_keys(args.scaling_tools, TOOL_KEYS, "tool"))
    args.scaling_transport = args.scaling_transport or (args.transport or ["http"])[0]
    args.scaling_reps = args.scaling_reps or args.reps
    rates = args.netns.split(",") if args.netns else []  # "none" here: uncapped
    args.netns = [(x.strip(), netns.parse_rate(x)) for x in rates]
    args.netns_tools = by_keys(_keys(args.netns_tools, TOOL_KEYS, "tool"))
    args.netns_reps = args.netns_reps or args.reps
    if args.netns:  # checked now, not after the hour of loopback runs that come first
        missing = netns.missing_prerequisites(offload=args.netns_offload)
        if missing:
            raise SystemExit(f"--netns can't run here: {missing}")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # runs the clean-up: servers, namespace, dirs


def say(msg: str = "") -> None:
    print(msg, flush=True)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    if args.cleanup:
        remove_leftovers(say)
        netns.cleanup(say)
        return 0
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:])
    say(f"$ {command}")
    busy, top = check_machine(args.wait_quiet, say)
    nginx_bin = _server_mode(args)
    args.corpus_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(args.corpus_dir, 0o755)  # nginx's worker may run as another user
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:  # servers, namespace, temp dir: always undone
        work = make_work_dir()
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        bench = Bench(args, work, "bench-" + secrets.token_hex(8), say, cli_options())
        say(
            f"rodin-async download options detected: --ca-bundle {_has(bench, '--ca-bundle')}, "
            f"--processes {_has(bench, '--processes')}"
        )
        tools = bench.usable(args.tools)
        results = _new_results(args, bench, command, busy, top)

        def save() -> None:
            (args.out / "results.json").write_text(json.dumps(results, indent=1))

        needs_tls = bool(args.netns) or any(t != "http" for t in args.transport)
        ca = LocalCA(work) if needs_tls else None
        nginx = None
        if nginx_bin and args.server_mode == "nginx" and args.transport:
            cert = ca.issue("loopback", ["127.0.0.1", "localhost"]) if ca else None
            nginx = Nginx(nginx_bin, args.corpus_dir, work, args.transport, tls=cert)
            stack.callback(nginx.close)
            say("nginx serving " + ", ".join(f"{t} on {nginx.url(t)}" for t in args.transport))
        run_loopback(bench, nginx, ca, tools, results, save)
        if args.netns:
            # --netns implies nginx (_server_mode refuses the fake server) and TLS
            assert nginx_bin is not None
            assert ca is not None
            run_netns(bench, stack, nginx_bin, ca, results, save)
    results["elapsed_seconds"] = time.perf_counter() - t_start
    results["load_after"] = os.getloadavg()
    return finish(args, results)


def _new_results(
    args: argparse.Namespace, bench: Bench, command: str, busy: float, top: list[str]
) -> dict[str, Any]:
    """results.json before any run: what was asked, on what, in what conditions."""
    return {
        "command": command,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "server": args.server_mode,
        "quick": args.quick,
        "reps": args.reps,
        "reps_large": args.reps_large,
        "reference": REFERENCE,
        "transports": args.transport,
        "cli_options": sorted(bench.cli_options & {"--ca-bundle", "--processes"}),
        "versions": report.versions(),
        "load_before": os.getloadavg(),
        "busy_cpus_before": busy,
        "busy_before": top,
        "skipped": bench.skipped,
        "tools": {t.name: {"kind": t.kind, "note": t.note} for t in TOOLS},
        "corpora": {},
        "sweep": None,
        "scaling": None,
    }


def _has(bench: Bench, option: str) -> str:
    return "yes" if option in bench.cli_options else "no"


def _server_mode(args: argparse.Namespace) -> str | None:
    """Decide nginx or the fake server (args.server_mode); return nginx's path if any."""
    nginx_bin = find_nginx()
    mode = args.server if args.server != "auto" else ("nginx" if nginx_bin else "fake")
    if mode == "nginx" and not nginx_bin:
        raise SystemExit("nginx is not installed: apt-get install -y nginx (or use --server fake)")
    if mode == "fake":
        if args.netns or any(t != "http" for t in args.transport):
            raise SystemExit("HTTPS and --netns need nginx: apt-get install -y nginx")
        say(
            "WARNING: serving files with the bundled fake server (Python, uvicorn), not nginx. "
            "The server then limits the figures: they compare the tools on this server only. "
            "Install nginx for real figures: apt-get install -y nginx"
        )
    args.server_mode = mode
    return nginx_bin


def finish(args: argparse.Namespace, results: dict[str, Any]) -> int:
    """Write results.json and results.md, print the targets; 1 if any run failed its check."""
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    used = {name for c in results["corpora"].values() for name in c["summary"]}
    (args.out / "results.md").write_text(
        report.markdown(results, [t for t in TOOLS if t.name in used])
    )
    if results["corpora"]:
        say(report.targets(results))
        if any(c.get("netns") for c in results["corpora"].values()):
            say("\n" + report.netns_table(results["corpora"]))
    minutes = results["elapsed_seconds"] / 60
    say(f"\nresults: {args.out / 'results.json'}  {args.out / 'results.md'}  ({minutes:.1f} min)")
    say("chart:   python benchmarks/chart.py " + shlex.quote(str(args.out / "results.json")))
    failed = [
        f"{t} on {c}"
        for c, v in results["corpora"].items()
        for t, r in v["summary"].items()
        if r["verified_reps"] != r["reps"]
    ]
    if failed:
        say("VERIFICATION FAILURES: " + ", ".join(failed))
    return 1 if failed else 0

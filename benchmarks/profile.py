"""Where does a rodin-async bulk download spend its CPU? A py-spy (and perf) profile of one run.

    .venv/bin/python benchmarks/profile.py --transport https          # the CLI, the mix, HTTPS
    .venv/bin/python benchmarks/profile.py --tool lib-uvloop --corpus small --native
    .venv/bin/python benchmarks/profile.py --transport https --perf   # + perf: by library, kernel

It serves the corpus exactly as ``run.py`` does (private nginx, test CA, API stand-in),
runs the tool once under ``py-spy record --format raw`` (every thread, on-CPU samples only),
checks the output byte for byte, and prints where the samples went: by layer (TLS,
h11, httpcore, httpx, thread hops, hashing, progress, manifest...), for all threads and
for the event-loop thread alone (one core's ceiling), and the inclusive share of the call
paths issue 10 asks about. ``--perf`` adds ``perf record`` over the same kind of run,
reported by shared object (kernel, libcrypto, libpython, uvloop...), which py-spy can't
see. Raw profiles stay in ``--out`` (flame graphs: ``py-spy record --format speedscope``,
or feed the raw file to any collapsed-stack viewer). Needs ``pip install py-spy`` (root,
or ptrace allowed) and, for ``--perf``, ``apt-get install linux-perf``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import profiling
from harness.corpus import CORPORA, QUICK_TASKS, Corpus, verify
from harness.servers import (
    TRANSPORTS,
    ApiServer,
    LocalCA,
    Nginx,
    find_nginx,
    list_all,
    make_work_dir,
)
from harness.tools import TOOL_KEYS, Launch, by_keys, cli_options, write_job

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = ap.add_argument
    add("--transport", choices=list(TRANSPORTS), default="http")
    add("--corpus", choices=list(CORPORA), default="mix")
    add("--quick", action="store_true", help=f"the first {QUICK_TASKS} tasks only")
    add("--tool", choices=["cli", "lib", "lib-uvloop"], default="cli")
    add("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    add("--native", action="store_true", help="py-spy --native: C frames (OpenSSL, SHA-256)")
    add("--gil", action="store_true", help="py-spy --gil: only the thread holding the GIL")
    add(
        "--nonblocking",
        action="store_true",
        help="py-spy --nonblocking: less overhead, but stacks may be torn or missing",
    )
    add("--perf", action="store_true", help="also a perf run, reported by shared object")
    add("--cli-extra", default="", help="more arguments for the CLI, e.g. '-j 16'")
    add("--corpus-dir", type=Path, default=Path(tempfile.gettempdir()) / "rodin-async-bench-corpus")
    add("--out", type=Path, default=Path(tempfile.gettempdir()) / "rodin-async-profile")
    return ap.parse_args()


def py_spy(args: argparse.Namespace) -> list[str]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.access(exe, os.X_OK):
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    name = f"{args.tool}-{args.corpus}-{args.transport}{'-native' * args.native}{'-gil' * args.gil}"
    args.raw = args.out / f"{name}.txt"
    cmd = [
        exe,
        "record",
        "--format",
        "raw",
        "--rate",
        str(args.rate),
        "--threads",
        "-o",
        str(args.raw),
    ]
    cmd += ["--native"] * args.native + ["--nonblocking"] * args.nonblocking
    return [*cmd, *(["--gil"] if args.gil else []), "--"]


def perf(args: argparse.Namespace) -> list[str]:
    if not shutil.which("perf"):
        raise SystemExit("perf is not installed: apt-get install -y linux-perf")
    args.perf_data = args.out / f"{args.tool}-{args.corpus}-{args.transport}.perf.data"
    return ["perf", "record", "-F", "499", "-g", "-o", str(args.perf_data), "--"]


def run(argv: list[str], env: dict[str, str], corpus: Corpus, out: Path) -> float:
    """Run once; return the tool's CPU seconds (children); exit if the bytes are wrong."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    before = os.times()
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = after.children_user + after.children_system
    cpu -= before.children_user + before.children_system
    check = verify(out, corpus.files)
    shutil.rmtree(out, ignore_errors=True)
    if p.returncode or not check["ok"]:
        raise SystemExit(
            f"the run failed (rc {p.returncode}, {check}):\n{p.stderr.decode()[-2000:]}"
        )
    print(
        f"   {wall:.2f} s wall, {cpu:.2f} CPU s (profiler included), "
        f"{corpus.total_bytes / 1e6 / wall:.0f} MB/s, verified"
    )
    return cpu


def perf_report(data: Path) -> str:
    """By thread and shared object, then the busiest thread's (the event loop's) symbols."""

    def report(*options: str, limit: int) -> list[str]:
        p = subprocess.run(
            ["perf", "report", "-i", str(data), "--no-children", "-g", "none", "--stdio",
             "--percent-limit", "0.5", *options],
            capture_output=True, text=True,
        )  # fmt: skip
        rows = [ln for ln in p.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        return rows[:limit]

    threads = report("--sort", "pid", limit=1)
    main_pid = threads[0].split()[1].split(":")[0] if threads else ""
    lines = ["% of all samples, by thread and shared object:", *report("--sort", "pid,dso",
             limit=20)]  # fmt: skip
    if main_pid:
        lines += [f"\nthe busiest thread ({main_pid}: the event loop), % of all samples by symbol:",
                  *report("--tid", main_pid, "--sort", "dso,sym", limit=15)]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ntasks = QUICK_TASKS if args.quick else CORPORA[args.corpus][0]
    corpus = Corpus(args.corpus_dir, args.corpus, ntasks)
    corpus.ensure(print)
    work = make_work_dir()
    servers: list[Nginx | ApiServer] = []
    try:
        tls = LocalCA(work) if args.transport != "http" else None
        cert = tls.issue("loopback", ["127.0.0.1"]) if tls else None
        nginx = Nginx(find_nginx() or "nginx", args.corpus_dir, work, [args.transport], tls=cert)
        servers.append(nginx)
        key = "profile-key"
        api = ApiServer(corpus, nginx.url(args.transport), key, work, "profile")
        servers.append(api)
        files, _ = list_all(api.base_url, key, corpus.tasks)
        write_job(work / "job", corpus, api.base_url, files, work / "out")
        tool = by_keys([args.tool])[0]
        spec = Launch(
            work / "job",
            work / "out",
            ca_file=tls.ca_file if tls else None,
            cli_options=cli_options(),
            cli_extra=tuple(args.cli_extra.split()),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RODIN_", "SSL_CERT_"))}
        env |= {"RODIN_API_KEY": key, "RODIN_BASE_URL": api.base_url} | tool.env(spec)
        print(
            f"== {TOOL_KEYS[args.tool]} on {corpus.name} ({corpus.total_bytes / 1e9:.2f} GB) "
            f"over {TRANSPORTS[args.transport]}, under py-spy"
        )
        cpu = run(py_spy(args) + tool.argv(spec), env, corpus, work / "out")
        stacks = profiling.parse(args.raw.read_text().splitlines())
        print(profiling.report(stacks, args.rate, cpu))
        print(f"\nraw profile: {args.raw}")
        if args.perf:
            print("\n== the same run under perf record")
            run(perf(args) + tool.argv(spec), env, corpus, work / "out")
            print(perf_report(args.perf_data))
    finally:
        for server in reversed(servers):
            server.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

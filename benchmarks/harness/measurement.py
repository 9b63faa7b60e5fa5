"""Measuring one run: wall time, CPU, peak RSS, the servers' CPU and everyone else's.

Each run is its own process; ``os.wait4`` gives its CPU (user + sys), GNU time its peak RSS.
Set-up (emptying the output folder, ``sync``) and the byte-for-byte check are outside the
timed region. Medians are over verified runs only: a failed run is counted, never averaged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .corpus import FileSpec, verify

TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None  # GNU time: peak RSS


def proc_cpu(pids: list[int]) -> float:
    """utime+stime (s) of these processes and their live children."""
    tick = os.sysconf("SC_CLK_TCK")
    wanted = set(pids)
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        pid, ppid = int(entry), int(fields[1])
        if pid in wanted or ppid in wanted:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def system_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores) so far, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Command:
    """One tool invocation: its argv, its whole environment, and the CPUs it may use."""

    argv: list[str]
    env: dict[str, str]
    cpus: str | None = None  # a ``taskset -c`` list, e.g. "0" or "0,1"; None: unpinned


def run_once(
    cmd: Command,
    out: Path,
    files: list[FileSpec],
    server_pids: list[int],
    log: Path,
    timeout: float,
    pid_log: Path | None = None,
) -> dict[str, Any]:
    """One timed run of one tool; the clean-up and the verification are outside the timing.

    The tool's pid is appended to *pid_log*, for ``--cleanup`` after a killed harness.
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()  # flush the previous run's writes so they don't land in this run
    time.sleep(0.3)
    load = os.getloadavg()[0]
    srv0, busy0 = proc_cpu(server_pids), system_busy()
    rss_file = log.with_suffix(".rss")
    wall, rc, ru = _timed(_wrapped(cmd, rss_file), cmd.env, out.parent, log, timeout, pid_log)
    srv, busy = proc_cpu(server_pids) - srv0, system_busy() - busy0
    cpu = ru.ru_utime + ru.ru_stime
    check = verify(out, files)
    failed = rc != 0 or not check["ok"]
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall": wall,
        "user": ru.ru_utime,
        "sys": ru.ru_stime,
        "cpu": cpu,
        "rss_mib": _peak_rss_kib(rss_file, ru.ru_maxrss) / 1024,
        "server_cpu": srv,
        "other_cpu": max(0.0, busy - cpu - srv),
        "load1_before": load,
        "cpus": cmd.cpus,
        "rc": rc,
        "timed_out": wall >= timeout,
        "verified": not failed,
        "verify": check,
        "stderr_tail": log.read_text(errors="replace")[-600:] if failed else "",
    }


def _wrapped(cmd: Command, rss_file: Path) -> list[str]:
    argv = cmd.argv
    if TIME_BIN:
        # Peak RSS from GNU time, a small process that forks the tool: a child forked from this
        # (large) harness would inherit the harness's RSS as its ru_maxrss floor on Linux.
        argv = [TIME_BIN, "-q", "-f", "%M", "-o", str(rss_file), *argv]
    if cmd.cpus is not None:
        argv = ["taskset", "-c", cmd.cpus, *argv]  # inherited by every thread and child
    return argv


def _timed(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    log: Path,
    timeout: float,
    pid_log: Path | None,
) -> tuple[float, int, Any]:
    """Spawn, wait, return (wall seconds, exit code, rusage); kill the group on timeout."""
    with open(log, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,  # a timeout kills the whole group, tool included
        )
        if pid_log is not None:
            with open(pid_log, "a") as f:
                f.write(f"{proc.pid}\n")
        timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or SIGTERM: don't leave the tool running
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, proc.returncode, ru


def _peak_rss_kib(rss_file: Path, fallback: float) -> float:
    if not TIME_BIN:
        return float(fallback)
    try:
        return float(rss_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return float("nan")


def describe_run(label: str, r: dict[str, Any], nbytes: int) -> str:
    flag = "ok" if r["verified"] else f"FAILED rc={r['rc']} {r['verify']}"
    line = (
        f"   {label:34s} {r['wall']:7.2f} s {nbytes / 1e6 / r['wall']:6.0f} MB/s"
        f"  cpu {r['cpu']:6.2f} s (u {r['user']:.2f} s {r['sys']:.2f})"
        f"  rss {r['rss_mib']:4.0f} MiB  server {r['server_cpu']:.2f} s"
        f"  other {r['other_cpu']:.2f} s  {flag}"
    )
    if r["stderr_tail"]:
        line += "\n      stderr: " + r["stderr_tail"].strip().replace("\n", "\n      ")
    return line


def summarize(runs: list[dict[str, Any]], nbytes: int, nfiles: int) -> dict[str, Any]:
    """Medians over the verified runs; a failed run is counted as failed, never as a figure."""
    good = [r for r in runs if r["verified"]]
    row: dict[str, Any] = {"reps": len(runs), "verified_reps": len(good)}
    if good:

        def med(k: str) -> float:
            return statistics.median(r[k] for r in good)

        row.update(
            wall=med("wall"),
            cpu=med("cpu"),
            user=med("user"),
            sys=med("sys"),
            mbps=nbytes / 1e6 / med("wall"),
            cpu_per_gb=med("cpu") / (nbytes / 1e9),
            cpu_ms_per_file=med("cpu") * 1000 / nfiles,
            rss_mib=max(r["rss_mib"] for r in good),
            server_cpu=med("server_cpu"),
            other_cpu=med("other_cpu"),
            server_busy=statistics.median(r["server_cpu"] / r["wall"] for r in good),
            wall_min=min(r["wall"] for r in good),
            wall_max=max(r["wall"] for r in good),
        )
    return row


def library_fingerprint() -> str:
    """A short hash of rodin_async's source files (names, sizes, mtimes): others may be editing
    the library while a benchmark runs, and every run imports whatever is there at that moment."""
    spec = importlib.util.find_spec("rodin_async")
    if spec is None or spec.origin is None:
        return "?"
    root = Path(spec.origin).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def busy_processes(window: float = 2.0) -> tuple[float, list[str]]:
    """How many CPUs the machine kept busy over *window* seconds, and the busiest processes."""
    b0 = system_busy()
    time.sleep(window)
    busy = (system_busy() - b0) / window
    p = subprocess.run(
        ["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True
    )
    me = str(os.getpid())
    top = [line[:160] for line in p.stdout.splitlines()[1:8] if line.split()[0] != me]
    return busy, top[:5]


def check_machine(wait_quiet: float, say: Callable[[str], None]) -> tuple[float, list[str]]:
    """Say how busy the machine is (waiting up to *wait_quiet* s for quiet); warn if busy."""
    busy, top = busy_processes()
    waited = 0.0
    while busy > 0.25 and waited < wait_quiet:
        say(f"waiting for a quiet machine: {busy:.2f} CPUs busy ({top[0] if top else '?'})")
        time.sleep(10)
        waited += 12
        busy, top = busy_processes()
    load = os.getloadavg()
    say(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; "
        f"{busy:.2f} CPUs busy over the last 2 s"
    )
    if busy > 0.25:
        say(
            "WARNING: something else is using CPU; figures will be noisy. Busiest processes:\n  "
            + "\n  ".join(top)
        )
    if not TIME_BIN:
        say(
            "WARNING: /usr/bin/time (GNU time) not found: peak RSS then comes from wait4 and is at "
            "least this harness's own RSS (apt-get install -y time)"
        )
    return busy, top if busy > 0.25 else []

"""Benchmark rodin-async's bulk download against the tools people would otherwise use.

    python benchmarks/run.py                 # full: 3 reps, mix + small + large, sweep
    python benchmarks/run.py --quick         # smoke test: 20 tasks of the mix, 1 rep

It generates the corpora (random bytes, reused across runs) under a temp dir, serves them
with a private nginx on 127.0.0.1 (falls back to the bundled fake server, with a warning),
serves the ``POST /api/v2/download`` lists from a tiny API process pointing at nginx, then
runs every tool in its own process, round-robin per repetition, and measures wall time,
CPU (user+sys), and peak RSS of each run with ``os.wait4``. Every output is checked
byte-for-byte (size + SHA-256) against the corpus after each run, outside the timed region.
Results: ``OUT/results.json`` (every run) and ``OUT/results.md`` (the tables). Then
``python benchmarks/chart.py`` draws ``docs/benchmark.png``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOOLS_DIR = HERE / "tools"
REPO = HERE.parent
KIB, MIB = 1024, 1024 * 1024

# name -> (number of tasks, {file name: size}). Every task has the same files.
CORPORA: dict[str, tuple[int, dict[str, int]]] = {
    # The typical Rodin result mix: 200 tasks x 5 files = 1000 files, 2.36 GB.
    "mix": (
        200,
        {
            "base_basic_pbr.glb": 8 * MIB,
            "base_basic_pbr.fbx": 2 * MIB,
            "texture_diffuse.png": 1 * MIB,
            "preview.webp": 200 * KIB,
            "meta.json": 50 * KIB,
        },
    ),
    # Per-file overhead: 1000 x 256 KiB, in the same 200 tasks x 5 files shape as the mix.
    "small": (200, {f"tile_{i}.png": 256 * KIB for i in range(5)}),
    # Few big transfers: 4 x 256 MiB (one file per task).
    "large": (4, {"model.glb": 256 * MIB}),
}
QUICK_TASKS = 20  # --quick: the first 20 tasks of the mix
REFERENCE = "rodin-async CLI"
TIME_BIN = (
    "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
)  # GNU time, for peak RSS  # ratios are relative to this tool, measured in the same run


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class FileSpec:
    task: str
    name: str
    size: int
    sha256: str

    @property
    def rel(self) -> str:
        return f"{self.task}/{self.name}"


def stable_task_names(corpus: str, count: int) -> list[str]:
    """uuid-shaped task names (the folders look like the real thing), the same every run."""
    tag = hashlib.sha256(corpus.encode()).hexdigest()[:8]
    return [f"{tag}-{i:04x}-4000-8000-{i:012x}" for i in range(count)]


class Corpus:
    """Files of random bytes under ``root/<corpus>/<task>/<name>``, with a manifest of sizes and
    hashes. Content is slices of a random pool at random offsets (plus a unique random prefix),
    which makes gigabytes in seconds; every file is distinct and incompressible."""

    POOL = 64 * MIB
    PIECE = 8 * MIB

    def __init__(self, root: Path, name: str, ntasks: int) -> None:
        self.root = root
        self.name = name
        self.dir = root / name
        full_tasks, files = CORPORA[name]
        self.tasks = stable_task_names(name, full_tasks)[:ntasks]
        self.file_sizes = files
        self.manifest_path = root / f"{name}.manifest.json"
        self.files: list[FileSpec] = []

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def ensure(self, log: Callable[[str], None]) -> None:
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        pool: bytes | None = None
        made = 0
        t0 = time.perf_counter()
        files = []
        for task in self.tasks:
            for name, size in self.file_sizes.items():
                rel = f"{task}/{name}"
                path = self.dir / rel
                known = manifest.get(rel)
                if not (
                    known and known[0] == size and path.is_file() and path.stat().st_size == size
                ):
                    if pool is None:
                        pool = os.urandom(self.POOL)
                    manifest[rel] = [size, self._write(path, size, pool)]
                    made += size
                files.append(FileSpec(task, name, size, manifest[rel][1]))
        self.files = files
        if made:
            tmp = self.manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest))
            tmp.replace(self.manifest_path)
            log(
                f"  generated {made / 1e9:.2f} GB of corpus '{self.name}' in "
                f"{time.perf_counter() - t0:.1f} s under {self.dir}"
            )

    def _write(self, path: Path, size: int, pool: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)
        h = hashlib.sha256()
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            head = os.urandom(min(16, size))
            f.write(head)
            h.update(head)
            left = size - len(head)
            while left:
                n = min(left, self.PIECE)
                off = int.from_bytes(os.urandom(4), "little") % (len(pool) - n + 1)
                piece = memoryview(pool)[off : off + n]
                f.write(piece)
                h.update(piece)
                left -= n
        os.chmod(tmp, 0o644)
        tmp.replace(path)
        return h.hexdigest()


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(out: Path, files: list[FileSpec]) -> dict[str, Any]:
    """Compare every expected output with the corpus: size, then SHA-256 (2 threads)."""
    missing, wrong_size, wrong_hash, to_hash = [], [], [], []
    for spec in files:
        path = out / spec.task / spec.name
        try:
            size = path.stat().st_size
        except OSError:
            missing.append(spec.rel)
            continue
        if size != spec.size:
            wrong_size.append(spec.rel)
        else:
            to_hash.append(spec)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        digests = pool.map(lambda s: _sha256_file(out / s.task / s.name), to_hash)
        for spec, digest in zip(to_hash, digests, strict=True):
            if digest != spec.sha256:
                wrong_hash.append(spec.rel)
    ok = not (missing or wrong_size or wrong_hash)
    return {
        "ok": ok,
        "missing": len(missing),
        "wrong_size": len(wrong_size),
        "wrong_hash": len(wrong_hash),
        "examples": (missing + wrong_size + wrong_hash)[:5],
    }


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


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


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {work}/tmp/client;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


class Nginx:
    """A private nginx serving the corpus root on loopback (its own conf, pid, logs, temp dirs)."""

    def __init__(self, binary: str, root: Path, work: Path) -> None:
        self.work = work / "nginx"
        (self.work / "tmp").mkdir(parents=True)
        self.port = free_port()
        conf = self.work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=self.work, port=self.port, root=root))
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self.work), "-e", str(self.work / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.work / "stderr.log", "wb"),  # noqa: SIM115
        )
        wait_for_port(self.port, self.proc, "nginx")
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        stop(self.proc, signal.SIGQUIT)  # graceful stop of the master and its worker


class ApiServer:
    """benchmarks/tools/api_server.py: ``POST /api/v2/download`` lists pointing at nginx."""

    def __init__(self, corpus: Corpus, files_url: str, key: str, work: Path) -> None:
        listing: dict[str, list[dict[str, str]]] = {t: [] for t in corpus.tasks}
        for spec in corpus.files:
            url = f"{files_url}/{corpus.name}/{spec.task}/{spec.name}"
            listing[spec.task].append({"url": url, "name": spec.name})
        path = work / f"listing-{corpus.name}.json"
        path.write_text(json.dumps(listing))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(TOOLS_DIR / "api_server.py"),
                "--listing",
                str(path),
                "--key",
                key,
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(work / f"api-{corpus.name}.log", "wb"),  # noqa: SIM115
        )
        wait_for_port(self.port, self.proc, "the API server")
        self.base_url = f"http://127.0.0.1:{self.port}/api/v2"

    def close(self) -> None:
        stop(self.proc)


class FakeServer:
    """Fallback: ``rodin-async fake-server --root`` serves both the API and the files."""

    def __init__(self, corpus: Corpus, key: str, work: Path) -> None:
        self.port = free_port()
        log = open(work / f"fake-{corpus.name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rodin_async",
                "fake-server",
                "--root",
                str(corpus.dir),
                "--port",
                str(self.port),
                "--key",
                key,
                "--uuids-file",
                str(work / f"fake-{corpus.name}-uuids.txt"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        wait_for_port(self.port, self.proc, "the fake server", timeout=60)
        # It announces "Fake Rodin API: <base url>   (result files on ...)" on stdout.
        deadline = time.monotonic() + 30
        while True:
            text = (work / f"fake-{corpus.name}.log").read_text(errors="replace")
            found = [ln for ln in text.splitlines() if ln.startswith("Fake Rodin API:")]
            if found:
                self.base_url = found[0].split()[3]
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the fake server did not announce its URL:\n{text[-800:]}")
            time.sleep(0.05)

    def close(self) -> None:
        stop(self.proc, signal.SIGINT)


def list_all(base_url: str, key: str, tasks: list[str]) -> tuple[list[dict[str, str]], float]:
    """POST /download for every task, sequentially (a new connection each): the URL list for
    the tools that can't call the API, and how long listing took."""
    files = []
    t0 = time.perf_counter()
    for task in tasks:
        req = urllib.request.Request(
            f"{base_url}/download",
            data=json.dumps({"task_uuid": task}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.load(r)
        for item in body["list"]:
            files.append({"task": task, "name": item["name"], "url": item["url"]})
    return files, time.perf_counter() - t0


# --------------------------------------------------------------------------- tools


@dataclass
class Tool:
    name: str
    kind: str  # "api": lists each task through POST /download itself; "urls": gets a URL list
    argv: Callable[[Path, Path, int | None], list[str]]  # (job dir, out dir, concurrency)
    needs: list[str] = field(default_factory=list)  # executables or "py:module"
    note: str = ""


def _py(script: str) -> Callable[[Path, Path, int | None], list[str]]:
    def argv(job: Path, out: Path, j: int | None) -> list[str]:
        cmd = [
            sys.executable,
            str(TOOLS_DIR / script),
            "--job",
            str(job / "job.json"),
            "--out",
            str(out),
        ]
        if j is not None:
            cmd += ["-j", str(j)]
        return cmd

    return argv


def _cli(job: Path, out: Path, j: int | None) -> list[str]:
    exe = Path(sys.executable).with_name("rodin-async")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rodin_async"]
    cmd += ["download", "--from-file", str(job / "tasks.txt"), "-o", str(out), "-q"]
    return cmd + (["-j", str(j)] if j is not None else [])


def _curl(job: Path, out: Path, j: int | None) -> list[str]:
    return [
        "curl",
        "-s",
        "-S",
        "--fail",
        "--create-dirs",
        "-Z",
        "--parallel-max",
        str(j or 16),
        "-K",
        str(job / "curl.cfg"),
    ]


def _aria2c(job: Path, out: Path, j: int | None) -> list[str]:
    return [
        "aria2c",
        "-q",
        "-j",
        str(j or 16),
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "-d",
        str(out),
        "-i",
        str(job / "aria2c.txt"),
    ]


TOOLS = [
    Tool(
        "rodin-async CLI",
        "api",
        _cli,
        ["py:rodin_async", "py:typer"],
        "`rodin-async download --from-file tasks.txt -o OUT -q` (its defaults: -j 8, uvloop)",
    ),
    Tool(
        "rodin-async library",
        "api",
        _py("rodin_lib.py"),
        ["py:rodin_async"],
        "`AsyncRodin(max_concurrency=8).download_many(...)` under asyncio.run",
    ),
    Tool(
        "curl -Z",
        "urls",
        _curl,
        ["curl"],
        "`curl -Z --parallel-max 16 -K config` (url/output pairs)",
    ),
    Tool(
        "aria2c -j16", "urls", _aria2c, ["aria2c"], "`aria2c -j16 -i list --file-allocation=none`"
    ),
    Tool(
        "requests (docs style)",
        "api",
        _py("requests_docs.py"),
        ["py:requests"],
        "sequential `requests.post` list + `requests.get(url).content`",
    ),
    Tool(
        "requests stream",
        "api",
        _py("requests_stream.py"),
        ["py:requests"],
        "sequential, one Session, `stream=True`, `iter_content(1 MiB)`",
    ),
    Tool(
        "parfive",
        "urls",
        _py("parfive_dl.py"),
        ["py:parfive"],
        "`parfive.Downloader(max_conn=16, progress=False)`, other settings default",
    ),
    Tool(
        "aiohttp",
        "api",
        _py("aiohttp_dl.py"),
        ["py:aiohttp", "py:aiofiles"],
        "aiohttp session, 16-way semaphore, `iter_chunked(1 MiB)`, aiofiles writes",
    ),
]
TOOL_KEYS = {
    "cli": "rodin-async CLI",
    "lib": "rodin-async library",
    "curl": "curl -Z",
    "aria2c": "aria2c -j16",
    "requests-docs": "requests (docs style)",
    "requests-stream": "requests stream",
    "parfive": "parfive",
    "aiohttp": "aiohttp",
}


def available(tool: Tool) -> str | None:
    """None if the tool can run, else why not."""
    for need in tool.needs:
        if need.startswith("py:"):
            mod = need[3:]
            probe = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True)
            if probe.returncode:
                return f"python module {mod!r} is not installed (pip install -e '.[bench]')"
        elif shutil.which(need) is None:
            return (
                f"{need!r} is not installed (apt-get install -y {need.replace('aria2c', 'aria2')})"
            )
    return None


def write_job(
    job: Path, corpus: Corpus, base_url: str, files: list[dict[str, str]], out: Path
) -> None:
    job.mkdir(parents=True, exist_ok=True)
    (job / "job.json").write_text(
        json.dumps({"base_url": base_url, "tasks": corpus.tasks, "files": files})
    )
    (job / "tasks.txt").write_text("".join(f"{t}\n" for t in corpus.tasks))
    with open(job / "curl.cfg", "w") as f:
        for item in files:
            f.write(f'url = "{item["url"]}"\noutput = "{out}/{item["task"]}/{item["name"]}"\n')
    with open(job / "aria2c.txt", "w") as f:
        for item in files:
            f.write(f"{item['url']}\n  out={item['task']}/{item['name']}\n")


# --------------------------------------------------------------------------- running


def run_once(
    argv: list[str],
    env: dict[str, str],
    out: Path,
    files: list[FileSpec],
    server_pids: list[int],
    log: Path,
    timeout: float,
) -> dict[str, Any]:
    """One timed run of one tool; the clean-up and the verification are outside the timing."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()  # flush the previous run's writes so they don't land in this run
    time.sleep(0.3)
    load = os.getloadavg()[0]
    srv0, busy0 = proc_cpu(server_pids), system_busy()
    rss_file = log.with_suffix(".rss")
    if TIME_BIN:
        # Peak RSS from GNU time, a small process that forks the tool: a child forked from this
        # (large) harness would inherit the harness's RSS as its ru_maxrss floor on Linux.
        argv = [TIME_BIN, "-q", "-f", "%M", "-o", str(rss_file), *argv]
    with open(log, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=out.parent,
            start_new_session=True,  # a timeout kills the whole group, tool included
        )
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
    srv, busy = proc_cpu(server_pids) - srv0, system_busy() - busy0
    cpu = ru.ru_utime + ru.ru_stime
    rss_kib = float(ru.ru_maxrss)
    if TIME_BIN:
        try:
            rss_kib = float(rss_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            rss_kib = float("nan")
    check = verify(out, files)
    failed = proc.returncode != 0 or not check["ok"]
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall": wall,
        "user": ru.ru_utime,
        "sys": ru.ru_stime,
        "cpu": cpu,
        "rss_mib": rss_kib / 1024,
        "server_cpu": srv,
        "other_cpu": max(0.0, busy - cpu - srv),
        "load1_before": load,
        "rc": proc.returncode,
        "timed_out": wall >= timeout,
        "verified": not failed,
        "verify": check,
        "stderr_tail": log.read_text(errors="replace")[-600:] if failed else "",
    }


def describe_run(label: str, r: dict[str, Any], nbytes: int) -> str:
    flag = "ok" if r["verified"] else f"FAILED rc={r['rc']} {r['verify']}"
    line = (
        f"   {label:30s} {r['wall']:7.2f} s {nbytes / 1e6 / r['wall']:6.0f} MB/s"
        f"  cpu {r['cpu']:6.2f} s (u {r['user']:.2f} s {r['sys']:.2f})"
        f"  rss {r['rss_mib']:4.0f} MiB  server {r['server_cpu']:.2f} s"
        f"  other {r['other_cpu']:.2f} s  {flag}"
    )
    if r["stderr_tail"]:
        line += "\n      stderr: " + r["stderr_tail"].strip().replace("\n", "\n      ")
    return line


def summarize(runs: list[dict[str, Any]], nbytes: int) -> dict[str, Any]:
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
            rss_mib=max(r["rss_mib"] for r in good),
            server_cpu=med("server_cpu"),
            other_cpu=med("other_cpu"),
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


def fingerprint_note(runs: dict[str, list[dict[str, Any]]]) -> str:
    seen = {r.get("library") for rs in runs.values() for r in rs} - {None}
    if len(seen) <= 1:
        return ""
    return (
        f"**WARNING**: the rodin_async source changed during these runs ({len(seen)} versions: "
        f"{', '.join(sorted(seen))}); its repetitions ran different code."
    )


# --------------------------------------------------------------------------- reporting


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def verified_cell(r: dict[str, Any]) -> str:
    if r["verified_reps"] == r["reps"]:
        return "yes"
    return f"**NO** ({r['verified_reps']}/{r['reps']} ok)"


def corpus_table(name: str, c: dict[str, Any]) -> str:
    rows = c["summary"]
    ref = rows.get(REFERENCE, {}).get("wall")
    lines = [
        f"### {name}: {c['nfiles']} files, {c['bytes'] / 1e9:.2f} GB, {c['reps']} reps",
        "",
        "| tool | lists via API | median wall s | MB/s | CPU s/GB | peak RSS MiB "
        "| wall ÷ rodin-async CLI | verified |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for tool, r in sorted(rows.items(), key=lambda kv: kv[1].get("wall", float("inf"))):
        ratio = r["wall"] / ref if (ref and "wall" in r) else None
        lines.append(
            f"| {tool} | {'yes' if r['kind'] == 'api' else 'no'} | {fmt(r.get('wall'), '.2f')} "
            f"| {fmt(r.get('mbps'), '.0f')} | {fmt(r.get('cpu_per_gb'), '.2f')} "
            f"| {fmt(r.get('rss_mib'), '.0f')} | {fmt(ratio, '.2f')} | {verified_cell(r)} |"
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


def paired_ratio(runs: dict[str, list[dict[str, Any]]], a: str, b: str) -> float | None:
    """Median over repetitions of wall(a) / wall(b), both verified, in the same repetition."""
    pairs = [
        x["wall"] / y["wall"]
        for x, y in zip(runs.get(a, []), runs.get(b, []), strict=False)
        if x["verified"] and y["verified"]
    ]
    return statistics.median(pairs) if pairs else None


TARGETS: list[tuple[str, str, str, str, Callable[[float], bool]]] = [
    ("rodin-async CLI ÷ curl -Z", REFERENCE, "curl -Z", "≤ 1.5 (stretch ≤ 1.1)",
     lambda x: x <= 1.5),
    ("docs-style requests ÷ rodin-async CLI", "requests (docs style)", REFERENCE, "≥ 2",
     lambda x: x >= 2),
    ("rodin-async CLI ÷ parfive", REFERENCE, "parfive", "< 1", lambda x: x < 1),
    ("rodin-async CLI ÷ aiohttp", REFERENCE, "aiohttp", "≤ 1.2", lambda x: x <= 1.2),
]  # fmt: skip


def targets(results: dict[str, Any]) -> str:
    lines = [
        "### Issue-5 targets (wall-time ratios; paired = median of per-repetition ratios)",
        "",
        "| corpus | check | ratio of medians | paired | target | met |",
        "|---|---|---:|---:|---|---|",
    ]
    for cname, c in results["corpora"].items():
        s = c["summary"]
        for label, a, b, target, ok in TARGETS:
            if "wall" in s.get(a, {}) and "wall" in s.get(b, {}):
                r = s[a]["wall"] / s[b]["wall"]
                p = fmt(paired_ratio(c["runs"], a, b), ".2f")
                met = "yes" if ok(r) else "**no**"
                lines.append(f"| {cname} | {label} | {r:.2f} | {p} | {target} | {met} |")
        for tool in (REFERENCE, "rodin-async library"):
            if "rss_mib" in s.get(tool, {}):
                rss = s[tool]["rss_mib"]
                met = "yes" if rss <= 100 else "**no**"
                lines.append(f"| {cname} | {tool} peak RSS MiB | {rss:.0f} | | ≤ 100 | {met} |")
    return "\n".join(lines)


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
        f"Server: {server} on 127.0.0.1. MB = 10^6 bytes; medians over verified reps; "
        "peak RSS = max over reps; ratios from the same run.",
        "",
    ]
    for cname, c in results["corpora"].items():
        md += [corpus_table(cname, c), "", notes(c["runs"]), ""]
    if results["sweep"]:
        md += [sweep_table(results["sweep"]), "", notes(results["sweep"]["runs"]), ""]
    if results["corpora"]:
        md += [targets(results), ""]
    md += ["### Tools", ""] + [f"- **{t.name}**: {t.note}" for t in tools]
    md += [
        "",
        "Tools that list via the API call `POST /download` for every task inside the timed run; "
        "the others get the URL list the harness made beforehand "
        "(`listing_seconds` in results.json is what listing costs).",
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
    }
    for pkg in ("rodin-async", "httpx", "httpcore", "h11", "anyio", "aiofiles", "uvloop",
                "sniffio", "requests", "urllib3", "aiohttp", "parfive"):  # fmt: skip
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


# --------------------------------------------------------------------------- main


@dataclass
class Bench:
    """What every run of one invocation shares."""

    args: argparse.Namespace
    tools: list[Tool]
    env: dict[str, str]
    work: Path
    say: Callable[[str], None]

    @property
    def out_dir(self) -> Path:
        return self.work / "out"

    def run(self, label: str, argv: list[str], corpus: Corpus, pids: list[int], log: str) -> dict:
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        library = library_fingerprint()
        r = run_once(
            argv, self.env, self.out_dir, corpus.files, pids, logs / log, self.args.timeout
        )
        r["argv"] = argv
        r["library"] = library
        self.say(describe_run(label, r, corpus.total_bytes))
        return r

    def tools_round_robin(self, corpus: Corpus, job: Path, pids: list[int], reps: int) -> dict:
        runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in self.tools}
        self.say(f"== corpus {corpus.name}: {len(self.tools)} tools x {reps} reps, round-robin")
        for rep in range(reps):
            k = rep % len(self.tools)
            for t in self.tools[k:] + self.tools[:k]:  # rotate who goes first
                log = f"{corpus.name}-{t.name.replace(' ', '_')}-{rep}.log"
                r = self.run(
                    f"rep {rep} {t.name}", t.argv(job, self.out_dir, None), corpus, pids, log
                )
                runs[t.name].append(r | {"rep": rep})
        nbytes = corpus.total_bytes
        return {
            "nfiles": len(corpus.files),
            "bytes": nbytes,
            "ntasks": len(corpus.tasks),
            "reps": reps,
            "summary": {
                t.name: summarize(runs[t.name], nbytes) | {"kind": t.kind} for t in self.tools
            },
            "runs": runs,
        }

    def sweep(self, tool: Tool, corpus: Corpus, job: Path, pids: list[int], js: list[int],
              reps: int) -> dict:  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {str(j): [] for j in js}
        self.say(f"== concurrency sweep: {tool.name} -j {js} x {reps} reps, round-robin")
        for rep in range(reps):
            k = rep % len(js)
            for j in js[k:] + js[:k]:
                argv = tool.argv(job, self.out_dir, j)
                r = self.run(f"rep {rep} -j {j}", argv, corpus, pids, f"sweep-{j}-{rep}.log")
                runs[str(j)].append(r | {"rep": rep})
        nbytes = corpus.total_bytes
        return {
            "tool": tool.name,
            "corpus": corpus.name,
            "bytes": nbytes,
            "reps": reps,
            "summary": {j: summarize(v, nbytes) for j, v in runs.items()},
            "runs": runs,
        }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = ap.add_argument
    add("--quick", action="store_true", help="smoke test: 20 tasks of the mix, 1 rep, short sweep")
    add("--reps", type=int, help="repetitions per tool (default 3; quick 1)")
    add("--reps-large", type=int, help="repetitions on the large corpus (default --reps)")
    add("--corpus", help="comma list of mix,small,large (default all; quick: mix)")
    add("--tools", help=f"comma list of {','.join(TOOL_KEYS)} (default all)")
    add("--sweep", help="rodin-async concurrencies on the mix (default 1,2,4,8,16,32; quick 2,8; "
        "'none' skips)")  # fmt: skip
    add("--sweep-reps", type=int, help="repetitions per sweep point (default 2; quick 1)")
    add("--sweep-tool", choices=["cli", "lib"], default="cli")
    add("--server", choices=["auto", "nginx", "fake"], default="auto",
        help="file server: nginx (default when installed) or the bundled fake server")  # fmt: skip
    add("--corpus-dir", type=Path, default=Path(tempfile.gettempdir()) / "rodin-async-bench-corpus",
        help="where the corpora are generated, and kept for the next run")  # fmt: skip
    add(
        "--out",
        type=Path,
        default=HERE / "results",
        help="results folder (default benchmarks/results)",
    )
    add("--wait-quiet", type=float, default=0, metavar="SECONDS",
        help="before starting, wait up to this long for other CPU use to stop")  # fmt: skip
    add("--timeout", type=float, default=600, help="kill a run after this many seconds")
    args = ap.parse_args()
    args.reps = args.reps or (1 if args.quick else 3)
    args.reps_large = args.reps_large or args.reps
    args.corpus = (args.corpus or ("mix" if args.quick else "mix,small,large")).split(",")
    for c in args.corpus:
        if c not in CORPORA:
            ap.error(f"unknown corpus {c!r} (choose from {', '.join(CORPORA)})")
    spec = args.sweep or ("2,8" if args.quick else "1,2,4,8,16,32")
    args.sweep = [] if spec == "none" else [int(x) for x in spec.split(",")]
    args.sweep_reps = args.sweep_reps or (1 if args.quick else 2)
    try:
        args.tools = [TOOL_KEYS[k] for k in args.tools.split(",")] if args.tools else None
    except KeyError as exc:
        ap.error(f"unknown tool {exc.args[0]!r} (choose from {', '.join(TOOL_KEYS)})")
    return args


def check_machine(args: argparse.Namespace, say: Callable[[str], None]) -> tuple[float, list[str]]:
    busy, top = busy_processes()
    waited = 0.0
    while busy > 0.25 and waited < args.wait_quiet:
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


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # runs the clean-up: servers, temp dirs


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)

    def say(msg: str = "") -> None:
        print(msg, flush=True)

    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:])
    say(f"$ {command}")
    busy, top = check_machine(args, say)

    tools: list[Tool] = []
    skipped: dict[str, str] = {}
    for t in TOOLS:
        if args.tools is None or t.name in args.tools:
            why = available(t)
            if why:
                skipped[t.name] = why
                say(f"SKIPPED {t.name}: {why}")
            else:
                tools.append(t)

    nginx_bin = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    mode = args.server if args.server != "auto" else ("nginx" if nginx_bin else "fake")
    if mode == "nginx" and not nginx_bin:
        raise SystemExit("nginx is not installed: apt-get install -y nginx (or use --server fake)")
    if mode == "fake":
        say(
            "WARNING: serving files with the bundled fake server (Python, uvicorn), not nginx. "
            "The server then limits the figures: they compare the tools on this server only. "
            "Install nginx for real figures: apt-get install -y nginx"
        )

    args.corpus_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(args.corpus_dir, 0o755)  # nginx's worker may run as another user
    work = Path(tempfile.mkdtemp(prefix="rodin-async-bench-"))
    os.chmod(work, 0o755)
    key = "bench-" + secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RODIN_")}
    env["RODIN_API_KEY"] = key
    bench = Bench(args, tools, env, work, say)

    results: dict[str, Any] = {
        "command": command,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "server": mode,
        "quick": args.quick,
        "reps": args.reps,
        "reps_large": args.reps_large,
        "reference": REFERENCE,
        "versions": versions(),
        "load_before": os.getloadavg(),
        "busy_cpus_before": busy,
        "busy_before": top,
        "skipped": skipped,
        "tools": {t.name: {"kind": t.kind, "note": t.note} for t in tools},
        "corpora": {},
        "sweep": None,
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (args.out / "results.json").write_text(json.dumps(results, indent=1))

    t_start = time.perf_counter()
    nginx: Nginx | None = None
    try:
        if mode == "nginx":
            nginx = Nginx(nginx_bin, args.corpus_dir, work)  # type: ignore[arg-type]
            say(f"nginx on {nginx.url} serving {args.corpus_dir}")
        plan = list(args.corpus)
        if args.sweep and "mix" not in plan:
            plan.append("mix")  # the sweep runs on the mix
        for cname in plan:
            ntasks = QUICK_TASKS if args.quick and cname == "mix" else CORPORA[cname][0]
            corpus = Corpus(args.corpus_dir, cname, ntasks)
            say(f"\n== corpus {cname}: preparing")
            corpus.ensure(say)
            os.sync()
            api: ApiServer | FakeServer
            if nginx is not None:
                api = ApiServer(corpus, nginx.url, key, work)
                pids = [nginx.proc.pid, api.proc.pid]
            else:
                api = FakeServer(corpus, key, work)
                pids = [api.proc.pid]
            try:
                files, list_s = list_all(api.base_url, key, corpus.tasks)
                job = work / f"job-{cname}"
                write_job(job, corpus, api.base_url, files, bench.out_dir)
                env["RODIN_BASE_URL"] = api.base_url
                say(
                    f"   {len(corpus.files)} files, {corpus.total_bytes / 1e9:.2f} GB; "
                    f"API {api.base_url} (listing all {len(corpus.tasks)} tasks one by one "
                    f"took {list_s:.2f} s)"
                )
                if cname in args.corpus:
                    reps = args.reps_large if cname == "large" else args.reps
                    c = bench.tools_round_robin(corpus, job, pids, reps)
                    c["listing_seconds"] = list_s
                    results["corpora"][cname] = c
                    save()
                    say("\n" + corpus_table(cname, c) + "\n\n" + notes(c["runs"]) + "\n")
                if cname == "mix" and args.sweep:
                    key_name = {"cli": REFERENCE, "lib": "rodin-async library"}[args.sweep_tool]
                    tool = next(t for t in TOOLS if t.name == key_name)
                    s = bench.sweep(tool, corpus, job, pids, args.sweep, args.sweep_reps)
                    results["sweep"] = s
                    save()
                    say("\n" + sweep_table(s) + "\n\n" + notes(s["runs"]) + "\n")
            finally:
                api.close()
    finally:
        if nginx is not None:
            nginx.close()
        shutil.rmtree(work, ignore_errors=True)

    results["elapsed_seconds"] = time.perf_counter() - t_start
    results["load_after"] = os.getloadavg()
    save()
    (args.out / "results.md").write_text(markdown(results, tools))
    if results["corpora"]:
        say(targets(results))
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


if __name__ == "__main__":
    sys.exit(main())

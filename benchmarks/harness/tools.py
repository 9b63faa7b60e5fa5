"""The downloaders under test, and how each is launched for one run.

Every tool gets the same `Launch`: the job folder (URL lists, task list, job.json), the
output folder, and for HTTPS the test CA, told to each tool in its own way (curl
``--cacert``, aria2c ``--ca-certificate``, ``--ca-file`` for the Python scripts, and for
the rodin-async CLI ``--ca-bundle`` when it has that option, else ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import Corpus

TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"
REFERENCE = "rodin-async CLI"  # the "÷ rodin-async CLI" column
BASELINE = "curl -Z"  # the "÷ curl" column and the targets


@dataclass(frozen=True)
class Launch:
    """What one run of one tool needs to know."""

    job: Path
    out: Path
    concurrency: int | None = None  # None: the tool's own default
    ca_file: Path | None = None  # HTTPS: trust this CA
    processes: int | None = None  # the CLI's --processes, when it has it
    cli_options: frozenset[str] = frozenset()  # options `rodin-async download` has
    cli_extra: tuple[str, ...] = ()  # --cli-extra: more CLI arguments, as given


@dataclass
class Tool:
    name: str
    kind: str  # "api": lists each task through POST /download itself; "urls": gets a URL list
    argv: Callable[[Launch], list[str]]
    needs: list[str] = field(default_factory=list)  # executables or "py:module"
    note: str = ""
    env: Callable[[Launch], dict[str, str]] = lambda launch: {}


def cli_options() -> frozenset[str]:
    """The long options of ``rodin-async download`` (to pass --ca-bundle, --processes)."""
    p = subprocess.run(
        [*_cli_command(), "download", "--help"],
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
    )
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]+)", p.stdout))


def _cli_command() -> list[str]:
    exe = Path(sys.executable).with_name("rodin-async")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rodin_async"]


def _cli(launch: Launch) -> list[str]:
    cmd = [
        *_cli_command(),
        "download",
        "--from-file",
        str(launch.job / "tasks.txt"),
        "-o",
        str(launch.out),
        "-q",
    ]
    if launch.concurrency is not None:
        cmd += ["-j", str(launch.concurrency)]
    if launch.ca_file and "--ca-bundle" in launch.cli_options:
        cmd += ["--ca-bundle", str(launch.ca_file)]
    if launch.processes and "--processes" in launch.cli_options:
        cmd += ["--processes", str(launch.processes)]
    return cmd + list(launch.cli_extra)


def _cli_processes(processes: int) -> Callable[[Launch], list[str]]:
    """The CLI with ``--processes N`` (unless a run, like the core-scaling one, sets its own)."""

    def argv(launch: Launch) -> list[str]:
        return _cli(dataclasses.replace(launch, processes=launch.processes or processes))

    return argv


def _cli_env(launch: Launch) -> dict[str, str]:
    if launch.ca_file and "--ca-bundle" not in launch.cli_options:
        return {"SSL_CERT_FILE": str(launch.ca_file)}  # httpx reads it (trust_env)
    return {}


def _py(script: str, *extra: str) -> Callable[[Launch], list[str]]:
    def argv(launch: Launch) -> list[str]:
        cmd = [
            sys.executable,
            str(TOOLS_DIR / script),
            "--job",
            str(launch.job / "job.json"),
            "--out",
            str(launch.out),
            *extra,
        ]
        if launch.concurrency is not None:
            cmd += ["-j", str(launch.concurrency)]
        if launch.ca_file:
            cmd += ["--ca-file", str(launch.ca_file)]
        return cmd

    return argv


def _env_ca(launch: Launch) -> dict[str, str]:
    # parfive builds aiohttp's default SSL context, which OpenSSL points at SSL_CERT_FILE.
    return {"SSL_CERT_FILE": str(launch.ca_file)} if launch.ca_file else {}


def _curl(launch: Launch) -> list[str]:
    cmd = [
        "curl",
        "-s",
        "-S",
        "--fail",
        "--create-dirs",
        "-Z",
        "--parallel-max",
        str(launch.concurrency or 16),
        "-K",
        str(launch.job / "curl.cfg"),
    ]
    return cmd + (["--cacert", str(launch.ca_file)] if launch.ca_file else [])


def _aria2c(launch: Launch) -> list[str]:
    cmd = [
        "aria2c",
        "-q",
        "-j",
        str(launch.concurrency or 16),
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "-d",
        str(launch.out),
        "-i",
        str(launch.job / "aria2c.txt"),
    ]
    return cmd + ([f"--ca-certificate={launch.ca_file}"] if launch.ca_file else [])


TOOLS = [
    Tool(
        "rodin-async CLI",
        "api",
        _cli,
        ["py:rodin_async", "py:typer"],
        "`rodin-async download --from-file tasks.txt -o OUT -q` (its defaults: -j 8, uvloop, "
        "--processes: one per core where it pays)",
        _cli_env,
    ),
    Tool(
        "rodin-async CLI --processes 1",
        "api",
        _cli_processes(1),
        ["py:rodin_async", "py:typer"],
        "the same in one process (one event loop)",
        _cli_env,
    ),
    Tool(
        "rodin-async CLI --processes 2",
        "api",
        _cli_processes(2),
        ["py:rodin_async", "py:typer"],
        "the same with `--processes 2`: two worker processes share the tasks and the -j 8",
        _cli_env,
    ),
    Tool(
        "rodin-async library",
        "api",
        _py("rodin_lib.py"),
        ["py:rodin_async"],
        "`AsyncRodin(max_concurrency=8).download_many(...)` under asyncio.run",
    ),
    Tool(
        "rodin-async library (uvloop)",
        "api",
        _py("rodin_lib.py", "--loop", "uvloop"),
        ["py:rodin_async", "py:uvloop"],
        "the same, on a uvloop event loop",
    ),
    Tool(
        "curl -Z",
        "urls",
        _curl,
        ["curl"],
        "`curl -Z --parallel-max 16 -K config` (url/output pairs; multiplexes over HTTP/2)",
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
        _env_ca,
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
    "cli-p1": "rodin-async CLI --processes 1",
    "cli-p2": "rodin-async CLI --processes 2",
    "lib": "rodin-async library",
    "lib-uvloop": "rodin-async library (uvloop)",
    "curl": "curl -Z",
    "aria2c": "aria2c -j16",
    "requests-docs": "requests (docs style)",
    "requests-stream": "requests stream",
    "parfive": "parfive",
    "aiohttp": "aiohttp",
}


def by_keys(keys: list[str]) -> list[Tool]:
    names = [TOOL_KEYS[k] for k in keys]
    return [t for t in TOOLS if t.name in names]


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
    """The inputs every tool reads: job.json, tasks.txt, curl's config, aria2c's list."""
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

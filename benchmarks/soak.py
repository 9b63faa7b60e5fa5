"""Soak test: thousands of small tasks through faults, with nothing lost and nothing growing.

Runs the bundled fake Rodin server in a subprocess (so the client's memory is measured
alone), gives it ``--tasks`` tasks of 3 small files each with about ``--fault-rate`` of
the files and of the listings faulted (resets, cuts, stalls, throttling, 5xx, expired
URLs, redirects, bad ranges: all retryable), then downloads them all with one
`AsyncRodin` and reports:

- tasks ok / failed / retried (a task counts as retried if any file had a FileRetried);
- files verified: size and SHA-256 recomputed from the server's recipe, read back from disk;
- RSS of the client process at 10%, 20%, 50% and 100% of the tasks (now, and peak so
  far), which must stay flat: the script keeps no per-task state, it counts and drops
  (each verified task folder is deleted);
- open file descriptors before the client and after it closed;
- wall time and throughput.

Usage::

    .venv/bin/python benchmarks/soak.py                 # 10,000 tasks
    .venv/bin/python benchmarks/soak.py --tasks 1000    # a quick run

Exit status 0 when every task completed, every file verified, RSS stayed flat and no
descriptor leaked; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import attrs
import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the dev extra

from rodin_async import (
    AsyncRodin,
    FileFailed,
    FileRetried,
    ProgressEvent,
    RetryPolicy,
    TaskDownload,
)
from rodin_async.testing import FakeRodin, Fault

KEY = "sk-soak-test-key"
NAMES = ("base_basic_pbr.glb", "preview.webp", "meta.json")
SIZES = {
    "base_basic_pbr.glb": (2_000, 16_000),
    "preview.webp": (400, 4_000),
    "meta.json": (80, 600),
}
RSS_SLACK = 32 << 20  # "flat": at most this much above the 10% mark, in bytes
MIB = 1 << 20


# -- what the server serves (recomputed by the client to verify) ---------------------------


def task_uuid(i: int) -> str:
    return f"soak-{i:06d}"


def file_size(uuid: str, name: str, seed: int) -> int:
    low, high = SIZES[name]
    return random.Random(f"{seed}/{uuid}/{name}/size").randint(low, high)


def file_bytes(uuid: str, name: str, seed: int) -> bytes:
    """The exact bytes of one file: seeded, so both processes agree without talking."""
    size = file_size(uuid, name, seed)
    return random.Random(f"{seed}/{uuid}/{name}").randbytes(size)


def pick_fault(rng: random.Random, size: int) -> list[Fault]:
    """One retryable misbehaviour for a file of *size* bytes."""
    kinds = [
        [Fault.reset(0)],
        [Fault.reset(size // 2)],
        [Fault.truncate(size // 2)],
        [Fault.truncate(size - 1), Fault.ignore_range()],
        [Fault.truncate(size // 3), Fault.wrong_content_range()],
        [Fault.content_length(+5)],
        [Fault.status(503, retry_after=0)],
        [Fault.status(500), Fault.status(502)],
        [Fault.status(429)],
        [Fault.stall(size // 3, 30)],
        [Fault.redirect(2, 307)],
        [Fault.expire()],
    ]
    return rng.choice(kinds)


# -- the server process --------------------------------------------------------------------


def serve(tasks: int, seed: int, rate: float) -> None:
    """Serve the soak tasks until stdin closes; print where first, statistics last."""
    rng = random.Random(seed)
    faulted = 0
    server = FakeRodin(api_key=KEY)
    for i in range(tasks):
        uuid = task_uuid(i)
        files = {name: file_bytes(uuid, name, seed) for name in NAMES}
        server.add_task(files, uuid=uuid)
        expired = False
        for name, body in files.items():
            if rng.random() < rate:
                faults = pick_fault(rng, len(body))
                if any(type(f).__name__ == "ExpireFault" for f in faults):
                    if expired:  # one expiry wave per task: a file re-lists once
                        faults = [Fault.status(503)]
                    expired = True
                server.add_faults(uuid, name, *faults)
                faulted += 1
    with server:
        print(json.dumps({"base_url": server.base_url, "faulted_files": faulted}), flush=True)
        stop = threading.Event()
        injector = threading.Thread(target=_fault_listings, args=(server, rate, stop), daemon=True)
        injector.start()
        sys.stdin.read()  # until the client closes our stdin
        stop.set()
        injector.join()
        print(json.dumps(_server_stats(server)), flush=True)


def _fault_listings(server: FakeRodin, rate: float, stop: threading.Event) -> None:
    """Keep about *rate* of the listings faulted (503 or a reset), as they happen."""
    injected = 0
    rng = random.Random(1)
    while not stop.wait(0.5):
        listings = sum(1 for r in server.requests if r.origin == "api")
        due = int(listings * rate) - injected
        if due > 0:
            faults = [rng.choice([Fault.status(503), Fault.reset(0)]) for _ in range(due)]
            server.add_api_faults(*faults, endpoint="download")
            injected += due
    server.api_injected = injected  # type: ignore[attr-defined]


def _server_stats(server: FakeRodin) -> dict[str, object]:
    requests = server.requests
    files = [r for r in requests if r.origin == "files"]
    return {
        "file_requests": len(files),
        "range_requests": sum(1 for r in files if r.range),
        "api_requests": sum(1 for r in requests if r.origin == "api"),
        "api_faults": getattr(server, "api_injected", 0),
        "statuses": dict(Counter(str(r.status) for r in requests)),
    }


# -- the client process --------------------------------------------------------------------


class Tally:
    """Counts only: nothing per task outlives the task (retried uuids: until its result)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._retrying: set[str] = set()

    def on_progress(self, event: ProgressEvent) -> None:
        if isinstance(event, FileRetried):
            self.counts["file_retries"] += 1
            self._retrying.add(event.task_uuid)
        elif isinstance(event, FileFailed):
            self.counts["files_failed"] += 1

    async def count(self, result: TaskDownload, seed: int) -> None:
        """Count one finished task, verify its files on disk, and delete them."""
        counts = self.counts
        if result.task_uuid in self._retrying:
            self._retrying.discard(result.task_uuid)
            counts["tasks_retried"] += 1
        if not result.ok:
            counts["tasks_failed"] += 1
            print(f"FAILED {result.task_uuid}: {result.error}", file=sys.stderr)
            return
        counts["tasks_ok"] += 1
        good, bad = await anyio.to_thread.run_sync(
            verify_and_drop, result.directory, result.task_uuid, seed
        )
        counts["files_verified"] += good
        counts["files_wrong"] += bad


def verify_and_drop(directory: Path, uuid: str, seed: int) -> tuple[int, int]:
    """Check every file of a task on disk against the recipe, then delete the folder.

    Returns (files verified, files wrong).
    """
    good = bad = 0
    for name in NAMES:
        path = directory / name
        expected = file_bytes(uuid, name, seed)
        try:
            body = path.read_bytes()
        except OSError:
            bad += 1
            continue
        same = len(body) == len(expected) and (
            hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
        )
        good, bad = (good + 1, bad) if same else (good, bad + 1)
    shutil.rmtree(directory)
    return good, bad


class Memory:
    """RSS of this process: sampled in the background, reported at checkpoints."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.peak = 0

    def rss(self) -> int:
        value = int(self._process.memory_info().rss)
        self.peak = max(self.peak, value)
        return value

    async def sample_forever(self) -> None:
        while True:
            self.rss()
            await anyio.sleep(0.1)


def checkpoints(tasks: int) -> list[int]:
    return sorted({max(1, tasks * p // 100) for p in (10, 20, 50, 100)})


@attrs.define
class ClientRun:
    """What the client side measured."""

    counts: Counter[str]
    rows: list[tuple[int, int, int, int]]  # (tasks done, RSS now, peak so far, open fds)
    wall: float
    fds_before: int
    fds_after: int
    ru_maxrss: int


async def run_client(args: argparse.Namespace, base_url: str, dest: Path) -> ClientRun:
    """Download every task, verify and drop each as it arrives, and measure."""
    process = psutil.Process()
    fds_before = process.num_fds()
    tally, memory = Tally(), Memory()
    marks = checkpoints(args.tasks)
    rows: list[tuple[int, int, int, int]] = []
    policy = RetryPolicy(attempts=5, wait_initial=0.05, wait_max=0.5, wait_jitter=0.05)
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(memory.sample_forever)
        async with AsyncRodin(
            KEY,
            base_url=base_url,
            max_concurrency=args.concurrency,
            timeout=httpx.Timeout(1.0, connect=5.0),
            retry=policy,
        ) as rodin:
            uuids = (task_uuid(i) for i in range(args.tasks))  # lazily: no list of 10k
            results = rodin.download_many(uuids, dest, on_progress=tally.on_progress)
            async with contextlib.aclosing(results):
                done = 0
                async for result in results:
                    done += 1
                    await tally.count(result, args.seed)
                    if done in marks:
                        rss = memory.rss()
                        rows.append((done, rss, memory.peak, process.num_fds()))
                        print(f"  {done:>6} tasks  rss {rss / MIB:6.1f} MiB", file=sys.stderr)
        tg.cancel_scope.cancel()
    wall = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return ClientRun(tally.counts, rows, wall, fds_before, process.num_fds(), peak)


def report(
    args: argparse.Namespace, faulted: int, run: ClientRun, server: dict[str, object]
) -> bool:
    """Print the figures; return whether the run kept every promise."""
    counts, rows = run.counts, run.rows
    files = args.tasks * len(NAMES)
    first_rss = rows[0][1] if rows else 0
    verdict = {
        "complete": counts["tasks_ok"] == args.tasks
        and counts["files_verified"] == files
        and not counts["files_wrong"],
        "rss flat": all(rss - first_rss <= RSS_SLACK for _, rss, _, _ in rows),
        "no fd leak": run.fds_after == run.fds_before,
    }
    line = "-" * 66
    table = [
        ("faults injected (files)", f"{faulted} ({100 * faulted / files:.2f}% of files)"),
        ("faults injected (listings)", f"{server.get('api_faults', '?')}"),
        ("tasks ok", f"{counts['tasks_ok']}"),
        ("tasks failed", f"{counts['tasks_failed']}"),
        ("tasks retried", f"{counts['tasks_retried']} ({counts['file_retries']} FileRetried)"),
        (
            "files verified (size+sha256)",
            f"{counts['files_verified']} of {files} ({counts['files_wrong']} wrong)",
        ),
        (
            "file requests / with Range",
            f"{server.get('file_requests')} / {server.get('range_requests')}",
        ),
        ("API requests", f"{server.get('api_requests')}"),
        ("open fds before / after", f"{run.fds_before} / {run.fds_after}"),
        (
            "wall time",
            f"{run.wall:.1f} s ({args.tasks / run.wall:.0f} tasks/s, "
            f"{files / run.wall:.0f} files/s)",
        ),
        ("peak RSS (getrusage)", f"{run.ru_maxrss / MIB:.1f} MiB"),
    ]
    print(line)
    print(
        f"rodin-async soak: {args.tasks} tasks x {len(NAMES)} files, "
        f"max_concurrency {args.concurrency}, fault rate {args.fault_rate}, seed {args.seed}"
    )
    print(line)
    for label, value in table:
        print(f"{label:<30} {value}")
    print(line)
    print(f"{'tasks done':>10} {'RSS now':>12} {'peak so far':>12} {'open fds':>9}")
    for done, rss, peak, fds in rows:
        print(f"{done:>10} {rss / MIB:>8.1f} MiB {peak / MIB:>8.1f} MiB {fds:>9}")
    print(line)
    print("  ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in verdict.items()))
    return all(verdict.values())


@contextlib.contextmanager
def server_process(args: argparse.Namespace) -> Iterator[FakeServerProcess]:
    """The fake server, running the soak tasks in a child process."""
    command = [
        sys.executable, __file__, "--serve", "--tasks", str(args.tasks),
        "--seed", str(args.seed), "--fault-rate", str(args.fault_rate),
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            yield FakeServerProcess(proc)
        finally:
            if proc.poll() is None:
                proc.kill()


class FakeServerProcess:
    """Talks to the child: its first line says where it listens, its last its statistics."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        if proc.stdin is None or proc.stdout is None:
            raise RuntimeError("the server's pipes are missing")
        self._proc, self._stdin, self._stdout = proc, proc.stdin, proc.stdout
        setup = json.loads(self._stdout.readline())
        self.base_url = str(setup["base_url"])
        self.faulted = int(setup["faulted_files"])

    def finish(self) -> dict[str, object]:
        """Stop the server and return what it counted."""
        self._stdin.close()
        stats: dict[str, object] = json.loads(self._stdout.readline() or "{}")
        self._proc.wait(30)
        return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--fault-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dest", help="where to download (default: a temporary folder)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.tasks, args.seed, args.fault_rate)
        return 0
    logging.getLogger("stamina").setLevel(logging.ERROR)  # one warning per retry otherwise
    print(f"starting the fake server with {args.tasks} tasks...", file=sys.stderr)
    dest = Path(args.dest or tempfile.mkdtemp(prefix="rodin-soak-"))
    with server_process(args) as server:
        run = anyio.run(run_client, args, server.base_url, dest)
        stats = server.finish()
    if args.dest is None:
        shutil.rmtree(dest, ignore_errors=True)
    return 0 if report(args, server.faulted, run, stats) else 1


if __name__ == "__main__":
    sys.exit(main())

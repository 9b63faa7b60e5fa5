"""Cancellation at random moments, and SIGKILL mid-run: the next run finishes everything.

Whenever a run stops, the disk may hold only complete final files, resumable part files
(a prefix of their file) and manifests that list only complete files. The next run
completes every file byte for byte, resuming the parts with ``Range``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from rodin_async import AsyncRodin, FileProgress, ProgressEvent, RetryPolicy, TaskDownload
from rodin_async.testing import FakeRodin, Fault

from .helpers import assert_complete
from .test_faults import check_disk

pytestmark = pytest.mark.anyio
FILES = {"model.glb": 240_000, "texture.png": 60_000, "meta.json": 500}
ROUNDS = 4


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    with FakeRodin(api_key="sk-crash-resume") as fake:
        yield fake


def client(server: FakeRodin) -> AsyncRodin:
    """A client with four transfer slots."""
    return AsyncRodin(
        server.api_key,
        base_url=server.base_url,
        max_concurrency=4,
        timeout=httpx.Timeout(5, connect=2),
        retry=RetryPolicy(attempts=3),
    )


def parts_on_disk(root: Path) -> dict[tuple[str, str], int]:
    """Every part file under *root*, as (task, file name) -> bytes held."""
    return {
        (p.parent.name, p.name[1 : -len(".part")]): p.stat().st_size
        for p in root.glob("*/.*.part")
        if not p.name.startswith(".rodin-manifest")
    }


def assert_parts_resumed(server: FakeRodin, parts: dict[tuple[str, str], int]) -> int:
    """The first request since the last reset for each non-empty part asks for the rest."""
    resumed = 0
    for (task, name), size in parts.items():
        requests = server.file_requests(task, name)
        if size and requests:
            assert requests[0].range == f"bytes={size}-", (name, size, requests[0].range)
            resumed += 1
    return resumed


async def _run_and_cancel(
    server: FakeRodin, uuids: list[str], dest: Path, rng: random.Random, mode: str
) -> None:
    """One run of download_many stopped at a random moment, in one of three ways."""
    scope = anyio.CancelScope()
    events = 0
    # Of the ~24 batches a whole run writes before the last one of their file: a trickled
    # file arrives over 0.25 s, and a batch is written every 0.1 s (BATCH_SECONDS).
    stop_at = rng.randrange(1, 20)

    def after_some_bytes(event: ProgressEvent) -> None:
        nonlocal events
        events += isinstance(event, FileProgress) and event.received < FILES[event.name]
        if events == stop_at:
            scope.cancel()  # after a batch mid-file: that file, at least, is half-written

    if mode == "deadline":
        scope = anyio.CancelScope(deadline=anyio.current_time() + rng.uniform(0.05, 0.35))
    with scope:
        async with client(server) as rodin:
            results = rodin.download_many(uuids, dest, on_progress=after_some_bytes)
            async with contextlib.aclosing(results):
                seen, leave_after = 0, rng.randrange(1, 4)
                async for _ in results:
                    seen += 1
                    if mode == "break" and seen >= leave_after:
                        break  # the caller leaves the loop early


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_random_cancellations_then_a_full_run(
    server: FakeRodin, tmp_path: Path, seed: int
) -> None:
    """Cancelled at seeded random moments, each round leaves a trustworthy disk; then all done."""
    # The first round stops after a random number of written chunks, so some file is
    # surely half-written; later rounds stop that way, at a random deadline, or by
    # leaving the loop early.
    rng = random.Random(seed)
    uuids = [server.add_task(FILES) for _ in range(4)]
    for task in uuids:
        for name, size in FILES.items():
            # About 0.25 s per file, 0.75 s for a whole run: a round never finishes it all.
            server.add_faults(task, name, *[Fault.trickle(max(size // 25, 1), 0.01)] * ROUNDS)
    resumed = 0
    modes = ["bytes"] + [rng.choice(["bytes", "deadline", "break"]) for _ in range(ROUNDS - 1)]
    for mode in modes:
        parts = parts_on_disk(tmp_path)
        server.reset_requests()
        await _run_and_cancel(server, uuids, tmp_path, rng, mode)
        resumed += assert_parts_resumed(server, parts)
        check_disk(server, tmp_path)
    parts = parts_on_disk(tmp_path)
    server.reset_requests()
    async with client(server) as rodin:
        results = [r async for r in rodin.download_many(uuids, tmp_path)]
    resumed += assert_parts_resumed(server, parts)
    for result in results:
        if not result.skipped:
            assert_complete(server, result)
    assert check_disk(server, tmp_path)["final"] == len(uuids) * len(FILES)
    assert parts_on_disk(tmp_path) == {}
    assert resumed > 0, "no part was resumed: the test did not exercise resuming"


_SCRIPT = textwrap.dedent(
    """
    import sys, anyio, rodin_async

    async def main():
        key, url, dest, *uuids = sys.argv[1:]
        async with rodin_async.AsyncRodin(key, base_url=url, max_concurrency=4) as rodin:
            async for result in rodin.download_many(uuids, dest):
                print(result.task_uuid, result.ok, flush=True)

    anyio.run(main)
    """
)


def _command(runner: str, server: FakeRodin, dest: Path, uuids: list[str]) -> list[str]:
    if runner == "script":
        return [sys.executable, "-c", _SCRIPT, server.api_key, server.base_url, str(dest), *uuids]
    return [sys.executable, "-m", "rodin_async", "download", "-o", str(dest), "-q", *uuids]


def _cli_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("typer", "rich")) and (
        importlib.util.find_spec("rodin_async._cli") is not None
    )


@pytest.mark.parametrize("runner", ["script", "cli"])
async def test_sigkill_mid_run_then_rerun_completes(
    server: FakeRodin, tmp_path: Path, runner: str
) -> None:
    """A downloader killed with SIGKILL mid-body leaves parts that the next run resumes."""
    if runner == "cli" and not _cli_available():
        pytest.skip("the rodin-async command (cli extra) is not available")
    uuids = [server.add_task({"model.glb": 300_000, "texture.png": 100_000}) for _ in range(3)]
    for task in uuids:
        for name in ("model.glb", "texture.png"):
            server.add_faults(task, name, Fault.trickle(10_000, 0.02))
    env = {**os.environ, "RODIN_API_KEY": server.api_key, "RODIN_BASE_URL": server.base_url}
    process = await anyio.open_process(_command(runner, server, tmp_path, uuids), env=env)
    try:
        with anyio.fail_after(20):
            while max(parts_on_disk(tmp_path).values(), default=0) < 20_000:
                assert process.returncode is None, "the downloader ended before being killed"
                await anyio.sleep(0.01)
    finally:
        process.kill()  # SIGKILL: no cleanup code runs
        with anyio.fail_after(5):
            await process.wait()
    await process.aclose()
    parts = parts_on_disk(tmp_path)
    check_disk(server, tmp_path)

    server.reset_requests()
    async with client(server) as rodin:
        results: list[TaskDownload] = [r async for r in rodin.download_many(uuids, tmp_path)]
    for result in results:
        if not result.skipped:
            assert_complete(server, result)
    assert check_disk(server, tmp_path)["final"] == 2 * len(uuids)
    assert assert_parts_resumed(server, parts) >= 1

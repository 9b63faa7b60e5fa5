"""Sharding across this process and real worker processes: feeding, reporting, stopping,
and dead workers."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import rodin_async
from rodin_async import FileFinished, ProgressEvent, TaskDownload, TaskFinished, _processes
from rodin_async._processes import WorkerError, open_shards
from rodin_async._shard import ClientSettings, ShardSettings
from rodin_async.testing import FakeRodin, Fault

from .helpers import worker_processes

pytestmark = pytest.mark.anyio

FILES = {"base_basic_pbr.glb": 60_000, "preview.webp": 4_000}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    """One fake for the module; the workers reach it over loopback."""
    with FakeRodin(api_key="shards-key") as fake:
        yield fake


def settings(server: FakeRodin, dest: Path, concurrency: int = 4) -> ShardSettings:
    """Shard settings pointing at the fake."""
    client = ClientSettings(server.api_key, base_url=server.base_url, max_concurrency=concurrency)
    return ShardSettings(client, dest)


def trickling(server: FakeRodin, count: int) -> list[str]:
    """Tasks whose big file arrives slowly (about 2 s), so they are in flight for a while."""
    uuids = [server.add_task({"big.glb": 400_000, "meta.json": b"{}"}) for _ in range(count)]
    for uuid in uuids:
        server.add_faults(uuid, "big.glb", Fault.trickle(chunk=4096, interval=0.02))
    return uuids


def has_bytes(path: Path) -> bool:
    """Whether *path* exists and holds some bytes (an empty part is removed on cancel)."""
    return path.exists() and path.stat().st_size > 0


async def test_two_processes_download_everything(server: FakeRodin, tmp_path: Path) -> None:
    """Every task once, files exact, every shard's events here, TaskFinished before results."""
    uuids = [server.add_task(FILES) for _ in range(12)]
    events: list[ProgressEvent] = []
    got: list[TaskDownload] = []
    async with open_shards(
        settings(server, tmp_path), iter(uuids), processes=2, on_progress=events.append
    ) as results:
        async for result in results:
            assert TaskFinished(result) in events  # emitted before the result is handed on
            got.append(result)
    assert sorted(r.task_uuid for r in got) == sorted(uuids)
    for result in got:
        assert result.ok, result.error
        for file in result.files:
            assert file.path.read_bytes() == server.content(result.task_uuid, file.name)
    finished = [e for e in events if isinstance(e, FileFinished)]
    assert len(finished) == 2 * len(uuids)
    assert worker_processes() == []  # the worker exited


async def test_a_bad_uuid_fails_in_the_parent(server: FakeRodin, tmp_path: Path) -> None:
    """A uuid that can't be a folder is reported without a worker; the others download."""
    good = [server.add_task(FILES) for _ in range(2)]
    uuids = (u for u in [good[0], "../escape", good[1]])  # not a Collection: checked lazily
    async with open_shards(settings(server, tmp_path), uuids, processes=2) as results:
        got = {r.task_uuid: r async for r in results}
    assert isinstance(got["../escape"].error, rodin_async.InvalidTaskError)
    assert got[good[0]].ok and got[good[1]].ok


async def test_leaving_early_stops_the_workers(server: FakeRodin, tmp_path: Path) -> None:
    """Breaking out cancels every shard's transfers, keeps the .part files, ends the worker."""
    quick = server.add_task(FILES)
    slow = trickling(server, 2)
    async with open_shards(settings(server, tmp_path), [quick, *slow], processes=2) as results:
        async for result in results:
            assert result.task_uuid == quick
            while not all(has_bytes(tmp_path / u / ".big.glb.part") for u in slow):
                await anyio.sleep(0.02)  # both slow transfers under way
            break
    assert worker_processes() == []
    for uuid in slow:
        assert not (tmp_path / uuid / "big.glb").exists()
        assert (tmp_path / uuid / ".big.glb.part").stat().st_size > 0


async def test_a_killed_worker_fails_only_its_tasks(server: FakeRodin, tmp_path: Path) -> None:
    """SIGKILL the worker: its tasks fail with WorkerError naming it, this process finishes."""
    slow = trickling(server, 4)
    got: list[TaskDownload] = []
    with anyio.fail_after(30):
        async with open_shards(settings(server, tmp_path), slow, processes=2) as results:
            while not worker_processes() or not any(tmp_path.glob("*/.big.glb.part")):
                await anyio.sleep(0.02)
            victim = worker_processes()[0]
            victim.send_signal(signal.SIGKILL)
            got = [r async for r in results]
    assert sorted(r.task_uuid for r in got) == sorted(slow)
    lost = [r for r in got if isinstance(r.error, WorkerError)]
    assert lost and len(lost) < len(slow)
    assert "killed by SIGKILL" in str(lost[0].error)
    assert all(r.ok for r in got if r not in lost)
    assert worker_processes() == []


async def test_when_every_worker_dies_this_process_does_the_rest(
    server: FakeRodin, tmp_path: Path
) -> None:
    """Both workers killed with tasks left: their tasks fail; the rest is done here."""
    # One transfer per shard, a window of 3 tasks each: 9 dealt at first, 6 left over.
    uuids = trickling(server, 3) + [server.add_task(FILES) for _ in range(12)]
    with anyio.fail_after(30):
        async with open_shards(
            settings(server, tmp_path, concurrency=3), uuids, processes=3
        ) as results:
            while len(worker_processes()) < 2 or not any(tmp_path.glob("*/.big.glb.part")):
                await anyio.sleep(0.02)
            for worker in worker_processes():
                worker.send_signal(signal.SIGKILL)
            got = [r async for r in results]
    assert sorted(r.task_uuid for r in got) == sorted(uuids)
    lost = [r for r in got if not r.ok]
    assert 0 < len(lost) <= 6  # at most what the two workers held
    assert all(isinstance(r.error, WorkerError) for r in lost)
    assert worker_processes() == []


async def test_a_shard_that_fails_whole_raises_its_error(tmp_path: Path) -> None:
    """A worker whose client can't be built (a bad proxy) ends the run with that error."""
    client = ClientSettings("k", base_url="http://127.0.0.1:9/", proxy="ftp://nowhere")
    with anyio.fail_after(30), pytest.raises(rodin_async.ConfigurationError, match="proxy"):
        async with open_shards(ShardSettings(client, tmp_path), ["a", "b"], processes=2) as results:
            async for _ in results:
                pass
    assert worker_processes() == []


async def test_the_key_reaches_workers_only_through_the_pipe(
    server: FakeRodin, tmp_path: Path
) -> None:
    """Neither a worker's command line nor its environment holds the API key."""
    slow = trickling(server, 2)
    os.environ["RODIN_API_KEY"] = server.api_key  # as a user would have it
    try:
        async with open_shards(settings(server, tmp_path), slow, processes=2) as results:
            while not worker_processes():
                await anyio.sleep(0.02)
            for worker in worker_processes():
                assert server.api_key not in " ".join(worker.cmdline())
                assert server.api_key not in str(worker.environ())
            async for result in results:
                assert result.ok
    finally:
        del os.environ["RODIN_API_KEY"]


async def test_one_task_runs_here_without_workers(server: FakeRodin, tmp_path: Path) -> None:
    """No more workers than tasks: a single task is downloaded in this process."""
    uuid = server.add_task(FILES)
    async with open_shards(settings(server, tmp_path), [uuid], processes=4) as results:
        assert worker_processes() == []
        got = [r async for r in results]
    assert got[0].ok


@pytest.mark.parametrize(
    ("cores", "tasks", "concurrency", "expected"),
    [
        (2, 200, 8, 2),  # the Rodin mix on this 2-core machine
        (2, 99, 8, 1),  # under 50 tasks per process: one
        (2, 100, 8, 2),
        (16, 10_000, 8, 4),  # two transfers per process at least
        (16, 10_000, 64, 16),
        (1, 10_000, 64, 1),
        (4, 0, 8, 1),
    ],
)
def test_the_default_pays_for_its_processes(
    monkeypatch: pytest.MonkeyPatch, cores: int, tasks: int, concurrency: int, expected: int
) -> None:
    """One process per core, but at most one per 50 tasks and per 2 transfers; at least 1."""
    monkeypatch.setattr(_processes, "usable_cores", lambda: cores)
    assert _processes.default_processes(tasks, concurrency) == expected


@pytest.mark.parametrize(
    ("cpu_max", "expected"), [("max 100000\n", 8), ("150000 100000\n", 2), ("50000 100000", 1)]
)
def test_a_containers_cpu_quota_limits_the_cores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpu_max: str, expected: int
) -> None:
    """cgroup v2 cpu.max caps the usable cores (rounded up), which the affinity doesn't show."""
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(_processes, "_CGROUP_V2", tmp_path / "cpu.max")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert _processes.usable_cores() == expected

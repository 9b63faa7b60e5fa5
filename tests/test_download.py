"""End-to-end downloads against the fake Rodin server on a real loopback socket."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiofiles.os
import anyio
import anyio.lowlevel
import httpx
import pytest

from rodin_async import (
    APIError,
    AsyncRodin,
    ConfigurationError,
    DestinationError,
    DownloadError,
    FileProgress,
    FileStarted,
    InvalidTaskError,
    ProgressEvent,
    RetryPolicy,
    TaskDownload,
    TaskDownloadError,
    TaskFinished,
    TransportError,
    _files,
)
from rodin_async.testing import FakeRodin, Fault

from .helpers import CountingTransport, assert_complete, final_files, plant_part

pytestmark = pytest.mark.anyio
MIB = 1 << 20
T = TypeVar("T")
MIX = {"base_basic_pbr.glb": 3 * MIB + 17, "base.fbx": 700_001, "preview.webp": 40_000}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    with FakeRodin(api_key="sk-e2e-secret-key") as fake:
        yield fake


@pytest.fixture
async def rodin(server: FakeRodin) -> AsyncIterator[AsyncRodin]:
    async with AsyncRodin(
        server.api_key,
        base_url=server.base_url,
        timeout=httpx.Timeout(5.0, connect=2.0),
        retry=RetryPolicy(attempts=4),
    ) as client:
        yield client


async def test_download_writes_every_file_intact(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """Every listed file lands in dest/<uuid>/ byte for byte, with nothing left over."""
    task = server.add_task(MIX)
    result = await rodin.download(task, tmp_path)
    assert result.directory == tmp_path / task
    assert [f.name for f in result.files] == list(MIX)
    assert all(f.attempts == 1 and not f.resumed for f in result.files)
    assert_complete(server, result)


async def test_hostile_and_duplicate_names_stay_inside(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """Server names with paths, dots or duplicates never escape or overwrite each other."""
    task = server.add_task()
    for name in ["../../evil.glb", "/abs/x.png", "..\\win.ini", "..", "a.glb", "a.glb", "A.GLB"]:
        server.add_file(task, name, 1000 + len(name))
    dest = tmp_path / "dest"
    result = await rodin.download(task, dest)
    names = sorted(p.name for p in final_files(tmp_path))
    assert names == sorted(["evil.glb", "x.png", "win.ini", "file", "a.glb", "a-2.glb", "A-3.GLB"])
    assert all(p.parent == dest / task for p in final_files(tmp_path))
    first, second = (f for f in result.files if f.name == "a.glb")
    assert first.path.read_bytes() == server.content(task, "a.glb", index=0)
    assert second.path.read_bytes() == server.content(task, "a.glb", index=1)


async def test_key_only_goes_to_the_api(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """File hosts never see the bearer token, not even after redirects."""
    task = server.add_task(MIX)
    server.add_faults(task, "base.fbx", Fault.redirect(hops=3, status=307))
    server.add_faults(task, "preview.webp", Fault.redirect(hops=1, status=302))
    assert_complete(server, await rodin.download(task, tmp_path))
    file_requests = server.file_requests(task)
    assert len(file_requests) == 1 + (3 + 1) + (1 + 1)  # each redirect hop is a request
    assert all("authorization" not in r.headers for r in file_requests)
    assert all(server.api_key not in str(r.headers) for r in file_requests)
    listing = [r for r in server.api_requests() if r.task_uuid == task]
    assert [r.headers["authorization"] for r in listing] == [f"Bearer {server.api_key}"]


async def test_short_body_resumes_with_range(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """After a short body, every byte received is kept: the retry asks for exactly the rest."""
    task = server.add_task(MIX)
    server.add_faults(task, "base_basic_pbr.glb", Fault.truncate(at=1_000_000))
    result = await rodin.download(task, tmp_path)
    assert_complete(server, result)
    ranges = [r.range for r in server.file_requests(task, "base_basic_pbr.glb")]
    assert ranges == [None, "bytes=1000000-"]
    glb = next(f for f in result.files if f.name == "base_basic_pbr.glb")
    assert glb.resumed and glb.attempts == 2


async def test_reset_mid_body_resumes_with_range(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """After a TCP reset the retry resumes from what reached us (a RST may drop the rest)."""
    task = server.add_task(MIX)
    server.add_faults(task, "base_basic_pbr.glb", Fault.reset(at=1_000_000))
    result = await rodin.download(task, tmp_path)
    assert_complete(server, result)
    first, second = (r.range for r in server.file_requests(task, "base_basic_pbr.glb"))
    assert first is None and second is not None
    assert 0 < int(second.removeprefix("bytes=").rstrip("-")) <= 1_000_000


async def test_connection_dropped_before_answer_is_retried(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A reset before any response is one failed attempt, not a failed file."""
    task = server.add_task(MIX)
    server.add_faults(task, "base.fbx", Fault.reset(at=0), Fault.reset(at=0))
    assert_complete(server, await rodin.download(task, tmp_path))
    assert len(server.file_requests(task, "base.fbx")) == 3


@pytest.mark.parametrize("second", [Fault.ignore_range(), Fault.wrong_content_range()])
async def test_unusable_range_answer_restarts_the_file(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, second: Fault
) -> None:
    """A 200 to a Range request, or a 206 at the wrong offset, never corrupts the file."""
    task = server.add_task(MIX)
    server.add_faults(task, "base_basic_pbr.glb", Fault.truncate(at=500_000), second)
    result = await rodin.download(task, tmp_path)
    assert_complete(server, result)


async def test_part_file_from_an_earlier_run_is_resumed(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A .part file left by a crashed run is continued, not thrown away."""
    task = server.add_task(MIX)
    content = server.content(task, "base_basic_pbr.glb")
    plant_part(tmp_path / task, "base_basic_pbr.glb", content[:123_457], total=len(content))
    result = await rodin.download(task, tmp_path)
    assert_complete(server, result)
    assert [r.range for r in server.file_requests(task, "base_basic_pbr.glb")] == ["bytes=123457-"]


async def test_bytes_gathered_before_a_cancellation_are_written_and_resumed(
    server: FakeRodin, tmp_path: Path
) -> None:
    """Bytes held for a batched write reach the part when cancelled; the resume uses them."""
    task = server.add_task({"big.glb": 2 * MIB})
    server.add_faults(task, "big.glb", Fault.stall(after=300_000, seconds=30))
    events: list[ProgressEvent] = []
    async with AsyncRodin(server.api_key, base_url=server.base_url) as rodin:
        with anyio.move_on_after(1.0):  # less than a batch arrived: all of it still in memory
            await rodin.download(task, tmp_path, on_progress=events.append)
        part = tmp_path / task / ".big.glb.part"
        assert part.stat().st_size == 300_000
        progress = [e for e in events if isinstance(e, FileProgress)]
        assert sum(e.advanced for e in progress) == 300_000  # the flush is reported too
        assert_complete(server, await rodin.download(task, tmp_path))
    assert server.file_requests(task, "big.glb")[-1].range == "bytes=300000-"


async def test_bytes_gathered_before_a_stall_are_kept_for_the_retry(
    server: FakeRodin, tmp_path: Path
) -> None:
    """A read timeout mid-batch writes what arrived; the retry asks only for the rest."""
    task = server.add_task({"big.glb": 2 * MIB})
    server.add_faults(task, "big.glb", Fault.stall(after=250_001, seconds=30))
    async with AsyncRodin(
        server.api_key,
        base_url=server.base_url,
        timeout=httpx.Timeout(0.5, connect=2.0),
        retry=RetryPolicy(attempts=2),
    ) as rodin:
        assert_complete(server, await rodin.download(task, tmp_path))
    assert [r.range for r in server.file_requests(task, "big.glb")] == [None, "bytes=250001-"]


async def test_small_file_finished_in_one_hop_still_resumes_and_checks(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A small file is written and renamed in one hop, yet resumes a part and a short body."""
    task = server.add_task({"preview.webp": 40_000, "meta.json": 5_000})
    content = server.content(task, "preview.webp")
    plant_part(tmp_path / task, "preview.webp", content[:10_000], total=len(content))
    server.add_faults(task, "meta.json", Fault.truncate(at=3_000))
    result = await rodin.download(task, tmp_path)
    assert_complete(server, result)
    assert [r.range for r in server.file_requests(task, "preview.webp")] == ["bytes=10000-"]
    assert [r.range for r in server.file_requests(task, "meta.json")] == [None, "bytes=3000-"]


async def test_a_failed_one_hop_write_leaves_no_part_it_could_not_resume(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error while a small file is written and renamed in one hop (which writes no
    validator) removes the part; an existing part's own validator keeps it resumable."""
    task = server.add_task({"fresh.bin": 50_000, "resumed.bin": 60_000})
    content = server.content(task, "resumed.bin")
    plant_part(tmp_path / task, "resumed.bin", content[:10_000], total=len(content))
    append = _files._PartFile._append

    def disk_full_after_some(self: Any, file: Any, piece: bytes) -> int:
        append(self, file, piece[:4096])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_files._PartFile, "_append", disk_full_after_some)
    with pytest.raises(TaskDownloadError, match="No space left"):
        await rodin.download(task, tmp_path)
    assert not (tmp_path / task / ".fresh.bin.part").exists()
    assert (tmp_path / task / ".resumed.bin.part").stat().st_size == 10_000 + 4096
    monkeypatch.undo()
    assert_complete(server, await rodin.download(task, tmp_path))
    assert server.file_requests(task, "resumed.bin")[-1].range == "bytes=14096-"


async def test_a_task_of_small_files_costs_one_thread_hop_per_file(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per file open+write+commit is one hop; per task, a look, a claim and a close."""
    task = server.add_task({f"f{i}.bin": 1000 * i for i in range(1, 6)})
    hops: list[str] = []
    wrap = aiofiles.os.wrap

    def counting(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
        hops.append(getattr(func, "__qualname__", repr(func)))
        return wrap(func)

    monkeypatch.setattr(aiofiles.os, "wrap", counting)
    assert_complete(server, await rodin.download(task, tmp_path))
    assert len(hops) == 1 + 3 + 5, hops  # the destination, the task, its files


async def test_oversized_part_file_is_discarded(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A .part longer than the file (416) is not this file's: start over."""
    task = server.add_task({"small.json": 1000})
    plant_part(tmp_path / task, "small.json", b"x" * 5000)
    assert_complete(server, await rodin.download(task, tmp_path))


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(503, retry_after="0"),
        Fault.status(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
        Fault.status(500),
        Fault.status(408),
    ],
)
async def test_transient_failures_are_retried(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, fault: Fault
) -> None:
    """Throttling, server errors and short bodies cost an attempt, not the file."""
    task = server.add_task(MIX)
    server.add_faults(task, "base.fbx", fault)
    assert_complete(server, await rodin.download(task, tmp_path))
    assert len(server.file_requests(task, "base.fbx")) == 2


async def test_a_length_that_changes_between_answers_starts_over(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A body shorter than announced is resumed; a 416 giving another length restarts it."""
    task = server.add_task(MIX)
    server.add_faults(task, "base.fbx", Fault.content_length(+10))
    assert_complete(server, await rodin.download(task, tmp_path))
    size = server.size(task, "base.fbx")
    requests = server.file_requests(task, "base.fbx")
    assert [(r.range, r.status) for r in requests] == [
        (None, 200), (f"bytes={size}-", 416), (None, 200)
    ]


async def test_stalled_transfer_times_out_and_retries(server: FakeRodin, tmp_path: Path) -> None:
    """No bytes for the read timeout is a failed attempt, not a hang."""
    task = server.add_task(MIX)
    server.add_faults(task, "base.fbx", Fault.stall(after=1000, seconds=20))
    async with AsyncRodin(
        server.api_key, base_url=server.base_url, timeout=httpx.Timeout(0.3, connect=2)
    ) as rodin:
        result = await rodin.download(task, tmp_path)
    assert_complete(server, result)
    assert [r.range for r in server.file_requests(task, "base.fbx")] == [None, "bytes=1000-"]


async def test_persistent_failure_names_the_file_and_others_finish(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A 500 storm past the retry budget fails that file only; the rest complete."""
    task = server.add_task(MIX)
    server.add_faults(task, "base.fbx", *[Fault.status(500)] * 10)
    with pytest.raises(TaskDownloadError) as info:
        await rodin.download(task, tmp_path)
    error = info.value
    assert [e.name for e in error.errors] == ["base.fbx"]
    assert "base.fbx" in str(error) and "500" in str(error)
    assert error.errors[0].status_code == 500
    assert len(server.file_requests(task, "base.fbx")) == 4  # the policy's attempts
    on_disk = [p.name for p in final_files(tmp_path)]
    assert sorted(on_disk) == ["base_basic_pbr.glb", "preview.webp"]


async def test_unretryable_status_fails_at_once(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A 400 from the file host is final: one request, a DownloadError with the status."""
    task = server.add_task({"a.glb": 100})
    server.add_faults(task, "a.glb", Fault.status(400))
    with pytest.raises(TaskDownloadError) as info:
        await rodin.download(task, tmp_path)
    assert info.value.errors[0].status_code == 400
    assert len(server.file_requests(task, "a.glb")) == 1


async def test_expired_url_is_listed_again(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A 403 from an expired URL re-lists the task once and retries with the fresh URL."""
    task = server.add_task(MIX)
    server.add_faults(task, "base.fbx", Fault.expire())
    assert_complete(server, await rodin.download(task, tmp_path))
    assert len([r for r in server.api_requests() if r.task_uuid == task]) == 2


async def test_expiry_wave_lists_once_for_all_files(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """When every URL expires together, the task is listed again once, not once per file."""
    task = server.add_task(MIX)
    server.expire_urls(task)  # nothing listed yet: the first listing is fine
    for name in MIX:
        server.add_faults(task, name, Fault.status(410))
    assert_complete(server, await rodin.download(task, tmp_path))
    assert len([r for r in server.api_requests() if r.task_uuid == task]) == 2


async def test_url_that_stays_forbidden_fails(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """Re-listing happens once per file: a URL still refused afterwards fails the file."""
    task = server.add_task({"a.glb": 100})
    server.add_faults(task, "a.glb", Fault.status(403), Fault.status(403))
    with pytest.raises(TaskDownloadError) as info:
        await rodin.download(task, tmp_path)
    assert info.value.errors[0].status_code == 403
    assert final_files(tmp_path) == []


async def test_redirect_loop_fails_cleanly(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """An endless redirect fails the file with a RodinError, never a raw httpx error."""
    task = server.add_task({"a.glb": 100, "b.png": 200})
    server.add_faults(task, "a.glb", Fault.redirect_loop())
    with pytest.raises(TaskDownloadError) as info:
        await rodin.download(task, tmp_path)
    assert "redirect" in str(info.value).lower()
    assert [p.name for p in final_files(tmp_path)] == ["b.png"]


async def test_connection_failures_become_transport_errors(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """Resets past the retry budget end as a DownloadError caused by a TransportError."""
    task = server.add_task({"a.glb": 100})
    server.add_faults(task, "a.glb", *[Fault.reset(at=0)] * 4)
    with pytest.raises(TaskDownloadError) as info:
        await rodin.download(task, tmp_path)
    (error,) = info.value.errors
    assert isinstance(error, DownloadError)
    assert isinstance(error.__cause__, TransportError)


async def test_unknown_task_is_an_api_error(rodin: AsyncRodin, tmp_path: Path) -> None:
    """Listing a task the API doesn't know raises APIError with the API's code."""
    with pytest.raises(APIError) as info:
        await rodin.download("no-such-task", tmp_path)
    assert info.value.code == "TASK_NOT_FOUND"
    assert info.value.status_code == 404


async def test_wrong_key_is_an_authentication_error(server: FakeRodin, tmp_path: Path) -> None:
    """A rejected key raises AuthenticationError without leaking either key."""
    task = server.add_task({"a.glb": 100})
    async with AsyncRodin("sk-wrong-key", base_url=server.base_url) as rodin:
        with pytest.raises(APIError) as info:
            await rodin.download(task, tmp_path)
    assert type(info.value).__name__ == "AuthenticationError"
    assert "sk-wrong-key" not in str(info.value) and server.api_key not in str(info.value)
    assert "RODIN_API_KEY" in str(info.value)


async def test_dest_that_is_a_file_is_refused(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A destination that is a file raises DestinationError before any request."""
    task = server.add_task({"a.glb": 100})
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    for dest in (blocker, blocker / "below"):
        with pytest.raises(DestinationError):
            await rodin.download(task, dest)
        with pytest.raises(DestinationError):
            async for _ in rodin.download_many([task], dest):
                pass
    assert server.file_requests(task) == []
    assert [r for r in server.api_requests() if r.task_uuid == task] == []


async def test_blank_uuid_is_refused(rodin: AsyncRodin, tmp_path: Path) -> None:
    """A blank task uuid is an InvalidTaskError (also a ValueError)."""
    with pytest.raises(InvalidTaskError, match="empty"):
        await rodin.download("  ", tmp_path)
    with pytest.raises(ValueError, match="empty"):
        rodin.download_many(["ok", ""], tmp_path)


async def test_download_many_yields_each_task_as_it_finishes(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A slow first task does not hold back the results of faster later ones."""
    slow = server.add_task({"slow.glb": 1000})
    server.add_faults(slow, "slow.glb", Fault.delay(1.0))
    fast = [server.add_task({"f.glb": 1000}) for _ in range(3)]
    order = [r.task_uuid async for r in rodin.download_many([slow, *fast], tmp_path)]
    assert order[-1] == slow
    assert sorted(order[:-1]) == sorted(fast)


async def test_failed_task_does_not_stop_the_others(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A failing task yields a result with `error`; every other task still completes."""
    good = [server.add_task({"a.glb": 5000}) for _ in range(4)]
    broken = server.add_task({"b.glb": 5000})
    server.add_faults(broken, "b.glb", *[Fault.status(500)] * 10)
    uuids = [good[0], "missing-task", broken, *good[1:]]
    results = {r.task_uuid: r async for r in rodin.download_many(uuids, tmp_path)}
    assert set(results) == set(uuids)
    assert isinstance(results["missing-task"].error, APIError)
    assert isinstance(results[broken].error, TaskDownloadError)
    for uuid in good:
        assert_complete(server, results[uuid])


async def test_download_many_takes_async_iterables(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """uuids can come from an async generator, consumed as the download runs."""
    uuids = [server.add_task({"a.glb": 2000}) for _ in range(5)]

    async def feed() -> AsyncIterator[str]:
        for uuid in uuids:
            await anyio.lowlevel.checkpoint()
            yield uuid

    results = [r async for r in rodin.download_many(feed(), tmp_path)]
    assert sorted(r.task_uuid for r in results) == sorted(uuids)
    for result in results:
        assert_complete(server, result)


async def test_error_in_the_callers_iterable_reaches_the_caller(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """An exception raised while producing uuids surfaces from the loop, untouched."""
    task = server.add_task({"a.glb": 2000})

    def feed() -> Iterator[str]:
        yield task
        raise LookupError("the caller's own bug")

    with pytest.raises(LookupError, match="own bug"):
        async for _ in rodin.download_many(feed(), tmp_path):
            pass


async def test_transfers_reach_but_never_exceed_max_concurrency(
    server: FakeRodin, tmp_path: Path
) -> None:
    """max_concurrency bounds simultaneous transfers across tasks, and is reached."""
    counting = CountingTransport(server.base_url)
    uuids = []
    for _ in range(4):
        task = server.add_task({f"f{i}.bin": 20_000 for i in range(4)})
        for i in range(4):
            server.add_faults(task, f"f{i}.bin", Fault.trickle(chunk=5000, interval=0.02))
        uuids.append(task)
    async with AsyncRodin(
        server.api_key, base_url=server.base_url, max_concurrency=5, transport=counting
    ) as rodin:
        results = [r async for r in rodin.download_many(uuids, tmp_path)]
    assert all(r.ok for r in results)
    assert counting.peak["files"] == 5
    assert counting.active["files"] == 0


async def test_api_calls_are_bounded(server: FakeRodin, tmp_path: Path) -> None:
    """Listings respect max_api_concurrency even when many tasks start at once."""
    counting = CountingTransport(server.base_url)
    uuids = [server.add_task({"a.json": 100}) for _ in range(12)]
    server.add_api_faults(*[Fault.delay(0.05)] * 12)
    async with AsyncRodin(
        server.api_key,
        base_url=server.base_url,
        max_concurrency=8,
        max_api_concurrency=2,
        transport=counting,
    ) as rodin:
        results = [r async for r in rodin.download_many(uuids, tmp_path)]
    assert all(r.ok for r in results)
    assert counting.peak["api"] == 2


async def test_tasks_are_listed_just_before_they_download(
    server: FakeRodin, tmp_path: Path
) -> None:
    """Listing is lazy: late tasks are listed after early ones moved bytes (URLs expire)."""
    uuids = [server.add_task({"a.bin": 50_000}) for _ in range(6)]
    server.reset_requests()
    async with AsyncRodin(server.api_key, base_url=server.base_url, max_concurrency=1) as rodin:
        async for _ in rodin.download_many(uuids, tmp_path):
            pass
    order = [(r.origin, r.task_uuid) for r in server.requests]
    first_transfer = order.index(("files", uuids[0]))
    last_listing = order.index(("api", uuids[-1]))
    assert first_transfer < last_listing


async def test_breaking_out_stops_the_outstanding_work(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """Leaving the loop early cancels the rest promptly and leaves no stray tasks."""
    uuids = [quick := server.add_task({"q.bin": 10}), *slow_tasks(server, 10)]
    baseline = len(asyncio.all_tasks())
    async with contextlib.aclosing(rodin.download_many(uuids, tmp_path)) as results:
        async for result in results:
            assert result.task_uuid == quick
            break
    await tasks_back_to(baseline)
    before = await settled_request_count(server)
    await anyio.sleep(0.3)
    assert len(server.requests) == before
    for path in final_files(tmp_path):
        assert path.name == "q.bin"


async def settled_request_count(server: FakeRodin) -> int:
    """The server's request count once requests already on the wire are recorded.

    The fake server records a request in its own thread, so one sent just before the
    cancellation may show up a moment later; that is not new work.
    """
    count = len(server.requests)
    for _ in range(50):
        await anyio.sleep(0.05)
        if len(server.requests) == count:
            return count
        count = len(server.requests)
    raise AssertionError("the server kept receiving requests")


async def test_abandoned_loop_is_cleaned_up_too(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A plain `break` without aclosing also stops the work once the generator is dropped."""
    uuids = [server.add_task({"q.bin": 10}), *slow_tasks(server, 6)]
    baseline = len(asyncio.all_tasks())
    async for _ in rodin.download_many(uuids, tmp_path):
        break
    await tasks_back_to(baseline)


def slow_tasks(server: FakeRodin, count: int) -> list[str]:
    """Tasks whose one file trickles for seconds: still running when a test stops them."""
    uuids = []
    for _ in range(count):
        task = server.add_task({"a.bin": 200_000})
        server.add_faults(task, "a.bin", Fault.trickle(chunk=10_000, interval=0.05))
        uuids.append(task)
    return uuids


async def tasks_back_to(baseline: int) -> None:
    """Wait (at most 5 s) until no more asyncio tasks exist than *baseline*."""
    with anyio.fail_after(5):
        while len(asyncio.all_tasks()) > baseline:
            await anyio.sleep(0.01)


async def test_cancelled_consumer_leaves_only_part_files(server: FakeRodin, tmp_path: Path) -> None:
    """Cancelling mid-transfer never leaves a final-named partial; a re-run completes."""
    uuids = []
    for _ in range(3):
        task = server.add_task({"big.bin": 400_000, "small.bin": 100})
        server.add_faults(task, "big.bin", Fault.trickle(chunk=20_000, interval=0.02))
        uuids.append(task)
    with anyio.CancelScope() as scope:

        def cancel_mid_transfer(event: ProgressEvent) -> None:
            if isinstance(event, FileProgress) and event.received >= 40_000:
                scope.cancel()  # some bytes of a big file are on disk, the rest aren't

        async with AsyncRodin(server.api_key, base_url=server.base_url) as rodin:
            async for _ in rodin.download_many(uuids, tmp_path, on_progress=cancel_mid_transfer):
                pass
    parts = {p.parent.name: p.stat().st_size for p in tmp_path.rglob(".big.bin.part")}
    assert parts, "the cancelled transfers keep their .part files for a resume"
    for path in final_files(tmp_path):
        assert path.read_bytes() == server.content(path.parent.name, path.name)
    async with AsyncRodin(server.api_key, base_url=server.base_url) as rodin:
        results = [r async for r in rodin.download_many(uuids, tmp_path)]
    for result in results:
        assert_complete(server, result)
    for uuid, size in parts.items():
        assert server.file_requests(uuid, "big.bin")[-1].range == f"bytes={size}-"


async def test_progress_events_add_up_to_the_bytes_on_disk(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """Per file, the latest start offset plus later advances equals the final size."""
    task = server.add_task(MIX)
    server.add_faults(task, "base_basic_pbr.glb", Fault.truncate(at=100_000), Fault.ignore_range())
    events: list[ProgressEvent] = []
    result = await rodin.download(task, tmp_path, on_progress=events.append)
    on_disk: dict[str, int] = {}
    for event in events:
        if isinstance(event, FileStarted):
            on_disk[event.name] = event.offset
        elif isinstance(event, FileProgress):
            on_disk[event.name] += event.advanced
            assert on_disk[event.name] == event.received
    assert on_disk == {f.name: f.path.stat().st_size for f in result.files}
    assert isinstance(events[-1], TaskFinished) and events[-1].result == result


async def test_key_never_appears_in_logs_or_errors(
    server: FakeRodin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With every logger at DEBUG, failures and retries never print the API key."""
    caplog.set_level(logging.DEBUG)
    task = server.add_task({"a.glb": 1000, "b.glb": 1000})
    server.add_faults(task, "a.glb", Fault.status(503), *[Fault.status(500)] * 10)
    server.add_api_faults(Fault.status(503))
    async with AsyncRodin(server.api_key, base_url=server.base_url) as rodin:
        with pytest.raises(TaskDownloadError) as info:
            await rodin.download(task, tmp_path)
        text = "\n".join([caplog.text, repr(rodin), str(info.value), repr(info.value)])
    assert server.api_key not in text
    assert "httpx" in caplog.text  # the capture really saw the HTTP layer's logs


@pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads the process's own peak from /proc"
)
def test_memory_stays_flat_for_a_300_mib_file(server: FakeRodin, tmp_path: Path) -> None:
    """A 300 MiB file streams to disk with peak RSS well under 150 MiB."""
    task = server.add_task({"huge.glb": 300 * MIB})
    script = textwrap.dedent(
        f"""
        import anyio, rodin_async
        async def main():
            key, url = {server.api_key!r}, {server.base_url!r}
            async with rodin_async.AsyncRodin(key, base_url=url) as r:
                result = await r.download({task!r}, {str(tmp_path)!r})
            print(result.files[0].size)
        anyio.run(main)
        # VmHWM is this program's own peak; ru_maxrss would count the parent's RSS at fork.
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(status["VmHWM"].split()[0])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=50, check=True
    ).stdout.split()
    size, peak_kib = int(out[0]), int(out[1])
    assert size == 300 * MIB
    assert (tmp_path / task / "huge.glb").stat().st_size == 300 * MIB
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


async def test_same_task_twice_at_once_is_serialised(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """Two concurrent downloads of one task never write the same part file together."""
    task = server.add_task({"a.bin": 300_000})
    server.add_faults(task, "a.bin", Fault.trickle(chunk=30_000, interval=0.01))
    results: list[TaskDownload] = []

    async def one() -> None:
        results.append(await rodin.download(task, tmp_path))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    for result in results:
        assert_complete(server, result)


# -- options and callbacks checked up front ---------------------------------------------


async def test_check_must_be_size_or_sha256(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A misspelled check mode is refused before any request, in both download calls."""
    task = server.add_task(MIX)
    server.reset_requests()
    with pytest.raises(ConfigurationError, match="check must be one of"):
        await rodin.download(task, tmp_path, check="sha-256")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="check must be one of"):
        rodin.download_many([task], tmp_path, check="md5")  # type: ignore[arg-type]
    assert server.requests == []


async def test_an_async_progress_callback_is_refused(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """An ``async def`` callback would never be awaited: a TypeError says so at once."""

    async def on_progress(event: ProgressEvent) -> None:
        pass

    with pytest.raises(TypeError, match="plain function"):
        await rodin.download(server.add_task(MIX), tmp_path, on_progress=on_progress)  # type: ignore[arg-type]


class Boom(Exception):
    """The user's own exception, raised from a progress callback."""


def explode_on_progress(event: ProgressEvent) -> None:
    if isinstance(event, FileProgress):
        raise Boom("from the callback")


async def test_a_raising_callback_comes_out_as_itself(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """The callback's exception is raised by download() as is, not in an ExceptionGroup."""
    task = server.add_task(MIX)
    with pytest.raises(Boom, match="from the callback"):
        await rodin.download(task, tmp_path, on_progress=explode_on_progress)
    assert final_files(tmp_path) == []


async def test_stopping_at_the_last_progress_event_keeps_the_whole_part(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A file's last batch is reported before the hop that writes and renames it: stopping
    there leaves the whole file in its part, counted once, and the next run finishes it."""
    task = server.add_task({"small.bin": 50_000})
    events: list[ProgressEvent] = []

    def stop_at_the_end(event: ProgressEvent) -> None:
        events.append(event)
        if isinstance(event, FileProgress) and event.received == 50_000:
            raise Boom("at the last byte")

    with pytest.raises(Boom):
        await rodin.download(task, tmp_path, on_progress=stop_at_the_end)
    assert (tmp_path / task / ".small.bin.part").read_bytes() == server.content(task, "small.bin")
    assert sum(e.advanced for e in events if isinstance(e, FileProgress)) == 50_000
    assert final_files(tmp_path) == []
    assert_complete(server, await rodin.download(task, tmp_path))


async def test_a_raising_callback_comes_out_of_download_many_as_itself(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """The same from download_many: the loop raises the callback's own exception."""
    tasks = [server.add_task(MIX) for _ in range(3)]
    with pytest.raises(Boom):
        async for _ in rodin.download_many(tasks, tmp_path, on_progress=explode_on_progress):
            pass


async def test_a_garbled_retry_after_is_just_a_retry(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """``Retry-After: ³`` (a digit to Python, not to HTTP) costs an attempt, nothing more."""
    task = server.add_task(MIX)
    server.add_faults(task, "base.fbx", Fault.status(503, retry_after="³"))
    assert_complete(server, await rodin.download(task, tmp_path))


async def test_no_log_record_carries_a_file_url_query(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Presigned URLs are credentials: no logger, at any level, prints their query string."""
    caplog.set_level(logging.DEBUG)
    task = server.add_task(MIX)
    server.add_faults(task, "base.fbx", Fault.redirect(hops=2), Fault.status(503))
    assert_complete(server, await rodin.download(task, tmp_path))
    queries = {r.query for r in server.file_requests(task)}
    assert queries and all(queries)
    for record in caplog.records:
        if record.name.startswith("uvicorn"):
            continue  # the fake file host's own access log: the server's side, not ours
        message = record.getMessage()
        for query in queries:
            assert query not in message, (record.name, message)
    assert any(r.name.startswith("httpx") for r in caplog.records)  # the API's own lines


def test_trio_is_refused_with_a_clear_error(server: FakeRodin, tmp_path: Path) -> None:
    """On trio the client says it needs asyncio, instead of crashing inside aiofiles."""

    async def main() -> None:
        async with AsyncRodin(server.api_key, base_url=server.base_url) as rodin:
            await rodin.download("any-task", tmp_path)

    with pytest.raises(ConfigurationError, match="asyncio"):
        anyio.run(main, backend="trio")

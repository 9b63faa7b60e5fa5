"""The whole workflow end to end: generate, status, wait, balance, run, and skip-on-rerun."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from rodin_async import (
    AsyncRodin,
    AuthenticationError,
    FileProgress,
    FileStarted,
    GenerationRequest,
    JobFailedError,
    JobStatus,
    ProgressEvent,
    RateLimitError,
    RetryPolicy,
    TaskStatus,
    ValidationError,
    WaitTimeoutError,
)
from rodin_async.testing import FakeRodin, Fault

from .helpers import MANIFEST, assert_complete

pytestmark = pytest.mark.anyio
MIX = {"base_basic_pbr.glb": 300_000, "preview.webp": 20_000, "texture_diffuse.png": 50_000}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    with FakeRodin(api_key="sk-workflow", generation_time=0.3, balance=1000.0) as fake:
        yield fake


@pytest.fixture
async def rodin(server: FakeRodin) -> AsyncIterator[AsyncRodin]:
    async with AsyncRodin(server.api_key, base_url=server.base_url) as client:
        yield client


async def test_generate_wait_download(server: FakeRodin, rodin: AsyncRodin, tmp_path: Path) -> None:
    """A text-to-3D job goes Waiting -> Done and its .glb and preview download intact."""
    job = await rodin.generate(prompt="a wooden chair", tier="Regular", seed=7)
    assert job.uuid and job.subscription_key and job.job_uuids
    seen: list[TaskStatus] = []
    final = await rodin.wait(job, poll_interval=0.05, on_status=seen.append)
    assert final.done and not final.failed
    assert seen[0].jobs[0].status in (JobStatus.WAITING, JobStatus.GENERATING)
    result = await rodin.download(job, tmp_path)
    assert_complete(server, result)
    names = [f.name for f in result.files]
    assert "preview.webp" in names
    glb = next(f for f in result.files if f.name.endswith(".glb"))
    magic, version, length = struct.unpack("<4sII", glb.path.read_bytes()[:12])
    assert (magic, version, length) == (b"glTF", 2, glb.size)


async def test_run_does_it_all(server: FakeRodin, rodin: AsyncRodin, tmp_path: Path) -> None:
    """run() generates, waits and downloads in one call."""
    request = GenerationRequest(prompt="a lamp", geometry_file_format="glb", material="PBR")
    result = await rodin.run(request, tmp_path, poll_interval=0.05, timeout=10)
    assert_complete(server, result)
    assert result.directory == tmp_path / result.task_uuid


async def test_status_by_subscription_key(server: FakeRodin, rodin: AsyncRodin) -> None:
    """status() takes a GenerationJob or its subscription key."""
    job = await rodin.generate(prompt="a cup")
    by_job, by_key = await rodin.status(job), await rodin.status(job.subscription_key)
    assert tuple(j.uuid for j in by_job.jobs) == tuple(j.uuid for j in by_key.jobs) == job.job_uuids


async def test_failed_job_is_reported_by_name(server: FakeRodin, rodin: AsyncRodin) -> None:
    """wait() raises JobFailedError naming the job that failed."""
    server.fail_next_generation("Failed")
    job = await rodin.generate(prompt="doomed")
    with pytest.raises(JobFailedError) as info:
        await rodin.wait(job, poll_interval=0.05, timeout=10)
    assert info.value.job_uuid in job.job_uuids
    assert info.value.job_uuid in str(info.value)
    assert info.value.status == "Failed"


async def test_canceled_job_fails_too(server: FakeRodin, rodin: AsyncRodin) -> None:
    """Canceled counts as failed."""
    server.fail_next_generation("Canceled")
    job = await rodin.generate(prompt="cancelled")
    with pytest.raises(JobFailedError, match="Canceled"):
        await rodin.wait(job, poll_interval=0.05, timeout=10)


async def test_unknown_status_never_crashes(server: FakeRodin, rodin: AsyncRodin) -> None:
    """A status this library doesn't know is UNKNOWN (raw kept), and waiting goes on."""
    job = await rodin.generate(prompt="odd")
    server.set_job_status(job.uuid, "Paused")
    status = await rodin.status(job)
    assert status.jobs[0].status is JobStatus.UNKNOWN
    assert status.jobs[0].raw_status == "Paused"
    assert not status.done and not status.failed
    with pytest.raises(WaitTimeoutError):
        await rodin.wait(job, poll_interval=0.05, timeout=0.3)
    server.set_job_status(job.uuid, None)
    assert (await rodin.wait(job, poll_interval=0.05, timeout=10)).done


async def test_wait_warns_once_about_an_unknown_status(
    server: FakeRodin, rodin: AsyncRodin, caplog: pytest.LogCaptureFixture
) -> None:
    """A status wait() can't act on is logged once on the rodin_async logger; waiting goes on."""
    job = await rodin.generate(prompt="paused")
    server.set_job_status(job.uuid, "Paused")
    polls: list[TaskStatus] = []

    def resume_after_three(status: TaskStatus) -> None:
        polls.append(status)
        if len(polls) == 3:
            server.set_job_status(job.uuid, None)

    with caplog.at_level(logging.WARNING, logger="rodin_async"):
        final = await rodin.wait(job, poll_interval=0.02, timeout=10, on_status=resume_after_three)
    assert final.done and len(polls) >= 3
    (record,) = [r for r in caplog.records if r.name == "rodin_async"]
    assert record.levelno == logging.WARNING
    assert "'Paused'" in record.getMessage() and job.job_uuids[0] in record.getMessage()


async def test_on_status_can_stop_waiting_on_an_unknown_status(
    server: FakeRodin, rodin: AsyncRodin
) -> None:
    """An exception raised by on_status ends wait() and comes out as it is."""
    job = await rodin.generate(prompt="paused")
    server.set_job_status(job.uuid, "Paused")

    class Stuck(Exception):
        pass

    def stop_on_unknown(status: TaskStatus) -> None:
        if any(j.status is JobStatus.UNKNOWN for j in status.jobs):
            raise Stuck(status.jobs[0].raw_status)

    with pytest.raises(Stuck, match="Paused"):
        await rodin.wait(job, poll_interval=0.02, on_status=stop_on_unknown)
    server.set_job_status(job.uuid, None)


async def test_throttled_polling_backs_off_and_continues(
    server: FakeRodin, rodin: AsyncRodin
) -> None:
    """429 from /status is retried (Retry-After honoured) and polling carries on."""
    job = await rodin.generate(prompt="busy")
    server.reset_requests()
    server.add_api_faults(Fault.status(429, retry_after="1"), Fault.status(429), endpoint="status")
    status = await rodin.wait(job, poll_interval=0.05, timeout=10)
    assert status.done
    assert [r.status for r in server.api_requests("status")][:3] == [429, 429, 201]


async def test_throttle_that_never_lifts_raises(server: FakeRodin) -> None:
    """Throttling past the retry budget is a RateLimitError, not a hang."""
    server.add_api_faults(*[Fault.status(429)] * 3, endpoint="check_balance")
    async with AsyncRodin(
        server.api_key, base_url=server.base_url, retry=RetryPolicy(attempts=3)
    ) as rodin:
        with pytest.raises(RateLimitError):
            await rodin.balance()


async def test_wait_can_be_cancelled(server: FakeRodin, rodin: AsyncRodin) -> None:
    """Cancelling the caller stops polling at once."""
    job = await rodin.generate(prompt="slow")
    server.set_job_status(job.uuid, "Generating")
    with anyio.move_on_after(0.2) as scope:
        await rodin.wait(job, poll_interval=0.05)
    assert scope.cancelled_caught
    server.set_job_status(job.uuid, None)


async def test_balance_goes_down_on_submit(server: FakeRodin, rodin: AsyncRodin) -> None:
    """balance() reads /check_balance; a submit costs the fake's price."""
    before = await rodin.balance()
    await rodin.generate(prompt="a coin")
    assert await rodin.balance() == pytest.approx(before - 0.5)


async def test_bad_key_on_every_endpoint(server: FakeRodin, tmp_path: Path) -> None:
    """A wrong key is an AuthenticationError on each endpoint, and nothing is charged."""
    before = server.balance
    async with AsyncRodin("sk-nope", base_url=server.base_url) as rodin:
        with pytest.raises(AuthenticationError):
            await rodin.balance()
        with pytest.raises(AuthenticationError):
            await rodin.generate(prompt="x")
        with pytest.raises(AuthenticationError):
            await rodin.status("any-key")
    assert server.balance == before


async def test_validation_fires_before_any_request(server: FakeRodin, rodin: AsyncRodin) -> None:
    """Invalid arguments never reach the server, so no credit is spent."""
    server.reset_requests()
    with pytest.raises(ValidationError):
        await rodin.generate(prompt="x", seed=70000)
    with pytest.raises(ValidationError):
        await rodin.generate()
    assert server.submissions == []
    assert server.api_requests() == []


async def test_texture_only_generation(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """generate_texture submits image + model and the result downloads like any task."""
    model = tmp_path / "in.glb"
    model.write_bytes(b"glTF" + bytes(200))
    job = await rodin.generate_texture(b"\x89PNG" + bytes(64), model, resolution="Basic")
    await rodin.wait(job, poll_interval=0.05, timeout=10)
    result = await rodin.download(job, tmp_path / "out")
    assert_complete(server, result)
    (submission,) = [s for s in server.submissions if s.task_uuid == job.uuid]
    assert submission.endpoint == "rodin_texture_only"
    assert submission.files["model"] == [("in.glb", 204)]


async def test_rerun_skips_finished_tasks_without_transfers(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A second bulk run over completed tasks lists nothing and transfers nothing."""
    uuids = [server.add_task(MIX) for _ in range(5)]
    first = [r async for r in rodin.download_many(uuids, tmp_path)]
    assert all(r.ok and not r.skipped for r in first)
    server.reset_requests()
    second = {r.task_uuid: r async for r in rodin.download_many(uuids, tmp_path)}
    assert server.requests == []
    assert all(r.skipped and r.ok for r in second.values())
    for result in first:
        assert second[result.task_uuid].files == tuple(
            f.__class__(f.name, f.path, f.size, f.sha256, attempts=0) for f in result.files
        )


async def test_missing_or_corrupt_files_are_downloaded_again(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A deleted file (size check) or a corrupted one (sha256 check) triggers a new download."""
    task = server.add_task(MIX)
    first = await rodin.download(task, tmp_path)
    (first.directory / "preview.webp").unlink()
    again = await rodin.download(task, tmp_path)
    assert not again.skipped
    assert_complete(server, again)
    png = first.directory / "texture_diffuse.png"
    png.write_bytes(b"\x00" * png.stat().st_size)  # same size, wrong bytes
    assert (await rodin.download(task, tmp_path)).skipped  # size alone can't see it
    fixed = await rodin.download(task, tmp_path, check="sha256")
    assert not fixed.skipped
    assert_complete(server, fixed)


async def test_overwrite_forces_a_fresh_download(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """overwrite=True ignores the manifest and downloads every file again."""
    task = server.add_task(MIX)
    await rodin.download(task, tmp_path)
    server.reset_requests()
    result = await rodin.download(task, tmp_path, overwrite=True)
    assert not result.skipped
    assert len(server.file_requests(task)) == len(MIX)


async def test_manifest_never_claims_an_incomplete_task(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A task with a failed file gets no manifest; a stale one is removed before re-downloading."""
    task = server.add_task(MIX)
    await rodin.download(task, tmp_path)
    (tmp_path / task / "preview.webp").unlink()
    server.add_faults(task, "preview.webp", *[Fault.status(500)] * 10)
    async with AsyncRodin(
        server.api_key, base_url=server.base_url, retry=RetryPolicy(attempts=2)
    ) as rodin2:
        results = [r async for r in rodin2.download_many([task], tmp_path)]
    assert results[0].error is not None
    assert not (tmp_path / task / MANIFEST).exists()


async def test_corrupt_manifest_is_ignored(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A manifest that is garbage, another task's, or points outside is simply not trusted."""
    task = server.add_task(MIX)
    directory = tmp_path / task
    directory.mkdir()
    for body in (
        "{not json",
        json.dumps({"version": 1, "task_uuid": "other", "files": []}),
        json.dumps(
            {
                "version": 1,
                "task_uuid": task,
                "files": [{"name": "x", "file": "../x", "size": 0, "sha256": ""}],
            }
        ),
    ):
        (directory / MANIFEST).write_text(body)
        result = await rodin.download(task, tmp_path, overwrite=False)
        assert not result.skipped
        assert_complete(server, result)
        (directory / MANIFEST).unlink()
        for f in result.files:
            f.path.unlink()


async def test_progress_events_match_the_files(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """Bytes announced by progress events equal the bytes on disk, across tasks."""
    uuids = [server.add_task(MIX) for _ in range(3)]
    server.add_faults(uuids[0], "base_basic_pbr.glb", Fault.truncate(at=70_000))
    events: list[ProgressEvent] = []
    results = [r async for r in rodin.download_many(uuids, tmp_path, on_progress=events.append)]
    on_disk: dict[tuple[str, str], int] = {}
    for event in events:
        if isinstance(event, FileStarted):
            on_disk[event.task_uuid, event.name] = event.offset
        elif isinstance(event, FileProgress):
            on_disk[event.task_uuid, event.name] += event.advanced
    assert on_disk == {(r.task_uuid, f.name): f.size for r in results for f in r.files}

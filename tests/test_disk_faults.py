"""A destination that fills up: ENOSPC is a clear error, and nothing on disk is corrupt.

The tests mount a tiny tmpfs of their own, so they need root (and Linux); they are
skipped, saying why, anywhere else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rodin_async import (
    AsyncRodin,
    FileFinished,
    ProgressCallback,
    ProgressEvent,
    RetryPolicy,
    RodinError,
    TaskDownloadError,
)
from rodin_async.testing import FakeRodin

from .helpers import LOCK, MANIFEST, assert_complete
from .test_faults import check_disk

pytestmark = pytest.mark.anyio
FS_SIZE = 2 << 20  # 2 MiB
PAGE = 4096
NO_SPACE = os.strerror(28)  # "No space left on device"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    with FakeRodin(api_key="sk-disk-faults") as fake:
        yield fake


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test only, always unmounted afterwards."""
    if not sys.platform.startswith("linux"):
        pytest.skip("mounting a tmpfs needs Linux")
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount/umount command")
    point = tmp_path / "small"
    point.mkdir()
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"can't mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield point
    finally:
        if subprocess.run([umount, str(point)], check=False).returncode != 0:
            subprocess.run([umount, "-l", str(point)], check=False)


def client(server: FakeRodin, **options: object) -> AsyncRodin:
    """A client with a short retry budget."""
    return AsyncRodin(
        server.api_key,
        base_url=server.base_url,
        timeout=httpx.Timeout(5, connect=2),
        retry=RetryPolicy(attempts=3),
        **options,  # type: ignore[arg-type]
    )


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


async def test_full_disk_fails_tasks_clearly_and_corrupts_nothing(
    server: FakeRodin, small_fs: Path
) -> None:
    """Twice what fits: failed files say "No space left", others complete, parts resume."""
    files = {"model.glb": 300_000, "texture.png": 200_001}
    uuids = [server.add_task(files) for _ in range(8)]
    async with client(server, max_concurrency=4) as rodin:
        results = [r async for r in rodin.download_many(uuids, small_fs)]
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    assert ok and failed and len(results) == len(uuids)
    for result in ok:
        assert_complete(server, result)
    for result in failed:
        assert NO_SPACE in str(result.error), repr(result.error)
        if not isinstance(result.error, TaskDownloadError):
            continue  # every file fitted but the manifest did not (see below)
        for error in result.error.errors:
            assert error.name in files
            assert NO_SPACE in str(error) and error.name in str(error)
            # A full disk is not transient: one request, no retry storm.
            assert len(server.file_requests(result.task_uuid, error.name)) == 1
        assert not (result.directory / MANIFEST).exists()
    before = check_disk(server, small_fs)
    assert before["final"] >= 2 * len(ok)

    for result in ok:  # free room, then run each failed task again: its parts resume
        shutil.rmtree(result.directory)
    server.reset_requests()
    async with client(server, max_concurrency=4) as rodin:
        for result in failed:
            parts = {p: p.stat().st_size for p in result.directory.glob(".*.part")}
            assert_complete(server, await rodin.download(result.task_uuid, small_fs))
            for part, size in parts.items():
                name = part.name[1 : -len(".part")]
                expected = f"bytes={size}-" if size else None
                assert server.file_requests(result.task_uuid, name)[0].range == expected
            shutil.rmtree(result.directory)


def _fill_disk_when_done(root: Path) -> ProgressCallback:
    """A callback that fills the disk once the file is final: the manifest won't fit."""

    def fill(event: ProgressEvent) -> None:
        if isinstance(event, FileFinished):
            (root / "filler").write_bytes(b"\0" * _free_bytes(root))

    return fill


async def test_no_room_for_the_manifest_is_a_rodin_error(server: FakeRodin, small_fs: Path) -> None:
    """Files fit but the manifest doesn't: a RodinError saying so, no temp file left behind."""
    task = server.add_task({"model.glb": 2 * PAGE})
    async with client(server) as rodin:
        with pytest.raises(RodinError) as info:
            await rodin.download(task, small_fs, on_progress=_fill_disk_when_done(small_fs))
    assert NO_SPACE in str(info.value), repr(info.value)
    directory = small_fs / task
    assert sorted(p.name for p in directory.iterdir()) == [LOCK, "model.glb"]
    assert (directory / "model.glb").read_bytes() == server.content(task, "model.glb")

    (small_fs / "filler").unlink()
    async with client(server) as rodin:
        assert_complete(server, await rodin.download(task, small_fs))


async def test_no_room_for_the_manifest_does_not_stop_download_many(
    server: FakeRodin, small_fs: Path
) -> None:
    """In a bulk run, a task whose manifest can't be written is one failed result, not a crash."""
    task = server.add_task({"model.glb": 2 * PAGE})
    async with client(server) as rodin:
        fill = _fill_disk_when_done(small_fs)
        results = [r async for r in rodin.download_many([task], small_fs, on_progress=fill)]
    (result,) = results
    assert isinstance(result.error, RodinError) and NO_SPACE in str(result.error)
    assert (small_fs / task / "model.glb").read_bytes() == server.content(task, "model.glb")

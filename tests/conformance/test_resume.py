"""Defects 4 and 5: resuming a `.part` against real servers.

Caddy answers a Range past the end with 416, `Content-Range: bytes */N` and a text body;
S3 with 416 and an XML body but no Content-Range. Caddy honours If-Range; moto's S3
ignores it (it does honour If-Match). A resume must never write an error body into the
file, and must never splice the head of one version onto the tail of another.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rodin_async import (
    FileProgress,
    ProgressEvent,
    RetryPolicy,
    TaskDownloadError,
)
from rodin_async.testing import FakeRodin

from .checks import assert_manifest_matches_disk, causes, client, stray_parts
from .servers import Bucket, Caddy, FrontLayer, unique

pytestmark = pytest.mark.anyio
SIZE = 3 << 20
VERSION_A = bytes(range(251)) * (SIZE // 251) + bytes(SIZE % 251)
VERSION_B = bytes(reversed(VERSION_A))  # same length, different bytes


def describe(data: bytes) -> str:
    """Which version *data* is, for a readable failure."""
    if data in (VERSION_A, VERSION_B):
        return "A" if data == VERSION_A else "B"
    head = "A" if data[: SIZE // 4] == VERSION_A[: SIZE // 4] else "?"
    tail = "B" if data[-SIZE // 4 :] == VERSION_B[-SIZE // 4 :] else "?"
    return f"{len(data)} bytes: head of {head}, tail of {tail} (spliced)"


class Interrupted(BaseException):
    """A Ctrl-C at the very end (not KeyboardInterrupt, which would stop pytest itself)."""


async def interrupted_at_the_last_byte(fake: FakeRodin, task: str, dest: Path) -> None:
    """A run interrupted once every byte is on disk, before the rename: a complete `.part`.

    This is how a whole file ends up in a `.part` (Ctrl-C or a crash at the very end), and
    it leaves whatever resume validator the client keeps beside the part.
    """

    def interrupt_when_complete(event: ProgressEvent) -> None:
        if isinstance(event, FileProgress) and event.received == SIZE:
            raise Interrupted

    raised: BaseException | None = None
    try:
        async with client(fake) as rodin:
            await rodin.download(task, dest, on_progress=interrupt_when_complete)
    except BaseException as exc:  # Interrupted, maybe inside an exception group
        raised = exc
    assert raised is not None and any(isinstance(e, Interrupted) for e in causes(raised))
    assert (dest / task / ".model.glb.part").read_bytes() == VERSION_A


async def test_complete_part_on_caddy_is_finished_without_refetching(
    fake: FakeRodin, caddy: Caddy, folder: str, tmp_path: Path
) -> None:
    """Defect 4: a `.part` holding all of a Caddy file ends exact; the 416 body isn't written."""
    url, _ = caddy.put(f"{folder}/model.glb", VERSION_A)
    task = fake.add_remote_task({"model.glb": url})
    await interrupted_at_the_last_byte(fake, task, tmp_path)
    before = len(caddy.access_log(f"/{folder}/"))
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert result.files[0].path.read_bytes() == VERSION_A
    assert stray_parts(result.directory) == []
    assert_manifest_matches_disk(result.directory)
    served = [(e["status"], e["size"]) for e in caddy.access_log(f"/{folder}/")[before:]]
    assert sum(size for status, size in served if status in (200, 206)) < SIZE, served


async def test_complete_part_on_s3_is_finished_without_refetching(
    fake: FakeRodin, bucket: Bucket, tmp_path: Path
) -> None:
    """Defect 4: a `.part` holding all of an S3 object ends exact; no full re-download."""
    url = bucket.put(unique("k-"), VERSION_A)
    task = fake.add_remote_task({"model.glb": url})
    await interrupted_at_the_last_byte(fake, task, tmp_path)
    before = len(bucket.front.exchanges(url))
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert result.files[0].path.read_bytes() == VERSION_A
    assert stray_parts(result.directory) == []
    served = [(e.status, e.body_bytes) for e in bucket.front.exchanges(url)[before:]]
    assert sum(size for status, size in served if status in (200, 206)) < SIZE, served


async def test_planted_complete_part_without_validator_ends_exact(
    fake: FakeRodin, caddy: Caddy, bucket: Bucket, folder: str, tmp_path: Path
) -> None:
    """Defect 4: bare planted `.part` bytes (no validator): exact files, no error body kept."""
    caddy_url, _ = caddy.put(f"{folder}/model.glb", VERSION_A)
    urls = {"caddy.glb": caddy_url, "s3.glb": bucket.put(unique("k-"), VERSION_A)}
    task = fake.add_remote_task(urls)
    (tmp_path / task).mkdir()
    for name in urls:  # a resume can't be validated, so starting over is allowed here
        (tmp_path / task / f".{name}.part").write_bytes(VERSION_A)
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert [f.path.read_bytes() for f in result.files] == [VERSION_A, VERSION_A]
    assert stray_parts(result.directory) == []


async def cut_run(fake: FakeRodin, task: str, dest: Path) -> None:
    """One attempt that the front layer cuts mid-way: it fails and leaves a `.part`."""
    async with client(fake, retry=RetryPolicy(attempts=1)) as rodin:
        with pytest.raises(TaskDownloadError):
            await rodin.download(task, dest)
    part = dest / task / ".model.glb.part"
    assert 0 < part.stat().st_size < SIZE


async def test_file_changed_on_caddy_between_runs_is_not_spliced(
    fake: FakeRodin, caddy: Caddy, caddy_front: FrontLayer, folder: str, tmp_path: Path
) -> None:
    """Defect 5: a run cut mid-way, then the Caddy file replaced (same size): B exactly."""
    caddy.put(f"{folder}/model.glb", VERSION_A)
    url = f"{caddy_front.url}/{folder}/model.glb"
    task = fake.add_remote_task({"model.glb": url})
    caddy_front.cut(url, after=SIZE // 2)
    await cut_run(fake, task, tmp_path)
    caddy.put(f"{folder}/model.glb", VERSION_B)
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert describe(result.files[0].path.read_bytes()) == "B"
    assert_manifest_matches_disk(result.directory)


async def test_object_changed_on_s3_between_runs_is_not_spliced(
    fake: FakeRodin, bucket: Bucket, tmp_path: Path
) -> None:
    """Defect 5: a run cut mid-way, then the S3 object replaced (same size): B exactly."""
    key = unique("k-")
    url = bucket.put(key, VERSION_A)
    task = fake.add_remote_task({"model.glb": url})
    bucket.front.cut(url, after=SIZE // 2)
    await cut_run(fake, task, tmp_path)
    bucket.put(key, VERSION_B)
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert describe(result.files[0].path.read_bytes()) == "B"
    assert_manifest_matches_disk(result.directory)

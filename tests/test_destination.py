"""What is already in the destination is untrusted: links, other writers, old files (issue 9)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from rodin_async import AsyncRodin, DestinationError, FileStarted, ProgressEvent, RetryPolicy
from rodin_async._files import TaskFolder
from rodin_async.testing import FakeRodin, Fault

from .helpers import LOCK, MANIFEST, assert_complete, plant_part

pytestmark = pytest.mark.anyio
FILES = {"model.glb": 300_001, "preview.webp": 20_000}
PRECIOUS = b"precious bytes outside the destination\n"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    with FakeRodin(api_key="sk-destination-key") as fake:
        yield fake


@pytest.fixture
async def rodin(server: FakeRodin) -> AsyncIterator[AsyncRodin]:
    async with client(server) as opened:
        yield opened


def client(server: FakeRodin) -> AsyncRodin:
    return AsyncRodin(
        server.api_key,
        base_url=server.base_url,
        timeout=httpx.Timeout(5.0, connect=2.0),
        retry=RetryPolicy(attempts=3),
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the destination that a planted link points at."""
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(PRECIOUS)
    return path


def untouched(path: Path, inode: int) -> bool:
    return path.read_bytes() == PRECIOUS and path.stat().st_ino == inode


@pytest.mark.parametrize(
    "planted", [".model.glb.part", ".model.glb.meta", "model.glb", MANIFEST, LOCK]
)
async def test_a_planted_symlink_is_replaced_not_written_through(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, outside: Path, planted: str
) -> None:
    """A link where a part, meta, final file, manifest or lock goes is never followed."""
    task = server.add_task(FILES)
    dest = tmp_path / "dest"
    (dest / task).mkdir(parents=True)
    (dest / task / planted).symlink_to(outside)
    inode = outside.stat().st_ino
    result = await rodin.download(task, dest)
    assert_complete(server, result)
    assert untouched(outside, inode)
    assert not any(p.is_symlink() for p in (dest / task).iterdir())


@pytest.mark.parametrize("planted", [".model.glb.part", ".preview.webp.part"])
async def test_a_link_planted_after_the_folder_was_listed_is_not_followed(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, outside: Path, planted: str
) -> None:
    """A part created at its first write (none was listed) still never follows a link."""
    task = server.add_task(FILES)
    inode = outside.stat().st_ino

    def plant(event: ProgressEvent) -> None:  # after the listing, before the first write
        if isinstance(event, FileStarted) and f".{event.path.name}.part" == planted:
            (tmp_path / task / planted).symlink_to(outside)

    assert_complete(server, await rodin.download(task, tmp_path, on_progress=plant))
    assert untouched(outside, inode)


async def test_a_planted_hard_link_part_is_not_written_through(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, outside: Path
) -> None:
    """A part file with a second name elsewhere is replaced, so the other name keeps its bytes."""
    task = server.add_task(FILES)
    dest = tmp_path / "dest"
    (dest / task).mkdir(parents=True)
    os.link(outside, dest / task / ".model.glb.part")
    inode = outside.stat().st_ino
    assert_complete(server, await rodin.download(task, dest))
    assert untouched(outside, inode)


async def test_a_symlinked_task_folder_is_refused(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, outside: Path
) -> None:
    """dest/<uuid> linking elsewhere: a DestinationError, and nothing written there."""
    task = server.add_task(FILES)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / task).symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(DestinationError, match="symbolic link"):
        await rodin.download(task, dest)
    assert sorted(p.name for p in outside.parent.iterdir()) == ["victim.txt"]


async def test_a_part_without_its_validator_starts_over(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A .part nobody vouches for (no .meta) could be anything: it is not resumed."""
    task = server.add_task(FILES)
    (tmp_path / task).mkdir()
    (tmp_path / task / ".model.glb.part").write_bytes(b"x" * 1000)
    assert_complete(server, await rodin.download(task, tmp_path))
    assert [r.range for r in server.file_requests(task, "model.glb")] == [None]


async def test_a_part_of_another_version_is_not_spliced(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A validator naming an older version: If-Range brings the new file whole."""
    task = server.add_task(FILES)
    content = server.content(task, "model.glb")
    part = plant_part(tmp_path / task, "model.glb", b"y" * 1000, total=len(content))
    meta = part.with_name(".model.glb.meta")
    meta.write_text(json.dumps({"etag": '"old-version"', "last_modified": None, "total": None}))
    assert_complete(server, await rodin.download(task, tmp_path))
    (request,) = server.file_requests(task, "model.glb")
    assert request.range == "bytes=1000-" and request.status == 200


async def test_a_part_holding_the_whole_file_is_not_fetched_again(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A complete part: one ranged request answered 416, no body written, file final."""
    task = server.add_task(FILES)
    content = server.content(task, "model.glb")
    plant_part(tmp_path / task, "model.glb", content, total=len(content))
    assert_complete(server, await rodin.download(task, tmp_path))
    assert [r.status for r in server.file_requests(task, "model.glb")] == [416]


async def test_two_clients_on_one_task_both_end_with_exact_files(
    server: FakeRodin, tmp_path: Path
) -> None:
    """Two clients downloading one task at once take turns; files and manifest are exact."""
    task = server.add_task(FILES)
    for _ in range(2):
        server.add_faults(task, "model.glb", Fault.trickle(chunk=30_000, interval=0.01))
    results = []

    async def one() -> None:
        async with client(server) as rodin:
            results.append(await rodin.download(task, tmp_path))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    for result in results:
        assert_complete(server, result)
    assert sorted(r.skipped for r in results) == [False, True]  # the second found it done
    assert len(server.file_requests(task, "model.glb")) == 1


async def test_only_missing_files_are_downloaded_again(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """Deleting one file of a finished task: the re-run fetches that file, keeps the rest."""
    task = server.add_task({**FILES, "extra.json": 500})
    await rodin.download(task, tmp_path)
    (tmp_path / task / "preview.webp").unlink()
    server.reset_requests()
    result = await rodin.download(task, tmp_path)
    assert_complete(server, result)
    assert [r.file_name for r in server.file_requests(task)] == ["preview.webp"]
    assert not result.skipped
    assert [f.attempts for f in result.files] == [0, 1, 0]


async def test_with_sha256_a_kept_file_is_hashed_once(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file damaged in place: each file is hashed once, not once before the task's
    lock and again under it; only the damaged one is fetched."""
    task = server.add_task({**FILES, "extra.json": 500})
    await rodin.download(task, tmp_path)
    damaged = tmp_path / task / "preview.webp"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF  # same size: only the hash can tell
    damaged.write_bytes(data)
    hashed: list[str] = []
    real = TaskFolder.sha256

    def counting(folder: TaskFolder, name: str) -> str:
        hashed.append(name)
        return real(folder, name)

    monkeypatch.setattr(TaskFolder, "sha256", counting)
    server.reset_requests()
    result = await rodin.download(task, tmp_path, check="sha256")
    assert_complete(server, result)
    assert [r.file_name for r in server.file_requests(task)] == ["preview.webp"]
    assert sorted(hashed) == ["extra.json", "model.glb", "preview.webp"]


async def test_a_task_that_fails_to_list_leaves_no_folder(
    server: FakeRodin, tmp_path: Path
) -> None:
    """A task the API refuses never gets a folder: nothing to clean up after a bad key."""
    async with AsyncRodin("sk-wrong", base_url=server.base_url) as rodin:
        results = [r async for r in rodin.download_many(["task-a", "task-b"], tmp_path)]
    assert all(r.error is not None for r in results)
    assert list(tmp_path.iterdir()) == []


async def test_temp_files_of_a_killed_writer_are_swept(
    server: FakeRodin, rodin: AsyncRodin, tmp_path: Path
) -> None:
    """A temp file left by a process killed mid-write is removed by the next run."""
    task = server.add_task(FILES)
    (tmp_path / task).mkdir()
    (tmp_path / task / ".0123456789abcdef.tmp").write_bytes(b"half a manifest")
    assert_complete(server, await rodin.download(task, tmp_path))

"""Defect 6: links planted in the destination never make the client write outside it.

Anyone who can write into the destination (a shared results folder) can leave a symlink
where the client will create or open a file. Whatever the client does (succeed by
replacing the link, or refuse with a clear error), the file the link points at keeps its
bytes and its inode, and nothing appears outside the destination.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rodin_async import RodinError
from rodin_async.testing import FakeRodin

from .checks import client
from .servers import Caddy

pytestmark = pytest.mark.anyio
BODY = b"the real model " * 20_000
PRECIOUS = b"someone else's file, outside the destination\n"


@pytest.fixture
def task(fake: FakeRodin, caddy: Caddy, folder: str) -> str:
    """A task with one file on Caddy."""
    url, _ = caddy.put(f"{folder}/model.glb", BODY)
    return fake.add_remote_task({"model.glb": url})


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the destination holding a file the client must never touch."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_bytes(PRECIOUS)
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file in *folder*: its bytes, inode and modification time."""
    return {
        p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()
    }


async def run_safely(fake: FakeRodin, task: str, dest: Path) -> None:
    """Download; a refusal must be a RodinError, and a success must give the real file."""
    try:
        async with client(fake) as rodin:
            result = await rodin.download(task, dest)
    except RodinError:
        return
    final = result.files[0].path
    assert not final.is_symlink() and final.read_bytes() == BODY
    assert final.resolve().is_relative_to(dest.resolve())


@pytest.mark.parametrize(
    "planted",
    [
        ".model.glb.part",
        ".model.glb.meta",
        ".rodin-manifest.json.part",
        ".rodin-manifest.json.tmp",
        ".rodin.lock",
        "model.glb",
        ".rodin-manifest.json",
    ],
)
async def test_planted_file_symlink_is_not_followed(
    fake: FakeRodin, task: str, tmp_path: Path, outside: Path, planted: str
) -> None:
    """Defect 6: a symlink planted at a name the client writes never changes its target."""
    dest = tmp_path / "dest"
    (dest / task).mkdir(parents=True)
    (dest / task / planted).symlink_to(outside / "precious.txt")
    before = snapshot(outside)
    await run_safely(fake, task, dest)
    assert snapshot(outside) == before


async def test_symlinked_task_folder_is_not_written_through(
    fake: FakeRodin, task: str, tmp_path: Path, outside: Path
) -> None:
    """Defect 6: `dest/<uuid>` linking to a folder elsewhere gets nothing written there."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / task).symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    await run_safely(fake, task, dest)
    assert snapshot(outside) == before
    assert sorted(os.listdir(outside)) == ["precious.txt"]

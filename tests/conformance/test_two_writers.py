"""Defect 8: two writers downloading the same task into the same folder at once.

Two clients in one process, or two `rodin-async` processes, start on the same task while
Caddy's body trickles (through the front layer), so their transfers overlap. Both must end
well, with the file byte-exact and the manifest matching the disk.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from rodin_async import TaskDownload
from rodin_async.testing import FakeRodin

from .checks import assert_manifest_matches_disk, client, stray_parts
from .servers import Caddy, FrontLayer, script

BODY = bytes(range(256)) * (4 << 12)  # 4 MiB


@pytest.fixture
def slow_task(fake: FakeRodin, caddy: Caddy, caddy_front: FrontLayer, folder: str) -> str:
    """A task whose one 4 MiB file trickles from Caddy in 128 KiB steps."""
    caddy.put(f"{folder}/model.glb", BODY)
    url = f"{caddy_front.url}/{folder}/model.glb"
    caddy_front.throttle(url, chunk=128 << 10, interval=0.02)
    return fake.add_remote_task({"model.glb": url})


def assert_one_good_copy(directory: Path) -> None:
    """The file is exact, the manifest agrees with the disk, and no partial file is left."""
    assert (directory / "model.glb").read_bytes() == BODY
    assert_manifest_matches_disk(directory)
    assert stray_parts(directory) == []


@pytest.mark.anyio
async def test_two_clients_in_one_process(fake: FakeRodin, slow_task: str, tmp_path: Path) -> None:
    """Defect 8: two AsyncRodin instances on one task and folder at once both end ok."""
    results: list[TaskDownload] = []

    async def one() -> None:
        async with client(fake) as rodin:
            results.append(await rodin.download(slow_task, tmp_path))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    assert [r.error for r in results] == [None, None]
    assert_one_good_copy(tmp_path / slow_task)


def test_two_cli_processes(fake: FakeRodin, slow_task: str, tmp_path: Path) -> None:
    """Defect 8: two `rodin-async download` processes on one task and folder both exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env |= {"RODIN_API_KEY": fake.api_key, "RODIN_BASE_URL": fake.base_url}
    argv = [str(script("rodin-async")), "download", slow_task, "-o", str(tmp_path), "--quiet"]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = []
    for proc in procs:
        try:
            _, stderr = proc.communicate(timeout=40)
        finally:
            proc.kill()  # no-op when it has exited; a hung one is stopped and reaped
            proc.wait()
        outcomes.append((proc.returncode, stderr[-500:]))
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert_one_good_copy(tmp_path / slow_task)

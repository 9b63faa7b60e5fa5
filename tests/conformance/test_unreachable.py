"""Defect 10: an API nobody listens on stops the run at once, with one clear message."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

import rodin_async

from .servers import API_KEY, script

UUIDS = [f"task-{n:02d}" for n in range(10)]


@pytest.fixture
def closed_port() -> int:
    """A loopback port with no listener (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_cli_stops_with_one_message(closed_port: int, tmp_path: Path) -> None:
    """Defect 10: the CLI exits 2 naming the API's host:port once, creating no task folder."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env |= {"RODIN_API_KEY": API_KEY, "RODIN_BASE_URL": f"http://127.0.0.1:{closed_port}/api/v2"}
    dest = tmp_path / "out"
    argv = [str(script("rodin-async")), "download", *UUIDS, "-o", str(dest), "--retries", "1"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=40)
    assert done.returncode == 2, done.stderr[-1000:]
    naming = [line for line in done.stderr.splitlines() if f"127.0.0.1:{closed_port}" in line]
    assert len(naming) == 1, done.stderr[-1000:]
    assert not dest.exists() or list(dest.iterdir()) == []


@pytest.mark.anyio
async def test_library_yields_connect_errors(closed_port: int, tmp_path: Path) -> None:
    """Defect 10: download_many yields a ConnectError naming host:port per task, no folders."""
    base_url = f"http://127.0.0.1:{closed_port}/api/v2"
    retry = rodin_async.RetryPolicy(attempts=2)
    async with rodin_async.AsyncRodin(API_KEY, base_url=base_url, retry=retry) as rodin:
        results = [r async for r in rodin.download_many(UUIDS[:3], tmp_path)]
    assert sorted(r.task_uuid for r in results) == UUIDS[:3]
    for result in results:
        assert isinstance(result.error, rodin_async.ConnectError), repr(result.error)
        assert f"127.0.0.1:{closed_port}" in str(result.error)
    assert list(tmp_path.iterdir()) == []

"""Test helpers: a transport that measures concurrency, disk-state assertions, and the
command run as a real process (with its worker processes)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import psutil

from rodin_async import TaskDownload
from rodin_async.testing import FakeRodin


class CountingTransport(httpx.AsyncBaseTransport):
    """Wraps the real transport and records the peak number of open exchanges per kind.

    An exchange is open from sending the request until its response body is closed, so
    for files it measures transfers actually in flight.
    """

    def __init__(self, api_prefix: str) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._api_prefix = api_prefix
        self.active: collections.Counter[str] = collections.Counter()
        self.peak: collections.Counter[str] = collections.Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        kind = "api" if str(request.url).startswith(self._api_prefix) else "files"
        self.active[kind] += 1
        self.peak[kind] = max(self.peak[kind], self.active[kind])
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self.active[kind] -= 1
            raise
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Closing(response, lambda: self._done(kind)),
            extensions=response.extensions,
        )

    def _done(self, kind: str) -> None:
        self.active[kind] -= 1

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Closing(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, on_close: object) -> None:
        self._response = response
        self._on_close = on_close
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_raw():
            yield chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close()  # type: ignore[operator]
        await self._response.aclose()


MANIFEST = ".rodin-manifest.json"
LOCK = ".rodin.lock"  # the task folder's cross-process lock; it stays, empty


def plant_part(directory: Path, name: str, data: bytes, *, total: int | None = None) -> Path:
    """Leave a resumable ``.part`` of *name*, as a crashed run would: bytes and validator.

    The validator records only the file's *total* length, as from a host that sends no
    ETag or Last-Modified; without one the part would be started over.
    """
    directory.mkdir(parents=True, exist_ok=True)
    part = directory / f".{name}.part"
    part.write_bytes(data)
    meta = {"etag": None, "last_modified": None, "total": total}
    (directory / f".{name}.meta").write_text(json.dumps(meta))
    return part


def assert_complete(server: FakeRodin, result: TaskDownload) -> None:
    """Every listed file is on disk with the server's exact bytes, the manifest records
    them, and nothing else is in the task folder."""
    assert result.error is None, result.error
    occurrences: collections.Counter[str] = collections.Counter()
    for f in result.files:
        index = occurrences[f.name]
        occurrences[f.name] += 1
        assert f.path.parent == result.directory
        assert f.path.read_bytes() == server.content(result.task_uuid, f.name, index=index)
        assert f.size == f.path.stat().st_size
        assert f.sha256 == server.sha256(result.task_uuid, f.name, index=index)
    manifest = json.loads((result.directory / MANIFEST).read_text())
    assert [(e["file"], e["size"], e["sha256"]) for e in manifest["files"]] == [
        (f.path.name, f.size, f.sha256) for f in result.files
    ]
    assert sorted(p.name for p in result.directory.iterdir() if p.name != LOCK) == sorted(
        [MANIFEST, *(f.path.name for f in result.files)]
    )


def final_files(directory: Path) -> list[Path]:
    """Files under their final (non-hidden) names."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def command(*args: str) -> list[str]:
    """The argv of `python -m rodin_async ARGS`."""
    return [sys.executable, "-m", "rodin_async", *args]


def environ(server: FakeRodin) -> dict[str, str]:
    """The command's environment, pointing at the fake."""
    return {**os.environ, "RODIN_BASE_URL": server.base_url, "RODIN_API_KEY": server.api_key}


def run_command(
    server: FakeRodin, *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion (bounded), capturing both streams."""
    return subprocess.run(
        command(*args), env=environ(server), capture_output=True, text=True, timeout=timeout
    )


def start_command(server: FakeRodin, *args: str) -> subprocess.Popen[str]:
    """Start the command in the background, both streams piped."""
    return subprocess.Popen(
        command(*args), env=environ(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll *condition* every 20 ms; fail the test if it never holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def worker_processes(parent: int | None = None) -> list[psutil.Process]:
    """The rodin-async worker processes *parent* (default: this process) started."""
    try:
        children = psutil.Process(parent).children()
    except psutil.NoSuchProcess:
        return []
    return [p for p in children if "rodin_async._worker" in command_line(p)]


def command_line(process: psutil.Process) -> str:
    """Its command line, or "" once it has exited (a zombie of another test, say)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""

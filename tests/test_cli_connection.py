"""The command's connection options and failures: --ca-bundle, --proxy, an unreachable API.

These tests need the library's side of issue 9 (`proxy=`, `verify=`, `ConnectError`, and
task folders created only when a first file starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from rodin_async.testing import FakeRodin

FILES = {"base_basic_pbr.glb": 50_000, "preview.webp": 5_000}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    """One fake for the module, in this process; the commands run in children."""
    with FakeRodin(api_key="connection-key") as fake:
        yield fake


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m rodin_async ARGS` to completion (bounded), capturing both streams."""
    return subprocess.run(
        [sys.executable, "-m", "rodin_async", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def key_only(server: FakeRodin) -> dict[str, str]:
    """The key, and no base URL: each test says where the API is."""
    return {"RODIN_API_KEY": server.api_key, "RODIN_BASE_URL": ""}


def no_task_folders(dest: Path) -> bool:
    """Whether *dest* holds no task folder (or doesn't exist)."""
    return not dest.exists() or not any(p.is_dir() for p in dest.iterdir())


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def tls_front(port: int, context: ssl.SSLContext) -> Iterator[int]:
    """TLS on a new loopback port in front of the plain-HTTP *port*; yield the new port.

    What a deployment behind a private CA looks like, with the fake server behind it.
    """
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    listening: list[asyncio.Server] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            back_reader, back_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, back_writer), pipe(back_reader, writer))

    async def start() -> None:
        listening.append(await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context))
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert ready.wait(10)
    try:
        yield listening[0].sockets[0].getsockname()[1]
    finally:
        listening[0].close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A private certificate authority, unknown to certifi and the system."""
    return trustme.CA()


@pytest.fixture
def https_api(server: FakeRodin, ca: trustme.CA) -> Iterator[str]:
    """The fake API over HTTPS with a certificate from the private CA: its base URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    api_port = int(server.base_url.split(":")[2].split("/")[0])
    with tls_front(api_port, context) as port:
        yield f"https://127.0.0.1:{port}/api/v2"


def test_ca_bundle_trusts_a_private_ca(
    server: FakeRodin, ca: trustme.CA, https_api: str, tmp_path: Path
) -> None:
    """--ca-bundle FILE: an API behind a private CA is trusted, the default CAs still are."""
    bundle = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    uuid = server.add_task(FILES)
    out = tmp_path / "out"
    args = ["download", uuid, "-o", str(out), "--base-url", https_api, "--ca-bundle", str(bundle)]
    result = run(*args, env=key_only(server))
    assert result.returncode == 0, result.stderr
    assert (out / uuid / "preview.webp").read_bytes() == server.content(uuid, "preview.webp")


def test_untrusted_certificate_stops_the_run_with_a_hint(
    server: FakeRodin, https_api: str, tmp_path: Path
) -> None:
    """Without --ca-bundle the certificate fails: exit 2 at once, naming the host, no folders."""
    uuids = [server.add_task(FILES) for _ in range(5)]
    out = tmp_path / "out"
    result = run("download", *uuids, "-o", str(out), "--base-url", https_api, env=key_only(server))
    assert result.returncode == 2, result.stderr
    host = https_api.split("/")[2]
    assert host in result.stderr
    assert "--ca-bundle" in result.stderr
    assert no_task_folders(out)


def test_unreachable_api_stops_the_run_at_once(server: FakeRodin, tmp_path: Path) -> None:
    """Nothing listens at the base URL: one message naming the host, exit 2, no folders."""
    dead = f"http://127.0.0.1:{free_port()}/api/v2"
    uuids = [server.add_task(FILES) for _ in range(10)]
    out = tmp_path / "out"
    args = ["download", *uuids, "-o", str(out), "--base-url", dead, "--retries", "0"]
    result = run(*args, env=key_only(server))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert dead.split("/")[2] in errors[0]
    assert "tasks ok" not in result.stderr  # stopped, not a run of ten failures
    assert no_task_folders(out)


def test_rejected_key_leaves_no_task_folders(server: FakeRodin, tmp_path: Path) -> None:
    """A wrong key fails every listing: no empty folder is left per task."""
    uuids = [server.add_task(FILES) for _ in range(3)]
    out = tmp_path / "out"
    env = {"RODIN_API_KEY": "not-the-key", "RODIN_BASE_URL": server.base_url}
    result = run("download", *uuids, "-o", str(out), env=env)
    assert result.returncode == 2, result.stderr
    assert no_task_folders(out)


def test_proxy_option_carries_the_requests(server: FakeRodin, tmp_path: Path) -> None:
    """--proxy sends the API's requests to the proxy: a dead one stops the run, exit 2."""
    uuid = server.add_task(FILES)
    env = {**key_only(server), "RODIN_BASE_URL": server.base_url, "NO_PROXY": ""}
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    args = ["download", uuid, "-o", str(tmp_path), "--proxy", dead_proxy, "--retries", "0"]
    result = run(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert f"through the proxy {dead_proxy}" in result.stderr
    direct = run("download", uuid, "-o", str(tmp_path), env=env)
    assert direct.returncode == 0, direct.stderr


def test_ca_bundle_that_is_not_pem_is_a_usage_error(tmp_path: Path) -> None:
    """--ca-bundle on a file with no certificate: exit 2 naming the file, nothing sent."""
    bundle = tmp_path / "notes.txt"
    bundle.write_text("not a certificate\n")
    env = {"RODIN_API_KEY": "k", "RODIN_BASE_URL": "http://127.0.0.1:9/api/v2"}
    result = run("balance", "--ca-bundle", str(bundle), env=env)
    assert result.returncode == 2
    assert "notes.txt" in result.stderr and "PEM" in result.stderr
    assert "Traceback" not in result.stderr


def test_ca_bundle_and_proxy_reach_the_worker_processes(
    server: FakeRodin, ca: trustme.CA, https_api: str, tmp_path: Path
) -> None:
    """With --processes 2 each worker trusts --ca-bundle (a path, sent to it) and uses --proxy."""
    bundle = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    uuids = [server.add_task(FILES) for _ in range(4)]
    out = tmp_path / "out"
    args = ["download", *uuids, "-o", str(out), "--base-url", https_api, "--processes", "2"]
    result = run(*args, "--ca-bundle", str(bundle), env=key_only(server))
    assert result.returncode == 0, result.stderr
    for uuid in uuids:
        assert (out / uuid / "preview.webp").read_bytes() == server.content(uuid, "preview.webp")
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    env = {**key_only(server), "RODIN_BASE_URL": server.base_url, "NO_PROXY": ""}
    args = ["download", *uuids, "-o", str(tmp_path / "again"), "--processes", "2"]
    proxied = run(*args, "--proxy", dead_proxy, "--retries", "0", env=env)
    assert proxied.returncode == 2, proxied.stderr
    assert f"through the proxy {dead_proxy}" in proxied.stderr

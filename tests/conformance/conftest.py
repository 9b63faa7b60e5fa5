"""Fixtures for the conformance suite: real servers nobody here wrote, on 127.0.0.1.

Servers are session-scoped (each starts once, in well under a second, and is killed and
reaped at the end); tests keep apart by using their own file names, and the per-test
fixtures reset what a test may have switched on. The fake Rodin API listens on 127.0.0.2,
so `NO_PROXY=127.0.0.2` can exempt it while every file host (127.0.0.1) is proxied.
"""

from __future__ import annotations

import gc
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from rodin_async.testing import FakeRodin

from .servers import (
    API_HOST,
    API_KEY,
    Bucket,
    Caddy,
    ForwardProxy,
    FrontLayer,
    MotoS3,
    RawServer,
    running,
    unique,
)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the servers keep their configuration, logs and data."""
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority; Caddy's certificate comes from it."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_pem(ca: trustme.CA, workdir: Path) -> Path:
    """The CA certificate as a PEM file (for `verify=<path>`)."""
    path = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context trusting only the test CA."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeRodin]:
    """The fake Rodin API on 127.0.0.2; its tasks list URLs on the real servers."""
    with FakeRodin(api_key=API_KEY, host=API_HOST) as server:
        yield server


@pytest.fixture(scope="session")
def caddy(workdir: Path, ca: trustme.CA, fake: FakeRodin) -> Iterator[Caddy]:
    """Caddy serving a folder over HTTP and HTTPS (h2), and the fake API over HTTPS."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = workdir / "caddy-cert.pem", workdir / "caddy-key.pem"
    cert_path.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    upstream = fake.base_url.removeprefix("http://").split("/")[0]
    server = Caddy(workdir / "caddy", cert_path, key_path, upstream)
    with running(server):
        yield server


@pytest.fixture
def folder() -> str:
    """A folder name of this test's own on the file hosts."""
    return unique("t-")


@pytest.fixture(scope="session")
def moto(workdir: Path) -> Iterator[MotoS3]:
    """moto's S3 server (a subprocess)."""
    server = MotoS3(workdir)
    with running(server):
        yield server


@pytest.fixture(scope="session")
def s3_front(moto: MotoS3) -> Iterator[FrontLayer]:
    """The expiry/cut/throttle layer in front of S3."""
    front = FrontLayer(("127.0.0.1", moto.port))
    with running(front):
        yield front


@pytest.fixture(scope="session")
def session_bucket(moto: MotoS3, s3_front: FrontLayer) -> Bucket:
    """One bucket for the session."""
    return Bucket(moto, s3_front)


@pytest.fixture
def bucket(session_bucket: Bucket) -> Iterator[Bucket]:
    """The bucket, with the front layer's switches and log reset around the test."""
    session_bucket.front.reset()
    yield session_bucket
    session_bucket.front.reset()


@pytest.fixture(scope="session")
def session_caddy_front(caddy: Caddy) -> Iterator[FrontLayer]:
    """The same layer in front of Caddy's HTTP site (to throttle or cut its bodies)."""
    front = FrontLayer(("127.0.0.1", caddy.ports["http"]))
    with running(front):
        yield front


@pytest.fixture
def caddy_front(session_caddy_front: FrontLayer) -> Iterator[FrontLayer]:
    """The layer in front of Caddy, reset around the test."""
    session_caddy_front.reset()
    yield session_caddy_front
    session_caddy_front.reset()


@pytest.fixture(scope="session")
def session_proxy(workdir: Path) -> Iterator[ForwardProxy]:
    """proxy.py (a subprocess) logging what it forwards."""
    server = ForwardProxy(workdir / "proxy")
    server.workdir.mkdir()
    with running(server):
        yield server


@pytest.fixture
def proxy(session_proxy: ForwardProxy) -> ForwardProxy:
    """The forward proxy with an empty log."""
    session_proxy.clear()
    return session_proxy


@pytest.fixture(scope="session")
def raw() -> Iterator[RawServer]:
    """A server that answers with canned raw bytes."""
    server = RawServer()
    with running(server):
        yield server


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect cycles after each test, so a leaked socket is blamed on (near) its test.

    With filterwarnings=error an unclosed transport fails whichever test happens to be
    running when the garbage collector finds it; collecting here keeps that close.
    """
    yield
    gc.collect()

"""Defect 2: TLS settings reach file downloads; a certificate failure is final and clear.

Caddy serves the files over HTTPS (HTTP/2 offered) with a certificate from a test CA that
no system trust store holds.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import rodin_async
from rodin_async import ConfigurationError, FileRetried, ProgressEvent, TaskDownloadError
from rodin_async.testing import FakeRodin

from .checks import causes, client
from .servers import Caddy

pytestmark = pytest.mark.anyio
BODY = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def https_task(fake: FakeRodin, caddy: Caddy, folder: str) -> str:
    """A task listing one file on Caddy's HTTPS site."""
    _, https_url = caddy.put(f"{folder}/model.glb", BODY)
    return fake.add_remote_task({"model.glb": https_url})


@pytest.mark.parametrize("how", ["context", "path"])
async def test_verify_trusts_a_private_ca(
    fake: FakeRodin,
    https_task: str,
    tmp_path: Path,
    ssl_context: ssl.SSLContext,
    ca_pem: Path,
    how: str,
) -> None:
    """Defect 2: verify=<SSLContext> or verify=<CA PEM path> downloads from the HTTPS host."""
    verify = ssl_context if how == "context" else str(ca_pem)
    async with client(fake, verify=verify) as rodin:
        result = await rodin.download(https_task, tmp_path, check="sha256")
    assert result.files[0].path.read_bytes() == BODY


async def test_untrusted_certificate_fails_at_once(
    fake: FakeRodin, https_task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 2: an unverifiable certificate is a CertificateError after one attempt."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    events: list[ProgressEvent] = []
    async with client(fake) as rodin:
        with pytest.raises(TaskDownloadError) as info:
            await rodin.download(https_task, tmp_path, on_progress=events.append)
    chain = list(causes(info.value))
    assert any(isinstance(e, rodin_async.CertificateError) for e in chain), chain
    assert "certificate" in str(info.value).lower()
    assert [e for e in events if isinstance(e, FileRetried)] == []


async def test_check_option_is_validated(fake: FakeRodin, tmp_path: Path) -> None:
    """Defect 2: check= is the renamed integrity option; a bad value is a ConfigurationError."""
    task = fake.add_remote_task({})
    async with client(fake) as rodin:
        with pytest.raises(ConfigurationError, match="bogus"):
            await rodin.download(task, tmp_path, check="bogus")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="bogus"):
            rodin.download_many([task], tmp_path, check="bogus")  # type: ignore[arg-type]

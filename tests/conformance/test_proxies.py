"""Defect 1: file downloads must go through the proxy the user configured, as httpx routes.

Files are on Caddy at 127.0.0.1; the fake API is on 127.0.0.2, exempted with NO_PROXY (or
reached over HTTPS through Caddy), so the key never legitimately crosses proxy.py in clear
text and the proxy's log must never hold it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from rodin_async.testing import FakeRodin

from .checks import client
from .servers import API_HOST, Caddy, ForwardProxy

pytestmark = pytest.mark.anyio
BODY = b"proxied model bytes " * 500


def _no_key_anywhere(fake: FakeRodin, proxy: ForwardProxy, caddy: Caddy, folder: str) -> None:
    """Neither the proxy nor the file host received the key, and files had no auth header."""
    assert all(fake.api_key not in str(seen) for seen in proxy.seen())
    for entry in caddy.access_log(f"/{folder}/"):
        assert "Authorization" not in entry["request"]["headers"]
        assert fake.api_key not in str(entry)


@pytest.fixture
def env_proxies(monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, ca_pem: Path) -> None:
    """HTTP(S)_PROXY point at proxy.py, the API is exempt, and the test CA is trusted."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", API_HOST)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_pem))  # httpx's own env knob for a CA file


@pytest.mark.usefixtures("env_proxies")
async def test_http_proxy_env_carries_file_gets(
    fake: FakeRodin, caddy: Caddy, proxy: ForwardProxy, folder: str, tmp_path: Path
) -> None:
    """Defect 1: with HTTP_PROXY set, plain-HTTP file GETs go through the proxy."""
    http_url, _ = caddy.put(f"{folder}/model.glb", BODY)
    task = fake.add_remote_task({"model.glb": http_url})
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert result.files[0].path.read_bytes() == BODY
    gets = [(s["host"], s["port"], s["path"]) for s in proxy.seen() if s["method"] == "GET"]
    assert ("127.0.0.1", caddy.ports["http"], f"/{folder}/model.glb") in gets
    assert all(s["host"] != API_HOST for s in proxy.seen())
    _no_key_anywhere(fake, proxy, caddy, folder)


@pytest.mark.usefixtures("env_proxies")
async def test_https_proxy_env_tunnels_file_gets(
    fake: FakeRodin, caddy: Caddy, proxy: ForwardProxy, folder: str, tmp_path: Path
) -> None:
    """Defect 1: with HTTPS_PROXY set, HTTPS file downloads CONNECT through the proxy."""
    _, https_url = caddy.put(f"{folder}/model.glb", BODY)
    task = fake.add_remote_task({"model.glb": https_url})
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert result.files[0].path.read_bytes() == BODY
    connects = [(s["host"], s["port"]) for s in proxy.seen() if s["method"] == "CONNECT"]
    assert connects and set(connects) == {("127.0.0.1", caddy.ports["https"])}
    _no_key_anywhere(fake, proxy, caddy, folder)


async def test_no_proxy_is_honoured_for_files(
    monkeypatch: pytest.MonkeyPatch,
    env_proxies: None,
    fake: FakeRodin,
    caddy: Caddy,
    proxy: ForwardProxy,
    folder: str,
    tmp_path: Path,
) -> None:
    """Defect 1: hosts named in NO_PROXY are fetched directly, as httpx does."""
    monkeypatch.setenv("NO_PROXY", f"127.0.0.1,{API_HOST}")
    http_url, https_url = caddy.put(f"{folder}/model.glb", BODY)
    task = fake.add_remote_task([("model.glb", http_url), ("model.glb", https_url)])
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert [f.path.read_bytes() for f in result.files] == [BODY, BODY]
    assert proxy.seen() == []


async def test_explicit_proxy_carries_api_and_files(
    fake: FakeRodin,
    caddy: Caddy,
    proxy: ForwardProxy,
    folder: str,
    tmp_path: Path,
    ssl_context: ssl.SSLContext,
) -> None:
    """Defect 1: AsyncRodin(proxy=...) routes files too; the HTTPS API's key stays sealed."""
    http_url, https_url = caddy.put(f"{folder}/model.glb", BODY)
    task = fake.add_remote_task([("model.glb", http_url), ("model.glb", https_url)])
    options = {"proxy": proxy.url, "verify": ssl_context, "base_url": caddy.api_https_url}
    async with client(fake, **options) as rodin:
        result = await rodin.download(task, tmp_path)
    assert [f.path.read_bytes() for f in result.files] == [BODY, BODY]
    seen = proxy.seen()
    gets = [(s["port"], s["path"]) for s in seen if s["method"] == "GET"]
    assert gets == [(caddy.ports["http"], f"/{folder}/model.glb")]
    connects = {s["port"] for s in seen if s["method"] == "CONNECT"}
    assert connects == {caddy.ports["https"], caddy.ports["api"]}  # the API, sealed in TLS
    _no_key_anywhere(fake, proxy, caddy, folder)

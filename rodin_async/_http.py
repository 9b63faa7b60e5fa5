"""How rodin-async reaches hosts: TLS trust, proxies, and the two HTTP clients.

The API client carries the key; the file-host client never has it. Both honour the same
TLS settings and proxies, routed exactly as httpx routes them (``proxy=``, or
``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` when ``trust_env``), because the
routing *is* httpx's: both only swap in `FileTransport` connections.

File GETs skip ``AsyncClient.send``: its INFO log line would print every presigned URL
with its signature, and its cookie, auth and redirect layers cost time on every file
while doing nothing for us. `FileHosts.get` follows redirects itself, bounded, with each
``Location`` checked like a listed URL.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import ssl
import typing

import httpx

from ._errors import ConfigurationError
from ._headers import BadValue, file_url
from ._transport import FileTransport

VerifyTypes = bool | str | os.PathLike[str] | ssl.SSLContext
ProxyTypes = str | httpx.URL | httpx.Proxy

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# httpcore's DEBUG trace prints response headers, so a Location with the next presigned
# URL; hpack (HTTP/2) prints decoded headers too.
_TRACING_LOGGERS = (
    "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
    "httpcore.socks", "hpack.hpack", "hpack.table",
)  # fmt: skip
_QUERY = re.compile(r"\?[^\s'\"<>)\]]*")
_fetching_file = contextvars.ContextVar("rodin_async_fetching_file", default=False)


class _RedactQueries(logging.Filter):
    """Cut query strings out of the records httpcore writes while we fetch a file.

    Other code's requests in the same process are left alone: only records made inside
    `FileHosts` (a context variable says so) are changed.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _fetching_file.get():
            record.msg = _QUERY.sub("?[redacted]", record.getMessage())
            record.args = None
        return True


def _install_redaction() -> None:
    for name in _TRACING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactQueries) for f in logger.filters):
            logger.addFilter(_RedactQueries())


def ssl_context(verify: VerifyTypes, *, trust_env: bool) -> ssl.SSLContext:
    """The TLS settings for every host, from httpx-style *verify*.

    True: certifi's CAs (or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when *trust_env*, as httpx).
    A path: the CA bundle file (or directory) to trust instead. False: no verification.

    Raises:
        ConfigurationError: The bundle can't be read, or *verify* is of another type.
    """
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, bool):
        return httpx.create_ssl_context(verify=verify, trust_env=trust_env)
    if isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        try:
            if os.path.isdir(path):
                return ssl.create_default_context(capath=path)
            return ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"can't load the CA bundle {path!r}: {exc}") from exc
    raise ConfigurationError(
        f"verify must be True, False, a CA bundle path or an ssl.SSLContext, not {verify!r}"
    )


def check_proxy(proxy: ProxyTypes | None) -> httpx.Proxy | None:
    """*proxy* as an `httpx.Proxy`, or a `ConfigurationError` that hides its password."""
    if proxy is None or isinstance(proxy, httpx.Proxy):
        return proxy
    try:
        checked = httpx.Proxy(proxy)
    except (ValueError, TypeError, httpx.InvalidURL):
        raise ConfigurationError(
            "the proxy must be an http://, https://, socks5:// or socks5h:// URL"
        ) from None
    return checked


class PooledClient(httpx.AsyncClient):
    """httpx's client, and its proxy routing (``proxy=``, env proxies, NO_PROXY), over
    `FileTransport` connections.

    Only the transports are ours: which URL goes through which proxy is decided by
    httpx, so the file hosts are reached exactly like the API is. The API client is one
    too: httpcore's own HTTP/1.1 connection cost a listing about twice as much CPU.
    """

    def __init__(self, *, read_size: int | None, **kwargs: typing.Any) -> None:
        self._read_size = read_size
        super().__init__(**kwargs)

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: typing.Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = httpx.Limits(),  # noqa: B008  (httpx's own default)
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        return self._file_transport(limits, verify, None)

    def _init_proxy_transport(
        self,
        proxy: httpx.Proxy,
        verify: ssl.SSLContext | str | bool = True,
        cert: typing.Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = httpx.Limits(),  # noqa: B008  (httpx's own default)
    ) -> httpx.AsyncBaseTransport:
        if proxy.url.scheme not in ("http", "https"):  # SOCKS: httpx's transport
            return httpx.AsyncHTTPTransport(verify=verify, limits=limits, proxy=proxy)
        return self._file_transport(limits, verify, proxy)

    def _file_transport(
        self, limits: httpx.Limits, verify: ssl.SSLContext | str | bool, proxy: httpx.Proxy | None
    ) -> FileTransport:
        context = ssl_context(verify, trust_env=True)
        options: dict[str, typing.Any] = {"verify": context, "proxy": proxy}
        if self._read_size is not None:
            options["read_size"] = self._read_size
        return FileTransport(limits, **options)

    def transport_for(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        """The transport (direct, or through a proxy) httpx would use for *url*."""
        return self._transport_for_url(url)


class FileHosts:
    """GETs result files: no key, no cookies, no log lines, redirects followed by hand.

    Args:
        timeout: httpx timeouts for every request.
        verify: TLS settings (see `ssl_context`).
        proxy: An explicit proxy for every file host, or None.
        trust_env: Honour proxy environment variables (ignored with *transport*).
        transport: One transport for everything (tests); disables proxies, as in httpx.
        max_connections: Idle connections to keep per pool.
        user_agent: The ``User-Agent`` header.
    """

    def __init__(
        self,
        *,
        timeout: httpx.Timeout,
        verify: ssl.SSLContext,
        proxy: httpx.Proxy | None,
        trust_env: bool,
        transport: httpx.AsyncBaseTransport | None,
        max_connections: int,
        user_agent: str,
    ) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max_connections)
        self._client = PooledClient(
            read_size=None,
            timeout=timeout,
            verify=verify,
            proxy=proxy,
            trust_env=trust_env,
            limits=limits,
            transport=transport,
        )
        self._timeout = timeout.as_dict()
        self._user_agent = user_agent
        _install_redaction()

    async def get(self, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        """Send a streaming GET for *url*, following up to `MAX_REDIRECTS` redirects.

        The caller must close the response.

        Raises:
            httpx.HTTPError: As httpx raises them (transport failures, timeouts).
            BadValue: A redirect without a usable ``Location``, or too many redirects.
        """
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(url, headers)
            if response.status_code not in _REDIRECTS or "location" not in response.headers:
                return response
            await response.aclose()
            url = file_url(response.headers["location"], base=url)
        raise BadValue(f"the file host redirected more than {MAX_REDIRECTS} times")

    async def _send(self, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        request = httpx.Request(
            "GET",
            url,
            headers={"User-Agent": self._user_agent, **headers},
            extensions={"timeout": self._timeout},
        )
        token = _fetching_file.set(True)
        try:
            response = await self._client.transport_for(url).handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's client does: errors can name the host
            raise
        finally:
            _fetching_file.reset(token)
        response.request = request  # also makes errors while streaming carry it
        return response

    async def aclose(self) -> None:
        """Close every connection."""
        await self._client.aclose()

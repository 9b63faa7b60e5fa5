"""A faster httpx transport for result files: the same httpcore, fewer and larger reads.

httpcore reads sockets 64 KiB at a time, and each read costs a timeout scope, an anyio
hop, an h11 copy and an httpx re-chunk. For bulk downloads that per-read cost, not the
network, is the ceiling (the benchmarks measure it). Here every read asks the network
for up to `READ_SIZE` instead. The read still returns whatever has arrived, at once, so
bytes received before a connection breaks reach the caller before the error does.

Only public APIs are used: a custom ``httpcore.AsyncNetworkBackend`` plugged into an
``httpcore.AsyncConnectionPool``, wrapped as an ``httpx.AsyncBaseTransport`` that maps
httpcore's exceptions to httpx's exactly as httpx's own transport does.
"""

from __future__ import annotations

import contextlib
import ssl
import typing
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import httpcore
import httpx

READ_SIZE = 1 << 20

# httpcore -> httpx, as in httpx._transports.default (most specific match wins).
_EXCEPTIONS: dict[type[Exception], type[httpx.HTTPError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


@contextlib.contextmanager
def _mapped_exceptions() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        target: type[httpx.HTTPError] | None = None
        for source, candidate in _EXCEPTIONS.items():
            if isinstance(exc, source) and (target is None or issubclass(candidate, target)):
                target = candidate
        if target is None:
            raise
        raise target(str(exc)) from exc


class _LargeReadStream(httpcore.AsyncNetworkStream):
    """A network stream whose reads ask for `READ_SIZE` bytes, whatever httpcore asks."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, read_size: int) -> None:
        self._inner = inner
        self._read_size = read_size

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max(max_bytes, self._read_size), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _LargeReadStream(inner, self._read_size)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _LargeReadBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, with `_LargeReadStream` streams."""

    def __init__(self, read_size: int) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._read_size = read_size

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _LargeReadStream(stream, self._read_size)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _LargeReadStream(stream, self._read_size)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_exceptions():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            with _mapped_exceptions():
                await aclose()


class FileTransport(httpx.AsyncBaseTransport):
    """An httpx transport tuned for streaming large bodies (HTTP/1.1, TLS verified).

    Args:
        limits: Connection pool limits.
        read_size: Bytes asked of the network per read.
        verify: As httpx's ``verify``: True, a CA bundle path, or an ``SSLContext``.
    """

    def __init__(
        self,
        limits: httpx.Limits,
        *,
        read_size: int = READ_SIZE,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_LargeReadBackend(read_size),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)  # noqa: S101  (httpx's own check)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped_exceptions():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)  # noqa: S101
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

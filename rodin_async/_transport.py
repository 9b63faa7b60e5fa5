"""A faster httpx transport for result files: the same httpcore, far fewer reads.

httpcore reads a socket 64 KiB at a time (16 KiB, one TLS record, over HTTPS), and each
read costs a timeout scope, an anyio hop, an h11 copy and an httpx re-chunk. For bulk
downloads that per-read cost, not the network, is the ceiling. On asyncio this module's
network backend lets the event loop ``recv_into`` a per-connection 1 MiB buffer, which
keeps filling while the consumer writes to disk, and each read hands over everything
buffered at once: a few reads per MiB instead of dozens, over HTTP and HTTPS alike.
Bytes that arrived before a connection broke are always handed over before the error.
On other event loops (trio) it falls back to httpcore's anyio backend, asking for large
reads.

Only public APIs are used: a custom ``httpcore.AsyncNetworkBackend`` plugged into an
``httpcore.AsyncConnectionPool``, wrapped as an ``httpx.AsyncBaseTransport`` that maps
httpcore's exceptions to httpx's exactly as httpx's own transport does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import typing
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator

import httpcore
import httpx
import sniffio

from ._connection import FilePool

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


class _ReceiveBuffer(asyncio.BufferedProtocol):
    """The receiving end of one connection: the loop fills a buffer, reads drain it."""

    def __init__(self, size: int) -> None:
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._low_water = min(64 * 1024, size // 2)  # pause reading with less room than this
        self._transport: asyncio.Transport | None = None
        self._reading_paused = False
        self._eof = False
        self._error: BaseException | None = None
        self._data_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # Called by the event loop.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._filled == len(self._buffer):
            # Python 3.10's TLS layer hands over what it already decrypted even after
            # pause_reading; an empty buffer would be an error, so make room.
            self._grow()
        return self._view[self._filled :]

    def _grow(self) -> None:
        bigger = bytearray(2 * len(self._buffer))
        bigger[: self._filled] = self._view[: self._filled]
        self._buffer, self._view = bigger, memoryview(bigger)

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if len(self._buffer) - self._filled < self._low_water and not self._reading_paused:
            self._reading_paused = True
            self._require_transport().pause_reading()
        _wake(self._data_waiter)

    def eof_received(self) -> bool:
        self._eof = True
        _wake(self._data_waiter)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None and self._error is None:
            self._error = exc
        _wake(self._data_waiter)
        _wake(self._drain_waiter)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        _wake(self._drain_waiter)

    # Called by the stream.

    @property
    def readable(self) -> bool:
        """Whether a read would return at once (data, end of stream, or an error)."""
        return bool(self._filled) or self._eof

    async def read(self, timeout: float | None) -> bytes:
        """Everything buffered; waits for data first. b"" at a clean end of stream."""
        if not self._filled and not self._eof:
            self._data_waiter = asyncio.get_running_loop().create_future()
            try:
                await _waited(self._data_waiter, timeout, httpcore.ReadTimeout)
            finally:
                self._data_waiter = None
        if self._filled:  # data first, even when an error or EOF came after it
            return self._take()
        if self._error is not None:
            raise httpcore.ReadError(str(self._error) or type(self._error).__name__)
        return b""

    async def drain(self, timeout: float | None) -> None:
        """Wait until the transport wants more to write (flow control)."""
        if self._writing_paused and not self._eof:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await _waited(self._drain_waiter, timeout, httpcore.WriteTimeout)
            finally:
                self._drain_waiter = None
        if self._error is not None:
            raise httpcore.WriteError(str(self._error) or type(self._error).__name__)

    def _take(self) -> bytes:
        data = bytes(self._view[: self._filled])
        self._filled = 0
        if self._reading_paused and not self._eof:
            self._reading_paused = False
            self._require_transport().resume_reading()
        return data

    def _require_transport(self) -> asyncio.Transport:
        assert self._transport is not None  # noqa: S101  (set before any data arrives)
        return self._transport


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _waited(
    waiter: asyncio.Future[None], timeout: float | None, timeout_error: type[Exception]
) -> None:
    """Await *waiter*; after *timeout* seconds it fails with *timeout_error* instead."""
    expiry = None
    if timeout is not None:
        expiry = asyncio.get_running_loop().call_later(timeout, _expire, waiter, timeout_error)
    try:
        await waiter
    finally:
        if expiry is not None:
            expiry.cancel()


def _expire(waiter: asyncio.Future[None], timeout_error: type[Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(timeout_error("timed out"))


class _BufferedStream(httpcore.AsyncNetworkStream):
    """An asyncio connection whose reads return everything received so far."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _ReceiveBuffer,
        buffer_size: int,
        *,
        tls: bool = False,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._buffer_size = buffer_size
        self._tls = tls

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # max_bytes (httpcore asks for 64 KiB) is ignored on purpose: fewer, larger reads.
        return await self._protocol.read(timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closing")
        try:
            self._transport.write(buffer)
        except (OSError, RuntimeError) as exc:
            raise httpcore.WriteError(str(exc)) from exc
        await self._protocol.drain(timeout)

    async def aclose(self) -> None:
        if self._tls:
            # A TLS close waits for the peer's close_notify (up to 30 s); a proxy tunnel
            # may never relay it, leaving the socket open. Bodies are length-checked, so
            # the alert buys nothing: close the socket now.
            self._transport.abort()
        else:
            self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        protocol = _ReceiveBuffer(self._buffer_size)
        upgrade = loop.start_tls(
            self._transport,
            protocol,
            ssl_context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=timeout,
        )
        transport = await _connecting(upgrade, timeout, self._transport.close)
        assert transport is not None  # noqa: S101  (None only for a closed transport)
        protocol.connection_made(transport)  # start_tls doesn't tell the new protocol
        return _BufferedStream(transport, protocol, self._buffer_size, tls=True)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":  # httpcore's check for a dropped keep-alive connection
            return self._protocol.readable or self._transport.is_closing()
        key = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        if key in ("ssl_object", "sockname", "peername", "socket"):
            return self._transport.get_extra_info(key)
        return None


async def _connecting(
    connect: Awaitable[typing.Any], timeout: float | None, on_error: Callable[[], object]
) -> typing.Any:
    """Await a connection or TLS upgrade, raising httpcore's errors on failure."""
    try:
        return await asyncio.wait_for(connect, timeout)
    except asyncio.TimeoutError as exc:
        on_error()
        raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
    except (OSError, ssl.SSLError) as exc:
        on_error()
        raise httpcore.ConnectError(str(exc)) from exc


class _BufferedBackend(httpcore.AsyncNetworkBackend):
    """Buffered asyncio connections; httpcore's anyio backend (large reads) elsewhere."""

    def __init__(self, buffer_size: int) -> None:
        self._buffer_size = buffer_size
        self._fallback = _LargeReadBackend(buffer_size)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if sniffio.current_async_library() != "asyncio":
            return await self._fallback.connect_tcp(
                host, port, timeout, local_address, socket_options
            )
        local = (local_address, 0) if local_address else None
        return await self._connect(
            lambda loop, factory: loop.create_connection(factory, host, port, local_addr=local),
            timeout,
            socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if sniffio.current_async_library() != "asyncio":
            return await self._fallback.connect_unix_socket(path, timeout, socket_options)
        return await self._connect(
            lambda loop, factory: loop.create_unix_connection(factory, path),
            timeout,
            socket_options,
        )

    async def _connect(
        self,
        open_connection: Callable[
            [asyncio.AbstractEventLoop, Callable[[], _ReceiveBuffer]],
            Awaitable[tuple[asyncio.BaseTransport, _ReceiveBuffer]],
        ],
        timeout: float | None,
        socket_options: Iterable[SocketOption] | None,
    ) -> _BufferedStream:
        protocol = _ReceiveBuffer(self._buffer_size)
        opening = open_connection(asyncio.get_running_loop(), lambda: protocol)
        transport, _ = await _connecting(opening, timeout, lambda: None)
        sock: socket.socket = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _BufferedStream(transport, protocol, self._buffer_size)

    async def sleep(self, seconds: float) -> None:
        await self._fallback.sleep(seconds)


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
        read_size: The receive buffer per connection: the most one read returns.
        verify: As httpx's ``verify``: True, False, or an ``SSLContext``.
        proxy: An HTTP(S) proxy to tunnel through (``CONNECT`` for https URLs), as
            httpx's own transport does.
    """

    def __init__(
        self,
        limits: httpx.Limits,
        *,
        read_size: int = READ_SIZE,
        verify: ssl.SSLContext | bool = True,
        proxy: httpx.Proxy | None = None,
    ) -> None:
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        backend = _BufferedBackend(read_size)
        pool_options: dict[str, typing.Any] = {
            "ssl_context": context,
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
            "network_backend": backend,
        }
        self._pool: httpcore.AsyncConnectionPool
        if proxy is None:
            self._pool = FilePool(**pool_options)
        else:  # through a proxy, httpcore's own connections (a rarer, slower path)
            self._pool = httpcore.AsyncHTTPProxy(
                proxy_url=httpcore.URL(
                    scheme=proxy.url.raw_scheme,
                    host=proxy.url.raw_host,
                    port=proxy.url.port,
                    target=proxy.url.raw_path,
                ),
                proxy_auth=proxy.raw_auth,
                proxy_headers=proxy.headers.raw,
                proxy_ssl_context=proxy.ssl_context,
                **pool_options,
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

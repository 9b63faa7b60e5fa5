"""One HTTP/1.1 connection to a file host: h11 reads the head, the body is counted.

httpcore's HTTP/1.1 connection passes every body byte through h11, which copies it into
its own buffer, slices it out and hands it over again: three copies and a parser step
per read, the largest cost left on the event loop when downloading. A file body framed
by ``Content-Length`` needs no parsing, only counting, so `FileConnection` lets h11 write
the request and parse the response head (and any other framing: chunked, read-until-
close, no body), then streams a ``Content-Length`` body straight from the connection's
receive buffer. It plugs into httpcore's own connection pool, which still decides
reuse, limits and keep-alive expiry, and it raises httpcore's exceptions.
"""

from __future__ import annotations

import contextlib
import enum
import ssl
import time
import typing
from collections.abc import AsyncIterator

import anyio
import h11
import httpcore

# h11's own limit on a response head, as httpcore sets it.
_MAX_HEAD = 100 * 1024
_READ = 1 << 20  # a hint only: the buffered streams return whatever has arrived


class _State(enum.Enum):
    NEW = 0
    ACTIVE = 1
    IDLE = 2
    CLOSED = 3


def _mapped(error: h11.ProtocolError) -> httpcore.ProtocolError:
    if isinstance(error, h11.RemoteProtocolError):
        return httpcore.RemoteProtocolError(str(error))
    return httpcore.LocalProtocolError(str(error))


class FileConnection(httpcore.AsyncConnectionInterface):
    """An HTTP/1.1 connection to one origin, for file GETs (see the module docstring).

    Args:
        origin: Where it connects.
        ssl_context: TLS settings for an https origin.
        keepalive_expiry: Seconds an idle connection stays open, or None.
        backend: Opens the TCP connection (and upgrades it to TLS).
    """

    def __init__(
        self,
        origin: httpcore.Origin,
        ssl_context: ssl.SSLContext,
        keepalive_expiry: float | None,
        backend: httpcore.AsyncNetworkBackend,
    ) -> None:
        self._origin = origin
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._backend = backend
        self._stream: httpcore.AsyncNetworkStream | None = None
        self._state = _State.NEW
        self._expire_at: float | None = None
        self._requests = 0

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if not self.can_handle_request(request.url.origin):
            raise RuntimeError(f"a request for {request.url.origin} on {self._origin}")
        if self._state not in (_State.NEW, _State.IDLE):
            raise httpcore.ConnectionNotAvailable()
        self._state, self._expire_at = _State.ACTIVE, None
        self._requests += 1
        timeouts = request.extensions.get("timeout", {})
        try:
            stream = self._stream or await self._connect(request, timeouts.get("connect"))
            self._stream = stream
            parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
            await self._send(stream, parser, request, timeouts.get("write"))
            head, rest = await _receive_head(stream, parser, timeouts.get("read"))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise
        body = _Body(self, stream, parser, (head, rest), request.method, timeouts.get("read"))
        return httpcore.Response(
            status=head.status_code,
            headers=head.headers.raw_items(),
            content=body,
            extensions={
                "http_version": b"HTTP/" + head.http_version,
                "reason_phrase": head.reason,
                "network_stream": stream,
            },
        )

    async def _connect(
        self, request: httpcore.Request, connect_timeout: float | None
    ) -> httpcore.AsyncNetworkStream:
        host = self._origin.host.decode("ascii")
        timeout = connect_timeout
        stream = await self._backend.connect_tcp(host, self._origin.port, timeout=timeout)
        if self._origin.scheme != b"https":
            return stream
        self._ssl_context.set_alpn_protocols(["http/1.1"])  # as httpcore does
        sni = request.extensions.get("sni_hostname") or host
        try:
            return await stream.start_tls(self._ssl_context, server_hostname=sni, timeout=timeout)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise

    @staticmethod
    async def _send(
        stream: httpcore.AsyncNetworkStream,
        parser: h11.Connection,
        request: httpcore.Request,
        write_timeout: float | None,
    ) -> None:
        try:
            parts = [parser.send(h11.Request(method=request.method,
                                             target=request.url.target,
                                             headers=request.headers))]  # fmt: skip
            assert isinstance(request.stream, typing.AsyncIterable)  # noqa: S101  (httpcore's)
            async for chunk in request.stream:
                parts.append(parser.send(h11.Data(data=chunk)))
            parts.append(parser.send(h11.EndOfMessage()))
        except h11.ProtocolError as exc:
            raise _mapped(exc) from exc
        # A server may answer and close early: read what it said, as httpcore does.
        with contextlib.suppress(httpcore.WriteError):
            await stream.write(b"".join(p for p in parts if p), timeout=write_timeout)

    def released(self, reusable: bool) -> None:
        """The response is closed: keep the connection for the next request, or close it."""
        if reusable and self._state is _State.ACTIVE:
            self._state = _State.IDLE
            if self._keepalive_expiry is not None:
                self._expire_at = time.monotonic() + self._keepalive_expiry

    async def aclose(self) -> None:
        self._state = _State.CLOSED
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == self._origin

    def is_available(self) -> bool:
        return self._state is _State.IDLE

    def has_expired(self) -> bool:
        if self._expire_at is not None and time.monotonic() > self._expire_at:
            return True
        # An idle connection with something to read has been closed by the server.
        return (
            self._state is _State.IDLE
            and self._stream is not None
            and bool(self._stream.get_extra_info("is_readable"))
        )

    def is_idle(self) -> bool:
        return self._state is _State.IDLE

    def is_closed(self) -> bool:
        return self._state is _State.CLOSED

    def info(self) -> str:
        return f"{str(self._origin)!r}, HTTP/1.1, {self._state.name}, Requests: {self._requests}"

    def __repr__(self) -> str:
        return f"<FileConnection [{self.info()}]>"


async def _receive_head(
    stream: httpcore.AsyncNetworkStream, parser: h11.Connection, read_timeout: float | None
) -> tuple[h11.Response, bytes]:
    """The response head, and the bytes read after it that h11 has not been given.

    h11 is handed a read only up to the end of a head: given the whole read, it would
    copy the body bytes in it into its buffer, and out again as trailing data.
    """
    rest = b""
    while True:
        event = _next(parser)
        if event is h11.NEED_DATA:
            data = rest or await stream.read(_READ, timeout=read_timeout)
            if not data:
                raise httpcore.RemoteProtocolError(
                    "Server disconnected without sending a response."
                )
            end = data.find(b"\r\n\r\n")
            data, rest = (data[: end + 4], data[end + 4 :]) if end >= 0 else (data, b"")
            _feed(parser, data)
        elif isinstance(event, h11.Response):
            return event, rest
        elif not isinstance(event, h11.InformationalResponse):  # 1xx: wait for the answer
            raise httpcore.RemoteProtocolError(f"unexpected {type(event).__name__}")


def _next(parser: h11.Connection) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
    try:
        return parser.next_event()
    except h11.ProtocolError as exc:
        raise _mapped(exc) from exc


def _feed(parser: h11.Connection, data: bytes) -> None:
    try:
        parser.receive_data(data)
    except h11.ProtocolError as exc:
        raise _mapped(exc) from exc


async def _next_event(
    stream: httpcore.AsyncNetworkStream, parser: h11.Connection, read_timeout: float | None
) -> h11.Event | type[h11.PAUSED]:
    while True:
        event = _next(parser)
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]  # narrowed by the test above
        _feed(parser, await stream.read(_READ, timeout=read_timeout))


def _counted_length(head: h11.Response, method: bytes) -> int | None:
    """The body length when ``Content-Length`` alone frames it; None for h11 to read."""
    if method == b"HEAD" or head.status_code in (204, 304):
        return None
    headers = head.headers
    lengths = [v for k, v in headers if k == b"content-length"]
    if len(lengths) != 1 or any(k == b"transfer-encoding" for k, _ in headers):
        return None
    return int(lengths[0])  # h11 has checked it is a number


def _keeps_alive(head: h11.Response) -> bool:
    if head.http_version != b"1.1":
        return False
    tokens = b",".join(v for k, v in head.headers if k == b"connection")
    return b"close" not in [t.strip().lower() for t in tokens.split(b",")]


class _Body:
    """A response body as httpcore hands it on: an async iterable that can be closed."""

    def __init__(
        self,
        connection: FileConnection,
        stream: httpcore.AsyncNetworkStream,
        parser: h11.Connection,
        answer: tuple[h11.Response, bytes],  # the head, and body bytes read with it
        method: bytes,
        timeout: float | None,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._parser = parser
        self._head, self._rest = answer
        self._method = method
        self._timeout = timeout
        self._reusable = False
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        length = _counted_length(self._head, self._method)
        chunks = self._parsed() if length is None else self._counted(length)
        async for chunk in chunks:
            yield chunk

    async def _counted(self, length: int) -> AsyncIterator[bytes]:
        """Exactly *length* bytes: what was read with the head, then straight from the socket."""
        held, _ = self._parser.trailing_data  # when a head came split, h11 holds some too
        remaining, extra = length, False
        data: bytes = held + self._rest if held else self._rest
        while True:
            if len(data) > remaining:  # bytes beyond the body: the connection can't be reused
                data, extra = data[:remaining], True
            if data:
                remaining -= len(data)
                yield data
            if remaining == 0:
                break
            data = await self._stream.read(_READ, timeout=self._timeout)
            if not data:
                raise httpcore.RemoteProtocolError(
                    "peer closed connection without sending complete message body: "
                    f"received {length - remaining} bytes, expected {length}"
                )
        self._reusable = not extra and _keeps_alive(self._head)

    async def _parsed(self) -> AsyncIterator[bytes]:
        """Any other framing, read by h11 as httpcore would."""
        if self._rest:
            _feed(self._parser, self._rest)
        while True:
            event = await _next_event(self._stream, self._parser, self._timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise httpcore.RemoteProtocolError(f"unexpected {type(event)!r} in a body")
        parser = self._parser
        self._reusable = parser.our_state is h11.DONE and parser.their_state is h11.DONE

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reusable:
            self._connection.released(reusable=True)
        else:  # not read to the end, or not reusable: never hand on a half-read socket
            with anyio.CancelScope(shield=True):
                await self._connection.aclose()


class FilePool(httpcore.AsyncConnectionPool):
    """httpcore's pool (limits, reuse, keep-alive expiry) of `FileConnection` s."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int | None,
        max_keepalive_connections: int | None,
        keepalive_expiry: float | None,
        network_backend: httpcore.AsyncNetworkBackend,
    ) -> None:
        super().__init__(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=network_backend,
        )
        self._file_ssl_context = ssl_context
        self._file_keepalive_expiry = keepalive_expiry
        self._file_backend = network_backend

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        return FileConnection(
            origin, self._file_ssl_context, self._file_keepalive_expiry, self._file_backend
        )

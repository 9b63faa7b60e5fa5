"""FileTransport against raw asyncio servers: large reads, every byte kept, errors mapped."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx
import pytest
import trustme

from rodin_async._transport import FileTransport, _ReceiveBuffer

pytestmark = pytest.mark.anyio
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4)
MIB = 1 << 20


class Server:
    """A raw HTTP/1.1 server on 127.0.0.1 whose behaviour each test scripts."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}/file"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    return await reader.readexactly(length)


def answer(body_length: int, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (body_length, extra)


def body(n: int) -> bytes:
    return bytes(range(256)) * (n // 256)


async def serve_body(data: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(answer(len(data)) + data)
            await writer.drain()

    return handler


async def fetch(
    url: str, transport: httpx.AsyncBaseTransport, pause: float = 0.0
) -> AsyncIterator[bytes]:
    async with (
        httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(2.0)) as client,
        client.stream("GET", url) as response,
    ):
        async for chunk in response.aiter_raw():
            yield chunk
            await anyio.sleep(pause)


async def test_large_body_arrives_in_large_reads() -> None:
    """A slow consumer gets what accumulated in one read, not 64 KiB pieces."""
    data = body(8 * MIB)
    async with Server(await serve_body(data)) as url:
        chunks = [c async for c in fetch(url, FileTransport(LIMITS), pause=0.005)]
    assert b"".join(chunks) == data
    assert len(data) / len(chunks) > 128 * 1024


async def test_every_byte_before_a_close_is_handed_over() -> None:
    """A body cut short delivers all bytes received, then RemoteProtocolError."""
    sent = body(3_000_000)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(10_000_000) + sent)
        await writer.drain()

    received = bytearray()
    async with Server(handler) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            async for chunk in fetch(url, FileTransport(LIMITS), pause=0.002):
                received += chunk
    assert received == sent


async def test_reset_is_a_transport_error() -> None:
    """A TCP reset mid-body surfaces as an httpx transport error, never a raw OSError."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(1_000_000) + body(100_000))
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with Server(handler) as url:
        with pytest.raises(httpx.TransportError):
            async for _ in fetch(url, FileTransport(LIMITS)):
                pass


async def test_stalled_body_times_out() -> None:
    """No bytes for the read timeout raises httpx.ReadTimeout instead of hanging."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(1000) + b"x" * 10)
        await writer.drain()
        await asyncio.sleep(5)

    async with (
        Server(handler) as url,
        httpx.AsyncClient(
            transport=FileTransport(LIMITS), timeout=httpx.Timeout(5.0, read=0.2)
        ) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url)


async def test_keep_alive_reuses_the_connection() -> None:
    """Sequential requests share one connection."""
    server = Server(await serve_body(b"hello" * 1000))
    async with server as url, httpx.AsyncClient(transport=FileTransport(LIMITS)) as client:
        for _ in range(3):
            assert (await client.get(url)).content == b"hello" * 1000
    assert server.connections == 1


async def test_refused_connection_is_a_connect_error() -> None:
    """Nothing listening: httpx.ConnectError, as with httpx's own transport."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient(transport=FileTransport(LIMITS)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_upload_respects_flow_control() -> None:
    """A body larger than the socket buffers is written with backpressure, intact."""
    payload = body(16 * MIB)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await read_request(reader)
        reply = b"ok" if got == payload else b"no"
        writer.write(answer(2) + reply)
        await writer.drain()

    async with Server(handler) as url, httpx.AsyncClient(transport=FileTransport(LIMITS)) as client:
        response = await client.post(url, content=payload)
    assert response.content == b"ok"


async def test_tls_bodies_are_read_in_large_pieces_too() -> None:
    """Over HTTPS (certificate verified) reads still coalesce beyond one 16 KiB record."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    data = body(4 * MIB)
    async with Server(await serve_body(data), server_context) as url:
        transport = FileTransport(LIMITS, verify=client_context)
        chunks = [c async for c in fetch(url, transport, pause=0.005)]
    assert b"".join(chunks) == data
    assert len(data) / len(chunks) > 64 * 1024


async def test_tls_with_an_unknown_ca_is_refused() -> None:
    """Certificates are verified: a self-signed server is a ConnectError."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    async with (
        Server(await serve_body(b"x"), server_context) as url,
        httpx.AsyncClient(transport=FileTransport(LIMITS)) as client,
    ):
        with pytest.raises(httpx.ConnectError):
            await client.get(url)


async def test_receive_buffer_makes_room_when_the_loop_ignores_a_pause() -> None:
    """Data delivered after pause_reading (Python 3.10's TLS layer does this) is kept."""

    class Transport:
        paused = 0

        def pause_reading(self) -> None:
            self.paused += 1

        def resume_reading(self) -> None:
            pass

    buffer = _ReceiveBuffer(16)
    transport = Transport()
    buffer.connection_made(transport)  # type: ignore[arg-type]
    sent = bytes(range(40))
    for start in range(0, len(sent), 8):
        view = buffer.get_buffer(-1)
        assert len(view) > 0
        piece = sent[start : start + min(8, len(view))]
        view[: len(piece)] = piece
        buffer.buffer_updated(len(piece))
    assert transport.paused == 1
    assert await buffer.read(timeout=1) == sent

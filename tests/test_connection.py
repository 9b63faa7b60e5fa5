"""FileConnection: counted bodies, h11's other framings, and when a connection is reused."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from rodin_async._transport import FileTransport

from .test_transport import LIMITS, Handler, Server, body, read_request

pytestmark = pytest.mark.anyio


def responder(*answers: bytes) -> Handler:
    """A handler that answers each request, on whatever connection, with the next answer."""
    queue = iter(answers)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            answer = next(queue, None)
            if answer is None:
                return
            writer.write(answer)
            await writer.drain()

    return handler


async def get_twice(server: Server) -> list[bytes]:
    async with server as url, httpx.AsyncClient(transport=FileTransport(LIMITS)) as client:
        return [(await client.get(url)).content for _ in range(2)]


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


async def test_counted_bodies_keep_the_connection_alive() -> None:
    """Two Content-Length answers on one connection: both bodies exact, one connection."""
    server = Server(responder(OK, OK))
    assert await get_twice(server) == [b"hello", b"hello"]
    assert server.connections == 1


@pytest.mark.parametrize(
    "first",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA",  # bytes after the body
    ],
    ids=["connection-close", "http-1.0", "bytes-past-the-body"],
)
async def test_a_connection_that_cant_be_trusted_is_not_reused(first: bytes) -> None:
    """Close, HTTP/1.0 or bytes after the body: the next request gets a new connection."""
    server = Server(responder(first, OK))
    assert await get_twice(server) == [b"hello", b"hello"]
    assert server.connections == 2


async def test_chunked_bodies_are_read_by_h11_and_reused() -> None:
    """A chunked answer goes through h11, and the connection is still reused."""
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    )
    server = Server(responder(chunked, OK))
    assert await get_twice(server) == [b"hello", b"hello"]
    assert server.connections == 1


async def test_a_body_until_close_is_read_whole() -> None:
    """No length and no chunking: the body runs to the end of the connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + body(300_000))
        await writer.drain()

    async with Server(handler) as url, httpx.AsyncClient(transport=FileTransport(LIMITS)) as c:
        assert (await c.get(url)).content == body(300_000)


async def test_an_unread_body_closes_its_connection() -> None:
    """A response closed before its body was read never hands on a half-read socket."""
    big = b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 100000\r\n\r\n" + body(100_000)
    server = Server(responder(big, OK))
    async with server as url, httpx.AsyncClient(transport=FileTransport(LIMITS)) as client:
        async with client.stream("GET", url) as response:
            assert response.status_code == 416  # closed without reading the body
        assert (await client.get(url)).content == b"hello"
    assert server.connections == 2


async def test_a_garbled_head_is_a_protocol_error() -> None:
    """Not HTTP at all: httpx.RemoteProtocolError, and nothing else."""
    server = Server(responder(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    with pytest.raises(httpx.RemoteProtocolError):
        await get_twice(server)


async def test_a_conflicting_length_is_refused() -> None:
    """Two different Content-Length values: h11 refuses the head, no guessing."""
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    with pytest.raises(httpx.RemoteProtocolError):
        await get_twice(Server(responder(bad)))


async def test_an_interim_answer_is_skipped() -> None:
    """A 100 Continue before the answer is passed over."""
    server = Server(responder(b"HTTP/1.1 100 Continue\r\n\r\n" + OK, OK))
    assert await get_twice(server) == [b"hello", b"hello"]


@pytest.mark.parametrize("cut", [1, 17, 36, 37, 38, 39, 40])  # status line, headers, blank line
@pytest.mark.parametrize(
    ("answer", "content"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nab\r\n\r\ncd\r\n\r\n",
            b"ab\r\n\r\ncd\r\n\r\n",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nab\r\n\r\n\r\n0\r\n\r\n",
            b"ab\r\n\r\n",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, b"hello"),
    ],
    ids=["counted", "chunked", "interim"],
)
async def test_a_head_in_pieces_and_blank_lines_in_the_body(
    answer: bytes, content: bytes, cut: int
) -> None:
    """A head split anywhere across reads, and a body holding CRLF CRLF: bytes exact."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(answer[:cut])
            await writer.drain()
            await asyncio.sleep(0.01)  # the client reads the first piece alone
            writer.write(answer[cut:])
            await writer.drain()

    server = Server(handler)
    assert await get_twice(server) == [content, content]
    assert server.connections == 1

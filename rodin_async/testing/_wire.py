"""Responses that can misbehave on the wire: cut short, reset, stalled, trickled, mis-sized.

ASGI only lets an app send well-formed HTTP, and uvicorn's h11 layer enforces
Content-Length. The faults need more: closing mid-body, a TCP reset, bytes beyond the
declared length. So a `WireResponse` finds the asyncio transport of its own connection
(uvicorn keeps every live connection in `server_state.connections`) and acts on it directly
when a fault calls for it. Everything else still goes through ASGI `send`.

Every wait is a short poll of the `stopping` flag and of the connection, so stopping the
server or the client hanging up never leaves a response sleeping for its full fault time.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._content import CHUNK_SIZE, Content
from ._faults import (
    ContentLengthFault,
    DelayFault,
    Fault,
    ResetFault,
    StallFault,
    TrickleFault,
    TruncateFault,
)

if TYPE_CHECKING:
    import uvicorn

# How often waits look at the stop flag and the connection.
_POLL_SECONDS = 0.02
# How long a closing connection may take to flush before it is aborted instead.
_CLOSE_GRACE_SECONDS = 2.0
# SO_LINGER on, timeout 0: close() then sends RST and drops unsent data.
_LINGER_RESET = struct.pack("ii", 1, 0)


class Hub:
    """What responses need from the running servers: their connections and the stop flag."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.servers: list[uvicorn.Server] = []

    def transport_for(self, scope: Scope) -> asyncio.Transport | None:
        """Return the transport of the connection that carried the request in `scope`.

        None when the connection is already gone (the client hung up before the answer).
        """
        peer, local = scope.get("client"), scope.get("server")
        for server in self.servers:
            for protocol in server.server_state.connections:
                if not isinstance(protocol, H11Protocol):  # the fake only speaks h11
                    continue
                if protocol.client == peer and protocol.server == local:
                    return protocol.transport
        return None

    def abort_all(self) -> None:
        """Drop every connection still open (the last step of stopping)."""
        for server in self.servers:
            for protocol in list(server.server_state.connections):
                protocol.transport.abort()


class Wire:
    """One connection, seen from a response that may need to break it."""

    def __init__(self, transport: asyncio.Transport, receive: Receive, hub: Hub) -> None:
        self._transport = transport
        self._receive = receive
        self._stopping = hub.stopping

    @property
    def gone(self) -> bool:
        """Whether the connection is closing or the server is stopping."""
        return self._stopping.is_set() or self._transport.is_closing()

    async def pause(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return False early if the connection is gone meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.gone:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            await anyio.sleep(min(left, _POLL_SECONDS))
        return False

    async def write_raw(self, content: Content, start: int, stop: int) -> None:
        """Write body bytes straight to the socket, behind h11's back."""
        for piece in content.iter_chunks(start, stop):
            if self.gone:
                return
            self._transport.write(piece)
            await self._flush()

    async def hang_up(self, *, reset: bool = False) -> None:
        """Close the connection (with a TCP reset if asked) and wait until it is gone."""
        if not self._transport.is_closing():
            if reset:
                await self._flush()
                self._linger_zero()
                self._transport.abort()
            else:
                self._transport.close()  # sends what is buffered, then FIN
        await self._wait_lost()

    async def _flush(self) -> None:
        # Wait for asyncio's buffer to reach the kernel, so the bytes a fault promises are
        # really sent before the connection is broken.
        # asyncio offers no "buffer empty" event, hence the poll.
        while self._transport.get_write_buffer_size() and not self.gone:  # noqa: ASYNC110
            await anyio.sleep(_POLL_SECONDS / 4)

    def _linger_zero(self) -> None:
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:  # already dead: an abrupt close is all that is left to do
            return

    async def _wait_lost(self) -> None:
        # Returning while uvicorn still thinks the response is in progress makes it log an
        # error; once it has seen the disconnect it stays quiet. So wait for that.
        deadline = time.monotonic() + _CLOSE_GRACE_SECONDS
        while True:
            with anyio.move_on_after(_POLL_SECONDS):
                while (await self._receive())["type"] != "http.disconnect":
                    pass
                return
            if self._stopping.is_set() or time.monotonic() > deadline:
                self._transport.abort()


class WireResponse(Response):
    """A response whose body bytes come from a `Content` range, shaped by one fault.

    Faults handled here: delay, reset, truncate, stall, trickle and content_length; any
    other fault is resolved before a `WireResponse` is built.
    """

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        content: Content,
        hub: Hub,
        *,
        span: tuple[int, int] | None = None,
        fault: Fault | None = None,
    ) -> None:
        self._content = content
        self._start, self._stop = span or (0, content.size)
        self._fault = fault
        self._hub = hub
        declared, extra = self._stop - self._start, {}
        if isinstance(fault, ContentLengthFault):
            declared = max(declared + fault.delta, 0)
            # The bytes past the declared end would be read as the start of the next
            # response on a reused connection; tell the client not to reuse it.
            extra = {"connection": "close"} if fault.delta < 0 else {}
        all_headers = {**headers, **extra, "content-length": str(declared)}
        super().__init__(status_code=status, headers=all_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the response, misbehaving as the fault says."""
        transport = self._hub.transport_for(scope)
        if transport is None:
            return  # nobody left to answer
        wire = Wire(transport, receive, self._hub)
        if not await self._before_headers(wire):
            return
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await self._send_body(wire, send)

    async def _before_headers(self, wire: Wire) -> bool:
        fault = self._fault
        if isinstance(fault, DelayFault) and not await wire.pause(fault.seconds):
            await wire.hang_up()
            return False
        if isinstance(fault, ResetFault) and fault.at == 0:
            await wire.hang_up(reset=True)  # nothing at all reaches the client
            return False
        return True

    async def _send_body(self, wire: Wire, send: Send) -> None:
        fault, length = self._fault, self._stop - self._start
        cut = self._cut(length)
        if not await self._stream(wire, send, 0, cut) or isinstance(fault, TruncateFault):
            await wire.hang_up()
        elif isinstance(fault, ResetFault):
            await wire.hang_up(reset=True)
        elif isinstance(fault, ContentLengthFault) and fault.delta != 0:
            # Declared too long: the body ends early. Declared too short: h11 would refuse
            # the extra bytes, so they go to the socket directly. Either way the connection
            # cannot be reused, so it is closed.
            await wire.write_raw(self._content, self._start + cut, self._stop)
            await wire.hang_up()
        elif isinstance(fault, StallFault) and not (
            await wire.pause(fault.seconds) and await self._stream(wire, send, cut, length)
        ):
            await wire.hang_up()
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _cut(self, length: int) -> int:
        # Where the well-behaved part of the body stops.
        fault = self._fault
        if isinstance(fault, TruncateFault | ResetFault):
            return min(fault.at, length)
        if isinstance(fault, StallFault):
            return min(fault.after, length)
        if isinstance(fault, ContentLengthFault):
            return min(max(length + fault.delta, 0), length)
        return length

    async def _stream(self, wire: Wire, send: Send, first: int, last: int) -> bool:
        # Send body bytes [first, last) (relative to the span); False if the wire went away.
        chunk, interval = CHUNK_SIZE, 0.0
        if isinstance(self._fault, TrickleFault):
            chunk, interval = self._fault.chunk, self._fault.interval
        for offset in range(first, last, chunk):
            if wire.gone or (offset > first and interval and not await wire.pause(interval)):
                return False
            stop = min(offset + chunk, last)
            piece = self._content.read(self._start + offset, self._start + stop)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        return not wire.gone

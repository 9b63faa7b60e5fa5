"""What runs inside a worker process of a sharded download, and the messages it exchanges.

The parent (`rodin_async._processes`) starts ``python -c "...; serve()"`` and talks to it
over the worker's stdin and stdout, one frame per message: a 4-byte length, then a pickle.

```text
parent                                       worker (serve)
  Start(settings: its share of the limits) ─▶  builds its own AsyncRodin, on its own loop
  Tasks((uuid, ...)) ───────────────────────▶  feeds download_many, which reads them lazily
  ◀── Batch(events, results) every 50 ms ───   a file's FileProgress merged within a batch
  End() (no more input) or Stop() ──────────▶  finishes its tasks, or cancels them keeping
  ◀── Bye() (or Fatal(error), then Bye()) ──   the .part files; then exits
```

A worker ignores SIGINT and SIGTERM: its parent decides when it stops. It stops by itself
when its stdin ends, since then the parent is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pickle
import signal
import struct
import sys
import traceback
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ._errors import RodinError
from ._gc import settle as settle_gc
from ._models import TaskDownload
from ._progress import (
    FileFailed,
    FileFinished,
    FileProgress,
    FileRetried,
    FileStarted,
    ProgressEvent,
    TaskFinished,
)
from ._shard import ShardSettings, open_shard, run_loop

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "BATCH_SECONDS",
    "Batch",
    "Batcher",
    "Bye",
    "End",
    "Fatal",
    "FrameReader",
    "Start",
    "Stop",
    "Tasks",
    "encode",
    "serve",
]

BATCH_SECONDS = 0.05  # how often a worker reports: bars stay smooth, frames stay few
READ_SIZE = 1 << 16
_HEADER = struct.Struct("!I")


# -- the messages ------------------------------------------------------------------------


@attrs.frozen
class Start:
    """Parent → worker, first: what to download and how often to report."""

    settings: ShardSettings
    interval: float = BATCH_SECONDS


@attrs.frozen
class Tasks:
    """Parent → worker: more task uuids."""

    uuids: tuple[str, ...]


@attrs.frozen
class End:
    """Parent → worker: no more tasks will come; finish those given, then exit."""


@attrs.frozen
class Stop:
    """Parent → worker: cancel now (Ctrl-C), keeping partial files; then exit."""


@attrs.frozen
class Batch:
    """Worker → parent: progress events, then results, in the order they happened."""

    events: tuple[ProgressEvent, ...]
    results: tuple[TaskDownload, ...]


@attrs.frozen
class Fatal:
    """Worker → parent: the shard itself failed (an unusable destination, bad settings)."""

    error: RodinError


@attrs.frozen
class Bye:
    """Worker → parent, last: every result has been sent."""


def encode(message: object) -> bytes:
    """One frame: the pickled *message* behind its length."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Whole messages from a byte stream; cancelling `next` loses nothing."""

    def __init__(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        self._receive = receive  # returns b"" at the end of the stream
        self._buffer = bytearray()

    async def next(self) -> object | None:
        """The next message, or None once the stream has ended (the other side is gone)."""
        while True:
            if len(self._buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buffer)
                end = _HEADER.size + size
                if len(self._buffer) >= end:
                    body = bytes(self._buffer[_HEADER.size : end])
                    del self._buffer[:end]
                    # Frames come only from our own parent or child, over a private pipe.
                    message: object = pickle.loads(body)  # noqa: S301
                    return message
            chunk = await self._receive()
            if not chunk:
                return None
            self._buffer += chunk


# -- the worker side -----------------------------------------------------------------------


def serve() -> None:
    """A worker process's entry point: the protocol runs over its original stdin/stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    settle_gc()  # a worker process is ours alone
    inbox, outbox = _take_stdio()
    run_loop(lambda: _serve(inbox, outbox))


def _take_stdio() -> tuple[int, int]:
    """Keep the protocol's pipes apart: stray prints go to stderr, not into a frame."""
    inbox, outbox = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return inbox, outbox


class _Outbox(asyncio.Protocol):
    """A write pipe's flow control: `send` waits while the pipe is full."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self._transport: asyncio.WriteTransport | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A write pipe's transport (uvloop's doesn't derive from asyncio's classes).
        self._transport = typing.cast(asyncio.WriteTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def send(self, frame: bytes) -> None:
        """Write *frame*; wait while the parent is behind.

        Raises:
            BrokenPipeError: The parent has gone.
        """
        if self._closed or self._transport is None or self._transport.is_closing():
            raise BrokenPipeError("the parent process has gone")
        self._transport.write(frame)
        await self._writable.wait()


async def _open_pipes(inbox: int, outbox: int) -> tuple[FrameReader, _Outbox]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(inbox, "rb", buffering=0)
    )
    _, writer = await loop.connect_write_pipe(_Outbox, os.fdopen(outbox, "wb", buffering=0))
    return FrameReader(lambda: reader.read(READ_SIZE)), writer


async def _serve(inbox_fd: int, outbox_fd: int) -> None:
    inbox, outbox = await _open_pipes(inbox_fd, outbox_fd)
    start = await inbox.next()
    if not isinstance(start, Start):
        return  # the parent went away before it said anything
    batch = Batcher()
    with contextlib.suppress(BrokenPipeError):  # the parent has gone: nobody to tell
        try:
            await _work(start, inbox, outbox, batch)
        except Exception as exc:  # handed to the parent, which stops the run
            await outbox.send(batch.frame())
            await outbox.send(encode(Fatal(_fatal(exc))))
        else:
            await outbox.send(batch.frame())
        await outbox.send(encode(Bye()))


async def _work(start: Start, inbox: FrameReader, outbox: _Outbox, batch: Batcher) -> None:
    """Download the tasks the parent sends until it says End (or Stop); report as it goes."""
    send, receive = anyio.create_memory_object_stream[str](math.inf)  # bounded by the window
    work = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_listen, inbox, send, work)
        tg.start_soon(_report, start.interval, batch, outbox, work)
        with work, receive:
            async with open_shard(start.settings, receive, batch.add) as results:
                async for result in results:
                    batch.results.append(result)
        tg.cancel_scope.cancel()  # done: stop listening and reporting


async def _listen(
    inbox: FrameReader, tasks: MemoryObjectSendStream[str], work: anyio.CancelScope
) -> None:
    with tasks:
        while True:
            message = await inbox.next()
            if isinstance(message, Tasks):
                # Closed: the shard failed (or, against the protocol, tasks after End).
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    for uuid in message.uuids:
                        tasks.send_nowait(uuid)
            elif isinstance(message, End):
                tasks.close()  # the shard finishes what it was given
            else:  # Stop, or the parent has gone (None): cancel, keeping partial files
                work.cancel()
                return


async def _report(
    interval: float, batch: Batcher, outbox: _Outbox, work: anyio.CancelScope
) -> None:
    while True:
        await anyio.sleep(interval)
        if batch:
            try:
                await outbox.send(batch.frame())
            except BrokenPipeError:
                work.cancel()  # the parent has gone
                return


def _fatal(exc: BaseException) -> RodinError:
    """What the parent is told when the shard failed as a whole."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, RodinError):
        return _picklable(exc)
    traceback.print_exception(exc)  # a bug: its traceback goes to stderr
    return RodinError(f"a worker process failed: {exc!r}")


def _picklable(error: RodinError) -> RodinError:
    try:
        pickle.dumps(error)
    except Exception:  # an error we can't send as it is: send its message
        return RodinError(str(error))
    return error


class Batcher:
    """Events and results gathered between two reports; a file's progress merged into one.

    Merging keeps what the parent's tally reads: the bytes added up, the latest count on
    disk. A merged event stays where the file's first one was, and only while no other
    event of that file came after it, so each file's events keep their order.
    """

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self.results: list[TaskDownload] = []
        self._progress: dict[Path, int] = {}  # a file's FileProgress in this batch

    def __bool__(self) -> bool:
        return bool(self.events or self.results)

    def add(self, event: ProgressEvent) -> None:
        """The progress callback: keep *event* for the next report."""
        if isinstance(event, FileProgress):
            at = self._progress.get(event.path)
            if at is not None:
                earlier = self.events[at]
                assert isinstance(earlier, FileProgress)  # noqa: S101  (only they are indexed)
                self.events[at] = FileProgress(
                    event.task_uuid,
                    event.name,
                    event.path,
                    earlier.advanced + event.advanced,
                    event.received,
                )
                return
            self._progress[event.path] = len(self.events)
        elif isinstance(event, (FileStarted, FileRetried, FileFinished, FileFailed)):
            self._progress.pop(event.path, None)
        elif isinstance(event, TaskFinished):
            return  # the parent makes it from the result, which is sent anyway
        self.events.append(event)

    def frame(self) -> bytes:
        """The report of everything kept so far, encoded; the batch starts again empty."""
        message = Batch(tuple(self.events), tuple(self.results))
        self.events, self.results, self._progress = [], [], {}
        try:
            return encode(message)
        except Exception:  # an error inside that doesn't pickle: send its message
            return encode(_plain(message))


def _plain(batch: Batch) -> Batch:
    results = tuple(
        attrs.evolve(r, error=_picklable(r.error)) if r.error is not None else r
        for r in batch.results
    )
    events = tuple(
        attrs.evolve(e, error=_picklable(e.error))
        if isinstance(e, (FileRetried, FileFailed))
        else e
        for e in batch.events
    )
    return Batch(events, results)

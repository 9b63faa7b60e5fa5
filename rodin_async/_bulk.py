"""Run many tasks at once and hand their results back as each one finishes.

The work runs in a task group owned by the client (opened by ``async with AsyncRodin``),
not inside the consumer's async generator: a generator that is abandoned mid-loop is
closed later from another task, and a task group can't be exited from another task.
The generator only owns a cancel scope, which any task may cancel.
"""

from __future__ import annotations

import sys
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from typing import TypeVar

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ._models import TaskDownload

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup

T = TypeVar("T")
TaskRunner = Callable[[T], Awaitable[TaskDownload]]


@attrs.define
class _Failure:
    """An exception raised outside any one task (by the caller's iterable, or a bug)."""

    exc: BaseException | None = None


async def run_many(
    host: TaskGroup,
    items: Iterable[T] | AsyncIterable[T],
    run_one: TaskRunner[T],
    max_tasks: int,
) -> AsyncGenerator[TaskDownload, None]:
    """Yield ``run_one(item)`` for every item as each finishes, at most *max_tasks* at once.

    Breaking out of the loop, or closing the generator, cancels the outstanding work.
    """
    send, receive = anyio.create_memory_object_stream[TaskDownload](max_tasks)
    scope = anyio.CancelScope()
    failure = _Failure()
    host.start_soon(_produce, scope, items, run_one, send, max_tasks, failure)
    try:
        with receive:
            async for result in receive:
                yield result
    finally:
        scope.cancel()
    if failure.exc is not None:
        raise failure.exc


async def _produce(
    scope: anyio.CancelScope,
    items: Iterable[T] | AsyncIterable[T],
    run_one: TaskRunner[T],
    send: MemoryObjectSendStream[TaskDownload],
    max_tasks: int,
    failure: _Failure,
) -> None:
    slots = anyio.Semaphore(max_tasks)
    with scope, send:
        try:
            async with anyio.create_task_group() as tg:
                async for item in _aiter(items):
                    await slots.acquire()
                    tg.start_soon(_one, item, run_one, send.clone(), slots)
        except Exception as exc:  # handed to the consumer rather than crashing the client
            failure.exc = _unwrap(exc)


async def _one(
    item: T,
    run_one: TaskRunner[T],
    send: MemoryObjectSendStream[TaskDownload],
    slots: anyio.Semaphore,
) -> None:
    try:
        with send:
            result = await run_one(item)
            await send.send(result)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the consumer has gone; the scope is being cancelled
    finally:
        slots.release()


def _unwrap(exc: Exception) -> Exception:
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
            await anyio.lowlevel.checkpoint()  # a long list must not hog the loop

"""Typed progress events, emitted while downloads run (the CLI's bars are built on them).

Pass ``on_progress=callback`` to `AsyncRodin.download`, `AsyncRodin.download_many` or
`AsyncRodin.run`. The callback receives a `ProgressEvent`: one of these frozen classes.

- `TaskStarted`: a task was listed; ``files`` of it will download.
- `FileStarted`: an attempt at a file began; ``offset`` bytes were already on disk.
- `FileProgress`: ``advanced`` more bytes of a file reached disk (its last batch: are
  being written, together with the rename that completes the file).
- `FileRetried`: an attempt failed (``error``); the file will be tried again.
- `FileFinished`: a file is complete under its final name.
- `FileFailed`: a file could not be downloaded (``error``); its task will report it.
- `TaskFinished`: a task is done; ``result`` is its `TaskDownload`.

Tell them apart with ``match`` (a type checker then sees which kinds you handle):

```python
def on_progress(event: rodin_async.ProgressEvent) -> None:
    match event:
        case rodin_async.FileFinished(name=name, size=size):
            print(f"{name}: {size} bytes")
        case rodin_async.TaskFinished(result=result) if result.error:
            print(f"{result.task_uuid} failed: {result.error}")
        case _:
            pass
```

Callbacks are plain functions called in the event loop, once per batch written at most
(a body is written 1 MiB at a time, or every 0.1 s on a slow link), so they must be
quick and must not block. File events carry ``path``, the file's final path,
which tells apart two listed files that share a name. Byte accounting: a file's bytes on
disk are the ``offset`` of its latest `FileStarted` plus every `FileProgress.advanced`
after it.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Union

import attrs

from ._errors import RodinError, error_key
from ._models import TaskDownload


@attrs.frozen
class TaskStarted:
    """A task was listed and its files are about to download.

    Attributes:
        task_uuid: The task.
        files: How many result files it lists.
        total_bytes: Their total size, when known (a listing doesn't say: None today).
    """

    task_uuid: str
    files: int
    total_bytes: int | None = None  # not known from a listing; kept for future APIs


@attrs.frozen
class FileStarted:
    """An attempt at a file began; ``offset`` bytes are already on disk (a resume).

    Attributes:
        task_uuid: The file's task.
        name: The file's name as the API listed it.
        path: Where the file will be when complete.
        total: The file's full size, when the server said.
        offset: Bytes already on disk from an earlier attempt; 0 for a fresh start.
        attempt: 1 for the first attempt, 2 for the first retry, and so on.
    """

    task_uuid: str
    name: str
    path: Path
    total: int | None
    offset: int
    attempt: int


@attrs.frozen
class FileProgress:
    """More bytes of a file reached disk.

    A file's last batch is reported just before the step that writes it and renames
    the file, so the last `FileProgress` always comes before the file is complete; if
    that step never runs (the callback raised, a cancellation), the bytes are written
    to the ``.part`` file instead, for a resume.

    Attributes:
        task_uuid: The file's task.
        name: The file's name as the API listed it.
        path: Where the file will be when complete.
        advanced: Bytes written since the previous event for this file.
        received: Bytes of the file on disk now, a resumed prefix included.
    """

    task_uuid: str
    name: str
    path: Path
    advanced: int
    received: int


@attrs.frozen
class FileRetried:
    """An attempt failed and the file will be tried again.

    Attributes:
        task_uuid: The file's task.
        name: The file's name as the API listed it.
        path: Where the file will be when complete.
        attempt: The attempt that failed.
        error: Why it failed.
    """

    task_uuid: str
    name: str
    path: Path
    attempt: int
    error: RodinError = attrs.field(eq=error_key)


@attrs.frozen
class FileFinished:
    """A file is complete under its final name.

    Attributes:
        task_uuid: The file's task.
        name: The file's name as the API listed it.
        path: Where the file is.
        size: Its size in bytes.
    """

    task_uuid: str
    name: str
    path: Path
    size: int


@attrs.frozen
class FileFailed:
    """A file could not be downloaded; the task will report it.

    Attributes:
        task_uuid: The file's task.
        name: The file's name as the API listed it.
        path: Where the file would have been.
        error: Why it failed, after every retry.
    """

    task_uuid: str
    name: str
    path: Path
    error: RodinError = attrs.field(eq=error_key)


@attrs.frozen
class TaskFinished:
    """A task is done, successfully or not (``result.error``).

    Attributes:
        result: The task's outcome, as `download_many` yields it.
    """

    result: TaskDownload


# typing.Union rather than `|`: a Union alias can carry a docstring for help().
ProgressEvent = Union[  # noqa: UP007
    TaskStarted,
    FileStarted,
    FileProgress,
    FileRetried,
    FileFinished,
    FileFailed,
    TaskFinished,
]
"""What a progress callback receives: any one of the seven event classes."""
with contextlib.suppress(AttributeError, TypeError):  # Python 3.14 unions take no docstring
    ProgressEvent.__doc__ = __doc__
ProgressCallback = Callable[[ProgressEvent], None]
"""The type of ``on_progress``: a plain function called with each `ProgressEvent`."""


if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup


def ignore(event: ProgressEvent) -> None:
    """The default callback: progress goes nowhere."""


class CallbackError(Exception):
    """A progress callback raised; carries its exception through the downloader's tasks."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


def checked_callback(callback: ProgressCallback | None) -> ProgressCallback:
    """*callback*, guarded so that its exceptions come out of the download as themselves.

    Raises:
        TypeError: *callback* is an ``async def`` function: it would never be awaited.
    """
    if callback is None:
        return ignore
    if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004  (an object with async __call__)
    ):
        raise TypeError(
            "on_progress must be a plain function: it is called in the event loop for "
            "every chunk and is not awaited (to do async work, hand events to a memory "
            "object stream or an asyncio.Queue from a plain function)"
        )

    def guarded(event: ProgressEvent) -> None:
        try:
            result: object = callback(event)
        except Exception as exc:
            raise CallbackError(exc) from exc
        if result is not None and inspect.isawaitable(result):  # None: the usual, cheaply
            if inspect.iscoroutine(result):
                result.close()  # never awaited: don't let Python warn about it later
            raise CallbackError(TypeError("on_progress returned an awaitable; it must not"))

    return guarded


def callback_error(exc: BaseException) -> Exception | None:
    """The callback's own exception, if *exc* is (or groups) a `CallbackError`."""
    if isinstance(exc, CallbackError):
        return exc.error
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := callback_error(inner)) is not None:
                return found
    return None

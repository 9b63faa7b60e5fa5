"""Typed progress events, emitted while downloads run (the CLI's bars are built on them).

Callbacks are plain functions called in the event loop, once per chunk at most, so they
must be quick and must not block. File events carry ``path``, the file's final path,
which tells apart two listed files that share a name. Byte accounting: a file's bytes on
disk are the ``offset`` of its latest `FileStarted` plus every `FileProgress.advanced`
after it.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from ._errors import RodinError
from ._models import TaskDownload


@attrs.frozen
class TaskStarted:
    """A task was listed and its files are about to download."""

    task_uuid: str
    files: int
    total_bytes: int | None = None  # not known from a listing; kept for future APIs


@attrs.frozen
class FileStarted:
    """An attempt at a file began; ``offset`` bytes are already on disk (a resume)."""

    task_uuid: str
    name: str
    path: Path
    total: int | None
    offset: int
    attempt: int


@attrs.frozen
class FileProgress:
    """``advanced`` more bytes of a file reached disk (``received`` in all)."""

    task_uuid: str
    name: str
    path: Path
    advanced: int
    received: int


@attrs.frozen
class FileRetried:
    """An attempt failed and the file will be tried again."""

    task_uuid: str
    name: str
    path: Path
    attempt: int
    error: RodinError


@attrs.frozen
class FileFinished:
    """A file is complete under its final name."""

    task_uuid: str
    name: str
    path: Path
    size: int


@attrs.frozen
class FileFailed:
    """A file could not be downloaded; the task will report it."""

    task_uuid: str
    name: str
    path: Path
    error: RodinError


@attrs.frozen
class TaskFinished:
    """A task is done, successfully or not (``result.error``)."""

    result: TaskDownload


ProgressEvent = (
    TaskStarted
    | FileStarted
    | FileProgress
    | FileRetried
    | FileFinished
    | FileFailed
    | TaskFinished
)
ProgressCallback = Callable[[ProgressEvent], None]


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
        if inspect.isawaitable(result):
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

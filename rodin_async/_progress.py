"""Typed progress events, emitted while downloads run (the CLI's bars are built on them).

Callbacks are plain functions called in the event loop, once per chunk at most, so they
must be quick and must not block. File events carry ``path``, the file's final path,
which tells apart two listed files that share a name. Byte accounting: a file's bytes on
disk are the ``offset`` of its latest `FileStarted` plus every `FileProgress.advanced`
after it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs

from ._errors import RodinError, error_key
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
    error: RodinError = attrs.field(eq=error_key)


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
    error: RodinError = attrs.field(eq=error_key)


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


def ignore(event: ProgressEvent) -> None:
    """The default callback: progress goes nowhere."""

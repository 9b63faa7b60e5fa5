"""Typed progress events, emitted while downloads run (the CLI's bars are built on them).

Pass ``on_progress=callback`` to `AsyncRodin.download`, `AsyncRodin.download_many` or
`AsyncRodin.run`. The callback receives a `ProgressEvent`: one of these frozen classes.

- `TaskStarted`: a task was listed; ``files`` of it will download.
- `FileStarted`: an attempt at a file began; ``offset`` bytes were already on disk.
- `FileProgress`: ``advanced`` more bytes of a file reached disk.
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

Callbacks are plain functions called in the event loop, once per chunk at most, so they
must be quick and must not block. File events carry ``path``, the file's final path,
which tells apart two listed files that share a name. Byte accounting: a file's bytes on
disk are the ``offset`` of its latest `FileStarted` plus every `FileProgress.advanced`
after it.
"""

from __future__ import annotations

import contextlib
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


def ignore(event: ProgressEvent) -> None:
    """The default callback: progress goes nowhere."""

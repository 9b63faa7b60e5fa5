"""A worker's side of the pipe: frames, and progress events batched for the parent."""

from __future__ import annotations

import pickle
from pathlib import Path

import anyio
import pytest

import rodin_async
from rodin_async import (
    FileFinished,
    FileProgress,
    FileRetried,
    FileStarted,
    TaskDownload,
    TaskFinished,
    TaskStarted,
)
from rodin_async._worker import Batch, Batcher, FrameReader, Tasks, encode

pytestmark = pytest.mark.anyio

A, B = Path("/out/t/a.glb"), Path("/out/t/b.png")


def progress(path: Path, advanced: int, received: int) -> FileProgress:
    """A FileProgress of task t."""
    return FileProgress("t", path.name, path, advanced, received)


def decode(frame: bytes) -> Batch:
    """The Batch inside *frame* (its 4-byte length skipped)."""
    message = pickle.loads(frame[4:])  # noqa: S301  (bytes we just made)
    assert isinstance(message, Batch)
    return message


def test_a_files_progress_is_merged_within_a_batch() -> None:
    """Progress of one file becomes one event: bytes summed, latest count, first place kept."""
    batch = Batcher()
    batch.add(TaskStarted("t", 2))
    batch.add(progress(A, 100, 100))
    batch.add(progress(B, 10, 10))
    batch.add(progress(A, 50, 150))
    batch.add(progress(B, 5, 15))
    events = decode(batch.frame()).events
    assert events == (TaskStarted("t", 2), progress(A, 150, 150), progress(B, 15, 15))
    assert not batch  # the next batch starts empty


def test_merging_never_reorders_a_files_events() -> None:
    """After another event of the file, its progress starts a new event, in order."""
    batch = Batcher()
    batch.add(progress(A, 100, 100))
    retried = FileRetried("t", "a.glb", A, 1, rodin_async.TransportError("cut"))
    batch.add(retried)
    batch.add(FileStarted("t", "a.glb", A, 1000, 100, 2))
    batch.add(progress(A, 30, 130))
    batch.add(progress(A, 20, 150))
    batch.add(FileFinished("t", "a.glb", A, 150))
    events = decode(batch.frame()).events
    assert events == (
        progress(A, 100, 100),
        retried,
        FileStarted("t", "a.glb", A, 1000, 100, 2),
        progress(A, 50, 150),
        FileFinished("t", "a.glb", A, 150),
    )


def test_results_travel_without_their_task_finished_event(tmp_path: Path) -> None:
    """TaskFinished is not sent (the parent makes it from the result, which is sent)."""
    batch = Batcher()
    result = TaskDownload("t", tmp_path / "t")
    batch.add(TaskFinished(result))
    batch.results.append(result)
    sent = decode(batch.frame())
    assert sent.events == ()
    assert sent.results == (result,)


class Unpicklable(rodin_async.RodinError):
    """An error holding something that can't be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = anyio.Lock()

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("no")


def test_an_error_that_does_not_pickle_is_sent_as_its_message(tmp_path: Path) -> None:
    """A result or event whose error won't pickle still reaches the parent, as a RodinError."""
    batch = Batcher()
    batch.add(FileRetried("t", "a.glb", A, 1, Unpicklable("odd")))
    batch.results.append(TaskDownload("t", tmp_path, error=Unpicklable("odd")))
    sent = decode(batch.frame())
    assert type(sent.results[0].error) is rodin_async.RodinError
    assert str(sent.results[0].error) == "odd"
    event = sent.events[0]
    assert isinstance(event, FileRetried)
    assert str(event.error) == "odd"


async def test_frames_survive_any_split_of_the_stream() -> None:
    """Messages come out whole however the pipe cuts the bytes, then None at its end."""
    messages = [Tasks(("a", "b")), Tasks(tuple(f"u{i}" for i in range(500))), Tasks(())]
    stream = b"".join(encode(m) for m in messages)
    for size in (1, 3, 7, 4096):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]

        async def receive(chunks: list[bytes] = chunks) -> bytes:
            await anyio.lowlevel.checkpoint()
            return chunks.pop(0) if chunks else b""

        reader = FrameReader(receive)
        assert [await reader.next() for _ in messages] == messages
        assert await reader.next() is None

"""The running count of a bulk download, fed by the library's progress events and results.

The live display and the final summary both read a `Tally`; neither talks to the library.
Everything runs on the event loop's thread, so no locking is needed.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import attrs

import rodin_async
from rodin_async import (
    FileFailed,
    FileFinished,
    FileProgress,
    FileRetried,
    FileStarted,
    ProgressEvent,
    TaskDownload,
    TaskStarted,
)

# Throughput is measured over this many recent seconds: long enough to smooth chunk
# bursts, short enough to follow a slowdown.
_SPEED_WINDOW = 5.0


@attrs.define
class Transfer:
    """A file being downloaded right now."""

    task_uuid: str
    name: str
    total: int | None
    on_disk: int
    resumed: int = 0  # bytes an earlier run left in the .part file, kept and continued


@attrs.define
class Tally:
    """What has happened so far in one bulk download."""

    tasks_total: int
    started_at: float = attrs.Factory(time.monotonic)
    listed: set[str] = attrs.Factory(set)
    files_listed: int = 0
    files_done: int = 0
    files_failed: int = 0
    retries: int = 0
    bytes_finished: int = 0  # sizes of the files this run completed
    bytes_resumed: int = 0  # of which an earlier run had left in .part files
    bytes_received: int = 0  # bytes that came over the wire in this run
    files_present: int = 0  # files of finished tasks kept from an earlier run
    files_kept_listed: int = 0  # of which in listed tasks (kept, the rest downloaded)
    bytes_present: int = 0
    inputs_rejected: int = 0  # input lines that could not be task ids
    active: dict[Path, Transfer] = attrs.Factory(dict)
    results: list[TaskDownload] = attrs.Factory(list)
    stopped_by: int | None = None  # the signal that interrupted the run
    finished_at: float | None = None
    _samples: deque[tuple[float, int]] = attrs.field(factory=deque, init=False)
    # Files and bytes completed so far per task in flight, to tell them from kept ones.
    _completed: dict[str, tuple[int, int]] = attrs.field(factory=dict, init=False)

    # -- feeding -------------------------------------------------------------------------

    def on_event(self, event: ProgressEvent) -> None:
        """The progress callback: account for one event (called once per batch at most)."""
        if isinstance(event, FileProgress):  # by far the most frequent: test it first
            self.bytes_received += event.advanced
            transfer = self.active.get(event.path)
            if transfer is not None:
                transfer.on_disk = event.received
        elif isinstance(event, FileStarted):
            self._started(event)
        elif isinstance(event, FileFinished):
            self._finished(event)
        elif isinstance(event, FileFailed):
            self.active.pop(event.path, None)
            self.files_failed += 1
        elif isinstance(event, FileRetried):
            self.retries += 1
        elif isinstance(event, TaskStarted):
            self.listed.add(event.task_uuid)
            self.files_listed += event.files

    def _started(self, event: FileStarted) -> None:
        previous = self.active.get(event.path)
        # A retry that starts over (offset 0) drops what was resumed; one that continues
        # keeps it. Only the first attempt's offset can come from an earlier run.
        if previous is not None:
            resumed = min(previous.resumed, event.offset)
        else:
            resumed = event.offset if event.attempt == 1 else 0
        transfer = Transfer(event.task_uuid, event.name, event.total, event.offset, resumed)
        self.active[event.path] = transfer

    def _finished(self, event: FileFinished) -> None:
        transfer = self.active.pop(event.path, None)
        self.files_done += 1
        self.bytes_finished += event.size
        self.bytes_resumed += transfer.resumed if transfer is not None else 0
        files, size = self._completed.get(event.task_uuid, (0, 0))
        self._completed[event.task_uuid] = (files + 1, size + event.size)

    def record(self, result: TaskDownload) -> None:
        """Account for a finished task: its files not completed by this run were kept."""
        self.results.append(result)
        files, size = self._completed.pop(result.task_uuid, (0, 0))
        kept = len(result.files) - files
        self.files_present += kept
        self.bytes_present += sum(f.size for f in result.files) - size
        if result.task_uuid in self.listed:  # listed, yet some files were still there
            self.files_kept_listed += kept

    def stop_clock(self) -> None:
        """Fix the wall time: the summary is printed after cleanup, which isn't transfer."""
        self.finished_at = time.monotonic()

    # -- reading -------------------------------------------------------------------------

    @property
    def ok(self) -> list[TaskDownload]:
        """Tasks whose every file was downloaded this run."""
        return [r for r in self.results if r.ok and not skipped(r)]

    @property
    def failed(self) -> list[TaskDownload]:
        """Tasks with at least one file missing."""
        return [r for r in self.results if not r.ok]

    @property
    def skipped(self) -> list[TaskDownload]:
        """Tasks that were already complete on disk."""
        return [r for r in self.results if r.ok and skipped(r)]

    @property
    def interrupted(self) -> bool:
        """Whether a signal (Ctrl-C, SIGTERM) stopped the run before every task finished."""
        return self.stopped_by is not None

    @property
    def files_expected(self) -> int:
        """Files of the tasks seen so far: listed ones, and those of skipped tasks."""
        return self.files_listed + self.files_present - self.files_kept_listed

    @property
    def bytes_downloaded(self) -> int:
        """Bytes of this run's completed files that this run wrote (not resumed ones)."""
        return self.bytes_finished - self.bytes_resumed

    @property
    def elapsed(self) -> float:
        """Seconds since the download started (until `stop_clock`)."""
        return (self.finished_at or time.monotonic()) - self.started_at

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of this run's files on disk, finished or partial."""
        return self.bytes_finished + sum(t.on_disk for t in self.active.values())

    def estimated_total(self) -> int | None:
        """The bytes all tasks will add up to, extrapolated from the files seen so far.

        Sizes are only known once a transfer starts, and file counts once a task is
        listed, so unseen files are assumed to be of the average size seen so far.
        """
        seen = self.files_done + len(self.active)
        if not seen or not self.listed:
            return None
        known = self.bytes_finished + sum(t.total or t.on_disk for t in self.active.values())
        unlisted = max(0, self.tasks_total - len(self.listed) - self._ended_unlisted())
        to_fetch = self.files_listed - self.files_kept_listed  # kept files never transfer
        expected_files = to_fetch + unlisted * to_fetch / len(self.listed)
        unseen = max(0.0, expected_files - seen - self.files_failed)
        return round(known + unseen * known / seen)

    def _ended_unlisted(self) -> int:
        # Tasks that finished without a listing event: skipped, or failed to list.
        return sum(1 for r in self.results if r.task_uuid not in self.listed)

    def sample_speed(self) -> float | None:
        """Recent throughput in bytes per second; each call adds a sample (call per tick)."""
        now = time.monotonic()
        self._samples.append((now, self.bytes_received))
        while len(self._samples) > 2 and now - self._samples[0][0] > _SPEED_WINDOW:
            self._samples.popleft()
        first_time, first_bytes = self._samples[0]
        if now - first_time < 0.2:  # too short to mean anything yet
            return None
        return (self.bytes_received - first_bytes) / (now - first_time)

    def unfinished(self, uuids: list[str]) -> list[str]:
        """The uuids of *uuids* that have no result yet (after an interruption)."""
        done = {r.task_uuid for r in self.results}
        return [u for u in uuids if u not in done]


def skipped(result: TaskDownload) -> bool:
    """Whether an earlier run had already completed the task, so nothing was downloaded."""
    return result.skipped


def status_of(result: TaskDownload) -> str:
    """``ok``, ``failed`` or ``skipped``: the task's status in ``--json`` lines and lists."""
    if not result.ok:
        return "failed"
    return "skipped" if skipped(result) else "ok"


def first_line(error: rodin_async.RodinError | None) -> str:
    """A one-line description of a task's error."""
    return str(error).strip().splitlines()[0] if error is not None and str(error) else ""

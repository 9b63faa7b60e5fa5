"""What the fake servers know: tasks, their files and URLs, fault queues, and the request log.

Tests mutate this from their own thread while the servers read it from theirs, so every
access goes through one lock, and what leaves the lock is either immutable or a copy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Literal

import attrs

from ._content import Content, FileSource, make_content
from ._faults import Fault

Origin = Literal["api", "files"]
Slot = tuple[int, int]  # (log epoch, index): where a logged request sits in the log


@attrs.frozen
class RecordedRequest:
    """One request either fake server received, as a test sees it afterwards.

    `status` is the status line the server sent; 0 while the request is still being
    answered, or for good when a fault dropped the connection before any response.
    """

    origin: Origin
    method: str
    path: str
    query: str
    headers: dict[str, str]
    range: str | None
    task_uuid: str | None
    file_name: str | None
    status: int


@attrs.define
class FileEntry:
    """One listed result file and the faults its next requests will meet."""

    name: str
    content: Content
    faults: deque[Fault] = attrs.field(factory=deque)


@attrs.define
class TaskState:
    """A task's files and the URL tokens currently honoured (token -> issue time)."""

    files: list[FileEntry] = attrs.field(factory=list)
    tokens: dict[str, float] = attrs.field(factory=dict)
    generation: int = 0


@attrs.frozen
class Listed:
    """One entry of a listing: its position in the task, its name and its URL token."""

    index: int
    name: str
    token: str


class ServerState:
    """The shared, lock-protected model behind both fake servers."""

    def __init__(self, api_key: str, url_ttl: float | None) -> None:
        self.api_key = api_key
        self.url_ttl = url_ttl
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskState] = {}
        self._api_faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        # Bumped by reset_requests so a request answered after a reset cannot overwrite
        # whichever new request took its old slot.
        self._epoch = 0

    # -- tasks and files -------------------------------------------------------------

    def add_task(self, task_uuid: str) -> None:
        """Create an empty task; a uuid can only be used once."""
        with self._lock:
            if task_uuid in self._tasks:
                raise ValueError(f"Task {task_uuid!r} already exists.")
            self._tasks[task_uuid] = TaskState()

    def add_file(
        self, task_uuid: str, name: str, source: FileSource, faults: tuple[Fault, ...]
    ) -> None:
        """Append a file to a task (names may repeat)."""
        with self._lock:
            task = self._task(task_uuid)
            occurrence = sum(entry.name == name for entry in task.files)
            content = make_content(name, source, occurrence=occurrence)
            task.files.append(FileEntry(name, content, deque(faults)))

    def find(self, task_uuid: str, name: str, index: int) -> FileEntry:
        """Return the `index`-th file called `name` (KeyError when there is none)."""
        with self._lock:
            matches = [entry for entry in self._task(task_uuid).files if entry.name == name]
        if not 0 <= index < len(matches):
            raise KeyError(f"Task {task_uuid!r} has no file {name!r} number {index}.")
        return matches[index]

    def entry(self, task_uuid: str, position: int) -> FileEntry | None:
        """Return the file at `position` of the task's listing, if there is one."""
        with self._lock:
            task = self._tasks.get(task_uuid)
            if task is None or not 0 <= position < len(task.files):
                return None
            return task.files[position]

    def _task(self, task_uuid: str) -> TaskState:
        try:
            return self._tasks[task_uuid]
        except KeyError:
            raise KeyError(f"No task {task_uuid!r}; add it with add_task() first.") from None

    # -- URLs --------------------------------------------------------------------------

    def list_task(self, task_uuid: str) -> list[Listed] | None:
        """Issue a fresh URL token for the task and return its listing (None: unknown)."""
        with self._lock:
            task = self._tasks.get(task_uuid)
            if task is None:
                return None
            task.generation += 1
            token = str(task.generation)
            task.tokens[token] = time.monotonic()
            return [Listed(i, entry.name, token) for i, entry in enumerate(task.files)]

    def token_valid(self, task_uuid: str, token: str | None) -> bool:
        """Whether a URL carrying `token` still answers (not expired, not too old)."""
        with self._lock:
            task = self._tasks.get(task_uuid)
            issued = None if task is None or token is None else task.tokens.get(token)
        if issued is None:
            return False
        return self.url_ttl is None or time.monotonic() - issued <= self.url_ttl

    def expire(self, task_uuid: str) -> None:
        """Invalidate every URL listed so far for the task."""
        with self._lock:
            self._task(task_uuid).tokens.clear()

    # -- faults ------------------------------------------------------------------------

    def add_faults(self, entry: FileEntry, faults: tuple[Fault, ...]) -> None:
        """Append faults to a file's queue."""
        with self._lock:
            entry.faults.extend(faults)

    def add_api_faults(self, faults: tuple[Fault, ...]) -> None:
        """Append faults to the API queue, refusing the file-only kinds."""
        for fault in faults:
            if not fault.api_allowed:
                raise ValueError(f"{fault!r} only applies to result files, not to the API.")
        with self._lock:
            self._api_faults.extend(faults)

    def pop_fault(self, entry: FileEntry) -> Fault | None:
        """Take the next fault for a file request, if any is queued."""
        with self._lock:
            return entry.faults.popleft() if entry.faults else None

    def pop_api_fault(self) -> Fault | None:
        """Take the next fault for an API request, if any is queued."""
        with self._lock:
            return self._api_faults.popleft() if self._api_faults else None

    # -- request log -------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> Slot:
        """Log a request on arrival and return its slot, to fill in as it is answered."""
        with self._lock:
            self._requests.append(request)
            return self._epoch, len(self._requests) - 1

    def annotate(self, slot: Slot, task_uuid: str, file_name: str | None) -> None:
        """Note which task (and file) a logged request turned out to be about."""
        with self._lock:
            if slot[0] == self._epoch:
                old = self._requests[slot[1]]
                new = attrs.evolve(old, task_uuid=task_uuid, file_name=file_name)
                self._requests[slot[1]] = new

    def answered(self, slot: Slot, status: int) -> None:
        """Note the status a logged request was answered with."""
        with self._lock:
            if slot[0] == self._epoch:
                self._requests[slot[1]] = attrs.evolve(self._requests[slot[1]], status=status)

    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the request log, in arrival order."""
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        """Forget every logged request."""
        with self._lock:
            self._requests.clear()
            self._epoch += 1

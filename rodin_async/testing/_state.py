"""What the fake servers know: tasks, files, URLs, generations, balance, faults and the logs.

Tests mutate this from their own thread while the servers read it from theirs, so every
access goes through one lock, and what leaves the lock is either immutable or a copy.
"""

from __future__ import annotations

import email.utils
import secrets
import threading
import time
import uuid as uuid_module
from collections import deque
from collections.abc import Mapping
from typing import Literal, get_args

import attrs

from ._content import Content, FileSource, make_content
from ._faults import Fault
from ._jobs import DONE, Generation, Job, Ticket, marked_outcome

Origin = Literal["api", "files"]
Endpoint = Literal["check_balance", "download", "rodin", "rodin_texture_only", "status"]
"""An API endpoint, named by its path under `/api/v2/`."""
ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)
Slot = tuple[int, int]  # (log epoch, index): where a logged request sits in the log


@attrs.frozen
class RecordedRequest:
    """One request either fake server received, as a test sees it afterwards.

    Attributes:
        origin: Which server received it: ``"api"`` or ``"files"``.
        method: The HTTP method.
        path: The URL path.
        query: The raw query string (file URLs carry their signature here).
        headers: The request headers, names in lower case.
        range: The ``Range`` header, if any (``"bytes=1000-"`` on a resume).
        task_uuid: The task the request was about, when the server could tell.
        file_name: The result file a file-host request asked for, if any.
        status: The status line the server sent; 0 while the request is still being
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


@attrs.frozen
class Submission:
    """One generation form the API received (after authentication), as a test sees it.

    Attributes:
        endpoint: ``"rodin"`` or ``"rodin_texture_only"``.
        fields: Every text field by name, in the order sent, unknown fields included.
        files: Every upload by field name, as (file name, size), in the order sent.
        task_uuid: The task the submission created; None when the API refused the form
            (invalid, or not enough balance).
    """

    endpoint: Endpoint
    fields: dict[str, list[str]]
    files: dict[str, list[tuple[str, int]]]
    task_uuid: str | None


@attrs.frozen
class GenerationSettings:
    """What a generation costs, how long it takes and how many jobs it has."""

    cost: float
    duration: float
    jobs_per_task: int


def _new_etag() -> str:
    return f'"{secrets.token_hex(8)}"'


def _now_http_date() -> str:
    return email.utils.formatdate(time.time(), usegmt=True)


@attrs.define
class FileEntry:
    """One listed result file and the faults its next requests will meet.

    Like a real file host it has a strong ``etag`` and a ``last_modified`` date, which
    change when the file is replaced, and it honours ``If-Range`` with either.
    """

    name: str
    content: Content
    faults: deque[Fault] = attrs.field(factory=deque)
    etag: str = attrs.field(factory=_new_etag)
    last_modified: str = attrs.field(factory=_now_http_date)


@attrs.define
class TaskState:
    """A task's files and the URL tokens currently honoured (token -> issue time)."""

    files: list[FileEntry] = attrs.field(factory=list)
    tokens: dict[str, float] = attrs.field(factory=dict)
    generation: int = 0
    # Set for tasks created by a submit: their files are listed once every job is Done.
    generated: Generation | None = None
    # Set for tasks added by add_remote: (name, URL) pairs listed exactly as given.
    remote: tuple[tuple[str, str], ...] | None = None


@attrs.frozen
class Listed:
    """One entry of a listing: its position, its name, and its URL token or its remote URL."""

    index: int
    name: str
    token: str
    url: str | None = None


class ServerState:
    """The shared, lock-protected model behind both fake servers."""

    def __init__(
        self, api_key: str, url_ttl: float | None, settings: GenerationSettings, balance: float
    ) -> None:
        self.api_key = api_key
        self.url_ttl = url_ttl
        self.settings = settings
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskState] = {}
        self._balance = balance
        self._by_key: dict[str, str] = {}  # subscription key -> task uuid
        self._outcomes: deque[str] = deque()
        # Faults for any API endpoint (key None) and for one endpoint only.
        self._api_faults: dict[Endpoint | None, deque[Fault]] = {}
        self._requests: list[RecordedRequest] = []
        self._submissions: list[Submission] = []
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

    def add_remote(self, task_uuid: str, files: tuple[tuple[str, str], ...]) -> None:
        """Create a task listing (name, URL) pairs hosted elsewhere; a uuid is used once."""
        with self._lock:
            if task_uuid in self._tasks:
                raise ValueError(f"Task {task_uuid!r} already exists.")
            self._tasks[task_uuid] = TaskState(remote=files)

    def add_file(
        self, task_uuid: str, name: str, source: FileSource, faults: tuple[Fault, ...]
    ) -> None:
        """Append a file to a task (names may repeat)."""
        with self._lock:
            task = self._task(task_uuid)
            if task.remote is not None:
                raise ValueError(f"Task {task_uuid!r} lists remote URLs; it has no files here.")
            _append_file(task, name, source, faults)

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

    # -- generations -------------------------------------------------------------------

    @property
    def balance(self) -> float:
        """The credits left."""
        with self._lock:
            return self._balance

    @balance.setter
    def balance(self, value: float) -> None:
        with self._lock:
            self._balance = value

    def fail_next(self, status: str) -> None:
        """Queue an outcome: the next generation without a prompt marker ends with it."""
        with self._lock:
            self._outcomes.append(status)

    def start_generation(
        self, task_uuid: str, prompt: str | None, files: Mapping[str, FileSource]
    ) -> Ticket | None:
        """Charge a generation and create its task, jobs and result files (None: too poor)."""
        settings = self.settings
        with self._lock:
            if self._balance < settings.cost:
                return None
            self._balance -= settings.cost
            outcome = marked_outcome(prompt)
            if outcome is None:
                outcome = self._outcomes.popleft() if self._outcomes else DONE
            jobs = [Job(str(uuid_module.uuid4())) for _ in range(settings.jobs_per_task)]
            jobs[0].outcome = outcome
            generation = Generation(secrets.token_hex(32), jobs, settings.duration)
            task = TaskState(generated=generation)
            for name, source in files.items():
                _append_file(task, name, source, ())
            self._tasks[task_uuid] = task
            self._by_key[generation.subscription_key] = task_uuid
            return generation.ticket

    def job_statuses(self, subscription_key: str) -> tuple[str, list[tuple[str, str]]] | None:
        """The task uuid and each job's (uuid, status) for a subscription key (None: unknown)."""
        with self._lock:
            task_uuid = self._by_key.get(subscription_key)
            generation = None if task_uuid is None else self._tasks[task_uuid].generated
            if task_uuid is None or generation is None:
                return None
            return task_uuid, generation.statuses()

    def force_status(self, task_uuid: str, status: str | None, job: int | None) -> None:
        """Force one job's status (all jobs' when `job` is None); None resumes the timeline."""
        with self._lock:
            generation = self._task(task_uuid).generated
            if generation is None:
                raise ValueError(f"Task {task_uuid!r} was not submitted, so it has no jobs.")
            if job is not None and not 0 <= job < len(generation.jobs):
                count = len(generation.jobs)
                raise ValueError(f"Task {task_uuid!r} has {count} job(s), not number {job}.")
            for chosen in generation.jobs if job is None else [generation.jobs[job]]:
                chosen.forced = status

    # -- URLs --------------------------------------------------------------------------

    def list_task(self, task_uuid: str) -> list[Listed] | None:
        """Issue a fresh URL token for the task and return its listing (None: unknown).

        A submitted task lists nothing until every job is Done, like the API answers early.
        """
        with self._lock:
            task = self._tasks.get(task_uuid)
            if task is None:
                return None
            if task.generated is not None and not task.generated.ready:
                return []
            if task.remote is not None:
                return [Listed(i, name, "", url) for i, (name, url) in enumerate(task.remote)]
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

    def add_api_faults(self, faults: tuple[Fault, ...], endpoint: Endpoint | None) -> None:
        """Append faults to an API queue (one endpoint's, or any endpoint's when None)."""
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"Unknown endpoint {endpoint!r}; use one of {', '.join(ENDPOINTS)}.")
        for fault in faults:
            if not fault.api_allowed:
                raise ValueError(f"{fault!r} only applies to result files, not to the API.")
        with self._lock:
            self._api_faults.setdefault(endpoint, deque()).extend(faults)

    def pop_fault(self, entry: FileEntry) -> Fault | None:
        """Take the next fault for a file request, if any is queued."""
        with self._lock:
            return entry.faults.popleft() if entry.faults else None

    def pop_api_fault(self, endpoint: Endpoint) -> Fault | None:
        """Take the next fault for a request to `endpoint`: its own queue's first, if any."""
        with self._lock:
            for queue in (self._api_faults.get(endpoint), self._api_faults.get(None)):
                if queue:
                    return queue.popleft()
            return None

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

    def record_submission(self, submission: Submission) -> None:
        """Log a generation form the API received."""
        with self._lock:
            self._submissions.append(submission)

    def submissions(self) -> list[Submission]:
        """A snapshot of the submission log, in arrival order."""
        with self._lock:
            return list(self._submissions)

    def reset_requests(self) -> None:
        """Forget every logged request and submission."""
        with self._lock:
            self._requests.clear()
            self._submissions.clear()
            self._epoch += 1


def _append_file(task: TaskState, name: str, source: FileSource, faults: tuple[Fault, ...]) -> None:
    # Caller holds the lock. Same-named files get different generated bytes.
    occurrence = sum(entry.name == name for entry in task.files)
    content = make_content(name, source, occurrence=occurrence)
    task.files.append(FileEntry(name, content, deque(faults)))

"""A bulk download sharded across worker processes, fed from the parent and reported to it.

One event loop is one core. `open_shards` with N processes runs one shard here, in the
caller's event loop, and starts N-1 workers (`rodin_async._worker`, each ``python -c``
in a session of its own), each running the shard unit of `rodin_async._shard` with its
own event loop and `AsyncRodin`; every shard gets its share of the transfer and API-call
limits. The shard here starts downloading at once, while the workers import (~0.3 s),
and saves a process's start-up CPU.

Uuids go out as shards ask for them: a shard holds at most *window* tasks it was given
and hasn't finished (three per transfer slot: two in flight, one queued), and gets more
as its results come back. A fast shard gets more work, a slow one doesn't hold the
rest back, and a million-uuid input is read as it goes. Every worker's progress events
and results come back to the parent's event loop, where one progress callback (the
CLI's tally, display and summary) sees them all, the shard here's among them.

Leaving `open_shards` tells the workers to stop; they cancel what runs, keeping
``.part`` files, report, and exit (after `STOP_GRACE` seconds they are killed). A worker
that dies (SIGKILL, out of memory) closes its stdout: its unfinished tasks fail with
`WorkerError` and the other shards go on with the rest. A worker whose parent dies sees
its stdin end and stops. The API key travels inside the pickled settings, through the
pipe: never in argv or in a worker's environment.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sized
from pathlib import Path

import anyio
import attrs
from anyio.abc import Process, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._errors import InvalidTaskError, RodinError
from ._files import check_task_uuid, prepare_destination
from ._models import TaskDownload
from ._progress import ProgressCallback, TaskFinished, ignore
from ._shard import ShardSettings, open_shard
from ._worker import READ_SIZE, Batch, End, Fatal, FrameReader, Start, Stop, Tasks, encode

__all__ = [
    "STOP_GRACE",
    "WorkerError",
    "default_processes",
    "open_shards",
    "usable_cores",
]

STOP_GRACE = 5.0  # seconds a worker has to wind down before it is killed
_WINDOW_PER_SLOT = 3  # tasks a worker may hold per transfer slot: 2 in flight, 1 queued
# A worker never uses these; when installed, httpx imports its CLI's (rich, click, pygments)
# and httpcore imports trio. Blocking them takes a third off a worker's start-up CPU.
_WORKER_COMMAND = (
    "import sys; sys.modules.update(dict.fromkeys(('click', 'pygments', 'rich', 'trio'))); "
    "from rodin_async._worker import serve; serve()"
)


# --processes' default: a worker costs ~0.3 CPU s to start (imports) and ~0.35 s before
# its first transfer (the parent downloads meanwhile), so it pays only with enough work:
# on the Rodin mix two processes broke even at 50 tasks and won 5 % at 100 (lost 17 % at
# 20); so 50 tasks per process, and 2 transfers per process at least.
TASKS_PER_PROCESS = 50
SLOTS_PER_PROCESS = 2
_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


def default_processes(tasks: int, concurrency: int) -> int:
    """How many processes a download of *tasks* with *concurrency* transfers should use.

    One per usable core, but at most one per `TASKS_PER_PROCESS` tasks and per
    `SLOTS_PER_PROCESS` transfers, and at least one.
    """
    limits = (usable_cores(), tasks // TASKS_PER_PROCESS, concurrency // SLOTS_PER_PROCESS)
    return max(1, min(limits))


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cpusets), and a
    container's CPU quota (cgroup ``cpu.max``), which the affinity doesn't show."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover  (macOS, Windows)
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def _cgroup_quota() -> float | None:
    """CPUs the cgroup may use (quota ÷ period), or None when unlimited or unknown."""
    try:
        if _CGROUP_V2.exists():
            quota, period = _CGROUP_V2.read_text().split()[:2]
        else:
            quota = (_CGROUP_V1 / "cpu.cfs_quota_us").read_text().strip()
            period = (_CGROUP_V1 / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None


class WorkerError(RodinError):
    """A worker process stopped before it finished its tasks (killed, out of memory)."""


@contextlib.asynccontextmanager
async def open_shards(
    settings: ShardSettings,
    uuids: Iterable[str],
    *,
    processes: int,
    on_progress: ProgressCallback | None = None,
) -> AsyncIterator[AsyncIterator[TaskDownload]]:
    """Download *uuids* in *processes* workers; the block iterates the results.

    One shard runs here, in this event loop, and *processes* - 1 in worker processes;
    each gets its share of *settings*' concurrency limits, and uuids as it asks for them.
    Results come as tasks finish, and every shard's progress events reach *on_progress*
    here, in this loop (`TaskFinished` just before its result). Leaving the block stops
    the shards: they cancel what runs, keeping partial files, and the workers exit.

    A worker that dies fails its unfinished tasks with `WorkerError`; the other shards,
    this one among them, go on with the rest.

    Raises:
        DestinationError: *settings.dest* is not a writable directory.
        RodinError: A worker's shard failed as a whole (its own error, as it raised it).
    """
    processes = min(processes, settings.client.max_concurrency)  # a slot each at least
    if isinstance(uuids, Sized):
        processes = min(processes, len(uuids))
    if processes <= 1:
        async with open_shard(settings, uuids, on_progress) as results:
            yield results
        return
    await prepare_destination(settings.dest)  # fail here, once, before any worker starts
    pool = _Pool(settings, uuids, on_progress or ignore, processes)
    async with anyio.create_task_group() as tg:
        try:
            await pool.spawn()
            await tg.start(pool.supervise)
            yield pool.receive
        finally:
            with anyio.CancelScope(shield=True):
                await pool.stop()
    if pool.failure is not None:
        raise pool.failure


@attrs.define(eq=False)
class _Worker:
    """The parent's view of one worker process."""

    process: Process
    frames: FrameReader
    window: int  # tasks it may hold at once
    given: list[str] = attrs.Factory(list)  # sent to it, no result yet
    ended: bool = False  # told End (or Stop)
    alive: bool = True  # its stdout is still open
    lock: anyio.Lock = attrs.Factory(anyio.Lock)

    async def send(self, message: object) -> None:
        """Send *message*; a worker that has gone is noticed by its reader, not here."""
        stdin = self.process.stdin
        assert stdin is not None  # noqa: S101  (opened with a pipe)
        async with self.lock:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await stdin.send(encode(message))

    def how_it_ended(self) -> str:
        """``killed by SIGKILL``, ``exit status 1``: for messages."""
        code = self.process.returncode
        if code is None:
            return "still running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"


@attrs.define(eq=False)
class _Here:
    """The shard that runs in this process: fed and topped up exactly like a worker."""

    settings: ShardSettings  # its share of the limits
    window: int
    inbox: MemoryObjectSendStream[str]
    uuids: MemoryObjectReceiveStream[str]  # what its download_many reads
    given: list[str] = attrs.Factory(list)
    ended: bool = False
    alive: bool = True
    scope: anyio.CancelScope = attrs.Factory(anyio.CancelScope)

    @classmethod
    def for_share(cls, share: ShardSettings) -> _Here:
        inbox, uuids = anyio.create_memory_object_stream[str](math.inf)  # bounded by the window
        return cls(share, _window(share), inbox, uuids)

    async def send(self, message: object) -> None:
        """Take a worker's message: more tasks, End (finish them) or Stop (cancel them)."""
        if isinstance(message, Tasks):
            for uuid in message.uuids:
                self.inbox.send_nowait(uuid)
        else:  # End or Stop
            self.inbox.close()
            if isinstance(message, Stop):
                self.scope.cancel()


class _Input:
    """The uuids to hand out, read one ahead so that the end is known when it comes."""

    _END = object()

    def __init__(self, uuids: Iterable[str]) -> None:
        self._iterator: Iterator[str] = iter(uuids)
        self._next: object = next(self._iterator, self._END)

    @property
    def exhausted(self) -> bool:
        """Whether every uuid has been taken."""
        return self._next is self._END

    def take(self) -> str:
        """The next uuid (call only when not `exhausted`)."""
        value, self._next = self._next, next(self._iterator, self._END)
        assert isinstance(value, str)  # noqa: S101
        return value


class _Pool:
    """The shards of one run: spawning the workers, feeding every shard, running the one
    here, reading the workers' reports, stopping them all."""

    def __init__(
        self,
        settings: ShardSettings,
        uuids: Iterable[str],
        on_progress: ProgressCallback,
        processes: int,
    ) -> None:
        self.settings = settings
        self.input = _Input(uuids)
        self.emit = on_progress
        self.processes = processes
        self.here = _Here.for_share(self._share(0))
        self.workers: list[_Worker] = []
        self.send: MemoryObjectSendStream[TaskDownload]
        self.receive: MemoryObjectReceiveStream[TaskDownload]
        self.send, self.receive = anyio.create_memory_object_stream[TaskDownload](64)
        self.failure: RodinError | None = None
        self.stopping = False
        self.supervising = False
        self.done = anyio.Event()  # the shard here and every worker's stdout have ended

    @property
    def shards(self) -> list[_Here | _Worker]:
        """Every shard: the one here first, then the workers."""
        return [self.here, *self.workers]

    def _share(self, index: int) -> ShardSettings:
        client = self.settings.client.share(index, self.processes)
        return attrs.evolve(self.settings, client=client)

    async def spawn(self) -> None:
        """Start a worker per process but this one; hand each its share of the limits."""
        environment = {k: v for k, v in os.environ.items() if k != "RODIN_API_KEY"}
        for index in range(1, self.processes):
            share = self._share(index)
            process = await anyio.open_process(
                [sys.executable, "-c", _WORKER_COMMAND],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,  # a worker's own trouble (a traceback) shows on ours
                env=environment,
                start_new_session=True,  # a terminal's Ctrl-C goes to the parent alone
            )
            worker = _Worker(process, FrameReader(_receiver(process)), _window(share))
            self.workers.append(worker)
            await worker.send(Start(share))

    async def supervise(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Feed every shard, run the one here and read the workers' reports until all end."""
        self.supervising = True
        task_status.started()
        try:
            with anyio.CancelScope(shield=True), self.send:  # only `stop` ends the shards
                await self._prime()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._run_here)
                    for worker in self.workers:
                        tg.start_soon(self._read, worker)
        finally:
            self.done.set()

    async def _run_here(self) -> None:
        here = self.here
        try:
            with here.scope, here.uuids:
                async with open_shard(here.settings, here.uuids, self.emit) as results:
                    async for result in results:
                        _settle(here, result)
                        await self._deliver(result, announced=True)
                        await self._feed(here)
        except RodinError as exc:  # the shard as a whole failed, as a worker's Fatal
            if self.failure is None:
                self.failure = exc
            await self._stop_shards()
        finally:
            here.alive = False

    async def _read(self, worker: _Worker) -> None:
        while (message := await worker.frames.next()) is not None:
            if isinstance(message, Batch):
                for event in message.events:
                    self.emit(event)
                for result in message.results:
                    _settle(worker, result)
                    await self._deliver(result)
                await self._feed(worker)
            elif isinstance(message, Fatal) and self.failure is None:
                self.failure = message.error  # raised once every worker has stopped
                await self._stop_shards()
        await self._ended(worker)

    async def _prime(self) -> None:
        """Deal the first tasks round-robin, so a short list still reaches every shard."""
        shards = self.shards
        dealt: dict[int, list[str]] = {id(w): [] for w in shards}
        while True:
            taken = [await self._take(w, dealt[id(w)], limit=1) for w in shards]
            if not any(taken):
                break
        for shard in shards:
            await self._give(shard, dealt[id(shard)])
        await self._end_if_exhausted()

    async def _feed(self, worker: _Here | _Worker) -> None:
        """Top the shard's tasks up to its window."""
        uuids: list[str] = []
        await self._take(worker, uuids)
        await self._give(worker, uuids)
        await self._end_if_exhausted()

    async def _take(
        self, worker: _Here | _Worker, uuids: list[str], limit: int | None = None
    ) -> int:
        """Add to *uuids* what *worker* has room for (at most *limit*); return how many."""
        taken = 0
        while not self.stopping and not self.input.exhausted and worker.alive:
            if len(worker.given) + len(uuids) >= worker.window or taken == limit:
                break
            raw = self.input.take()
            try:
                uuids.append(check_task_uuid(raw))
            except InvalidTaskError as exc:  # no worker needed to say so
                await self._deliver(TaskDownload(raw, self.settings.dest, error=exc))
                continue
            taken += 1
        return taken

    async def _give(self, worker: _Here | _Worker, uuids: list[str]) -> None:
        if uuids:
            worker.given += uuids
            await worker.send(Tasks(tuple(uuids)))

    async def _end_if_exhausted(self) -> None:
        """Once the input has run out, tell every shard: it finishes, then ends."""
        if self.input.exhausted:
            for other in self.shards:
                if not other.ended:
                    other.ended = True
                    await other.send(End())

    async def _deliver(self, result: TaskDownload, *, announced: bool = False) -> None:
        """Hand *result* to the consumer, after its `TaskFinished` event (unless *announced*:
        the shard here emitted it already)."""
        if self.stopping:
            return  # nobody reads results any more; the events still count
        if not announced:
            self.emit(TaskFinished(result))
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self.send.send(result)

    async def _ended(self, worker: _Worker) -> None:
        """The worker's stdout ended: wait for it, and fail the tasks it didn't finish."""
        worker.alive = False
        with anyio.move_on_after(STOP_GRACE):
            await worker.process.wait()
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()
        lost, worker.given = worker.given, []
        for uuid in lost:
            error = WorkerError(
                f"the worker process downloading it stopped ({worker.how_it_ended()}); "
                "its partial files were kept and resume when you run the download again"
            )
            await self._deliver(TaskDownload(uuid, self.settings.dest / uuid, error=error))
        # The rest of the input goes to the shards still running; the one here runs until
        # the input ends, so there always is one.

    async def _stop_shards(self) -> None:
        """Tell every live shard to stop; from now on results are dropped."""
        self.stopping = True
        for worker in self.shards:
            if worker.alive:
                worker.ended = True
                await worker.send(Stop())

    async def stop(self) -> None:
        """Tell every worker to stop, let them report, and kill what lingers."""
        self.receive.close()
        if not self.supervising:  # spawning failed: nobody reads the workers
            self.done.set()
        with anyio.move_on_after(STOP_GRACE):
            await self._stop_shards()
            await self.done.wait()
        for worker in self.workers:
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
        with anyio.move_on_after(STOP_GRACE):
            await self.done.wait()
            for worker in self.workers:
                await worker.process.aclose()


def _settle(shard: _Here | _Worker, result: TaskDownload) -> None:
    """*result* came back: the shard no longer holds its task."""
    if result.task_uuid in shard.given:
        shard.given.remove(result.task_uuid)


def _window(share: ShardSettings) -> int:
    return _WINDOW_PER_SLOT * share.client.max_concurrency


def _receiver(process: Process) -> Callable[[], Awaitable[bytes]]:
    stdout = process.stdout
    assert stdout is not None  # noqa: S101  (opened with a pipe)

    async def receive() -> bytes:
        try:
            return await stdout.receive(READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return b""

    return receive

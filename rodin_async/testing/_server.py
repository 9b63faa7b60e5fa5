"""`FakeRodin`: a fake Rodin API and result-file host on loopback, for tests.

The API serves the whole workflow: submit (`/rodin`, `/rodin_texture_only`), poll
(`/status`), list results (`/download`) and `/check_balance`. Submitted tasks move through
their statuses with the clock and get small valid result files when Done.

Two uvicorn servers (API and files, on two ports, so two origins) share one event loop in a
daemon thread. Tests talk to them over real sockets, configure them from their own thread,
and read back every request they received.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
import threading
import uuid as uuid_module
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import anyio.to_thread
import uvicorn
from starlette.types import ASGIApp

from ._apps import Context, build_api_app, build_files_app
from ._content import FileSource
from ._faults import Fault
from ._state import Endpoint, GenerationSettings, Origin, RecordedRequest, ServerState, Submission
from ._wire import Hub

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# Bounded waits: a fake that cannot start or stop should fail the test, not hang it.
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
# After a stop is asked, responses get this long to notice before connections are dropped.
_ABORT_AFTER = 0.3


class FakeRodin:
    """A fake Rodin API plus result-file host, served on 127.0.0.1 from a background thread.

    Use it as a context manager (`with` or `async with`) or call `start()` and `stop()`.
    `async with` runs the blocking start and stop in a worker thread, so the test's event
    loop keeps running meanwhile.

    Submitted generations: each job is `Waiting` for the first third of `generation_time`,
    `Generating` for the rest, then `Done`, and the task then lists its result files (a
    valid one-triangle `.glb` or another `geometry_file_format`, one per `material`, and
    `preview.webp`). A job can end otherwise: `fail_next_generation()`, a prompt containing
    `fake-status:<Status>` (e.g. `"a chair fake-status:Failed"`), or `set_job_status()` at
    any moment, with any status string, known to the API or not (e.g. `"Paused"`).

    Example:
        with FakeRodin(api_key="test-key") as server:
            task = server.add_task({"base.glb": b"glTF", "preview.webp": 1024})
            ...  # point the client at server.base_url with api key server.api_key
            assert server.content(task, "preview.webp") == (tmp_path / "preview.webp").read_bytes()
    """

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        host: str = "127.0.0.1",
        api_port: int = 0,
        files_port: int = 0,
        url_ttl: float | None = None,
        balance: float = 100.0,
        generation_cost: float = 0.5,
        generation_time: float = 0.3,
        jobs_per_task: int = 1,
    ) -> None:
        """Configure the fake; nothing listens until `start()`.

        Args:
            api_key: The only key the API accepts (as `Authorization: Bearer <key>`).
            host: An IPv4 loopback address (127.0.0.0/8); the fake never listens elsewhere.
            api_port: The API port; 0 picks a free one.
            files_port: The file host port; 0 picks a free one.
            url_ttl: Seconds a listed file URL stays valid; None means until expired by
                `expire_urls()` or an `expire` fault.
            balance: The credits `/check_balance` starts with.
            generation_cost: What each accepted submit takes from the balance.
            generation_time: Seconds from submit until a task's jobs end (0: at once).
            jobs_per_task: How many jobs each submitted task has.

        Raises:
            ValueError: `host` is not an address in 127.0.0.0/8, `url_ttl` is not positive,
                `generation_cost` or `generation_time` is negative, or `jobs_per_task` < 1.
        """
        if url_ttl is not None and url_ttl <= 0:
            raise ValueError(f"url_ttl must be positive seconds or None, got {url_ttl}.")
        self._host = _loopback_host(host)
        self._ports: dict[Origin, int] = {"api": api_port, "files": files_port}
        settings = _generation_settings(generation_cost, generation_time, jobs_per_task)
        self._state = ServerState(api_key, url_ttl, settings, balance)
        self._runner: _Runner | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never the API key: reprs end up in logs and assertion messages.
        where = f"{self.base_url}, files {self.files_url}" if self._runner else "stopped"
        return f"<FakeRodin {where}>"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Bind both ports and serve; return once both accept connections.

        Raises:
            RuntimeError: Already started, or the servers did not come up in time.
            OSError: A port could not be bound.
        """
        with self._lock:
            if self._runner is not None:
                raise RuntimeError("This FakeRodin is already running.")
            sockets = {origin: _bind(self._host, port) for origin, port in self._ports.items()}
            runner = _Runner(self._state, sockets, self._host)
            runner.start()
            self._runner = runner

    def stop(self) -> None:
        """Stop both servers, dropping connections still in flight (returns in about 0.5 s).

        Stopping a fake that is not running does nothing.
        """
        with self._lock:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    # -- where it listens ------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The key the API accepts."""
        return self._state.api_key

    @property
    def base_url(self) -> str:
        """The API base URL, like `http://127.0.0.1:<port>/api/v2` (needs a running fake)."""
        return f"{self._running().url('api')}/api/v2"

    @property
    def files_url(self) -> str:
        """The file host origin, like `http://127.0.0.1:<port>` (needs a running fake)."""
        return self._running().url("files")

    def _running(self) -> _Runner:
        if self._runner is None:
            raise RuntimeError("The FakeRodin is not running; call start() or use `with`.")
        return self._runner

    # -- tasks and files -------------------------------------------------------------------

    def add_task(
        self, files: Mapping[str, FileSource] | None = None, uuid: str | None = None
    ) -> str:
        """Add a finished task with its result files, listed in the mapping's order.

        Args:
            files: File name to its bytes, its size (content generated from the name), or a
                path to serve from disk.
            uuid: The task uuid; a random uuid4 when None.

        Returns:
            The task uuid, to pass as `task_uuid`.

        Raises:
            ValueError: The uuid is already used, or is empty or contains "/".
        """
        task_uuid = _new_task_uuid(uuid)
        self._state.add_task(task_uuid)
        for name, source in (files or {}).items():
            self.add_file(task_uuid, name, source)
        return task_uuid

    def add_remote_task(
        self, files: Mapping[str, str] | Iterable[tuple[str, str]], uuid: str | None = None
    ) -> str:
        """Add a finished task whose files live on another host: `/download` lists them as given.

        For testing against real file servers (a static server, an object store): the
        names and URLs are listed verbatim, in order, even when malformed, so a test can
        also hand a client a hostile listing. The fake never serves, checks or expires
        these URLs; `content()`, `add_file()` and `add_faults()` don't apply to the task.

        Args:
            files: File name to URL, or (name, URL) pairs (names may then repeat).
            uuid: The task uuid; a random uuid4 when None.

        Returns:
            The task uuid.

        Raises:
            ValueError: The uuid is already used, or is empty or contains "/".
        """
        task_uuid = _new_task_uuid(uuid)
        pairs = files.items() if isinstance(files, Mapping) else files
        self._state.add_remote(task_uuid, tuple((str(n), str(u)) for n, u in pairs))
        return task_uuid

    def add_file(
        self, task_uuid: str, name: str, content: FileSource, *, faults: Iterable[Fault] = ()
    ) -> None:
        """Append a result file to a task; a name may repeat (each entry gets its own URL).

        Raises:
            KeyError: There is no such task.
            ValueError: The task was added by `add_remote_task`.
        """
        self._state.add_file(task_uuid, name, content, tuple(faults))

    def add_directory(self, root: str | os.PathLike[str]) -> list[str]:
        """Add one task per sub-directory of `root`, named after it, serving its files.

        Files are read from disk when requested; only regular files directly inside each
        sub-directory are served, in name order.

        Returns:
            The task uuids added, in name order.
        """
        added = []
        for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
            files = {f.name: f for f in sorted(folder.iterdir()) if f.is_file()}
            added.append(self.add_task(files, uuid=folder.name))
        return added

    def content(self, task_uuid: str, name: str, *, index: int = 0) -> bytes:
        """The exact bytes a correct download of the file produces.

        Args:
            task_uuid: The task.
            name: The file name.
            index: Which of the files called `name` (0 is the first listed).
        """
        return self._state.find(task_uuid, name, index).content.materialise()

    def sha256(self, task_uuid: str, name: str, *, index: int = 0) -> str:
        """The hex SHA-256 of the file, computed without holding it in memory."""
        return self._state.find(task_uuid, name, index).content.sha256

    def size(self, task_uuid: str, name: str, *, index: int = 0) -> int:
        """The file's size in bytes."""
        return self._state.find(task_uuid, name, index).content.size

    def expire_urls(self, task_uuid: str) -> None:
        """Make every URL listed so far for the task answer 403 until the task is listed again."""
        self._state.expire(task_uuid)

    # -- generations -----------------------------------------------------------------------

    @property
    def balance(self) -> float:
        """The credits left, as `/check_balance` answers; assign to change them."""
        return self._state.balance

    @balance.setter
    def balance(self, value: float) -> None:
        self._state.balance = value

    def fail_next_generation(self, status: str = "Failed") -> None:
        """Make the first job of the next submitted task end with `status` instead of Done.

        Calls queue up: each accepted submit (whose prompt has no `fake-status:` marker)
        takes the next. The task's other jobs still end Done.

        Args:
            status: Any status string: `"Failed"`, `"Canceled"`, or one the API never
                documented (such as `"Paused"`), to test that clients survive it.
        """
        self._state.fail_next(status)

    def set_job_status(self, task_uuid: str, status: str | None, *, job: int | None = None) -> None:
        """Force the status `/status` reports for a submitted task's jobs, from now on.

        Forcing `"Done"` on every job lists the task's result files at once.

        Args:
            task_uuid: A task created by a submit.
            status: Any status string; None returns the jobs to their timeline.
            job: Which job (0 is the first); all of them when None.

        Raises:
            KeyError: There is no such task.
            ValueError: The task was not submitted (it has no jobs), or has no job `job`.
        """
        self._state.force_status(task_uuid, status, job)

    # -- faults ------------------------------------------------------------------------------

    def add_faults(self, task_uuid: str, name: str, *faults: Fault, index: int = 0) -> None:
        """Queue faults for a file: each request for it (valid URL) consumes the next one.

        A request whose URL is unknown or expired gets 404 or 403 and consumes nothing.
        """
        self._state.add_faults(self._state.find(task_uuid, name, index), faults)

    def add_api_faults(self, *faults: Fault, endpoint: Endpoint | None = None) -> None:
        """Queue faults for the API: each API request consumes the next one.

        Args:
            faults: The faults, consumed in order.
            endpoint: Only requests to this endpoint (`"status"`, `"download"`, `"rodin"`,
                `"rodin_texture_only"`, `"check_balance"`) consume them; None means any
                endpoint. A request takes from its endpoint's queue first, then from the
                shared one.

        Raises:
            ValueError: A fault only makes sense for files (redirect, ranges, expire), or
                the endpoint is unknown.
        """
        self._state.add_api_faults(faults, endpoint)

    # -- what was received -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request both servers received, in arrival order (a snapshot)."""
        return self._state.requests()

    def file_requests(
        self, task_uuid: str | None = None, name: str | None = None
    ) -> list[RecordedRequest]:
        """The file host's requests, optionally only those for one task and/or file name."""
        return [
            r
            for r in self.requests
            if r.origin == "files"
            and task_uuid in (None, r.task_uuid)
            and name in (None, r.file_name)
        ]

    def api_requests(self, endpoint: Endpoint | None = None) -> list[RecordedRequest]:
        """The API's requests, optionally only those to one endpoint (e.g. `"status"`)."""
        path = None if endpoint is None else f"/api/v2/{endpoint}"
        return [r for r in self.requests if r.origin == "api" and path in (None, r.path)]

    @property
    def submissions(self) -> list[Submission]:
        """Every generation form the API received past authentication, in order (a snapshot)."""
        return self._state.submissions()

    def reset_requests(self) -> None:
        """Forget every request and submission received so far."""
        self._state.reset_requests()


def _generation_settings(cost: float, duration: float, jobs_per_task: int) -> GenerationSettings:
    if cost < 0 or duration < 0:
        raise ValueError(
            f"generation_cost and generation_time cannot be negative, got {cost} and {duration}."
        )
    if jobs_per_task < 1:
        raise ValueError(f"jobs_per_task must be at least 1, got {jobs_per_task}.")
    return GenerationSettings(cost, duration, jobs_per_task)


def _loopback_host(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or address not in _LOOPBACK:
        raise ValueError(f"FakeRodin only listens on 127.0.0.0/8, not on {host!r}.")
    return str(address)


def _new_task_uuid(uuid: str | None) -> str:
    task_uuid = str(uuid_module.uuid4()) if uuid is None else uuid
    if not task_uuid or "/" in task_uuid:
        raise ValueError(f"A task uuid must be non-empty without '/', got {task_uuid!r}.")
    return task_uuid


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _Runner:
    """Both uvicorn servers on one event loop in a daemon thread."""

    def __init__(self, state: ServerState, sockets: dict[Origin, socket.socket], host: str) -> None:
        self._sockets = sockets
        self._ports = {origin: sock.getsockname()[1] for origin, sock in sockets.items()}
        self._host = host
        self._hub = Hub()
        ctx = Context(state, self._hub, self.url("files"))
        self._apps: dict[Origin, ASGIApp] = {
            "api": build_api_app(ctx),
            "files": build_files_app(ctx),
        }
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[uvicorn.Server] = []
        self._thread = threading.Thread(target=self._main, name="FakeRodin", daemon=True)

    def url(self, origin: Origin) -> str:
        """The origin of one server."""
        return f"http://{self._host}:{self._ports[origin]}"

    def start(self) -> None:
        """Run the thread and wait until both servers accept connections."""
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT) or self._error is not None:
            self.stop()
            raise RuntimeError("The FakeRodin servers did not start.") from self._error

    def stop(self) -> None:
        """Ask both servers to exit and wait for the thread."""
        loop = self._loop
        if loop is not None:
            # RuntimeError: the loop already finished (startup failed).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._begin_exit)
        self._thread.join(_STOP_TIMEOUT)
        for sock in self._sockets.values():
            sock.close()  # uvicorn closes them too; this covers a failed start
        if self._thread.is_alive():
            raise RuntimeError("The FakeRodin servers did not stop in time.")

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(), rather than lost in the thread
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._servers = [uvicorn.Server(_config(app)) for app in self._apps.values()]
        self._hub.servers = self._servers
        sockets = list(self._sockets.values())
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, sockets, strict=True)
        ]
        while not all(server.started for server in self._servers):
            if any(task.done() for task in tasks):
                break  # gather() below raises the failure
            await asyncio.sleep(0.005)
        else:
            self._ready.set()
        await asyncio.gather(*tasks)

    def _begin_exit(self) -> None:
        # Runs on the servers' loop. Responses in a fault's wait see `stopping` and hang up;
        # whatever is still open shortly after is aborted so uvicorn's shutdown, which
        # waits for connections, finishes promptly.
        self._hub.stopping.set()
        for server in self._servers:
            server.should_exit = True
        asyncio.get_running_loop().call_later(_ABORT_AFTER, self._hub.abort_all)


def _config(app: ASGIApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="h11",  # the faults rely on h11's framing (see _wire.py)
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,  # leave the host application's logging alone
        access_log=False,
        proxy_headers=False,  # keep scope["client"] the real peer: _wire looks it up
        timeout_graceful_shutdown=2,
    )

"""`AsyncRodin`: the client users hold. It talks to the API and delegates downloads."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Collection,
    Generator,
    Iterable,
)
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx
from anyio.abc import TaskGroup

from ._bulk import run_many
from ._download import Downloader
from ._errors import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    InvalidTaskError,
    RateLimitError,
    RodinError,
    translate_http_errors,
)
from ._files import check_task_uuid, prepare_destination
from ._models import Envelope, FileList, ResultFile, TaskDownload, parse_json, structure
from ._progress import ProgressCallback, TaskFinished, ignore
from ._retry import RetryPolicy, parse_retry_after

DEFAULT_BASE_URL = "https://hyperhuman.deemos.com/api/v2"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_AUTH_CODES = frozenset({"UNAUTHORIZED", "INVALID_API_KEY", "FORBIDDEN"})

E = TypeVar("E", bound=Envelope)


class _BearerAuth(httpx.Auth):
    """Send the key to the API's own origin, and to nothing else, whatever happens."""

    def __init__(self, api_key: str, origin: httpx.URL) -> None:
        self._header = f"Bearer {api_key}"
        self._origin = _origin(origin)

    def __repr__(self) -> str:
        return "<_BearerAuth ***>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if _origin(request.url) == self._origin:
            request.headers["Authorization"] = self._header
        yield request


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


class AsyncRodin:
    """An asyncio client for the Hyper3D Rodin API, built to fetch many results at once.

    Use it as ``async with AsyncRodin() as rodin:``; that is required for
    `download_many`, and closes the connections when done.

    Args:
        api_key: Your Rodin API key. Defaults to the ``RODIN_API_KEY`` environment variable.
        base_url: The API root. Defaults to ``RODIN_BASE_URL``, then
            ``https://hyperhuman.deemos.com/api/v2``.
        max_concurrency: How many files may be transferring at once, across all tasks.
        max_api_concurrency: How many API calls may be in flight at once.
        timeout: httpx timeouts; a transfer that receives nothing for the read timeout
            is a failed attempt.
        retry: When and how often to retry failed calls and transfers.
        transport: An httpx transport for both the API and the file hosts (proxies,
            custom TLS, or tests).

    Raises:
        ConfigurationError: No API key, a malformed base URL, or a concurrency below 1.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        max_concurrency: int = 8,
        max_api_concurrency: int = 4,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = _resolve_key(api_key)
        self._base_url = _resolve_base_url(base_url)
        _check_positive(max_concurrency=max_concurrency, max_api_concurrency=max_api_concurrency)
        self._max_concurrency = max_concurrency
        self._retry = retry or RetryPolicy()
        self._api_limiter = anyio.CapacityLimiter(max_api_concurrency)
        self._api = httpx.AsyncClient(
            base_url=self._base_url,
            auth=_BearerAuth(key, self._base_url),
            headers={"User-Agent": _user_agent()},
            timeout=timeout,
            transport=transport,
        )
        self._downloader = Downloader(
            client=_files_client(timeout, transport, max_concurrency),
            limiter=anyio.CapacityLimiter(max_concurrency),
            retry=self._retry,
        )
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None
        self._task_locks: dict[str, tuple[anyio.Lock, int]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<AsyncRodin base_url={str(self._base_url)!r} max_concurrency={self._max_concurrency}>"
        )

    @property
    def base_url(self) -> str:
        """The API root every endpoint is joined to."""
        return str(self._base_url)

    @property
    def max_concurrency(self) -> int:
        """How many files may transfer at once across the whole client."""
        return self._max_concurrency

    async def __aenter__(self) -> AsyncRodin:
        self._ensure_open()
        if self._exit_stack is not None:
            raise ClientClosedError("this AsyncRodin is already open; enter it only once")
        stack = contextlib.AsyncExitStack()
        self._task_group = await stack.enter_async_context(anyio.create_task_group())
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit_stack = self._exit_stack, None
        try:
            if stack is not None and self._task_group is not None:
                # Closing the client ends any bulk download still running in it.
                self._task_group.cancel_scope.cancel()
                await stack.__aexit__(exc_type, exc, tb)
        finally:
            self._task_group = None
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connections. The client can't be used afterwards."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._api.aclose()
            await self._downloader.client.aclose()

    async def list_files(self, task_uuid: str) -> list[ResultFile]:
        """List the result files of a finished task (``POST /download``).

        The URLs expire about 10 minutes after listing.

        Raises:
            InvalidTaskError: *task_uuid* is blank or malformed.
            AuthenticationError: The API key was rejected.
            APIError: The API refused (its ``error`` code is on the exception).
            TransportError: The API could not be reached, even after retries.
        """
        uuid = check_task_uuid(task_uuid)
        listing = await self._call("POST", "download", FileList, json={"task_uuid": uuid})
        return listing.files

    async def download(
        self,
        task_uuid: str,
        dest: str | os.PathLike[str],
        *,
        on_progress: ProgressCallback | None = None,
    ) -> TaskDownload:
        """Download every result file of a task into ``dest/<task_uuid>/``.

        Files transfer in parallel (bounded by ``max_concurrency``), each written to a
        ``.part`` file and renamed when complete. Failed files are retried and resumed;
        the other files of the task always finish. *on_progress*, if given, receives
        typed progress events (see `ProgressEvent`), at most once per chunk.

        Raises:
            InvalidTaskError: *task_uuid* is blank or malformed.
            DestinationError: *dest* is not a writable directory.
            TaskDownloadError: Some files failed; the exception lists each one.
            APIError: Listing the task failed (``AuthenticationError`` for a bad key).
        """
        self._ensure_open()
        uuid = check_task_uuid(task_uuid)
        directory = await prepare_destination(dest)
        result = await self._download_one(uuid, directory, on_progress or ignore)
        if result.error is not None:
            raise result.error
        return result

    def download_many(
        self,
        task_uuids: Iterable[str] | AsyncIterable[str],
        dest: str | os.PathLike[str],
        *,
        on_progress: ProgressCallback | None = None,
    ) -> AsyncGenerator[TaskDownload, None]:
        """Download many tasks, yielding each `TaskDownload` as soon as it finishes.

        *task_uuids* may be any iterable or async iterable and is consumed lazily, so a
        pipeline can feed uuids while results stream out. A failed task yields a result
        with ``error`` set; it never stops the others. Leaving the loop early cancels
        the outstanding work (use ``contextlib.aclosing`` to have that happen at once).
        *on_progress* receives typed progress events for every task.

        Raises:
            ClientClosedError: The client is closed or was not opened with ``async with``.
            InvalidTaskError: A collection of uuids holds a blank one (checked up front).
            DestinationError: *dest* is not a writable directory (on first iteration).
        """
        self._ensure_open()
        if self._task_group is None:
            raise ClientClosedError(
                "download_many needs the client opened with `async with AsyncRodin(...) as rodin`"
            )
        if isinstance(task_uuids, Collection) and not isinstance(task_uuids, str):
            for uuid in task_uuids:  # a list can be checked before any work starts
                check_task_uuid(uuid)
        if isinstance(task_uuids, str):
            raise InvalidTaskError(
                "download_many takes an iterable of task uuids, not one string; "
                "use download() for a single task"
            )
        return self._iterate_many(self._task_group, task_uuids, dest, on_progress or ignore)

    async def _iterate_many(
        self,
        host: TaskGroup,
        task_uuids: Iterable[str] | AsyncIterable[str],
        dest: str | os.PathLike[str],
        emit: ProgressCallback,
    ) -> AsyncGenerator[TaskDownload, None]:
        directory = await prepare_destination(dest)

        async def run_one(task_uuid: str) -> TaskDownload:
            try:
                uuid = check_task_uuid(task_uuid)
            except RodinError as exc:
                result = TaskDownload(str(task_uuid), directory, error=exc)
                emit(TaskFinished(result))
                return result
            return await self._download_one(uuid, directory, emit)

        # Twice the transfer slots: listing the next tasks overlaps the current transfers.
        results = run_many(host, task_uuids, run_one, max_tasks=2 * self._max_concurrency)
        async with contextlib.aclosing(results):
            async for result in results:
                yield result

    async def _download_one(
        self, uuid: str, directory: Path, emit: ProgressCallback
    ) -> TaskDownload:
        async with self._task_lock(uuid):
            return await self._downloader.download_task(uuid, directory, self.list_files, emit)

    @contextlib.asynccontextmanager
    async def _task_lock(self, uuid: str) -> AsyncIterator[None]:
        """Serialise work on one task folder: two writers would share its part files."""
        lock, users = self._task_locks.get(uuid, (anyio.Lock(), 0))
        self._task_locks[uuid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._task_locks[uuid]
            if users == 1:
                del self._task_locks[uuid]
            else:
                self._task_locks[uuid] = (lock, users - 1)

    async def _call(self, method: str, path: str, cls: type[E], *, json: Any = None) -> E:
        """Call the API with retries for throttling and transient failures."""
        self._ensure_open()
        async with self._api_limiter:
            async for attempt in self._retry.retrying():
                with attempt:
                    with translate_http_errors(f"{method} /{path}"):
                        response = await self._api.request(method, path, json=json)
                    return _decode(response, cls)
        raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover

    def _ensure_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this AsyncRodin has been closed; create a new one")


def _decode(response: httpx.Response, cls: type[E]) -> E:
    """Turn an API answer into *cls*, or raise the matching `APIError`."""
    status = response.status_code
    if not response.is_success:
        raise _error_for_status(response)
    raw = parse_json(response.content, status_code=status)
    # The envelope first: an error answer lacks the fields a success must have.
    envelope = structure(raw, Envelope, status_code=status)
    if envelope.failed:
        code = envelope.error or ""
        error_cls = AuthenticationError if code in _AUTH_CODES else APIError
        raise error_cls(
            envelope.message or "the API refused the request", code=code, status_code=status
        )
    return structure(raw, cls, status_code=status)


def _error_for_status(response: httpx.Response) -> APIError:
    status = response.status_code
    code, message = _error_details(response)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status in (401, 403):
        return AuthenticationError(
            f"{message or 'the API key was rejected'}; check RODIN_API_KEY",
            code=code,
            status_code=status,
        )
    error_cls = RateLimitError if status == 429 else APIError
    return error_cls(
        message or f"the API answered HTTP {status}",
        code=code,
        status_code=status,
        retry_after=retry_after,
    )


def _error_details(response: httpx.Response) -> tuple[str | None, str | None]:
    """The ``error`` code and ``message`` of an error body, when it has them."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code, message = body.get("error"), body.get("message")
    return (code if isinstance(code, str) else None, message if isinstance(message, str) else None)


def _resolve_key(api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get("RODIN_API_KEY", "")
    key = key.strip()
    if not key:
        raise ConfigurationError(
            "no Rodin API key: pass api_key=... or set the RODIN_API_KEY environment variable"
        )
    return key


def _resolve_base_url(base_url: str | None) -> httpx.URL:
    raw = base_url or os.environ.get("RODIN_BASE_URL") or DEFAULT_BASE_URL
    try:
        url = httpx.URL(raw.rstrip("/") + "/")
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"invalid base URL {raw!r}: {exc}") from exc
    if url.scheme not in ("http", "https") or url.host == "":
        raise ConfigurationError(f"the base URL must be an http(s) URL, got {raw!r}")
    return url


def _check_positive(**values: object) -> None:
    for name, value in values.items():  # typed object: callers may not run a type checker
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"{name} must be a whole number of at least 1, got {value!r}")


def _files_client(
    timeout: httpx.Timeout | float, transport: httpx.AsyncBaseTransport | None, slots: int
) -> httpx.AsyncClient:
    # No auth, ever: file URLs are presigned and live on other hosts. Redirects are
    # followed, and there is no key that a redirect could carry away.
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=True,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=2 * slots),
        headers={"User-Agent": _user_agent()},
        transport=transport,
    )


def _user_agent() -> str:
    try:
        return f"rodin-async/{importlib.metadata.version('rodin-async')}"
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "rodin-async"

"""`AsyncRodin`: the client users hold. It talks to the API and delegates downloads."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Generator,
    Iterable,
    Sequence,
)
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import attrs
import httpx
import sniffio
from anyio.abc import TaskGroup

from ._bulk import run_many
from ._download import Downloader
from ._errors import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    InvalidTaskError,
    JobFailedError,
    RateLimitError,
    RodinError,
    WaitTimeoutError,
    translate_http_errors,
)
from ._files import check_task_uuid, prepare_destination
from ._generation import (
    ConditionMode,
    FileInput,
    GenerationRequest,
    GeometryFormat,
    GeometryInstructMode,
    Material,
    MeshMode,
    Quality,
    TextureMaterial,
    TextureRequest,
    TextureResolution,
    Tier,
)
from ._http import FileHosts, PooledClient, ProxyTypes, VerifyTypes, check_proxy, ssl_context
from ._manifest import FileCheck, check_file_check
from ._models import (
    BalanceAnswer,
    Envelope,
    FileList,
    GenerationJob,
    JobStatus,
    ResultFile,
    StatusAnswer,
    SubmitAnswer,
    TaskDownload,
    TaskStatus,
    parse_json,
    structure,
)
from ._progress import (
    CallbackError,
    ProgressCallback,
    TaskFinished,
    callback_error,
    checked_callback,
)
from ._retry import RetryPolicy, parse_retry_after, safe_to_resend
from ._version import __version__

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

logger = logging.getLogger("rodin_async")
DEFAULT_BASE_URL = "https://hyperhuman.deemos.com/api/v2"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_AUTH_CODES = frozenset({"UNAUTHORIZED", "INVALID_API_KEY", "FORBIDDEN"})
_USER_AGENT = f"rodin-async/{__version__}"
_API_READ_SIZE = 64 << 10  # an answer is a few KiB; a file host gets 1 MiB per connection

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
        transport: An httpx transport for both the API and the file hosts (for tests,
            e.g. ``httpx.MockTransport``). It replaces proxies, as in httpx.
        proxy: A proxy for the API and the file hosts (``http://``, ``https://`` or
            ``socks5://`` URL, or an ``httpx.Proxy``). Without it, ``HTTP_PROXY``,
            ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` apply, exactly as in httpx.
        verify: TLS verification, as httpx's ``verify``: True (certifi's CAs, or
            ``SSL_CERT_FILE``/``SSL_CERT_DIR``), a CA bundle path to trust instead, an
            ``ssl.SSLContext`` (e.g. the system store plus a private CA), or False.
        trust_env: Read proxies and ``SSL_CERT_FILE``/``SSL_CERT_DIR`` from the
            environment.

    Raises:
        ConfigurationError: No API key, a malformed base URL or proxy, an unreadable CA
            bundle, or a concurrency below 1.
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
        proxy: ProxyTypes | None = None,
        verify: VerifyTypes = True,
        trust_env: bool = True,
    ) -> None:
        key = _resolve_key(api_key)
        self._base_url = _resolve_base_url(base_url)
        _check_positive(max_concurrency=max_concurrency, max_api_concurrency=max_api_concurrency)
        self._max_concurrency = max_concurrency
        self._retry = retry or RetryPolicy()
        self._api_limiter = anyio.CapacityLimiter(max_api_concurrency)
        tls = ssl_context(verify, trust_env=trust_env)
        checked_proxy = check_proxy(proxy)
        self._api = PooledClient(
            read_size=_API_READ_SIZE,
            base_url=self._base_url,
            auth=_BearerAuth(key, self._base_url),
            headers={"User-Agent": _USER_AGENT},
            timeout=timeout,
            transport=transport,
            verify=tls,
            proxy=checked_proxy,
            trust_env=trust_env,
        )
        # No auth, ever: file URLs are presigned and live on other hosts.
        hosts = FileHosts(
            timeout=httpx.Timeout(timeout),
            verify=tls,
            proxy=checked_proxy,
            trust_env=trust_env,
            transport=_Replayable(transport) if transport else None,
            max_connections=2 * max_concurrency,
            user_agent=_USER_AGENT,
        )
        self._downloader = Downloader(
            hosts=hosts, limiter=anyio.CapacityLimiter(max_concurrency), retry=self._retry
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

    async def __aenter__(self) -> Self:
        """Open the client for `download_many`; a subclass gets itself back, typed so."""
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
                # Closing the client ends any bulk download still running in it. The
                # caller's own exception is not handed to the task group, which would
                # wrap it in an ExceptionGroup; it propagates as it is.
                self._task_group.cancel_scope.cancel()
                await stack.aclose()
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
            await self._downloader.hosts.aclose()

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

    async def balance(self) -> float:
        """Your remaining credit balance (``GET /check_balance``)."""
        answer = await self._call("GET", "check_balance", BalanceAnswer)
        return answer.balance

    async def generate(
        self,
        *,
        images: Sequence[FileInput] = (),
        prompt: str | None = None,
        tier: Tier | None = None,
        condition_mode: ConditionMode | None = None,
        seed: int | None = None,
        geometry_file_format: GeometryFormat | None = None,
        material: Material | None = None,
        quality: Quality | None = None,
        quality_override: int | None = None,
        mesh_mode: MeshMode | None = None,
        mesh_simplify: bool | None = None,
        mesh_smooth: bool | None = None,
        use_hyper: bool | None = None,
        TAPose: bool | None = None,  # the API's own spelling
        bbox_condition: Sequence[int] | None = None,
        addons: Sequence[str] = (),
        preview_render: bool | None = None,
        use_original_alpha: bool | None = None,
        hd_texture: bool | None = None,
        texture_delight: bool | None = None,
        texture_mode: str | None = None,
        is_micro: bool | None = None,
        geometry_instruct_mode: GeometryInstructMode | None = None,
        retry_submit: bool = False,
    ) -> GenerationJob:
        """Submit a generation (``POST /rodin``); costs credits.

        Images are paths, bytes or binary files (up to 5); without images a prompt is
        required. Arguments left as None are not sent, so the API's defaults apply.
        A submit is retried only when it surely never reached the server (connection
        refused, or throttled with 429), unless *retry_submit* allows retrying any
        transient failure, at the risk of paying twice.

        Raises:
            ValidationError: Arguments the API would refuse (checked before sending).
            APIError: The API refused the submission.
        """
        request = GenerationRequest(
            images=images, prompt=prompt, tier=tier, condition_mode=condition_mode, seed=seed,
            geometry_file_format=geometry_file_format, material=material, quality=quality,
            quality_override=quality_override, mesh_mode=mesh_mode, mesh_simplify=mesh_simplify,
            mesh_smooth=mesh_smooth, use_hyper=use_hyper, TAPose=TAPose,
            bbox_condition=bbox_condition, addons=addons, preview_render=preview_render,
            use_original_alpha=use_original_alpha, hd_texture=hd_texture,
            texture_delight=texture_delight, texture_mode=texture_mode, is_micro=is_micro,
            geometry_instruct_mode=geometry_instruct_mode,
        )  # fmt: skip
        return await self.submit(request, retry_submit=retry_submit)

    async def generate_texture(
        self,
        image: FileInput,
        model: FileInput,
        *,
        prompt: str | None = None,
        seed: int | None = None,
        reference_scale: float | None = None,
        geometry_file_format: GeometryFormat | None = None,
        material: TextureMaterial | None = None,
        resolution: TextureResolution | None = None,
        retry_submit: bool = False,
    ) -> GenerationJob:
        """Texture an existing *model* from *image* (``POST /rodin_texture_only``).

        Raises:
            ValidationError: Bad arguments, or a model over 10 MB.
            APIError: The API refused the submission.
        """
        request = TextureRequest(
            image=image, model=model, prompt=prompt, seed=seed, reference_scale=reference_scale,
            geometry_file_format=geometry_file_format, material=material, resolution=resolution,
        )  # fmt: skip
        return await self.submit(request, retry_submit=retry_submit)

    async def submit(
        self, request: GenerationRequest | TextureRequest, *, retry_submit: bool = False
    ) -> GenerationJob:
        """Submit a prepared request; see `generate` for when it is retried."""
        path = "rodin" if isinstance(request, GenerationRequest) else "rodin_texture_only"
        # (None, value) parts keep the body multipart even without uploads.
        parts: list[tuple[str, Any]] = [(k, (None, v)) for k, v in request.fields()]
        parts += await request.files()
        answer = await self._call("POST", path, SubmitAnswer, files=parts, idempotent=retry_submit)
        return answer.to_job()

    async def status(self, job: GenerationJob | str) -> TaskStatus:
        """The status of a generation's jobs (``POST /status``).

        Args:
            job: A `GenerationJob`, or its ``subscription_key``.
        """
        key = _subscription_key(job)
        answer = await self._call("POST", "status", StatusAnswer, json={"subscription_key": key})
        return answer.to_status()

    async def wait(
        self,
        job: GenerationJob | str,
        *,
        poll_interval: float = 5.0,
        timeout: float | None = None,  # noqa: ASYNC109  (a deadline for the whole wait)
        on_status: Callable[[TaskStatus], None] | None = None,
    ) -> TaskStatus:
        """Poll until every job is Done; return the final status.

        Throttled polls back off (429, honouring Retry-After). Cancel the calling task
        to stop waiting early.

        A status this version of rodin-async doesn't know (``JobStatus.UNKNOWN``, such as
        ``"Paused"``) neither ends nor fails the wait, since the job may still finish:
        without a *timeout*, waiting goes on as long as the API reports it. Each new
        unknown status is logged once as a warning on the ``rodin_async`` logger. To stop
        on one, raise from *on_status*: its exception comes out of `wait` as it is.

        Args:
            job: A `GenerationJob`, or its ``subscription_key``.
            poll_interval: Seconds between polls.
            timeout: Seconds to wait in all; None waits as long as it takes.
            on_status: Called with every status polled, before it is acted on.

        Returns:
            The status in which every job is Done.

        Raises:
            JobFailedError: A job ended Failed or Canceled (the error names it).
            WaitTimeoutError: Not done within *timeout* seconds.
            ConfigurationError: *poll_interval* is not positive.
        """
        if not poll_interval > 0:
            raise ConfigurationError(f"poll_interval must be positive, got {poll_interval!r}")
        unknown: set[tuple[str, str]] = set()
        with anyio.move_on_after(timeout):
            while True:
                status = await self.status(job)
                _log_unknown(status, unknown)
                if on_status is not None:
                    on_status(status)
                _raise_for_failed(status)
                if status.done:
                    return status
                await anyio.sleep(poll_interval)
        raise WaitTimeoutError(
            f"the jobs of {_subscription_key(job)} were not done after {timeout} s"
        )

    async def run(
        self,
        request: GenerationRequest | TextureRequest,
        dest: str | os.PathLike[str],
        *,
        poll_interval: float = 5.0,
        timeout: float | None = None,  # noqa: ASYNC109  (passed on to wait)
        on_status: Callable[[TaskStatus], None] | None = None,
        on_progress: ProgressCallback | None = None,
        retry_submit: bool = False,
    ) -> TaskDownload:
        """Generate, wait for the result, and download it: the whole workflow in one call.

        The destination is checked first, so a generation is never paid for when its
        result could not be written. The other arguments are those of `submit`, `wait`
        and `download`.

        Args:
            request: The generation to submit.
            dest: The folder the result goes into, as ``dest/<task_uuid>/``.
            poll_interval: Seconds between status polls.
            timeout: Seconds to wait for the generation; None waits as long as it takes.
            on_status: Called with every status polled (see `wait`).
            on_progress: Receives the download's progress events.
            retry_submit: Retry the submit on any transient failure (see `generate`).

        Returns:
            The downloaded task.

        Raises:
            DestinationError: *dest* is not a writable directory (before submitting).
            ValidationError: The request's files can't be read.
            APIError: The API refused the submission, a poll or the listing.
            JobFailedError: A job ended Failed or Canceled.
            WaitTimeoutError: Not done within *timeout* seconds.
            TaskDownloadError: Some result files failed to download.
        """
        directory = await prepare_destination(dest)  # fail before paying for a generation
        job = await self.submit(request, retry_submit=retry_submit)
        await self.wait(job, poll_interval=poll_interval, timeout=timeout, on_status=on_status)
        return await self.download(job, directory, on_progress=on_progress)

    async def download(
        self,
        task: str | GenerationJob,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        check: FileCheck = "size",
        on_progress: ProgressCallback | None = None,
    ) -> TaskDownload:
        """Download every result file of a task into ``dest/<task_uuid>/``.

        Files transfer in parallel (bounded by ``max_concurrency``), each written to a
        ``.part`` file and renamed when complete. Failed files are retried and resumed;
        the other files of the task always finish. *on_progress*, if given, receives
        typed progress events (see `ProgressEvent`), at most once per batch; it must be
        a plain function, and an exception it raises ends the download and is raised
        here as it is (partial files are kept for a resume).

        A completed task leaves a manifest in its folder; downloading it again finds
        the files still matching it (by size, or also by SHA-256 with
        ``check="sha256"``) and returns at once with ``skipped=True``; if only some
        still match, only the others are downloaded. *overwrite* downloads everything
        again regardless. The task's folder is created once its files are listed, and
        locked against other processes while its files change.

        Raises:
            InvalidTaskError: *task_uuid* is blank or malformed.
            ConfigurationError: *check* is not ``"size"`` or ``"sha256"``.
            TypeError: *on_progress* is an ``async def`` function.
            DestinationError: *dest* is not a writable directory.
            TaskDownloadError: Some files failed; the exception lists each one.
            APIError: Listing the task failed (``AuthenticationError`` for a bad key).
            ConnectError: The API could not be reached.
        """
        self._ensure_open()
        uuid = check_task_uuid(_task_uuid(task))
        options = _DownloadOptions.of(on_progress, overwrite, check)
        directory = await prepare_destination(dest)
        try:
            result = await self._download_one(uuid, directory, options)
        except CallbackError as exc:
            raise exc.error from None
        if result.error is not None:
            raise result.error
        return result

    def download_many(
        self,
        task_uuids: Iterable[str | GenerationJob] | AsyncIterable[str | GenerationJob],
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        check: FileCheck = "size",
        on_progress: ProgressCallback | None = None,
    ) -> AsyncGenerator[TaskDownload, None]:
        """Download many tasks, yielding each `TaskDownload` as soon as it finishes.

        *task_uuids* may be any iterable or async iterable and is consumed lazily, so a
        pipeline can feed uuids while results stream out. A failed task yields a result
        with ``error`` set; it never stops the others. Leaving the loop early cancels
        the outstanding work (use ``contextlib.aclosing`` to have that happen at once).
        *overwrite*, *check* and *on_progress* work as in `download`; tasks finished by
        an earlier run are yielded at once with ``skipped=True``. A task whose listing
        failed because the API can't be reached yields a `ConnectError`: the next ones
        would fail the same way, so a caller may want to stop there.

        Raises:
            ClientClosedError: The client is closed or was not opened with ``async with``.
            ConfigurationError: *check* is not ``"size"`` or ``"sha256"``.
            TypeError: *on_progress* is an ``async def`` function.
            InvalidTaskError: A collection of uuids holds a blank one (checked up front).
            DestinationError: *dest* is not a writable directory (on first iteration).
        """
        self._ensure_open()
        if self._task_group is None:
            raise ClientClosedError(
                "download_many needs the client opened with `async with AsyncRodin(...) as rodin`"
            )
        if isinstance(task_uuids, str):
            raise InvalidTaskError(
                "download_many takes an iterable of task uuids, not one string; "
                "use download() for a single task"
            )
        options = _DownloadOptions.of(on_progress, overwrite, check)
        if isinstance(task_uuids, Collection):
            for uuid in task_uuids:  # a list can be checked before any work starts
                check_task_uuid(_task_uuid(uuid))
        return self._iterate_many(self._task_group, task_uuids, dest, options)

    async def _iterate_many(
        self,
        host: TaskGroup,
        task_uuids: Iterable[str | GenerationJob] | AsyncIterable[str | GenerationJob],
        dest: str | os.PathLike[str],
        options: _DownloadOptions,
    ) -> AsyncGenerator[TaskDownload, None]:
        directory = await prepare_destination(dest)

        async def run_one(task: str | GenerationJob) -> TaskDownload:
            try:
                uuid = check_task_uuid(_task_uuid(task))
            except RodinError as exc:
                result = TaskDownload(str(task), directory, error=exc)
                options.emit(TaskFinished(result))
                return result
            return await self._download_one(uuid, directory, options)

        # Twice the transfer slots: listing the next tasks overlaps the current transfers.
        results = run_many(host, task_uuids, run_one, max_tasks=2 * self._max_concurrency)
        try:
            async with contextlib.aclosing(results):
                async for result in results:
                    yield result
        except Exception as exc:
            if (error := callback_error(exc)) is not None:
                raise error from None
            raise

    async def _download_one(
        self, uuid: str, directory: Path, options: _DownloadOptions
    ) -> TaskDownload:
        async with self._task_lock(uuid):
            return await self._downloader.download_task(
                uuid,
                directory,
                self.list_files,
                options.emit,
                overwrite=options.overwrite,
                check=options.check,
            )

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

    async def _call(
        self,
        method: str,
        path: str,
        cls: type[E],
        *,
        json: Any = None,
        files: Any = None,
        idempotent: bool = True,
    ) -> E:
        """Call the API, retrying throttling and transient failures when that is safe."""
        self._ensure_open()
        retry_on = None if idempotent else self._retry_if_unsent
        async with self._api_limiter:
            async for attempt in self._retry.retrying(retry_on):
                with attempt:
                    with translate_http_errors(f"{method} /{path}"):
                        response = await self._api.request(method, path, json=json, files=files)
                    return _decode(response, cls)
        raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover

    def _retry_if_unsent(self, exc: Exception) -> bool | float:
        return self._retry.backoff_for(exc) if safe_to_resend(exc) else False

    def _ensure_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this AsyncRodin has been closed; create a new one")
        _require_asyncio()


@attrs.frozen
class _DownloadOptions:
    emit: ProgressCallback
    overwrite: bool
    check: FileCheck

    @classmethod
    def of(
        cls, on_progress: ProgressCallback | None, overwrite: bool, check: object
    ) -> _DownloadOptions:
        """Check a download's options before any work starts."""
        return cls(checked_callback(on_progress), overwrite, check_file_check(check))


def _require_asyncio() -> None:
    """Refuse other event loops up front, rather than fail deep inside a download."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return  # called outside any event loop: nothing runs yet
    if library != "asyncio":
        raise ConfigurationError(
            f"rodin-async runs on asyncio (its file transport and aiofiles' threads are "
            f"built on asyncio's loop), "
            f"not on {library}; use anyio.run(main) or asyncio.run(main)"
        )


def _task_uuid(task: object) -> object:
    return task.uuid if isinstance(task, GenerationJob) else task


def _subscription_key(job: GenerationJob | str) -> str:
    key: object = job.subscription_key if isinstance(job, GenerationJob) else job
    if not isinstance(key, str) or not key.strip():
        raise InvalidTaskError("a subscription key (or a GenerationJob) is required")
    return key.strip()


def _log_unknown(status: TaskStatus, seen: set[tuple[str, str]]) -> None:
    """Warn once per job and status about statuses `wait` can't act on."""
    for job in status.jobs:
        if job.status is JobStatus.UNKNOWN and (job.uuid, job.raw_status) not in seen:
            seen.add((job.uuid, job.raw_status))
            logger.warning(
                "job %s is %r, a status rodin-async does not know; still waiting for Done "
                "(pass timeout= to wait(), or raise from on_status to stop)",
                job.uuid,
                job.raw_status,
            )


def _raise_for_failed(status: TaskStatus) -> None:
    for job in status.jobs:
        if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
            raise JobFailedError(job.uuid, job.raw_status)


def _decode(response: httpx.Response, cls: type[E]) -> E:
    """Turn an API answer into *cls*, or raise the matching `APIError`."""
    status, headers = response.status_code, _kept_headers(response)
    if not response.is_success:
        raise _error_for_status(response, headers)
    raw = parse_json(response.content, status_code=status, headers=headers)
    # The envelope first: an error answer lacks the fields a success must have.
    envelope = structure(raw, Envelope, status_code=status, headers=headers)
    if envelope.failed:
        code = envelope.error or ""
        error_cls = AuthenticationError if code in _AUTH_CODES else APIError
        raise error_cls(
            envelope.message or "the API refused the request",
            code=code,
            status_code=status,
            headers=headers,
        )
    return structure(raw, cls, status_code=status, headers=headers)


def _error_for_status(response: httpx.Response, headers: dict[str, str]) -> APIError:
    status = response.status_code
    code, message = _error_details(response)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status in (401, 403):
        return AuthenticationError(
            f"{(message or 'the API key was rejected').rstrip('.')}; check RODIN_API_KEY",
            code=code,
            status_code=status,
            headers=headers,
        )
    error_cls = RateLimitError if status == 429 else APIError
    return error_cls(
        message or f"the API answered HTTP {status}",
        code=code,
        status_code=status,
        retry_after=retry_after,
        headers=headers,
    )


def _kept_headers(response: httpx.Response) -> dict[str, str]:
    """The answer's headers an error may keep: none that echoes the key we sent."""
    try:
        sent = response.request.headers.get("authorization", "")
    except RuntimeError:  # a response built without its request: nothing was sent
        sent = ""
    key = sent.partition(" ")[2]
    return {k: v for k, v in response.headers.items() if not (key and key in v)}


def _error_details(response: httpx.Response) -> tuple[str | None, str | None]:
    """The ``error`` code and ``message`` of an error body, when it has them."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
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
    if not (key.isascii() and key.isprintable()) or " " in key:
        # Never echo it: once it is a header, h11 quotes it in errors and httpcore's logs.
        raise ConfigurationError(
            "the Rodin API key contains spaces, control or non-ASCII characters "
            "(a stray newline or quote from pasting it?); it is not shown here"
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


class _Replayable(httpx.AsyncBaseTransport):
    """Hand on answers a transport built already read (``httpx.MockTransport``'s) as streams.

    ``httpx.Response(content=...)`` reads its body at once, and httpx then refuses the
    raw stream the downloader reads (``StreamConsumed``). Such a body is in memory, so
    it is handed on as a fresh stream; real transports' answers pass untouched.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if not (response.is_stream_consumed and isinstance(response.stream, httpx.ByteStream)):
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=response.stream,  # the raw bytes, still encoded as the headers say
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()

"""The bounded-concurrency downloader: streams every result file of a task to disk.

One `CapacityLimiter` shared by the whole client bounds simultaneous transfers. A slot is
held only while bytes move, never during a backoff sleep or a re-listing, so a slow
retry never idles the pipe. Each file goes to its ``.part`` file, resumes with ``Range``
after a broken transfer, is checked against ``Content-Length`` and renamed when complete.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import anyio
import attrs
import httpx

from ._errors import (
    DestinationError,
    DownloadError,
    RodinError,
    TaskDownloadError,
    translate_http_errors,
)
from ._files import PartWriter, make_task_directory, part_path, unique_names
from ._manifest import Verify, reuse_or_forget, write_manifest
from ._models import DownloadedFile, ResultFile, TaskDownload
from ._progress import (
    FileFailed,
    FileFinished,
    FileProgress,
    FileRetried,
    FileStarted,
    ProgressCallback,
    TaskFinished,
    TaskStarted,
    ignore,
)
from ._retry import RETRYABLE_STATUSES, RetryableDownloadError, RetryPolicy, parse_retry_after

Lister = Callable[[str], Awaitable[list[ResultFile]]]

# What a presigned URL says when it has expired (or was never valid): list again.
_EXPIRED_STATUSES = frozenset({401, 403, 404, 410})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@attrs.define
class _FileJob:
    """One listed file on its way to disk; its URL changes when the task is re-listed."""

    task_uuid: str
    emit: ProgressCallback
    name: str
    occurrence: int  # how many earlier entries share this name: finds it in a new listing
    url: str
    final: Path
    generation: int = 0
    refreshed: bool = False
    stale: bool = False
    attempts: int = 0


class _Listing:
    """A task's current file list, re-fetched at most once per expiry wave."""

    def __init__(self, task_uuid: str, lister: Lister, files: list[ResultFile]) -> None:
        self._task_uuid = task_uuid
        self._lister = lister
        self._files = files
        self._generation = 0
        self._lock = anyio.Lock()

    async def refresh(self, job: _FileJob) -> None:
        """Give *job* a fresh URL, listing the task again unless a sibling just did."""
        async with self._lock:
            if self._generation == job.generation:
                self._files = await self._lister(self._task_uuid)
                self._generation += 1
        matches = [f for f in self._files if f.name == job.name]
        if len(matches) <= job.occurrence:
            raise DownloadError(
                f"{job.name!r} is no longer listed for task {self._task_uuid}",
                name=job.name,
                url=job.url,
            )
        job.url = matches[job.occurrence].url
        job.generation = self._generation
        job.stale = False


@attrs.frozen
class Downloader:
    """Downloads tasks' files through one HTTP client and one transfer limiter.

    Args:
        client: The client for file hosts. It must not carry the API key.
        limiter: Bounds simultaneous transfers across everything this downloader does.
        retry: When and how long to wait between attempts.
    """

    client: httpx.AsyncClient
    limiter: anyio.CapacityLimiter
    retry: RetryPolicy

    async def download_task(
        self,
        task_uuid: str,
        dest: Path,
        lister: Lister,
        emit: ProgressCallback = ignore,
        *,
        overwrite: bool = False,
        verify: Verify = "size",
    ) -> TaskDownload:
        """Download every file of *task_uuid* into ``dest/<task_uuid>``.

        A task whose manifest still matches its files is skipped (unless *overwrite*).
        Never raises `RodinError`: a failure is reported in the result's ``error``.
        """
        try:
            directory = await make_task_directory(dest, task_uuid)
            skipped = await reuse_or_forget(directory, task_uuid, verify, reuse=not overwrite)
            if skipped is not None:
                result = TaskDownload(task_uuid, directory, skipped, skipped=True)
            else:
                result = await self._download_task(task_uuid, directory, lister, emit)
        except RodinError as exc:
            result = TaskDownload(task_uuid, dest / task_uuid, error=exc)
        emit(TaskFinished(result))
        return result

    async def _download_task(
        self, task_uuid: str, directory: Path, lister: Lister, emit: ProgressCallback
    ) -> TaskDownload:
        files = await lister(task_uuid)
        emit(TaskStarted(task_uuid, len(files)))
        listing = _Listing(task_uuid, lister, files)
        jobs = _jobs_for(task_uuid, emit, files, directory)
        outcomes: list[DownloadedFile | DownloadError] = []
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(self._collect, job, listing, outcomes)
        result = _task_result(task_uuid, directory, jobs, outcomes)
        if result.error is None and (error := await _record(directory, task_uuid, result)):
            result = attrs.evolve(result, error=error)
        return result

    async def _collect(
        self, job: _FileJob, listing: _Listing, outcomes: list[DownloadedFile | DownloadError]
    ) -> None:
        try:
            done = await self.download_file(job, listing)
        except DownloadError as exc:
            job.emit(FileFailed(job.task_uuid, job.name, job.final, exc))
            outcomes.append(exc)
        else:
            job.emit(FileFinished(job.task_uuid, job.name, done.path, done.size))
            outcomes.append(done)

    async def download_file(self, job: _FileJob, listing: _Listing) -> DownloadedFile:
        """Fetch one file with retries; raise `DownloadError` when it can't be had."""
        try:
            async for attempt in self.retry.retrying():
                with attempt, self._announce_retry(job, attempt.num):
                    if job.stale:
                        await listing.refresh(job)
                    async with self.limiter:
                        job.attempts += 1
                        return await self._attempt(job)
        except RetryableDownloadError as exc:
            raise DownloadError(
                f"{exc} (gave up after {job.attempts} attempts)",
                name=job.name,
                url=job.url,
                status_code=exc.status_code,
                retry_after=exc.retry_after,
            ) from exc
        except DownloadError:
            raise
        except RodinError as exc:
            raise DownloadError(
                f"{job.name!r}: {exc} (after {job.attempts} attempt(s))",
                name=job.name,
                url=job.url,
            ) from exc
        raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover

    @contextlib.contextmanager
    def _announce_retry(self, job: _FileJob, num: int) -> Iterator[None]:
        try:
            yield
        except RodinError as exc:
            if num < self.retry.attempts and self.retry.backoff_for(exc) is not False:
                job.emit(FileRetried(job.task_uuid, job.name, job.final, num, exc))
            raise

    async def _attempt(self, job: _FileJob) -> DownloadedFile:
        what = f"downloading {job.name!r}"
        with _disk_errors(job):
            writer = await PartWriter.open(part_path(job.final))
            try:
                with translate_http_errors(what):
                    headers = _headers(writer.offset)
                    request = self.client.build_request("GET", job.url, headers=headers)
                    response = await self.client.send(request, stream=True)
                try:
                    start, expected = await self._check(job, response, writer)
                    job.emit(
                        FileStarted(job.task_uuid, job.name, job.final, expected, start,
                                    job.attempts)
                    )  # fmt: skip
                    with translate_http_errors(what):
                        size = await _stream_to(job, writer, response, start)
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                await _verify_size(job, writer, size, expected)
                digest = await writer.commit(job.final)
            finally:
                await writer.aclose()  # keeps the bytes for a resume, unless committed
        return DownloadedFile(
            job.name, job.final, size, digest, attempts=job.attempts, resumed=start > 0
        )

    async def _check(
        self, job: _FileJob, response: httpx.Response, writer: PartWriter
    ) -> tuple[int, int | None]:
        """Decide where the body goes in the part file and how long the file must be."""
        status, offset = response.status_code, writer.offset
        if status == 206:
            first, total = _content_range(response)
            if first == offset:
                return offset, total
            await writer.aclose(discard=True)
            raise _retryable(job, f"the server sent {job.name!r} from the wrong offset", status)
        if status == 200:
            if offset:
                writer.restart()  # the server ignored the Range: start over
            return 0, _content_length(response)
        if status == 416 and offset:
            if _unsatisfied_length(response) == offset:
                return offset, offset  # the part already holds the whole file
            await writer.aclose(discard=True)  # longer than the file: it was not this file
            raise _retryable(job, f"stale partial file for {job.name!r}; restarting", status, 0)
        if status in _EXPIRED_STATUSES and not job.refreshed:
            job.refreshed = job.stale = True
            raise _retryable(job, f"the URL of {job.name!r} expired (HTTP {status})", status, 0)
        if status in RETRYABLE_STATUSES:
            after = parse_retry_after(response.headers.get("retry-after"))
            raise _retryable(
                job, f"{job.name!r}: the file host answered HTTP {status}", status, after
            )
        raise DownloadError(
            f"{job.name!r}: the file host answered HTTP {status}",
            name=job.name,
            url=job.url,
            status_code=status,
        )


async def _record(directory: Path, task_uuid: str, result: TaskDownload) -> RodinError | None:
    """Write the task's manifest; a disk that refuses is the task's error, not a crash."""
    try:
        await write_manifest(directory, task_uuid, result.files)
    except OSError as exc:
        error = DestinationError(
            f"task {task_uuid}: every file was downloaded, but its manifest can't be written "
            f"in {str(directory)!r}: {exc.strerror or exc}; free some space and run again"
        )
        error.__cause__ = exc
        return error
    return None


def _jobs_for(
    task_uuid: str, emit: ProgressCallback, files: Sequence[ResultFile], directory: Path
) -> list[_FileJob]:
    seen: dict[str, int] = {}
    jobs = []
    for file, safe in zip(files, unique_names(f.name for f in files), strict=True):
        occurrence = seen.get(file.name, 0)
        seen[file.name] = occurrence + 1
        jobs.append(_FileJob(task_uuid, emit, file.name, occurrence, file.url, directory / safe))
    return jobs


def _task_result(
    task_uuid: str,
    directory: Path,
    jobs: list[_FileJob],
    outcomes: list[DownloadedFile | DownloadError],
) -> TaskDownload:
    # Report files in listing order, whatever order they finished in.
    order = {job.final: i for i, job in enumerate(jobs)}
    done = sorted(
        (o for o in outcomes if isinstance(o, DownloadedFile)), key=lambda f: order[f.path]
    )
    failed = [o for o in outcomes if isinstance(o, DownloadError)]
    error = TaskDownloadError(task_uuid, failed) if failed else None
    return TaskDownload(task_uuid, directory, done, error)


def _retryable(
    job: _FileJob, message: str, status: int | None = None, retry_after: float | None = None
) -> RetryableDownloadError:
    return RetryableDownloadError(
        message, name=job.name, url=job.url, status_code=status, retry_after=retry_after
    )


async def _stream_to(
    job: _FileJob, writer: PartWriter, response: httpx.Response, start: int
) -> int:
    """Write the body into the part file after its first *start* bytes; return the size.

    Every chunk received is written before the next read, so bytes that arrived before
    a broken connection are kept for the resume.
    """
    chunks: AsyncIterator[bytes]
    if response.headers.get("content-encoding", "identity").lower() in ("identity", ""):
        chunks = response.aiter_raw()
    else:  # the host ignored Accept-Encoding: identity; store what the file decodes to
        chunks = response.aiter_bytes()
    size = start
    async for chunk in chunks:
        await writer.write(chunk)
        size += len(chunk)
        job.emit(FileProgress(job.task_uuid, job.name, job.final, len(chunk), size))
    return size


async def _verify_size(job: _FileJob, writer: PartWriter, size: int, expected: int | None) -> None:
    if expected is None or size == expected:
        return
    if size > expected:  # more than announced: the part file can't be trusted
        await writer.aclose(discard=True)
    raise _retryable(job, f"{job.name!r}: got {size} of {expected} bytes")


@contextlib.contextmanager
def _disk_errors(job: _FileJob) -> Iterator[None]:
    """Turn a failing disk (full, read-only, gone) into a `DownloadError` for *job*."""
    try:
        yield
    except RodinError:  # our TimeoutError is an OSError too, but not a disk problem
        raise
    except OSError as exc:
        raise DownloadError(
            f"{job.name!r}: can't write {str(job.final)!r}: {exc.strerror or exc}",
            name=job.name,
            url=job.url,
        ) from exc


def _headers(offset: int) -> dict[str, str]:
    # identity: Content-Length and Range then count the very bytes we store
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return headers


def _content_length(response: httpx.Response) -> int | None:
    if response.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
        return None  # the length is of the encoded body, not of the file
    value = response.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def _unsatisfied_length(response: httpx.Response) -> int | None:
    """The file length a 416 reports (``Content-Range: bytes */<length>``)."""
    match = re.fullmatch(r"bytes\s+\*/(\d+)", response.headers.get("content-range", "").strip())
    return int(match.group(1)) if match else None


def _content_range(response: httpx.Response) -> tuple[int | None, int | None]:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
    if not match:
        return None, None
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)

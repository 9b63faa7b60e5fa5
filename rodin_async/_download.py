"""The bounded-concurrency downloader: streams every result file of a task to disk.

One `CapacityLimiter` shared by the whole client bounds simultaneous transfers. A slot is
held only while bytes move, never during a backoff sleep or a re-listing, so a slow
retry never idles the pipe. Each file goes to its ``.part`` file, resumes with ``Range``
and ``If-Range`` after a broken transfer, is checked against the length the host
announced and renamed when complete. A task folder is locked against other processes
while its files change. Every value a host sends is untrusted: whatever it is, a failure
stays with its own file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import anyio
import attrs
import httpx

from ._decode import DecodeError, Decoder
from ._errors import (
    DestinationError,
    DownloadError,
    RodinError,
    TaskDownloadError,
    translate_http_errors,
)
from ._files import (
    PartFileChanged,
    PartWriter,
    TaskFolder,
    Validator,
    leftovers,
    run_shielded,
    unique_names,
)
from ._headers import (
    BadValue,
    content_codings,
    content_length,
    content_range,
    file_url,
    last_modified,
    retry_after,
    strong_etag,
    unsatisfied_length,
)
from ._http import FileHosts
from ._manifest import FileCheck, Hashes, all_intact, forget, intact_files, write_manifest
from ._models import DownloadedFile, ResultFile, TaskDownload
from ._progress import (
    CallbackError,
    FileFailed,
    FileFinished,
    FileProgress,
    FileRetried,
    FileStarted,
    ProgressCallback,
    TaskFinished,
    TaskStarted,
    callback_error,
    ignore,
)
from ._retry import RETRYABLE_STATUSES, RetryableDownloadError, RetryPolicy

Lister = Callable[[str], Awaitable[list[ResultFile]]]

# What a presigned URL says when it has expired (or was never valid): list again.
_EXPIRED_STATUSES = frozenset({401, 403, 404, 410})
_LOCK_POLL = 0.2  # seconds between looks at a task folder another process holds


@attrs.define
class _FileJob:
    """One listed file on its way to disk; its URL changes when the task is re-listed."""

    task_uuid: str
    emit: ProgressCallback
    folder: TaskFolder
    name: str
    occurrence: int  # how many earlier entries share this name: finds it in a new listing
    url: str
    final: Path
    has_part: bool  # a .part (or .meta) of it may be on disk: open it before the request
    reported: int = 0  # bytes of the part that progress events have accounted for
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
    """Downloads tasks' files through the file hosts and one transfer limiter.

    Args:
        hosts: Sends GETs to file hosts; it never carries the API key.
        limiter: Bounds simultaneous transfers across everything this downloader does.
        retry: When and how long to wait between attempts.
    """

    hosts: FileHosts
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
        check: FileCheck = "size",
    ) -> TaskDownload:
        """Download every file of *task_uuid* into ``dest/<task_uuid>``.

        A task whose manifest still matches its files is skipped (unless *overwrite*);
        files that still match are kept. Never raises `RodinError`: a failure is
        reported in the result's ``error``. A callback's exception is raised as
        `CallbackError`.
        """
        try:
            result = await self._download_task(task_uuid, dest, lister, emit, overwrite, check)
        except RodinError as exc:
            result = TaskDownload(task_uuid, dest / task_uuid, error=exc)
        except Exception as exc:  # a bug or a value nobody foresaw: this task only
            if (error := callback_error(exc)) is not None:
                raise CallbackError(error) from None
            result = TaskDownload(task_uuid, dest / task_uuid, error=_unexpected(exc))
        emit(TaskFinished(result))
        return result

    async def _download_task(
        self,
        task_uuid: str,
        dest: Path,
        lister: Lister,
        emit: ProgressCallback,
        overwrite: bool,
        check: FileCheck,
    ) -> TaskDownload:
        hashes: Hashes = {}  # a file hashed before the lock is not hashed again under it
        if not overwrite and (done := await _finished_earlier(dest, task_uuid, check, hashes)):
            return TaskDownload(task_uuid, dest / task_uuid, done, skipped=True)
        files = await lister(task_uuid)
        emit(TaskStarted(task_uuid, len(files)))
        names = unique_names(f.name for f in files)
        wanted = frozenset(zip((f.name for f in files), names, strict=True))
        # Only now, with files to fetch, does the task get a folder.
        folder, claim = await _claim(dest, task_uuid, wanted, (check, hashes), overwrite)
        try:
            result = await self._fetch(task_uuid, folder, files, names, claim, lister, emit)
        except BaseException:
            await run_shielded(folder.close)
            raise
        return await _record_and_close(folder, task_uuid, result)

    async def _fetch(
        self,
        task_uuid: str,
        folder: TaskFolder,
        files: list[ResultFile],
        names: list[str],
        claim: _Claim,
        lister: Lister,
        emit: ProgressCallback,
    ) -> TaskDownload:
        jobs = _jobs_for(task_uuid, emit, folder, files, names, claim.leftovers)
        reused = {(f.name, f.path.name): f for f in claim.kept}
        todo = [j for j in jobs if (j.name, j.final.name) not in reused]
        if not todo:  # another process (or an earlier run) finished it meanwhile
            return TaskDownload(task_uuid, folder.path, _in_order(jobs, claim.kept), skipped=True)
        listing = _Listing(task_uuid, lister, files)
        outcomes: list[DownloadedFile | DownloadError] = list(reused.values())
        async with anyio.create_task_group() as tg:
            for job in todo:
                tg.start_soon(self._collect, job, listing, outcomes)
        return _task_result(task_uuid, folder.path, jobs, outcomes)

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
            raise _gave_up(job, exc) from exc
        except DownloadError:
            raise
        except RodinError as exc:
            raise DownloadError(
                f"{job.name!r}: {exc} (after {job.attempts} attempt(s))",
                name=job.name,
                url=job.url,
            ) from exc
        except CallbackError:
            raise
        except Exception as exc:  # never let one file's surprise cancel its siblings
            raise DownloadError(
                f"{job.name!r}: {_unexpected(exc)}", name=job.name, url=job.url
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
        with _disk_errors(job), _bad_values(job):
            writer = await _writer_for(job)
            job.reported = writer.size
            try:
                with translate_http_errors(what):
                    response = await self.hosts.get(file_url(job.url), _headers(writer))
                try:
                    start, expected = await self._check(job, response, writer)
                    job.reported = start
                    job.emit(
                        FileStarted(job.task_uuid, job.name, job.final, expected, start,
                                    job.attempts)
                    )  # fmt: skip
                    if response.status_code != 416:  # its body is an error page, never data
                        with translate_http_errors(what), _decode_errors(job):
                            await _stream_to(job, writer, response)
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                return await _finish(job, writer, start, expected)
            except BaseException:
                job.has_part = True  # the next attempt looks at what this one left
                raise
            finally:
                # Gathered bytes are written first: a resume continues from them.
                await writer.aclose()  # keeps the bytes for a resume, unless committed
                _progressed(job, writer.size)

    async def _check(
        self, job: _FileJob, response: httpx.Response, writer: PartWriter
    ) -> tuple[int, int | None]:
        """Decide where the body goes in the part file and how long the file must be."""
        status, offset = response.status_code, writer.offset
        if status == 200:
            return 0, _begin(writer, response.headers)
        if status == 206 and offset:
            return offset, await _resumed_length(job, writer, response.headers)
        if status == 416 and offset:
            if _part_is_whole(writer, response.headers):
                return offset, offset  # the part already holds the whole file
            await writer.aclose(discard=True)  # longer than the file: it was not this file
            raise _retryable(job, f"stale partial file for {job.name!r}; restarting", status, 0)
        if status in (206, 412):  # a range we didn't ask for; If-Range/If-Match refused
            await writer.aclose(discard=True)
            raise _retryable(job, f"{job.name!r} changed on the file host; restarting", status, 0)
        if status in _EXPIRED_STATUSES and not job.refreshed:
            job.refreshed = job.stale = True
            raise _retryable(job, f"the URL of {job.name!r} expired (HTTP {status})", status, 0)
        if status in RETRYABLE_STATUSES:
            after = retry_after(response.headers.get("retry-after"))
            raise _retryable(
                job, f"{job.name!r}: the file host answered HTTP {status}", status, after
            )
        raise DownloadError(
            f"{job.name!r}: the file host answered HTTP {status}",
            name=job.name,
            url=job.url,
            status_code=status,
        )


def _begin(writer: PartWriter, headers: httpx.Headers) -> int | None:
    """Start the part over for a complete body; return the file's length, if known."""
    codings = content_codings(headers)
    if codings:  # the host ignored Accept-Encoding: identity; store what it decodes to
        writer.begin(None, Decoder(codings))
        return None
    length = content_length(headers)
    writer.begin(Validator(strong_etag(headers), last_modified(headers), length))
    return length


async def _resumed_length(job: _FileJob, writer: PartWriter, headers: httpx.Headers) -> int | None:
    """Check that a 206 continues this very file where the part ends; its full length."""
    problem = None
    span = content_range(headers)
    if content_codings(headers):
        problem = "an encoded body can't be resumed"
    elif span is None or span.first != writer.offset:
        problem = "the file host sent the wrong part of the file"
    elif not _same_file(writer.validator, headers, span.total):
        problem = "the file changed on the file host"
    if problem is None and span is not None:
        return span.total
    await writer.aclose(discard=True)
    raise _retryable(job, f"{job.name!r}: {problem}; restarting", 206, 0)


def _part_is_whole(writer: PartWriter, headers: httpx.Headers) -> bool:
    """Whether a 416 to ``Range: bytes=<part size>-`` means the part is the whole file.

    It does when the 416 gives that length (``bytes */N``, as nginx and Caddy send), or,
    for hosts whose 416 says nothing of the length (S3 puts it in its XML body only),
    when the length the host gave as the part began is exactly the part's size.
    """
    offset, validator = writer.offset, writer.validator
    length = unsatisfied_length(headers)
    if length is None and validator is not None:
        length = validator.total
    return length == offset and _same_file(validator, headers, length)


def _same_file(validator: Validator | None, headers: httpx.Headers, total: int | None) -> bool:
    """Whether the host still describes the file the part was started from."""
    if validator is None:
        return False
    pairs = [
        (validator.etag, strong_etag(headers)),
        (validator.last_modified, last_modified(headers)),
        (validator.total, total),
    ]
    return all(old is None or new is None or old == new for old, new in pairs)


def _headers(writer: PartWriter) -> dict[str, str]:
    # identity: Content-Length and Range then count the very bytes we store
    headers = {"Accept-Encoding": "identity"}
    validator = writer.validator
    if writer.offset and validator is not None:
        headers["Range"] = f"bytes={writer.offset}-"
        # If-Range: a changed file comes back whole (200) instead of spliced.
        if_range = validator.etag or validator.last_modified
        if if_range:
            headers["If-Range"] = if_range
    return headers


async def _writer_for(job: _FileJob) -> PartWriter:
    """The part writer of *job*; a part known not to exist costs no hop before the request."""
    if job.has_part:
        return await PartWriter.open(job.folder, job.final.name)
    return PartWriter.new(job.folder, job.final.name)


async def _stream_to(job: _FileJob, writer: PartWriter, response: httpx.Response) -> None:
    """Gather the body into the part writer, writing a batch whenever one is due.

    The last batch is left for the commit, which writes it in the same hop. Whatever
    ends the body early (a broken connection, a timeout, a cancellation), the writer
    writes the bytes that arrived before it closes, so a resume continues from them.
    An encoded body is counted as sent and checked against its ``Content-Length``
    here; the decoded file is checked when the part is committed.
    """
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if writer.add(chunk):
            await writer.write()
            _progressed(job, writer.size)
    announced = content_length(response.headers)
    if writer.decoding and announced is not None and received != announced:
        raise _retryable(job, f"{job.name!r}: got {received} of {announced} encoded bytes")


def _progressed(job: _FileJob, size: int) -> None:
    """Report that the part holds *size* bytes now (or, for the last batch of a file, is
    about to: see `_finish`), unless that was reported already."""
    if size > job.reported:
        advanced, job.reported = size - job.reported, size
        if job.emit is not ignore:  # nobody listens: build no event
            job.emit(FileProgress(job.task_uuid, job.name, job.final, advanced, size))


async def _finish(
    job: _FileJob, writer: PartWriter, start: int, expected: int | None
) -> DownloadedFile:
    """Check the part's length, then write its last batch and move it into place.

    The last batch is reported before the commit's hop writes it, so a file's last
    `FileProgress` still comes before it is renamed: if the commit never runs (the
    callback raised, a cancellation), closing the writer writes those bytes to the part
    instead. An encoded body's decoded size is only known once written, so its last
    batch is written first.
    """
    size = writer.size + writer.pending  # an encoded body has no expected length
    if expected is not None and size != expected:
        if size > expected:  # more than announced: the part file can't be trusted
            await writer.aclose(discard=True)
        raise _retryable(job, f"{job.name!r}: got {size} of {expected} bytes")
    with _decode_errors(job):
        if writer.decoding:
            await writer.write()
        _progressed(job, writer.size + writer.pending)
        try:
            size, digest = await writer.commit(job.final.name)
        except PartFileChanged as exc:
            raise _retryable(job, f"{job.name!r}: {exc}; restarting") from exc
    _progressed(job, size)  # what a decoder held back until the end
    return DownloadedFile(
        job.name, job.final, size, digest, attempts=job.attempts, resumed=start > 0
    )


async def _finished_earlier(
    dest: Path, task_uuid: str, check: FileCheck, hashes: Hashes
) -> list[DownloadedFile]:
    """The files of a task an earlier run completed, if they all still match its manifest
    (the digests computed on the way are added to *hashes*)."""

    def look() -> list[DownloadedFile]:
        folder = TaskFolder.existing(dest, task_uuid)
        if folder is None:
            return []
        try:
            return all_intact(folder, task_uuid, check, hashes) or []
        finally:
            folder.close()

    return await run_shielded(look)


@attrs.frozen
class _Claim:
    """A task folder this process now holds the lock of, and what it found there."""

    kept: list[DownloadedFile]  # files an earlier run completed that still match
    leftovers: frozenset[str]  # file names with a .part or .meta beside them


_Check = tuple[FileCheck, Hashes]  # how to check kept files, and digests known already


async def _claim(
    dest: Path,
    task_uuid: str,
    wanted: frozenset[tuple[str, str]],
    check: _Check,
    overwrite: bool,
) -> tuple[TaskFolder, _Claim]:
    """Open (or create) the task folder and wait for its lock; what it holds.

    Making the folder, taking the lock, sweeping temp files, checking the manifest's
    files and forgetting the manifest take one thread hop (and one per poll).
    """
    folder, claim = await run_shielded(_make_and_claim, dest, task_uuid, wanted, check, overwrite)
    try:
        while claim is None:  # another process holds the lock; no event crosses processes
            await anyio.sleep(_LOCK_POLL)
            claim = await run_shielded(_try_claim, folder, task_uuid, wanted, check, overwrite)
    except BaseException:
        await run_shielded(folder.close)
        raise
    return folder, claim


def _make_and_claim(
    dest: Path,
    task_uuid: str,
    wanted: frozenset[tuple[str, str]],
    check: _Check,
    overwrite: bool,
) -> tuple[TaskFolder, _Claim | None]:
    folder = TaskFolder.make(dest, task_uuid)
    try:
        return folder, _try_claim(folder, task_uuid, wanted, check, overwrite)
    except BaseException:
        folder.close()
        raise


def _try_claim(
    folder: TaskFolder,
    task_uuid: str,
    wanted: frozenset[tuple[str, str]],
    check: _Check,
    overwrite: bool,
) -> _Claim | None:
    """Take the lock if free (blocking): None if another process holds it."""
    if not folder.try_lock():
        return None
    names = folder.sweep_temps()  # a writer killed mid-write left them; we own the folder now
    kept = [] if overwrite else intact_files(folder, task_uuid, *check)
    if not wanted <= {(f.name, f.path.name) for f in kept}:
        forget(folder)  # files are about to change: the manifest no longer describes them
    return _Claim(kept, leftovers(names))


async def _record_and_close(
    folder: TaskFolder, task_uuid: str, result: TaskDownload
) -> TaskDownload:
    """Write the manifest of a complete task, unlock and close its folder, in one hop.

    A disk that refuses the manifest is the task's error, not a crash.
    """
    complete = result.error is None and not result.skipped

    def record_and_close() -> OSError | None:
        try:
            if complete:
                write_manifest(folder, task_uuid, result.files)
        except OSError as exc:
            return exc
        finally:
            folder.close()
        return None

    failure = await run_shielded(record_and_close)
    if failure is None:
        return result
    error = DestinationError(
        f"task {task_uuid}: every file was downloaded, but its manifest can't be written "
        f"in {str(folder.path)!r}: {failure.strerror or failure}; free some space and run again"
    )
    error.__cause__ = failure
    return attrs.evolve(result, error=error)


def _jobs_for(
    task_uuid: str,
    emit: ProgressCallback,
    folder: TaskFolder,
    files: Sequence[ResultFile],
    names: Sequence[str],
    leftovers: frozenset[str],
) -> list[_FileJob]:
    seen: dict[str, int] = {}
    jobs = []
    for file, safe in zip(files, names, strict=True):
        occurrence = seen.get(file.name, 0)
        seen[file.name] = occurrence + 1
        final = folder.path / safe
        has_part = safe in leftovers
        jobs.append(
            _FileJob(task_uuid, emit, folder, file.name, occurrence, file.url, final, has_part)
        )
    return jobs


def _in_order(jobs: list[_FileJob], files: Sequence[DownloadedFile]) -> list[DownloadedFile]:
    """*files* in listing order, whatever order they finished in."""
    order = {job.final: i for i, job in enumerate(jobs)}
    return sorted(files, key=lambda f: order.get(f.path, len(order)))


def _task_result(
    task_uuid: str,
    directory: Path,
    jobs: list[_FileJob],
    outcomes: list[DownloadedFile | DownloadError],
) -> TaskDownload:
    done = _in_order(jobs, [o for o in outcomes if isinstance(o, DownloadedFile)])
    failed = [o for o in outcomes if isinstance(o, DownloadError)]
    error = TaskDownloadError(task_uuid, failed) if failed else None
    return TaskDownload(task_uuid, directory, done, error)


def _retryable(
    job: _FileJob, message: str, status: int | None = None, retry_after: float | None = None
) -> RetryableDownloadError:
    return RetryableDownloadError(
        message, name=job.name, url=job.url, status_code=status, retry_after=retry_after
    )


def _gave_up(job: _FileJob, exc: RetryableDownloadError) -> DownloadError:
    return DownloadError(
        f"{exc} (gave up after {job.attempts} attempts)",
        name=job.name,
        url=job.url,
        status_code=exc.status_code,
        retry_after=exc.retry_after,
    )


def _unexpected(exc: Exception) -> RodinError:
    # Only the type: a message from deep inside may quote a URL with its signature.
    error = RodinError(f"unexpected {type(exc).__name__} (a bug in rodin-async; please report it)")
    error.__cause__ = exc
    return error


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


@contextlib.contextmanager
def _bad_values(job: _FileJob) -> Iterator[None]:
    """A value from the server that can't be used fails this file for good."""
    try:
        yield
    except BadValue as exc:
        raise DownloadError(f"{job.name!r}: {exc}", name=job.name, url=job.url) from exc


@contextlib.contextmanager
def _decode_errors(job: _FileJob) -> Iterator[None]:
    """A body that doesn't decode is a failed attempt (an encoded part is never kept)."""
    try:
        yield
    except (DecodeError, httpx.DecodingError) as exc:
        raise _retryable(job, f"{job.name!r}: {exc}; restarting") from exc

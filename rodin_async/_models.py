"""Frozen attrs models for API answers and download results, and their private converter."""

from __future__ import annotations

import enum
import json
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._errors import ResponseFormatError, RodinError, error_key

T = TypeVar("T")

# The API's way of saying "no error": absent, null, "" (submit) or "OK" (status, download).
_SUCCESS_CODES = frozenset({None, "", "OK"})


@attrs.frozen
class ResultFile:
    """One result file of a task, as ``POST /download`` lists it.

    Attributes:
        name: The server's file name. Untrusted: rodin-async never uses it as a path directly.
        url: Where to GET it. Presigned and short-lived (about 10 minutes).
    """

    name: str
    url: str = attrs.field(repr=False)  # presigned: keep credentials out of logs


@attrs.frozen
class DownloadedFile:
    """A result file that is complete on disk.

    Attributes:
        name: The name the API listed.
        path: Where it was written (inside the task's folder, under a safe name).
        size: Its size in bytes.
        sha256: Hex SHA-256 of the file, as recorded in the task's manifest.
        attempts: How many requests it took (1 when nothing went wrong; 0 when skipped).
        resumed: Whether a previous partial download was continued instead of restarted.
    """

    name: str
    path: Path
    size: int
    sha256: str | None = None
    attempts: int = 1
    resumed: bool = False


def _files(files: Iterable[DownloadedFile]) -> tuple[DownloadedFile, ...]:
    return tuple(files)


@attrs.frozen
class TaskDownload:
    """The outcome of downloading one task.

    Hashable, picklable and compared by value: two results are equal when they name
    the same task, directory, files and outcome. Errors compare by their type and
    message (``args``), since exceptions themselves compare by identity; so a result
    is still equal to itself after a pickle round trip.

    Attributes:
        task_uuid: The task.
        directory: ``dest/<task_uuid>``, where its files went.
        files: The files that are complete on disk, in listing order.
        error: Why the task (or some of its files) failed; None on success.
        skipped: True when an earlier run had already completed the task (its manifest
            matched the files on disk), so nothing was downloaded.
    """

    task_uuid: str
    directory: Path
    files: tuple[DownloadedFile, ...] = attrs.field(default=(), converter=_files)
    error: RodinError | None = attrs.field(default=None, eq=error_key)
    skipped: bool = False

    @property
    def ok(self) -> bool:
        """True when every file of the task was downloaded."""
        return self.error is None


class JobStatus(enum.Enum):
    """Where a generation job is. `UNKNOWN` stands for any status this version doesn't know."""

    WAITING = "Waiting"
    GENERATING = "Generating"
    DONE = "Done"
    FAILED = "Failed"
    CANCELED = "Canceled"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, value: str) -> JobStatus:
        """The member for *value*; `UNKNOWN` for anything new (never an error)."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


_FAILED = frozenset({JobStatus.FAILED, JobStatus.CANCELED})


@attrs.frozen
class Job:
    """One job of a generation task.

    Attributes:
        uuid: The job's uuid.
        status: Its status; `JobStatus.UNKNOWN` for statuses newer than this library.
        raw_status: The status exactly as the API sent it.
    """

    uuid: str
    status: JobStatus
    raw_status: str


def _jobs(jobs: Iterable[Job]) -> tuple[Job, ...]:
    return tuple(jobs)


@attrs.frozen
class TaskStatus:
    """The jobs of a generation task, from ``POST /status``.

    Attributes:
        jobs: Every job of the task, as the API listed them.
    """

    jobs: tuple[Job, ...] = attrs.field(converter=_jobs)

    @property
    def done(self) -> bool:
        """True when there are jobs and every one is Done."""
        return bool(self.jobs) and all(j.status is JobStatus.DONE for j in self.jobs)

    @property
    def failed(self) -> bool:
        """True when any job Failed or was Canceled."""
        return any(j.status in _FAILED for j in self.jobs)


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class GenerationJob:
    """A submitted generation, from ``POST /rodin`` or ``/rodin_texture_only``.

    Attributes:
        uuid: The task uuid: pass it (or this object) to `AsyncRodin.download`.
        subscription_key: What `AsyncRodin.status` and `AsyncRodin.wait` poll with.
        job_uuids: The task's jobs.
        message: The API's message (e.g. "Submitted.").
        prompt: The prompt the API used, if it said.
    """

    uuid: str
    subscription_key: str
    job_uuids: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    message: str | None = None
    prompt: str | None = None


@attrs.frozen
class Envelope:
    """The fields every API answer may carry to report an error."""

    error: str | None = None
    message: str | None = None

    @property
    def failed(self) -> bool:
        return self.error not in _SUCCESS_CODES


@attrs.frozen(kw_only=True)
class FileList(Envelope):
    """The answer of ``POST /download``; ``files`` is ``list`` on the wire."""

    files: list[ResultFile]


@attrs.frozen
class _WireJob:
    uuid: str
    status: str


@attrs.frozen(kw_only=True)
class StatusAnswer(Envelope):
    """The answer of ``POST /status``."""

    jobs: list[_WireJob]

    def to_status(self) -> TaskStatus:
        return TaskStatus([Job(j.uuid, JobStatus.parse(j.status), j.status) for j in self.jobs])


@attrs.frozen
class _WireJobs:
    uuids: list[str]
    subscription_key: str


@attrs.frozen(kw_only=True)
class SubmitAnswer(Envelope):
    """The answer of ``POST /rodin`` and ``POST /rodin_texture_only``."""

    uuid: str
    jobs: _WireJobs
    prompt: str | None = None

    def to_job(self) -> GenerationJob:
        return GenerationJob(
            self.uuid, self.jobs.subscription_key, self.jobs.uuids, self.message, self.prompt
        )


@attrs.frozen(kw_only=True)
class BalanceAnswer(Envelope):
    """The answer of ``GET /check_balance``."""

    balance: float


def _strict_number(value: object, _: object) -> float:
    # bool is an int, and "12" would float() fine: neither is a number on the wire.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _strict_str(value: object, _: object) -> str:
    # cattrs would turn 12 or None into "12"/"None"; a wrong type is a wrong answer.
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _is_list_type(t: Any) -> bool:
    return typing.get_origin(t) is list


def make_converter() -> cattrs.Converter:
    """Build the converter that turns API JSON into models, and nothing else."""
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(float, _strict_number)

    def list_hook_factory(t: Any) -> Any:
        (item,) = typing.get_args(t)

        def structure(value: object, _: object) -> list[Any]:
            if not isinstance(value, list):  # a dict or a string would iterate "fine"
                raise TypeError(f"expected a list, got {type(value).__name__}")
            return [conv.structure(v, item) for v in value]

        return structure

    conv.register_structure_hook_factory(_is_list_type, list_hook_factory)
    conv.register_structure_hook(
        FileList, make_dict_structure_fn(FileList, conv, files=override(rename="list"))
    )
    return conv


_converter = make_converter()


def parse_json(
    body: bytes, *, status_code: int, headers: Mapping[str, str] | None = None
) -> object:
    """Decode an API body, or raise `ResponseFormatError` (with the answer's headers)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # Recursion: deep nesting
        raise ResponseFormatError(
            f"the API answered with something that is not JSON: {_preview(body)!r}",
            status_code=status_code,
            headers=headers,
        ) from exc


def structure(
    raw: object, cls: type[T], *, status_code: int, headers: Mapping[str, str] | None = None
) -> T:
    """Structure decoded JSON as *cls*; any mismatch becomes `ResponseFormatError`."""
    if not isinstance(raw, dict):
        raise ResponseFormatError(
            f"the API answered with a JSON {type(raw).__name__}, expected an object",
            status_code=status_code,
            headers=headers,
        )
    try:
        return _converter.structure(raw, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise ResponseFormatError(
            f"the API's answer does not have the documented shape: {_explain(exc)}",
            status_code=status_code,
            headers=headers,
        ) from exc


def _explain(exc: Exception) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        notes = cattrs.transform_error(exc)
        return "; ".join(notes) if notes else str(exc)
    return str(exc)


def _preview(body: bytes, limit: int = 80) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return text + ("..." if len(body) > limit else "")

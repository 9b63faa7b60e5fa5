"""rodin-async: a fast, safe asyncio client for the Hyper3D Rodin API.

Bulk-download generation results in parallel::

    async with rodin_async.AsyncRodin() as rodin:
        async for result in rodin.download_many(task_uuids, "results"):
            print(result.task_uuid, result.ok)
"""

from __future__ import annotations

from ._client import AsyncRodin
from ._errors import (
    APIError,
    AuthenticationError,
    CertificateError,
    ClientClosedError,
    ConfigurationError,
    ConnectError,
    DestinationError,
    DownloadError,
    InvalidTaskError,
    JobFailedError,
    RateLimitError,
    ResponseFormatError,
    RodinError,
    TaskDownloadError,
    TimeoutError,
    TransportError,
    ValidationError,
    WaitTimeoutError,
)
from ._generation import (
    ConditionMode,
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
from ._manifest import FileCheck
from ._models import (
    DownloadedFile,
    GenerationJob,
    Job,
    JobStatus,
    ResultFile,
    TaskDownload,
    TaskStatus,
)
from ._progress import (
    FileFailed,
    FileFinished,
    FileProgress,
    FileRetried,
    FileStarted,
    ProgressCallback,
    ProgressEvent,
    TaskFinished,
    TaskStarted,
)
from ._public import publish
from ._retry import RetryPolicy
from ._version import __version__ as __version__

__all__ = [
    "APIError",
    "AsyncRodin",
    "AuthenticationError",
    "CertificateError",
    "ClientClosedError",
    "ConditionMode",
    "ConfigurationError",
    "ConnectError",
    "DestinationError",
    "DownloadError",
    "DownloadedFile",
    "FileCheck",
    "FileFailed",
    "FileFinished",
    "FileProgress",
    "FileRetried",
    "FileStarted",
    "GenerationJob",
    "GenerationRequest",
    "GeometryFormat",
    "GeometryInstructMode",
    "InvalidTaskError",
    "Job",
    "JobFailedError",
    "JobStatus",
    "Material",
    "MeshMode",
    "ProgressCallback",
    "ProgressEvent",
    "Quality",
    "RateLimitError",
    "ResponseFormatError",
    "ResultFile",
    "RetryPolicy",
    "RodinError",
    "TaskDownload",
    "TaskDownloadError",
    "TaskFinished",
    "TaskStarted",
    "TaskStatus",
    "TextureMaterial",
    "TextureRequest",
    "TextureResolution",
    "Tier",
    "TimeoutError",
    "TransportError",
    "ValidationError",
    "WaitTimeoutError",
]

publish(__name__, globals(), __all__)
del publish

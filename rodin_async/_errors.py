"""The exception tree of rodin-async.

Everything the public API raises derives from `RodinError`:

```text
RodinError
├── ConfigurationError          bad client set-up (no API key, bad options); also ValueError
├── ClientClosedError           the client is closed (or was never opened with async with)
├── InvalidTaskError            a blank or malformed task uuid; also ValueError
├── ValidationError             generation arguments the API would refuse; also ValueError
├── DestinationError            the destination folder can't be used or written
├── APIError                    the API answered, but not with what we asked for
│   ├── AuthenticationError     401/403: the key is missing, wrong or inactive
│   ├── RateLimitError          429: slow down (carries ``retry_after``)
│   └── ResponseFormatError     the body isn't the JSON shape the docs describe
├── TransportError              the request never got a complete answer
│   ├── ConnectError            the host could not be reached (refused, DNS, TLS)
│   │   └── CertificateError    its TLS certificate could not be verified (never retried)
│   └── TimeoutError            connect/read/write timed out (also the builtin TimeoutError)
├── DownloadError               one result file could not be downloaded
├── TaskDownloadError           one or more files of a task failed (carries each DownloadError)
├── JobFailedError              a generation job ended Failed or Canceled
└── WaitTimeoutError            waiting for a generation took longer than allowed
```

Lower-level exceptions (httpx, cattrs, OSError) are translated in `translate_http_errors`
and the converter's own wrapper; they stay reachable as ``__cause__``.
"""

from __future__ import annotations

import builtins
import contextlib
import re
import ssl
from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar

import httpx

__all__ = [
    "APIError",
    "AuthenticationError",
    "CertificateError",
    "ClientClosedError",
    "ConfigurationError",
    "ConnectError",
    "DestinationError",
    "DownloadError",
    "InvalidTaskError",
    "JobFailedError",
    "RateLimitError",
    "ResponseFormatError",
    "RodinError",
    "TaskDownloadError",
    "TimeoutError",
    "TransportError",
    "ValidationError",
    "WaitTimeoutError",
    "redact_url",
]


class RodinError(Exception):
    """Base class of every error rodin-async raises on purpose."""


class ConfigurationError(RodinError, ValueError):
    """The client was set up in a way that cannot work (for example, no API key)."""


class ClientClosedError(RodinError, RuntimeError):
    """The client was used after `aclose`, or in a way that needs ``async with``."""


class InvalidTaskError(RodinError, ValueError):
    """A task uuid is blank or cannot name a folder."""


class ValidationError(RodinError, ValueError):
    """Arguments the API would refuse, caught before a request (and a credit) is spent."""


class DestinationError(RodinError):
    """The destination folder is not a directory or cannot be written."""


# Where a request id may be: the common convention first, then AWS and Cloudflare.
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "x-amz-request-id",
                       "cf-ray")  # fmt: skip
# Credentials never kept on an exception, even if a server or proxy echoes them back.
_PRIVATE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


class _Headers(Mapping[str, str]):
    """A read-only, case-insensitive copy of an answer's headers (repeats joined by ", ")."""

    __slots__ = ("_items",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        items: dict[str, str] = {}
        for name, value in headers.items():
            key = name.lower()
            if key not in _PRIVATE_HEADERS:
                items[key] = f"{items[key]}, {value}" if key in items else value
        self._items = items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class APIError(RodinError):
    """The Rodin API refused the request or answered with an error.

    Like httpx's ``HTTPStatusError`` and openai-python's ``APIStatusError``, it keeps
    what the answer said, but not the ``httpx.Response`` itself: the response holds
    the request, whose headers carry your API key, and it can't be pickled.

    Attributes:
        code: The API's ``error`` string (e.g. ``"NO_ACTIVE_SUBSCRIPTION"``), if any.
        status_code: The HTTP status of the answer.
        message: The API's human-readable ``message``, if any.
        retry_after: Seconds the server asked us to wait before trying again, if it said.
        headers: The answer's headers: a read-only, case-insensitive mapping, without
            ``Authorization``, ``Cookie`` or ``Set-Cookie``. Empty if there was no answer.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.code = code
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        self.headers: Mapping[str, str] = _Headers(headers or {})
        super().__init__(_describe(message, code, status_code))

    @property
    def request_id(self) -> str | None:
        """The id the server gave this answer (``X-Request-Id`` and the like), for support."""
        return next((self.headers[h] for h in _REQUEST_ID_HEADERS if h in self.headers), None)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_api_error,
            (type(self), self.message, self.code, self.status_code, self.retry_after,
             dict(self.headers)),
        )  # fmt: skip


def _rebuild_api_error(
    cls: type[APIError],
    message: str,
    code: str | None,
    status_code: int | None,
    retry_after: float | None,
    headers: Mapping[str, str] | None = None,
) -> APIError:
    return cls(
        message, code=code, status_code=status_code, retry_after=retry_after, headers=headers
    )


def _describe(message: str, code: str | None, status_code: int | None) -> str:
    parts = [p for p in (code, f"HTTP {status_code}" if status_code else None) if p]
    return f"{message} ({', '.join(parts)})" if parts else message


class AuthenticationError(APIError):
    """The API key was rejected (HTTP 401/403). Check ``RODIN_API_KEY``."""


class RateLimitError(APIError):
    """The API throttled us (HTTP 429) and retries did not get through."""


class ResponseFormatError(APIError):
    """The API answered 2xx, but the body is not the documented JSON shape."""


class TransportError(RodinError):
    """The connection failed before a complete answer arrived."""


class ConnectError(TransportError):
    """The host could not be reached: connection refused, unknown name, no route, or TLS.

    The message names the origin (``scheme://host:port``), never a path or query.
    """


class CertificateError(ConnectError):
    """The host's TLS certificate could not be verified. Retrying would not help.

    Trust a private CA with ``AsyncRodin(verify=...)`` (a CA bundle path or an
    ``ssl.SSLContext``), the CLI's ``--ca-bundle``, or ``SSL_CERT_FILE``.
    """


class TimeoutError(TransportError, builtins.TimeoutError):
    """Connecting, reading or writing took longer than the configured timeout."""


class DownloadError(RodinError):
    """A result file could not be downloaded, even after retries.

    Attributes:
        name: The file's name as the API listed it.
        url: The file's URL without its query string (presigned URLs carry credentials).
        status_code: The last HTTP status the file host answered, if any.
        retry_after: Seconds the file host asked us to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str,
        url: str,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.name = name
        self.url = redact_url(url)
        self.status_code = status_code
        self.retry_after = retry_after
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_download_error,
            (type(self), self.args[0], self.name, self.url, self.status_code, self.retry_after),
        )


def _rebuild_download_error(
    cls: type[DownloadError],
    message: str,
    name: str,
    url: str,
    status_code: int | None,
    retry_after: float | None,
) -> DownloadError:
    return cls(message, name=name, url=url, status_code=status_code, retry_after=retry_after)


class TaskDownloadError(RodinError):
    """Some files of a task failed; the rest were downloaded.

    Attributes:
        task_uuid: The task whose files failed.
        errors: One `DownloadError` per failed file.
    """

    def __init__(self, task_uuid: str, errors: Sequence[DownloadError]) -> None:
        self.task_uuid = task_uuid
        self.errors = tuple(errors)
        lines = "; ".join(str(e) for e in self.errors)  # each message names its file
        super().__init__(f"task {task_uuid}: {len(self.errors)} file(s) failed: {lines}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.task_uuid, self.errors))


class JobFailedError(RodinError):
    """A generation job ended ``Failed`` or ``Canceled``.

    Attributes:
        job_uuid: The job that failed.
        status: Its final status string, as the API sent it.
    """

    def __init__(self, job_uuid: str, status: str) -> None:
        self.job_uuid = job_uuid
        self.status = status
        super().__init__(f"generation job {job_uuid} ended {status}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.job_uuid, self.status))


class WaitTimeoutError(RodinError, builtins.TimeoutError):
    """The jobs were not done within the time `AsyncRodin.wait` was given."""


def error_key(error: BaseException | None) -> object:
    """What an error compares and hashes by inside a result: its type and ``args``.

    Exceptions compare by identity, so a result holding one would never equal its own
    pickled copy. Every rodin-async error keeps its whole message in ``args``.
    """
    return None if error is None else (type(error), error.args)


def redact_url(url: str | httpx.URL) -> str:
    """Return *url* without query, fragment or user info, fit for messages and logs.

    Total: a value that isn't a valid URL is cut at its first ``?`` or ``#``, stripped
    of anything before an ``@``, and shown with unprintable characters escaped.
    """
    try:
        u = httpx.URL(url)
        return str(u.copy_with(query=None, fragment=None, username=None, password=None))
    except (httpx.InvalidURL, ValueError, TypeError, UnicodeError):
        text = re.split(r"[?#]", str(url), maxsplit=1)[0]
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "", text
        host_and_path = rest.split("/", 1)
        host_and_path[0] = host_and_path[0].rpartition("@")[2]
        cleaned = scheme + sep + "/".join(host_and_path)
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in cleaned[:500])


@contextlib.contextmanager
def translate_http_errors(what: str) -> Iterator[None]:
    """Turn httpx's exceptions into ours; *what* says what we were doing.

    The original exception stays available as ``__cause__``. Its message is not
    repeated: httpx includes full URLs, and presigned URLs carry credentials.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TimeoutError(f"{what}: timed out ({_brief(exc)})") from exc
    except httpx.ConnectError as exc:
        raise _connect_error(what, exc) from exc
    except httpx.UnsupportedProtocol as exc:  # a URL no retry will make fetchable
        raise RodinError(f"{what}: unsupported URL scheme") from exc
    except httpx.TransportError as exc:
        raise TransportError(f"{what}: connection failed ({_brief(exc)})") from exc
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"{what}: invalid URL") from exc
    except httpx.HTTPError as exc:  # too many redirects, undecodable body: not transient
        raise RodinError(f"{what}: {_brief(exc)}") from exc


def _connect_error(what: str, exc: httpx.ConnectError) -> ConnectError:
    where = _origin_of(exc)
    certificate = _cause_of(exc, ssl.SSLCertVerificationError)
    if certificate is not None:
        reason = certificate.verify_message or str(certificate)
        return CertificateError(
            f"{what}: the TLS certificate of {where} could not be verified ({reason}); "
            "if it is signed by a private CA, trust it with verify=... (a CA bundle or an "
            "ssl.SSLContext), --ca-bundle, or SSL_CERT_FILE"
        )
    return ConnectError(f"{what}: can't connect to {where} ({_brief(exc)})")


def _origin_of(exc: httpx.RequestError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # raised without a request attached
        return "the host"
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


E = TypeVar("E", bound=BaseException)


def _cause_of(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of *kind* in *exc*'s chain of causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _brief(exc: Exception) -> str:
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__

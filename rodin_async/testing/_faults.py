"""Faults the fake Rodin servers inject, one per request, from per-file and API queues.

Build faults with the `Fault` constructors (`Fault.status(503)`, `Fault.truncate(at=1000)`,
...). Each kind is its own small frozen class so the server can dispatch on the type; users
only ever need `Fault`.

Faults that only make sense for a result file (`redirect`, `redirect_loop`, `ignore_range`,
`wrong_content_range`, `expire`) are refused by `FakeRodin.add_api_faults`.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
from attrs import validators

_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_non_negative = validators.ge(0)
_status_code = validators.and_(validators.ge(200), validators.le(599))


@attrs.frozen
class Fault:
    """One misbehaviour of the fake server, consumed by exactly one request.

    Build faults with the constructors below (not ``Fault()``) and queue them on a
    result file with `FakeRodin.add_faults`, or on the API with
    `FakeRodin.add_api_faults`:

    ```python
    server.add_faults(task, "base.glb", Fault.truncate(at=1000), Fault.status(503))
    server.add_api_faults(Fault.status(429, retry_after=1), endpoint="status")
    ```

    Each request takes the next fault of its queue; when the queue is empty, requests
    are answered normally. So the two faults above make the first two GETs of
    ``base.glb`` fail, and a client that retries gets the file on the third.

    On either host: `status`, `body`, `truncate`, `reset`, `stall`, `delay`,
    `trickle`, `content_length`. On result files only: `redirect`, `redirect_loop`,
    `ignore_range`, `wrong_content_range`, `expire`.
    """

    # Whether the fault can be queued on the API endpoints (some only make sense for files).
    api_allowed: ClassVar[bool] = True

    @staticmethod
    def status(
        code: int, *, retry_after: str | int | None = None, body: bytes | None = None
    ) -> Fault:
        """Answer with status `code` instead of the real response.

        Args:
            code: Any final HTTP status (200-599), e.g. 429, 503, 500, 404, 410, 401, 403.
            retry_after: Sent as the `Retry-After` header: seconds (`1` or `"1"`) or an
                HTTP-date string, passed through unchanged.
            body: The body to send; by default a JSON error envelope on the API and a short
                text on the file host.
        """
        return StatusFault(code, None if retry_after is None else str(retry_after), body)

    @staticmethod
    def body(raw: bytes, status: int = 201, content_type: str = "application/json") -> Fault:
        """Answer with exactly `raw` (malformed JSON, HTML, an empty body, a wrong shape)."""
        return BodyFault(raw, status, content_type)

    @staticmethod
    def truncate(at: int) -> Fault:
        """Declare the full Content-Length, send `at` body bytes, then close (FIN)."""
        return TruncateFault(at)

    @staticmethod
    def reset(at: int = 0) -> Fault:
        """Send headers and `at` body bytes, then reset the connection with a TCP RST.

        The bytes are flushed to the kernel first, then the socket gets SO_LINGER 0 and is
        aborted, so the peer sees ECONNRESET (httpx: `ReadError`) after what was sent. With
        `at=0` nothing at all is sent, not even the status line.
        """
        return ResetFault(at)

    @staticmethod
    def stall(after: int = 0, seconds: float = 30) -> Fault:
        """Send headers and `after` body bytes, go silent for `seconds`, then finish.

        The silence ends early, with the connection closed, if the client hangs up or the
        server stops.
        """
        return StallFault(after, seconds)

    @staticmethod
    def delay(seconds: float) -> Fault:
        """Wait `seconds` before answering normally."""
        return DelayFault(seconds)

    @staticmethod
    def trickle(chunk: int, interval: float) -> Fault:
        """Send the body `chunk` bytes at a time, `interval` seconds apart."""
        return TrickleFault(chunk, interval)

    @staticmethod
    def redirect(hops: int = 1, status: int = 302) -> Fault:
        """Redirect `hops` times through other URLs of the file host, then serve the file.

        The intermediate URLs consume no faults; the final URL is the file's own (with an
        extra query parameter), so it consumes the file's next fault like any request.
        """
        return RedirectFault(hops, status)

    @staticmethod
    def redirect_loop(status: int = 302) -> Fault:
        """Redirect forever between two URLs of the file host."""
        return RedirectFault(None, status)

    @staticmethod
    def ignore_range() -> Fault:
        """Answer 200 with the whole body even when a Range was asked."""
        return IgnoreRangeFault()

    @staticmethod
    def wrong_content_range() -> Fault:
        """Answer 206 for a range that starts elsewhere than the one asked (headers agree)."""
        return WrongContentRangeFault()

    @staticmethod
    def content_length(delta: int) -> Fault:
        """Declare Content-Length as the true length plus `delta`.

        `delta > 0`: the whole body is sent, then the connection is closed, so the client
        sees a body shorter than declared (httpx: `RemoteProtocolError`). `delta < 0`: the
        declared bytes go through h11 and the rest straight to the socket (h11 refuses to
        send more than declared), with `Connection: close`, then the connection is closed;
        a client reads a complete-looking, short body.
        """
        return ContentLengthFault(delta)

    @staticmethod
    def expire() -> Fault:
        """Answer 403 and invalidate every URL listed so far for the task."""
        return ExpireFault()


@attrs.frozen
class StatusFault(Fault):
    """Answer with a given status."""

    code: int = attrs.field(validator=_status_code)
    retry_after: str | None = None
    payload: bytes | None = None


@attrs.frozen
class BodyFault(Fault):
    """Answer with a raw body."""

    raw: bytes
    code: int = attrs.field(default=201, validator=_status_code)
    content_type: str = "application/json"


@attrs.frozen
class TruncateFault(Fault):
    """Close the connection after `at` body bytes."""

    at: int = attrs.field(validator=_non_negative)


@attrs.frozen
class ResetFault(Fault):
    """Reset the connection after `at` body bytes."""

    at: int = attrs.field(default=0, validator=_non_negative)


@attrs.frozen
class StallFault(Fault):
    """Go silent after `after` body bytes."""

    after: int = attrs.field(default=0, validator=_non_negative)
    seconds: float = attrs.field(default=30, validator=_non_negative)


@attrs.frozen
class DelayFault(Fault):
    """Wait before answering."""

    seconds: float = attrs.field(validator=_non_negative)


@attrs.frozen
class TrickleFault(Fault):
    """Serve the body slowly."""

    chunk: int = attrs.field(validator=validators.ge(1))
    interval: float = attrs.field(validator=_non_negative)


@attrs.frozen
class RedirectFault(Fault):
    """Redirect `hops` times (None: forever)."""

    api_allowed: ClassVar[bool] = False

    hops: int | None = attrs.field(validator=validators.optional(validators.ge(1)))
    code: int = attrs.field(default=302, validator=validators.in_(_REDIRECT_STATUSES))


@attrs.frozen
class IgnoreRangeFault(Fault):
    """Answer 200 with the whole body."""

    api_allowed: ClassVar[bool] = False


@attrs.frozen
class WrongContentRangeFault(Fault):
    """Answer 206 for another range than the one asked."""

    api_allowed: ClassVar[bool] = False


@attrs.frozen
class ContentLengthFault(Fault):
    """Declare a wrong Content-Length."""

    delta: int


@attrs.frozen
class ExpireFault(Fault):
    """Answer 403 and invalidate the task's URLs."""

    api_allowed: ClassVar[bool] = False

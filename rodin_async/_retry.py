"""When and how long to wait before trying again.

The waiting itself is stamina's (exponential backoff with jitter, bounded attempts, and
``stamina.set_testing`` to switch sleeps off in test suites). This module only decides
*which* failures deserve another try and honours ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable

import attrs
import httpx
import stamina

from ._errors import APIError, CertificateError, DownloadError, RateLimitError, TransportError
from ._headers import retry_after as parse_retry_after

__all__ = [
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "RetryableDownloadError",
    "is_retryable",
    "parse_retry_after",
    "safe_to_resend",
]

# Statuses that say "not now" rather than "never": timeouts, throttling, server trouble.
RETRYABLE_STATUSES = frozenset(
    {408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524}
)


class RetryableDownloadError(DownloadError):
    """A file attempt that failed in a way another attempt may fix (short body, 503...)."""


@attrs.frozen
class RetryPolicy:
    """How rodin-async retries failed API calls and file transfers.

    Waits grow exponentially from *wait_initial* up to *wait_max*, plus up to
    *wait_jitter* seconds of random jitter. A ``Retry-After`` header from the server
    replaces the computed wait, capped at *max_retry_after*.

    Attributes:
        attempts: Tries per API call or file, including the first one.
        wait_initial: First backoff, in seconds.
        wait_max: Longest computed backoff, in seconds.
        wait_jitter: Maximum random jitter added to each backoff, in seconds.
        max_retry_after: Longest wait a server's ``Retry-After`` can impose, in seconds.

    Test suites switch every wait off with ``stamina.set_testing(True, attempts=100,
    cap=True)`` (keeping these attempt counts).
    """

    attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    wait_initial: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    wait_max: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    wait_jitter: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    max_retry_after: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))

    def retrying(
        self, on: Callable[[Exception], bool | float] | None = None
    ) -> AsyncIterable[stamina.Attempt]:
        """The attempts of one retried operation: ``async for attempt in policy.retrying()``.

        *on* replaces `backoff_for` to decide which failures are retried.
        """
        return stamina.retry_context(
            on=on or self.backoff_for,
            attempts=self.attempts,
            timeout=None,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            wait_jitter=self.wait_jitter,
        )

    def backoff_for(self, exc: Exception) -> bool | float:
        """Tell stamina whether *exc* is worth another try, and how long to wait.

        Returns False (give up), True (use the computed backoff) or the seconds the
        server asked for with ``Retry-After``.
        """
        if not is_retryable(exc):
            return False
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is None:
            return True
        return float(min(max(retry_after, 0.0), self.max_retry_after))


def safe_to_resend(exc: BaseException) -> bool:
    """True when a non-idempotent request surely did not reach the server.

    That is: the connection was never made, or the server throttled us (429) rather
    than process the request.
    """
    if isinstance(exc, RateLimitError):
        return True
    return isinstance(exc, TransportError) and isinstance(
        exc.__cause__, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
    )


def is_retryable(exc: BaseException) -> bool:
    """True for failures that another attempt may fix (an untrusted certificate is not)."""
    if isinstance(exc, CertificateError):
        return False
    if isinstance(exc, (TransportError, RetryableDownloadError, RateLimitError)):
        return True
    return isinstance(exc, APIError) and exc.status_code in RETRYABLE_STATUSES

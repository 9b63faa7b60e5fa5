"""Which failures are retried, and how long Retry-After makes us wait."""

from __future__ import annotations

import datetime as dt

import pytest

from rodin_async import APIError, AuthenticationError, RateLimitError, RetryPolicy, TransportError
from rodin_async._retry import RetryableDownloadError, parse_retry_after

NOW = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Wed, 25 Nov 2026 12:00:30 GMT", 30.0),
        ("Wed, 25 Nov 2026 11:00:00 GMT", 0.0),  # in the past: go now
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    """Both RFC 9110 forms are understood; garbage falls back to normal backoff."""
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_is_honoured_and_capped() -> None:
    """The server's wait replaces our backoff, but never beyond max_retry_after."""
    policy = RetryPolicy(max_retry_after=60)
    assert policy.backoff_for(RateLimitError("slow", retry_after=3)) == 3.0
    assert policy.backoff_for(RateLimitError("slow", retry_after=3600)) == 60.0
    assert policy.backoff_for(RateLimitError("slow")) is True


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (TransportError("reset"), True),
        (APIError("busy", status_code=503), True),
        (APIError("throttled", status_code=429), True),
        (APIError("timeout", status_code=408), True),
        (APIError("bad", status_code=400), False),
        (AuthenticationError("no", status_code=401), False),
        (RetryableDownloadError("short", name="a", url="http://x/a"), True),
        (ValueError("bug"), False),
    ],
)
def test_what_is_retried(exc: Exception, retried: bool) -> None:
    """Transient failures are retried; refusals and bugs are not."""
    assert bool(RetryPolicy().backoff_for(exc)) is retried


def test_policy_validates() -> None:
    """A policy with zero attempts is refused when built."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)

"""Reading what servers send: every header value and listed URL is untrusted input.

Each parser here is total: garbage gives None (or a `BadValue` the caller turns into a
per-file failure), never a raw ``ValueError`` that could escape a bulk run. Only ASCII
digits count as digits (``"³".isdigit()`` is True in Python, ``int("³")`` raises).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re

import attrs
import httpx

# Far beyond any real file (1 EiB); a longer number is garbage, not a size.
_NUMBER = "[0-9]{1,19}"
_DIGITS = re.compile(_NUMBER)
_CONTENT_RANGE = re.compile(rf"bytes[ \t]+({_NUMBER})-({_NUMBER})/({_NUMBER}|\*)")
_UNSATISFIED_RANGE = re.compile(rf"bytes[ \t]+\*/({_NUMBER})")
# RFC 9110 entity-tag characters; a weak tag (W/"...") can't be used in If-Range.
_STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e]{0,200}"')
_HTTP_DATE = re.compile(r"[\x20-\x7e]{1,64}")
_MAX_URL_LENGTH = 16 * 1024
# Encodings the downloader can undo itself, with bounded memory.
DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class BadValue(Exception):
    """A header or listed value that can't be used; the message says why (no secrets)."""


@attrs.frozen
class ContentRange:
    """``Content-Range: bytes first-last/total`` of a 206 answer."""

    first: int
    last: int
    total: int | None  # None for "*": the server doesn't know


def content_length(headers: httpx.Headers) -> int | None:
    """The body length announced by the server, or None when absent or unreadable."""
    value = headers.get("content-length", "").strip()
    return int(value) if _DIGITS.fullmatch(value) else None


def content_range(headers: httpx.Headers) -> ContentRange | None:
    """The ``Content-Range`` of a 206, or None unless it is well-formed and consistent."""
    match = _CONTENT_RANGE.fullmatch(headers.get("content-range", "").strip())
    if not match:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if last < first or (total is not None and last >= total):
        return None
    return ContentRange(first, last, total)


def unsatisfied_length(headers: httpx.Headers) -> int | None:
    """The file length a 416 reports (``Content-Range: bytes */<length>``), if readable."""
    match = _UNSATISFIED_RANGE.fullmatch(headers.get("content-range", "").strip())
    return int(match.group(1)) if match else None


def content_codings(headers: httpx.Headers) -> tuple[str, ...]:
    """The codings applied to the body, in the order they were applied.

    ``identity`` is dropped, so an empty tuple means the body is the file itself.

    Raises:
        BadValue: A coding the downloader can't undo (``br``, ``zstd``, garbage).
    """
    values = headers.get_list("content-encoding", split_commas=True)
    codings = tuple(v.strip().lower() for v in values if v.strip().lower() not in ("", "identity"))
    for coding in codings:
        if coding not in DECODABLE:
            shown = coding if coding.isascii() and coding.isprintable() else "(unreadable)"
            raise BadValue(f"the file host sent an unsupported Content-Encoding {shown[:40]!r}")
    return codings


def strong_etag(headers: httpx.Headers) -> str | None:
    """The response's ETag if it is strong and well-formed (usable in ``If-Range``)."""
    value: str = headers.get("etag", "").strip()
    return value if _STRONG_ETAG.fullmatch(value) else None


def last_modified(headers: httpx.Headers) -> str | None:
    """The response's ``Last-Modified``, if it is a readable HTTP date."""
    value: str = headers.get("last-modified", "").strip()
    return value if _http_date(value) is not None else None


def retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Returns None when the header is absent or unreadable: a garbled header should
    fall back to normal backoff, not fail the request.
    """
    if value is None or not (value := value.strip()):
        return None
    if _DIGITS.fullmatch(value):
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    try:
        return max(0.0, (when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds())
    except (TypeError, ValueError, OverflowError):  # a date at the edge of datetime's range
        return None


def _http_date(value: str) -> dt.datetime | None:
    """*value* as an aware datetime if it is a readable HTTP date (naive ones taken as GMT)."""
    if not _HTTP_DATE.fullmatch(value):
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # RFC 9110 dates are GMT; treat naive ones the same
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def file_url(raw: str, base: httpx.URL | None = None) -> httpx.URL:
    """A listed file URL (or a redirect's ``Location``, joined to *base*), checked.

    Raises:
        BadValue: Not an absolute http(s) URL with a host, or not a URL at all.
    """
    if not raw or len(raw) > _MAX_URL_LENGTH or not raw.isprintable():
        raise BadValue("the file URL is empty, too long or contains control characters")
    try:
        url = base.join(raw) if base is not None else httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError, UnicodeError):
        raise BadValue("the file URL is not a valid URL") from None
    if url.scheme not in ("http", "https"):
        raise BadValue(f"the file URL has scheme {url.scheme[:20]!r}; only http(s) is fetched")
    if not url.host:
        raise BadValue("the file URL has no host")
    return url

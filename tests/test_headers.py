"""Parsing what servers send: every parser is total over garbage (issue 9, defect 7)."""

from __future__ import annotations

import contextlib
import datetime as dt

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rodin_async._errors import redact_url
from rodin_async._headers import (
    BadValue,
    ContentRange,
    content_codings,
    content_length,
    content_range,
    file_url,
    last_modified,
    retry_after,
    strong_etag,
    unsatisfied_length,
)

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.timezone.utc)
# Header values as h11 hands them over: latin-1 text without CR, LF or NUL.
HEADER_TEXT = st.text(st.characters(min_codepoint=1, max_codepoint=255, exclude_characters="\r\n"))


def headers(**values: str) -> httpx.Headers:
    """Headers as received: raw latin-1 bytes, like h11 hands them to httpx."""
    return httpx.Headers(
        [(k.replace("_", "-").encode(), v.encode("latin-1")) for k, v in values.items()]
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("³", None),  # "³".isdigit() is True; float("³") raises
        ("٣", None),  # an Arabic-Indic three: a digit to Python, not to HTTP
        ("-5", None),
        ("1e3", None),
        ("9" * 40, None),
        ("Wed, 02 Dec 2026 12:01:00 GMT", 60.0),
        ("Wed, 02 Dec 2026 11:00:00 GMT", 0.0),
        ("Wed, 02 Dec 99999 12:01:00 GMT", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_reads_seconds_and_dates_and_ignores_the_rest(
    value: str, seconds: float | None
) -> None:
    """Retry-After: ASCII delta-seconds or an HTTP date; anything else means "not said"."""
    assert retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    ("value", "length"),
    [("12", 12), (" 12 ", 12), ("\xb3", None), ("-1", None), ("1e3", None), ("12, 12", None)],
)
def test_content_length_accepts_only_ascii_digits(value: str, length: int | None) -> None:
    """Content-Length: only plain ASCII digits count."""
    assert content_length(headers(content_length=value)) == length


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("bytes 10-19/20", ContentRange(10, 19, 20)),
        ("bytes 10-19/*", ContentRange(10, 19, None)),
        ("bytes 19-10/20", None),  # last before first
        ("bytes 10-20/20", None),  # last beyond the end
        ("bytes \xb3-19/20", None),
        ("bytes */20", None),
        ("items 0-1/2", None),
    ],
)
def test_content_range_must_be_well_formed_and_consistent(
    value: str, parsed: ContentRange | None
) -> None:
    """A Content-Range that contradicts itself is no range at all."""
    assert content_range(headers(content_range=value)) == parsed


def test_unsatisfied_range_reads_the_length_of_a_416() -> None:
    """A 416's ``bytes */N`` gives the file's length; garbage gives None."""
    assert unsatisfied_length(headers(content_range="bytes */1234")) == 1234
    assert unsatisfied_length(headers(content_range="bytes */\xb3")) is None


@pytest.mark.parametrize(
    ("value", "codings"),
    [("", ()), ("identity", ()), ("gzip", ("gzip",)), ("GZIP, identity", ("gzip",)),
     ("deflate, gzip", ("deflate", "gzip")), ("x-gzip", ("x-gzip",))],
)  # fmt: skip
def test_content_codings_lists_what_must_be_undone(value: str, codings: tuple[str, ...]) -> None:
    """Content-Encoding: identity dropped, order kept, case folded."""
    assert content_codings(headers(content_encoding=value)) == codings


@pytest.mark.parametrize("value", ["br", "zstd", "gzip, compress", "\xe9"])
def test_content_codings_refuses_what_cant_be_undone(value: str) -> None:
    """A coding the downloader can't decode is a BadValue, not a crash later."""
    with pytest.raises(BadValue, match="unsupported Content-Encoding"):
        content_codings(headers(content_encoding=value))


@pytest.mark.parametrize(
    ("value", "etag"),
    [('"abc"', '"abc"'), ('W/"abc"', None), ("abc", None), ('"a"b"', None), ('"\xe9"', None)],
)
def test_only_strong_well_formed_etags_are_kept(value: str, etag: str | None) -> None:
    """If-Range needs a strong ETag; weak or malformed ones are not used."""
    assert strong_etag(headers(etag=value)) == etag


def test_last_modified_must_be_a_date() -> None:
    """Last-Modified is kept only when it parses as an HTTP date."""
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert last_modified(headers(last_modified=date)) == date
    assert last_modified(headers(last_modified="yesterday")) is None


@pytest.mark.parametrize(
    "raw",
    ["http://[::1/a", "ftp://host/file", "file:///etc/passwd", "", "http://", "//host/x",
     "http://host/\x00", "javascript:alert(1)", "http://" + "a" * 20_000],
)  # fmt: skip
def test_unusable_file_urls_are_bad_values(raw: str) -> None:
    """A listed URL that isn't an absolute http(s) URL fails its file, not the run."""
    with pytest.raises(BadValue):
        file_url(raw)


def test_redirect_locations_are_joined_to_the_current_url() -> None:
    """A relative Location is resolved against the URL that answered."""
    base = httpx.URL("https://files.example/a/b?sig=1")
    assert str(file_url("../c?x=2", base=base)) == "https://files.example/c?x=2"
    with pytest.raises(BadValue):
        file_url("ftp://elsewhere/", base=base)


@given(HEADER_TEXT)
def test_every_parser_is_total(value: str) -> None:
    """No header value makes a parser raise anything but BadValue."""
    h = headers(content_length=value, content_range=value, etag=value, last_modified=value,
                content_encoding=value)  # fmt: skip
    retry_after(value)
    content_length(h)
    content_range(h)
    unsatisfied_length(h)
    strong_etag(h)
    last_modified(h)
    with contextlib.suppress(BadValue):
        content_codings(h)


@given(st.text())
def test_listed_urls_are_checked_without_surprises(raw: str) -> None:
    """Any listed string either becomes an http(s) URL or a BadValue."""
    try:
        url = file_url(raw)
    except BadValue:
        return
    assert url.scheme in ("http", "https") and url.host


@given(st.text())
def test_redact_url_is_total_and_drops_queries(raw: str) -> None:
    """Redacting never raises, and nothing after a ``?`` survives."""
    shown = redact_url(raw)
    if "?" in raw:
        secret = raw.split("?", 1)[1]
        if len(secret) >= 8:
            assert secret not in shown

"""The API key never leaks: not in logs at any level, errors, reprs, or file-host requests."""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from rodin_async import (
    AsyncRodin,
    AuthenticationError,
    FileFailed,
    FileRetried,
    ProgressEvent,
    RetryPolicy,
    RodinError,
    TaskDownloadError,
)
from rodin_async.testing import FakeRodin, Fault

pytestmark = pytest.mark.anyio
LOGGERS = ["", "httpx", "httpcore", "stamina", "rodin_async", "asyncio", "anyio"]


@pytest.fixture
def key() -> str:
    """A fresh, recognisable key for each test."""
    return f"sk-live-{secrets.token_hex(16)}"


@pytest.fixture
def server(key: str) -> Iterator[FakeRodin]:
    with FakeRodin(api_key=key) as fake:
        yield fake


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger that could see a request, at DEBUG, captured."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _fragments(key: str) -> list[str]:
    """The key and pieces of it long enough to identify it (a truncated leak is a leak)."""
    secret = key.removeprefix("sk-live-")
    return [key, secret[:12], secret[-12:]]


def exception_texts(exc: BaseException) -> Iterator[str]:
    """str, repr, args and traceback of *exc* and of everything chained to it."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield "".join(traceback.format_exception(current))
        request = getattr(current, "_request", None)  # httpx keeps the request it failed
        if isinstance(request, httpx.Request):
            yield repr(request.headers)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += list(getattr(current, "exceptions", ()))  # exception groups
        todo += list(getattr(current, "errors", ()))  # TaskDownloadError's files


def log_texts(records: Iterable[logging.LogRecord]) -> Iterator[str]:
    """Each record's message, every attribute (args, extras), and its traceback."""
    formatter = logging.Formatter()
    for record in records:
        yield record.getMessage()
        yield repr(record.__dict__)
        if record.exc_info:
            yield formatter.formatException(record.exc_info)


def assert_no_key(key: str, texts: Iterable[str]) -> None:
    """No text holds the key or an identifying piece of it."""
    for text in texts:
        for fragment in _fragments(key):
            assert fragment not in text, f"the API key leaked: ...{text[:300]!r}"


async def test_key_never_leaks_through_failures_retries_and_redirects(
    server: FakeRodin, key: str, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Failures, retries, redirects, expiry and auth errors at DEBUG never show the key."""
    task = server.add_task({f"{n}.bin": 20_000 for n in "abcdef"})
    server.add_faults(task, "a.bin", Fault.status(503, retry_after=0), Fault.reset(0))
    server.add_faults(task, "b.bin", Fault.redirect(3, 307), Fault.truncate(5000))
    server.add_faults(task, "c.bin", Fault.redirect(2, 302), Fault.expire())
    server.add_faults(task, "d.bin", *[Fault.status(500)] * 5)
    server.add_faults(task, "e.bin", Fault.redirect_loop())
    server.add_faults(task, "f.bin", Fault.stall(100, 5), Fault.content_length(+3))
    server.add_api_faults(Fault.status(503), Fault.reset(0), endpoint="download")
    refused = server.add_task({"x.bin": 10})
    events: list[ProgressEvent] = []
    texts: list[str] = []
    async with AsyncRodin(
        key,
        base_url=server.base_url,
        timeout=httpx.Timeout(0.5, connect=2),
        retry=RetryPolicy(attempts=3),
    ) as rodin:
        many = rodin.download_many([task, "missing"], tmp_path, on_progress=events.append)
        results = [r async for r in many]
        server.add_api_faults(Fault.status(401), endpoint="download")
        with pytest.raises(AuthenticationError) as refusal:
            await rodin.download(refused, tmp_path)
        texts += [repr(rodin), str(rodin)]
    async with AsyncRodin("sk-live-wrong-key-000000", base_url=server.base_url) as wrong:
        with pytest.raises(AuthenticationError) as wrong_key:
            await wrong.list_files(task)
    errors: list[BaseException] = [refusal.value, wrong_key.value]
    errors += [r.error for r in results if r.error is not None]
    errors += [e.error for e in events if isinstance(e, (FileRetried, FileFailed))]
    assert any(isinstance(e, TaskDownloadError) for e in errors)
    texts += [repr(results), repr(events)]
    texts += [t for e in errors for t in exception_texts(e)]
    texts += list(log_texts(logs.records))
    assert_no_key(key, texts)
    assert_no_key(key, [repr(server)])

    file_requests = server.file_requests()
    assert len(file_requests) > 20
    for request in file_requests:
        assert "authorization" not in request.headers
        assert_no_key(key, [request.path, request.query, repr(request.headers)])
    # The capture saw the HTTP layer and the key really went to the API (not vacuous).
    # (httpcore logs nothing here: the API's connections are ours too, with no trace.)
    assert {"httpx", "stamina"} <= {r.name.split(".")[0] for r in logs.records}
    sent = {r.headers.get("authorization") for r in server.api_requests()}
    assert sent == {f"Bearer {key}", "Bearer sk-live-wrong-key-000000"}


@pytest.mark.parametrize(
    "mangled",
    [
        pytest.param("{key}\nX-Other: 1", id="newline"),
        pytest.param("{key}\r", id="trailing-cr-inside"),
        pytest.param("sk-a\x00{key}", id="nul"),
        pytest.param("sk-\u00e9{key}", id="non-ascii"),
        pytest.param("sk-a {key}", id="space"),
        pytest.param("\u201c{key}\u201d", id="smart-quotes"),
    ],
)
async def test_a_mangled_key_is_never_echoed(
    server: FakeRodin, key: str, tmp_path: Path, logs: pytest.LogCaptureFixture, mangled: str
) -> None:
    """A key pasted with a stray newline, NUL, space or quotes fails without showing it."""
    bad = mangled.format(key=key) + "-tail"
    task = server.add_task({"a.bin": 100})
    try:
        async with AsyncRodin(bad, base_url=server.base_url, retry=RetryPolicy(attempts=2)) as r:
            await r.download(task, tmp_path)
    except RodinError as exc:
        error: BaseException = exc
    else:  # pragma: no cover - the fake accepts only the clean key
        pytest.fail("a mangled key was accepted")
    assert_no_key(key, [*exception_texts(error), *log_texts(logs.records)])
    for request in server.requests:
        assert_no_key(key, [request.path, request.query])

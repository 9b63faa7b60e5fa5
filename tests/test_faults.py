"""The fault matrix: every failure the network or the API can throw at a transfer.

Each fault hits one file at several points of its transfer (before the headers, after
them, mid-body, at the last byte) or hits the API's listing, alone or mixed across many
tasks at once. Every case asserts the outcome (success, or the specific `RodinError`) and
the disk state: final files byte-identical to the server's, no final-named partial, and
nothing hidden but resumable ``.<name>.part`` files and truthful manifests.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import email.utils
import json
import random
import re
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import stamina

from rodin_async import (
    APIError,
    AsyncRodin,
    AuthenticationError,
    ConnectError,
    FileProgress,
    FileRetried,
    ProgressEvent,
    RateLimitError,
    ResponseFormatError,
    RetryPolicy,
    RodinError,
    TaskDownloadError,
    TimeoutError,
    TransportError,
)
from rodin_async._headers import BadValue
from rodin_async.testing import FakeRodin, Fault

from .helpers import LOCK, MANIFEST, CountingTransport, assert_complete, final_files

pytestmark = pytest.mark.anyio

NAME = "model.glb"  # the file the faults hit
SIZE = 300_001
MID, LAST = SIZE // 2, SIZE - 1
FILES = {NAME: SIZE, "texture.png": 60_000, "meta.json": 700}
ATTEMPTS = 3
_PART = re.compile(r"\.(?P<name>.+)\.part")
_META = re.compile(r"\.(?P<name>.+)\.meta")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    with FakeRodin(api_key="sk-fault-matrix-key") as fake:
        yield fake


@pytest.fixture
def fresh_server() -> Iterator[FakeRodin]:
    """A server of one's own, for tests that queue API faults (any listing consumes them)."""
    with FakeRodin(api_key="sk-fault-matrix-api") as fake:
        yield fake


def client(
    server: FakeRodin, *, read: float = 5.0, attempts: int = ATTEMPTS, **options: object
) -> AsyncRodin:
    """A client for *server* with a short retry budget and the given read timeout."""
    return AsyncRodin(
        server.api_key,
        base_url=server.base_url,
        timeout=httpx.Timeout(read, connect=2.0),
        retry=RetryPolicy(attempts=attempts),
        **options,  # type: ignore[arg-type]
    )


# -- disk state ------------------------------------------------------------------------


def check_disk(
    server: FakeRodin, root: Path, tasks: Iterable[str] | None = None
) -> collections.Counter[str]:
    """Assert what is on disk under *root* can be trusted, and count it.

    Final files are byte-identical to the server's; hidden files are only resumable
    parts (a prefix of their file), manifests whose every entry is complete, or a
    manifest's temporary file. Listed names must already be safe (final name == name).
    """
    seen: collections.Counter[str] = collections.Counter()
    directories = [root / t for t in tasks] if tasks is not None else root.iterdir()
    for directory in directories:
        if not directory.exists():
            continue
        task = directory.name
        for path in directory.iterdir():
            assert path.is_file(), f"unexpected {path}"
            seen[_check_file(server, task, path)] += 1
    return seen


def _check_file(server: FakeRodin, task: str, path: Path) -> str:
    if path.name == MANIFEST:
        check_manifest(server, task, path)
        return "manifest"
    if path.name == LOCK:
        return "lock"
    if re.fullmatch(r"\.[0-9a-f]{16}\.tmp", path.name):
        return "temp"  # a manifest or meta being written when the process was killed
    if match := _META.fullmatch(path.name):
        assert (path.parent / f".{match['name']}.part").exists(), f"{path} without its part"
        return "meta"
    if match := _PART.fullmatch(path.name):
        assert not match["name"].startswith("."), path
        body = path.read_bytes()
        assert server.content(task, match["name"]).startswith(body), f"{path} is not a prefix"
        return "part"
    assert not path.name.startswith("."), f"unexpected hidden file {path}"
    assert path.read_bytes() == server.content(task, path.name), f"{path} is corrupt"
    return "final"


def check_manifest(server: FakeRodin, task: str, path: Path) -> None:
    """A manifest only lists files that are complete and byte-identical."""
    manifest = json.loads(path.read_text())
    assert manifest["task_uuid"] == task
    for entry in manifest["files"]:
        file = path.parent / entry["file"]
        assert file.stat().st_size == entry["size"] == server.size(task, entry["name"])
        assert entry["sha256"] == server.sha256(task, entry["name"])
        assert file.read_bytes() == server.content(task, entry["name"])


def only_failed_file_missing(server: FakeRodin, root: Path, task: str, failed: str) -> None:
    """The siblings of a failed file are complete; it has no final file; no manifest."""
    seen = check_disk(server, root, [task])
    finals = {p.name for p in final_files(root / task)}
    assert finals == set(FILES) - {failed}
    assert seen["manifest"] == 0, "a task with a failed file must not claim completion"


# -- one file, transient faults: the file always ends complete ---------------------------

RECOVERED = [
    pytest.param([Fault.reset(0)], [None, None], id="reset-before-headers"),
    pytest.param([Fault.truncate(0)], [None, None], id="truncate-after-headers"),
    pytest.param([Fault.truncate(MID)], [None, f"bytes={MID}-"], id="truncate-mid-body"),
    pytest.param([Fault.truncate(LAST)], [None, f"bytes={LAST}-"], id="truncate-last-byte"),
    # The 416 says the file is SIZE bytes, the 200 said SIZE + 10: the lengths disagree, so
    # the part isn't trusted as complete and the file is fetched again.
    pytest.param(
        [Fault.content_length(+10)], [None, f"bytes={SIZE}-", None], id="length-too-large"
    ),
    pytest.param(
        [Fault.truncate(MID), Fault.content_length(-10)],
        [None, f"bytes={MID}-", f"bytes={SIZE - 10}-"],
        id="length-too-small-on-resume",
    ),
    pytest.param(
        [Fault.truncate(MID), Fault.ignore_range()], [None, f"bytes={MID}-"], id="200-to-range"
    ),
    pytest.param(
        [Fault.truncate(MID), Fault.wrong_content_range()],
        [None, f"bytes={MID}-", None],
        id="206-wrong-range-on-resume",
    ),
    pytest.param([Fault.wrong_content_range()], [None, None], id="206-wrong-range-fresh"),
    pytest.param([Fault.redirect(3, 302)], [None] * 4, id="redirect-chain-302"),
    pytest.param([Fault.redirect(2, 307)], [None] * 3, id="redirect-chain-307"),
    pytest.param([Fault.redirect(1, 301), Fault.redirect(1, 308)], [None] * 3, id="301-308"),
    pytest.param(
        [Fault.redirect(2), Fault.truncate(MID)],
        [None, None, None, f"bytes={MID}-"],
        id="truncate-after-redirect",
    ),
    pytest.param(
        [Fault.truncate(MID), Fault.redirect(1, 307)],
        [None, f"bytes={MID}-", f"bytes={MID}-"],
        id="range-survives-redirect",
    ),
    pytest.param([Fault.status(503)], [None, None], id="503"),
    pytest.param([Fault.status(429)], [None, None], id="429"),
    pytest.param([Fault.status(503, retry_after=0)], [None, None], id="503-retry-after"),
    pytest.param([Fault.status(502), Fault.status(504)], [None] * 3, id="502-504"),
    pytest.param([Fault.status(500), Fault.status(500)], [None] * 3, id="500-within-budget"),
    pytest.param([Fault.delay(0.2)], [None], id="delay-under-timeout"),
    pytest.param([Fault.trickle(SIZE // 6, 0.03)], [None], id="trickle"),
]


@pytest.mark.parametrize(("faults", "ranges"), RECOVERED)
async def test_transient_fault_ends_in_a_complete_file(
    server: FakeRodin, tmp_path: Path, faults: list[Fault], ranges: list[str | None]
) -> None:
    """A transient fault costs attempts, never the file: every retry asks for what's missing."""
    task = server.add_task(FILES)
    server.add_faults(task, NAME, *faults)
    async with client(server) as rodin:
        result = await rodin.download(task, tmp_path)
    assert_complete(server, result)
    assert [r.range for r in server.file_requests(task, NAME)] == ranges
    assert check_disk(server, tmp_path)["final"] == len(FILES)


STALLS = [
    pytest.param([Fault.delay(5)], [None, None], id="stall-before-headers"),
    pytest.param([Fault.stall(0, 5)], [None, None], id="stall-after-headers"),
    pytest.param([Fault.stall(MID, 5)], [None, f"bytes={MID}-"], id="stall-mid-body"),
    pytest.param([Fault.stall(LAST, 5)], [None, f"bytes={LAST}-"], id="stall-last-byte"),
    pytest.param([Fault.trickle(SIZE // 5, 0.12)], [None], id="slow-trickle-is-not-a-stall"),
]


@pytest.mark.parametrize(("faults", "ranges"), STALLS)
async def test_stall_times_out_and_resumes(
    server: FakeRodin, tmp_path: Path, faults: list[Fault], ranges: list[str | None]
) -> None:
    """Silence for the read timeout is a failed attempt; a slow but live body is not."""
    task = server.add_task(FILES)
    server.add_faults(task, NAME, *faults)
    async with client(server, read=0.3) as rodin:
        result = await rodin.download(task, tmp_path)
    assert_complete(server, result)
    assert [r.range for r in server.file_requests(task, NAME)] == ranges


@pytest.mark.parametrize("at", [1, MID, LAST, SIZE], ids=["first", "mid", "last", "after-all"])
async def test_reset_mid_body_resumes_from_what_arrived(
    server: FakeRodin, tmp_path: Path, at: int
) -> None:
    """A TCP reset after *at* bytes: the retry resumes at most from *at* (a RST may drop some)."""
    task = server.add_task(FILES)
    server.add_faults(task, NAME, Fault.reset(at))
    async with client(server) as rodin:
        result = await rodin.download(task, tmp_path)
    assert_complete(server, result)
    ranges = [r.range for r in server.file_requests(task, NAME)]
    assert ranges[0] is None and len(ranges) <= 2
    if len(ranges) == 2 and ranges[1] is not None:
        assert 0 < int(ranges[1].removeprefix("bytes=").rstrip("-")) <= at
    assert len(ranges) == 2 or at == SIZE  # only a reset after the last byte can go unnoticed


async def test_short_content_length_on_a_fresh_200_keeps_the_declared_bytes(
    server: FakeRodin, tmp_path: Path
) -> None:
    """A 200 declaring 10 bytes too few looks complete: the client keeps the declared prefix."""
    # The documented limit: the client reads exactly Content-Length bytes and the rest
    # goes with the connection. Without a size or hash from the API, nothing can tell the
    # file is short. On a resume, Content-Range carries the total and the same lie is
    # caught (the `length-too-small-on-resume` case above).
    task = server.add_task({NAME: SIZE})
    server.add_faults(task, NAME, Fault.content_length(-10))
    async with client(server) as rodin:
        result = await rodin.download(task, tmp_path)
    (file,) = result.files
    assert file.size == SIZE - 10
    assert file.path.read_bytes() == server.content(task, NAME)[: SIZE - 10]


def _http_date(seconds_from_now: float) -> str:
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_from_now)
    return email.utils.format_datetime(when, usegmt=True)


@pytest.mark.parametrize(
    ("status", "header", "low", "high"),
    [
        pytest.param(503, "7", 7, 7, id="503-seconds"),
        pytest.param(429, "12", 12, 12, id="429-seconds"),
        pytest.param(429, 60.0, 50, 61, id="429-http-date"),
        pytest.param(503, -600.0, 0, 0, id="503-past-date"),
        pytest.param(429, None, None, None, id="429-without"),
        pytest.param(503, "soon", None, None, id="503-garbled"),
    ],
)
async def test_retry_after_is_read_in_both_forms(
    server: FakeRodin,
    tmp_path: Path,
    status: int,
    header: str | float | None,
    low: float | None,
    high: float | None,
) -> None:
    """Retry-After in seconds or as an HTTP-date sets the wait; a garbled one falls back."""
    value = _http_date(header) if isinstance(header, float) else header  # dates: seconds ahead
    task = server.add_task({NAME: 5000})
    server.add_faults(task, NAME, Fault.status(status, retry_after=value))
    events: list[ProgressEvent] = []
    policy = RetryPolicy(attempts=ATTEMPTS, max_retry_after=30)
    async with AsyncRodin(server.api_key, base_url=server.base_url, retry=policy) as rodin:
        result = await rodin.download(task, tmp_path, on_progress=events.append)
    assert_complete(server, result)
    (retried,) = [e for e in events if isinstance(e, FileRetried)]
    after = getattr(retried.error, "retry_after", None)
    if low is None or high is None:
        assert after is None
        assert policy.backoff_for(retried.error) is True
    else:
        assert after is not None and low <= after <= high
        assert policy.backoff_for(retried.error) == min(after, 30)


@pytest.mark.parametrize(
    "header", [pytest.param("1", id="seconds"), pytest.param("date", id="http-date")]
)
async def test_retry_after_is_really_waited(server: FakeRodin, tmp_path: Path, header: str) -> None:
    """With backoff sleeps on, a Retry-After of about 1 s delays the retry by about that."""
    value = _http_date(2) if header == "date" else header  # a date has 1 s resolution
    task = server.add_task({NAME: 5000})
    server.add_faults(task, NAME, Fault.status(503, retry_after=value))
    policy = RetryPolicy(attempts=2, wait_initial=0, wait_max=0, wait_jitter=0)
    stamina.set_testing(False)
    try:
        async with AsyncRodin(server.api_key, base_url=server.base_url, retry=policy) as rodin:
            started = time.monotonic()
            assert_complete(server, await rodin.download(task, tmp_path))
            elapsed = time.monotonic() - started
    finally:
        stamina.set_testing(True, attempts=100, cap=True)
    assert 0.5 <= elapsed < 4, elapsed


# -- one file, faults that outlast the retry budget ---------------------------------------

STORM = [Fault.status(500)] * 5
FATAL = [
    pytest.param(STORM, 500, ATTEMPTS, None, id="500-storm"),
    pytest.param([Fault.status(503, retry_after=0)] * 5, 503, ATTEMPTS, None, id="503-storm"),
    pytest.param([Fault.status(429, retry_after=7)] * 5, 429, ATTEMPTS, None, id="429-storm"),
    pytest.param([Fault.reset(0)] * 5, None, ATTEMPTS, TransportError, id="reset-storm"),
    pytest.param([Fault.truncate(0)] * 5, None, ATTEMPTS, TransportError, id="truncate-storm"),
    # MAX_REDIRECTS hops, then given up for good: a loop doesn't mend with retries.
    pytest.param([Fault.redirect_loop()], None, 11, BadValue, id="redirect-loop"),
    pytest.param([Fault.status(403)] * 2, 403, 2, None, id="403-after-relisting"),
    pytest.param([Fault.status(404)] * 2, 404, 2, None, id="404-after-relisting"),
    pytest.param([Fault.status(400)], 400, 1, None, id="400-final"),
    pytest.param([Fault.status(416)], 416, 1, None, id="416-without-part"),
]


@pytest.mark.parametrize(("faults", "status", "requests", "cause"), FATAL)
async def test_fault_past_the_budget_fails_only_that_file(
    server: FakeRodin,
    tmp_path: Path,
    faults: list[Fault],
    status: int | None,
    requests: int,
    cause: type[Exception] | None,
) -> None:
    """A fault that never lifts fails its file (named, with status or cause); siblings finish."""
    task = server.add_task(FILES)
    server.add_faults(task, NAME, *faults)
    async with client(server) as rodin:
        with pytest.raises(TaskDownloadError) as info:
            await rodin.download(task, tmp_path)
    (error,) = info.value.errors
    assert error.name == NAME
    assert NAME in str(info.value) and info.value.task_uuid == task
    assert error.status_code == status
    if status is not None:
        assert str(status) in str(error)
    if cause is not None:
        assert isinstance(error.__cause__, cause)
    assert len(server.file_requests(task, NAME)) == requests
    only_failed_file_missing(server, tmp_path, task, NAME)


async def test_throttling_past_the_budget_reports_retry_after(
    server: FakeRodin, tmp_path: Path
) -> None:
    """A file throttled to the end fails with the host's Retry-After on its DownloadError."""
    task = server.add_task({NAME: 5000})
    server.add_faults(task, NAME, *[Fault.status(429, retry_after=7)] * ATTEMPTS)
    async with client(server) as rodin:
        with pytest.raises(TaskDownloadError) as info:
            await rodin.download(task, tmp_path)
    (error,) = info.value.errors
    assert (error.status_code, error.retry_after) == (429, 7)


async def test_stall_storm_ends_in_a_timeout(server: FakeRodin, tmp_path: Path) -> None:
    """A host that always goes silent fails the file with our TimeoutError as the cause."""
    task = server.add_task(FILES)
    server.add_faults(task, NAME, *[Fault.stall(1000, 5)] * ATTEMPTS)
    async with client(server, read=0.3) as rodin:
        with pytest.raises(TaskDownloadError) as info:
            await rodin.download(task, tmp_path)
    (error,) = info.value.errors
    assert isinstance(error.__cause__, TimeoutError)
    assert "timed out" in str(error)
    only_failed_file_missing(server, tmp_path, task, NAME)


async def test_failed_file_keeps_its_part_and_a_rerun_resumes(
    server: FakeRodin, tmp_path: Path
) -> None:
    """Bytes that arrived before the budget ran out are kept and resumed by the next run."""
    task = server.add_task(FILES)
    server.add_faults(task, NAME, *[Fault.truncate(10_000)] * ATTEMPTS)
    async with client(server) as rodin:
        with pytest.raises(TaskDownloadError):
            await rodin.download(task, tmp_path)
        part = tmp_path / task / f".{NAME}.part"
        assert part.stat().st_size == ATTEMPTS * 10_000
        check_disk(server, tmp_path)
        assert_complete(server, await rodin.download(task, tmp_path))
    assert server.file_requests(task, NAME)[-1].range == f"bytes={ATTEMPTS * 10_000}-"


# -- expiry ----------------------------------------------------------------------------


async def test_url_expiring_mid_body_is_relisted_and_resumed(
    server: FakeRodin, tmp_path: Path
) -> None:
    """Cut mid-body, then 403 (expired): the task is listed again and the file resumes."""
    task = server.add_task(FILES)
    server.add_faults(task, NAME, Fault.truncate(MID), Fault.expire())
    async with client(server) as rodin:
        assert_complete(server, await rodin.download(task, tmp_path))
    requests = server.file_requests(task, NAME)
    assert [r.range for r in requests] == [None, f"bytes={MID}-", f"bytes={MID}-"]
    assert [r.status for r in requests] == [200, 403, 206]
    assert requests[1].query != requests[2].query  # the retry used the fresh URL
    assert len([r for r in server.api_requests("download") if r.task_uuid == task]) == 2


async def test_every_url_expiring_mid_run_is_relisted(server: FakeRodin, tmp_path: Path) -> None:
    """URLs expiring while the first file transfers: later files get 403, re-list, finish."""
    task = server.add_task({"a.bin": 80_000, "b.bin": 5_000, "c.bin": 5_000})
    server.add_faults(task, "a.bin", Fault.trickle(20_000, 0.02))
    expired = False

    def expire_once(event: ProgressEvent) -> None:
        nonlocal expired
        if not expired and isinstance(event, FileProgress):
            expired = True
            server.expire_urls(task)

    async with client(server, max_concurrency=1) as rodin:
        result = await rodin.download(task, tmp_path, on_progress=expire_once)
    assert_complete(server, result)
    assert [r.status for r in server.file_requests(task, "b.bin")] == [403, 200]
    assert len([r for r in server.api_requests("download") if r.task_uuid == task]) == 2


# -- connection refused ------------------------------------------------------------------


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_file_host_refusing_connections_fails_the_file(
    fresh_server: FakeRodin, tmp_path: Path
) -> None:
    """Connection refused by the file host is retried, then a DownloadError with the cause."""
    server = fresh_server
    task = server.add_task({NAME: 100})
    with refusing_port() as port:
        listing = {"error": "OK", "list": [{"name": NAME, "url": f"http://127.0.0.1:{port}/x"}]}
        server.add_api_faults(Fault.body(json.dumps(listing).encode()), endpoint="download")
        async with client(server) as rodin:
            with pytest.raises(TaskDownloadError) as info:
                await rodin.download(task, tmp_path)
    (error,) = info.value.errors
    assert isinstance(error.__cause__, TransportError)
    assert isinstance(error.__cause__.__cause__, httpx.ConnectError)
    assert final_files(tmp_path) == []


async def test_api_refusing_connections_is_a_connect_error(tmp_path: Path) -> None:
    """An API refusing connections: ConnectError naming its origin, and no task folder."""
    with refusing_port() as port:
        base = f"http://127.0.0.1:{port}/api/v2"
        async with AsyncRodin("sk-x", base_url=base, retry=RetryPolicy(attempts=2)) as rodin:
            with pytest.raises(ConnectError, match=f"can't connect to http://127.0.0.1:{port}"):
                await rodin.download("some-task", tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- the API's own answers ---------------------------------------------------------------

HTML = b"<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>"


def _body(payload: object) -> Fault:
    return Fault.body(json.dumps(payload).encode())


API_FAULTS = [
    pytest.param([Fault.body(b"{not json")], ResponseFormatError, 1, id="malformed-json"),
    pytest.param([Fault.body(HTML, 201, "text/html")], ResponseFormatError, 1, id="html-201"),
    pytest.param([Fault.body(b"")], ResponseFormatError, 1, id="empty-body"),
    pytest.param([Fault.body(b"null")], ResponseFormatError, 1, id="json-null"),
    pytest.param([_body([{"name": NAME}])], ResponseFormatError, 1, id="json-array"),
    pytest.param([_body({"error": "OK"})], ResponseFormatError, 1, id="no-list"),
    pytest.param([_body({"error": "OK", "list": {"a": 1}})], ResponseFormatError, 1, id="dict"),
    pytest.param([_body({"error": "OK", "list": "a.bin"})], ResponseFormatError, 1, id="str"),
    pytest.param([_body({"error": "OK", "list": [5]})], ResponseFormatError, 1, id="int-entry"),
    pytest.param(
        [_body({"error": "OK", "list": [{"name": NAME}]})], ResponseFormatError, 1, id="no-url"
    ),
    pytest.param(
        [_body({"error": "OK", "list": [{"url": "http://127.0.0.1:1/a"}]})],
        ResponseFormatError,
        1,
        id="no-name",
    ),
    pytest.param(
        [_body({"error": "OK", "list": [{"name": None, "url": "http://127.0.0.1:1/a"}]})],
        ResponseFormatError,
        1,
        id="null-name",
    ),
    pytest.param([Fault.content_length(-3)], ResponseFormatError, 1, id="json-cut-short"),
    pytest.param([_body({"error": "TASK_NOT_READY", "message": "wait"})], APIError, 1, id="code"),
    pytest.param([_body({"error": "INVALID_API_KEY"})], AuthenticationError, 1, id="auth-code"),
    pytest.param([Fault.status(401)], AuthenticationError, 1, id="401"),
    pytest.param([Fault.status(403)], AuthenticationError, 1, id="403"),
    pytest.param([Fault.status(404)], APIError, 1, id="404"),
    pytest.param([Fault.status(429)] * ATTEMPTS, RateLimitError, ATTEMPTS, id="429-storm"),
    pytest.param([Fault.status(500)] * ATTEMPTS, APIError, ATTEMPTS, id="500-storm"),
    pytest.param(
        [Fault.body(HTML, 502, "text/html")] * ATTEMPTS, APIError, ATTEMPTS, id="html-502"
    ),
    pytest.param([Fault.reset(0)] * ATTEMPTS, TransportError, ATTEMPTS, id="reset-storm"),
]


@pytest.mark.parametrize(("faults", "error", "requests"), API_FAULTS)
async def test_api_answer_that_is_not_a_listing_is_a_clear_error(
    fresh_server: FakeRodin,
    tmp_path: Path,
    faults: list[Fault],
    error: type[RodinError],
    requests: int,
) -> None:
    """Malformed, HTML, empty, wrongly shaped or refusing listings raise one precise error."""
    server = fresh_server
    task = server.add_task(FILES)
    server.add_api_faults(*faults, endpoint="download")
    async with client(server) as rodin:
        with pytest.raises(RodinError) as info:
            await rodin.download(task, tmp_path)
    assert type(info.value) is error, repr(info.value)
    assert len(server.api_requests("download")) == requests
    assert server.file_requests() == []
    assert final_files(tmp_path) == []


async def test_api_error_code_is_kept(fresh_server: FakeRodin, tmp_path: Path) -> None:
    """An ``error`` code in a 2xx answer becomes an APIError carrying the code and message."""
    server = fresh_server
    task = server.add_task(FILES)
    server.add_api_faults(_body({"error": "TASK_NOT_READY", "message": "wait"}))
    async with client(server) as rodin:
        with pytest.raises(APIError) as info:
            await rodin.download(task, tmp_path)
    assert (info.value.code, info.value.message, info.value.status_code) == (
        "TASK_NOT_READY",
        "wait",
        201,
    )


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.reset(0), id="reset"),
        pytest.param(Fault.truncate(5), id="truncate"),
        pytest.param(Fault.status(503), id="503"),
        pytest.param(Fault.status(429, retry_after=0), id="429"),
        pytest.param(Fault.body(HTML, 502, "text/html"), id="html-502"),
        pytest.param(Fault.stall(0, 5), id="stall"),
    ],
)
async def test_transient_api_fault_is_retried(
    fresh_server: FakeRodin, tmp_path: Path, fault: Fault
) -> None:
    """A listing that fails transiently is asked again, and the task completes."""
    server = fresh_server
    task = server.add_task(FILES)
    server.add_api_faults(fault, endpoint="download")
    async with client(server, read=0.5) as rodin:
        assert_complete(server, await rodin.download(task, tmp_path))
    assert [r.status for r in server.api_requests("download")][-1] == 201
    assert len(server.api_requests("download")) == 2


async def test_errors_leave_async_with_unwrapped(server: FakeRodin, tmp_path: Path) -> None:
    """An error raised inside ``async with AsyncRodin()`` reaches the caller as itself."""
    # Users write `try: async with AsyncRodin() as r: await r.download(...)` and
    # `except TaskDownloadError`; an ExceptionGroup from the client's task group would
    # slip past every documented `except`.
    task = server.add_task(FILES)
    server.add_faults(task, NAME, *STORM)
    with pytest.raises(TaskDownloadError):
        async with client(server) as rodin:
            await rodin.download(task, tmp_path)
    with pytest.raises(LookupError, match="caller's own"):
        async with client(server):
            raise LookupError("the caller's own error")


# -- many tasks, mixed faults, bounded concurrency ---------------------------------------


def _mixed_faults(size: int) -> list[list[Fault]]:
    """Every retryable fault kind, for a file of *size* bytes."""
    return [
        [Fault.reset(0)],
        [Fault.reset(size // 2)],
        [Fault.truncate(size - 1)],
        [Fault.truncate(size // 3), Fault.ignore_range()],
        [Fault.truncate(size // 3), Fault.wrong_content_range()],
        [Fault.content_length(+7)],
        [Fault.status(503, retry_after=0)],
        [Fault.status(429)],
        [Fault.status(500), Fault.status(502)],
        [Fault.redirect(2, 307)],
        [Fault.stall(size // 4, 5)],
        [Fault.trickle(size // 4, 0.02)],
        [Fault.expire()],
        [Fault.truncate(size // 2), Fault.expire()],
        [],
    ]


def _pick_faults(rng: random.Random, size: int, files: int) -> list[list[Fault]]:
    """Random faults for one task's files, with at most one expiry wave per task.

    A file re-lists once: two expiry waves in one task can fail a file by design.
    """
    picked: list[list[Fault]] = []
    while len(picked) < files:
        faults = rng.choice(_mixed_faults(size + len(picked)))
        expires = any(type(f).__name__ == "ExpireFault" for f in faults)
        if expires and any(type(f).__name__ == "ExpireFault" for fs in picked for f in fs):
            continue
        picked.append(faults)
    return picked


@pytest.mark.parametrize("seed", [1, 2])
async def test_mixed_faults_across_many_tasks_at_once(
    server: FakeRodin, tmp_path: Path, seed: int
) -> None:
    """Six tasks x four files faulted at random, at max_concurrency 4: each outcome is right."""
    # Good tasks complete byte for byte, the one with a storm fails that file only, an
    # unknown task is an APIError, transfers never exceed 4, and the disk is consistent.
    rng = random.Random(seed)
    size = 90_001
    good = []
    for _ in range(6):
        task = server.add_task({f"f{i}.bin": size + i for i in range(4)})
        for i, faults in enumerate(_pick_faults(rng, size, 4)):
            server.add_faults(task, f"f{i}.bin", *faults)
        good.append(task)
    broken = server.add_task(FILES)
    server.add_faults(broken, NAME, *STORM)
    counting = CountingTransport(server.base_url)
    uuids = [*good, "no-such-task", broken]
    rng.shuffle(uuids)
    # 4 attempts: a sibling's expiry wave costs an attempt on top of the file's own faults.
    options = {"max_concurrency": 4, "transport": counting}
    async with client(server, read=0.5, attempts=4, **options) as rodin:
        with anyio.fail_after(30):
            results = {r.task_uuid: r async for r in rodin.download_many(uuids, tmp_path)}
    assert set(results) == set(uuids)
    for task in good:
        assert_complete(server, results[task])
    assert isinstance(results["no-such-task"].error, APIError)
    broken_error = results[broken].error
    assert isinstance(broken_error, TaskDownloadError)
    assert [e.name for e in broken_error.errors] == [NAME]
    assert counting.peak["files"] <= 4 and counting.active["files"] == 0
    seen = check_disk(server, tmp_path, [*good, broken])
    assert seen["final"] == 6 * 4 + len(FILES) - 1

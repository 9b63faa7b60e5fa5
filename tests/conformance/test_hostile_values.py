"""Defect 7: one bad value from a server fails at most its own task, never the bulk run.

Header values (Retry-After, Content-Range, Content-Length, Content-Encoding, Location,
ETag) and listed names and URLs are hostile input. The fake server sends what its faults
can express; a raw socket server sends the rest, and hypothesis fuzzes both.
"""

from __future__ import annotations

import ipaddress
import string
import tempfile
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rodin_async import RodinError, TaskDownload
from rodin_async.testing import FakeRodin, Fault

from .checks import client
from .servers import RawServer

GOOD = b"a good file " * 1000
# Each header with the statuses where a client reads it.
READ_ON = {
    "Retry-After": (503, 429),
    "Content-Range": (206, 416),
    "Content-Length": (200, 206),
    "Content-Encoding": (200, 206),
    "Location": (302, 307),
    "ETag": (200, 206),
}
HEADERS = list(READ_ON)
STATUSES = [200, 206, 301, 302, 303, 307, 308, 416, 429, 503]
HOSTILE_URLS = [
    "http://[::1/a",
    "ftp://x/y",
    "http://",
    "",
    " ",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "http://127.0.0.1:99999/x",
    "http://127.0.0.1:0/x",
    "http://user:pass@127.0.0.1:1/x",
    "http://[::1]:1/x",
    "HTTP://127.0.0.1:1/%zz",
    "http://127.0.0.1:1/\x00",
    "http:///x",
]
HOSTILE_VALUES = [
    "³",
    "¹²",
    "1e400",
    "-1",
    "9" * 400,
    "NaN",
    "Fri, 31 Dec 99999 23:59:59 GMT",
    "bytes */abc",
    "bytes ³-9/10",
    "bytes 99999999999999999999-0/1",
    "bytes 5-2/3",
    "gzip, br, zstd, x-bogus",
    "gzip",
    "http://[::1/a",
    "//",
    "",
    '"',
    'W/"' + "x" * 5000 + '"',
    "\x7f\xff",
]
LATIN1_NO_CRLF = st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n")


def stays_local(url: str, base: str | None = None) -> bool:
    """Whether *url* (joined to *base*) can't reach anything but loopback (or won't parse)."""
    try:
        parsed = httpx.URL(base).join(url) if base else httpx.URL(url)
    except Exception:  # any refusal to parse means no request goes anywhere
        return True
    if parsed.host in ("", "localhost"):
        return True
    try:
        return ipaddress.ip_address(parsed.host).is_loopback
    except ValueError:
        return False


async def download_all(fake: FakeRodin, tasks: list[str], dest: Path) -> dict[str, TaskDownload]:
    """download_many over *tasks*, collected by uuid."""
    async with client(fake, timeout=httpx.Timeout(5)) as rodin:
        return {r.task_uuid: r async for r in rodin.download_many(tasks, dest)}


def assert_contained(results: dict[str, TaskDownload], tasks: list[str], good: list[str]) -> None:
    """Every task was yielded; good ones are complete; the others failed with a RodinError."""
    assert sorted(results) == sorted(tasks)
    for task in good:
        assert results[task].error is None, results[task].error
        assert results[task].files[0].path.read_bytes() == GOOD
    for task in set(tasks) - set(good):
        error = results[task].error
        assert error is None or isinstance(error, RodinError), repr(error)


@pytest.fixture
def good_url(raw: RawServer) -> str:
    """A file every run must get right, served next to the hostile ones."""
    return raw.answer(200, [("Content-Type", "model/gltf-binary")], GOOD)


@pytest.mark.anyio
@pytest.mark.parametrize("value", ["³", "¹²", "1e400", "9" * 400, "-1", "NaN", "½"])
async def test_hostile_retry_after_from_the_fake_file_host(
    fake: FakeRodin, tmp_path: Path, good_url: str, value: str
) -> None:
    """Defect 7: `Retry-After: ³` (and friends) on a 503 is ignored; every task still ends ok."""
    hostile = fake.add_task({"model.glb": GOOD})
    fake.add_faults(hostile, "model.glb", Fault.status(503, retry_after=value))
    tasks = [fake.add_remote_task({"model.glb": good_url}), hostile]
    results = await download_all(fake, tasks, tmp_path)
    assert_contained(results, tasks, good=tasks)


@pytest.mark.anyio
@pytest.mark.parametrize("url", HOSTILE_URLS)
async def test_hostile_listed_url_fails_only_its_task(
    fake: FakeRodin, tmp_path: Path, good_url: str, url: str
) -> None:
    """Defect 7: a malformed or unsupported listed URL is a RodinError on its own task."""
    good = fake.add_remote_task({"model.glb": good_url})
    tasks = [good, fake.add_remote_task({"model.glb": url, "other.glb": good_url})]
    results = await download_all(fake, tasks, tmp_path)
    assert_contained(results, tasks, good=[good])
    assert isinstance(results[tasks[1]].error, RodinError)


@pytest.mark.anyio
@pytest.mark.parametrize("header", HEADERS)
async def test_hostile_header_fails_only_its_task(
    fake: FakeRodin, raw: RawServer, tmp_path: Path, good_url: str, header: str
) -> None:
    """Defect 7: garbage values of a header, where it is read, never escape their own task."""
    hostile = [
        fake.add_remote_task({"model.glb": raw.answer(status, [(header, value)], GOOD)})
        for value in HOSTILE_VALUES
        for status in READ_ON[header]
    ]
    good = fake.add_remote_task({"model.glb": good_url})
    results = await download_all(fake, [good, *hostile], tmp_path)
    assert_contained(results, [good, *hostile], good=[good])


@st.composite
def hostile_answers(draw: st.DrawFn, base: str) -> tuple[int, list[tuple[str, str]]]:
    """A status and one to three fuzzed headers that never point off loopback."""
    headers = []
    for name in draw(st.lists(st.sampled_from(HEADERS), min_size=1, max_size=3)):
        value = draw(
            st.one_of(
                st.sampled_from(HOSTILE_VALUES),
                st.text(LATIN1_NO_CRLF, max_size=40),
                st.integers(min_value=-(10**30), max_value=10**30).map(str),
            )
        )
        if name == "Location" and not stays_local(value, base):
            value = "/" + value.replace("/", "").replace("\\", "")
        headers.append((name, value))
    return draw(st.sampled_from(STATUSES)), headers


NAMES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [".", "..", "/", "a/../../b", "\x00", "CON", ".rodin-manifest.json", "x" * 600]
    ),
)
SCHEMES = st.text(alphabet=string.ascii_letters + "+-.", max_size=8)


# Each example is a real bulk download (~0.3 s): no shrinking, which would take minutes;
# a failing example is reported as found.
@settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_headers_names_and_urls_fail_only_their_task(
    fake: FakeRodin, raw: RawServer, good_url: str, data: st.DataObject
) -> None:
    """Defect 7: fuzzed headers, names and URLs: every task is yielded, failures are RodinError."""
    status, headers = data.draw(hostile_answers(raw.url))
    url = data.draw(
        st.one_of(
            st.sampled_from(HOSTILE_URLS),
            st.text(max_size=30).map(lambda s: f"{raw.url}/{s}"),
            SCHEMES.map(lambda s: f"{s}://127.0.0.1:1/x"),
        )
    )
    if not stays_local(url):
        url = HOSTILE_URLS[0]
    names = data.draw(st.lists(NAMES, min_size=2, max_size=2))
    good = fake.add_remote_task({"model.glb": good_url})
    hostile = [
        fake.add_remote_task([(names[0], raw.answer(status, headers, GOOD))]),
        fake.add_remote_task([(names[1], url), ("model.glb", good_url)]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        results = anyio.run(download_all, fake, [good, *hostile], dest)
        assert_contained(results, [good, *hostile], good=[good])
        for path in dest.rglob("*"):
            assert path.resolve().is_relative_to(dest.resolve())

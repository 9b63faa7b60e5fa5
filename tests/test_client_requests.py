"""How AsyncRodin builds API requests and reads answers (httpx.MockTransport units)."""

from __future__ import annotations

import gzip
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import rodin_async
from rodin_async import (
    APIError,
    AsyncRodin,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    InvalidTaskError,
    RateLimitError,
    ResponseFormatError,
    ResultFile,
    RodinError,
    TransportError,
)

pytestmark = pytest.mark.anyio
KEY = "sk-test-0123456789"
Handler = Callable[[httpx.Request], httpx.Response]


def recording(handler: Handler) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return httpx.MockTransport(record), seen


def listing(*files: tuple[str, str]) -> httpx.Response:
    return httpx.Response(
        201, json={"error": "OK", "list": [{"name": n, "url": u} for n, u in files]}
    )


async def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key anywhere: a ConfigurationError naming RODIN_API_KEY, before any traffic."""
    monkeypatch.delenv("RODIN_API_KEY", raising=False)
    transport, seen = recording(lambda r: listing())
    with pytest.raises(ConfigurationError, match="RODIN_API_KEY"):
        AsyncRodin(transport=transport)
    assert seen == []


async def test_key_and_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """RODIN_API_KEY and RODIN_BASE_URL are read when no arguments are given."""
    monkeypatch.setenv("RODIN_API_KEY", KEY)
    monkeypatch.setenv("RODIN_BASE_URL", "https://api.hyper3d.com/api/v2")
    transport, seen = recording(lambda r: listing(("a.glb", "https://files.example/a")))
    async with AsyncRodin(transport=transport) as rodin:
        files = await rodin.list_files("task-1")
    assert files == [ResultFile(name="a.glb", url="https://files.example/a")]
    (request,) = seen
    assert str(request.url) == "https://api.hyper3d.com/api/v2/download"
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {"task_uuid": "task-1"}


async def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without RODIN_BASE_URL, the documented default is used."""
    monkeypatch.delenv("RODIN_BASE_URL", raising=False)
    transport, seen = recording(lambda r: listing())
    async with AsyncRodin(KEY, transport=transport) as rodin:
        await rodin.list_files("t")
    assert str(seen[0].url) == "https://hyperhuman.deemos.com/api/v2/download"


async def test_key_stays_out_of_repr() -> None:
    """The key never appears in the client's repr."""
    rodin = AsyncRodin(KEY, base_url="http://127.0.0.1:9/api/v2")
    assert KEY not in repr(rodin)
    assert KEY not in repr(rodin._api)
    await rodin.aclose()


async def test_auth_only_reaches_the_api_origin() -> None:
    """The bearer auth adds nothing to requests for any other origin (host or port)."""
    transport, seen = recording(lambda r: httpx.Response(200))
    rodin = AsyncRodin(KEY, base_url="https://api.example/api/v2", transport=transport)
    for url in ("https://files.example/x", "https://api.example:8443/x", "http://api.example/x"):
        await rodin._api.get(url)
    await rodin._api.get("https://api.example/api/v2/check_balance")
    await rodin.aclose()
    assert [("authorization" in r.headers) for r in seen] == [False, False, False, True]


@pytest.mark.parametrize("value", [0, -1, 1.5, "8", True])
async def test_bad_concurrency_is_refused(value: object) -> None:
    """max_concurrency must be a whole number of at least 1."""
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        AsyncRodin(KEY, max_concurrency=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["ftp://x/api", "not a url", "http://"])
async def test_bad_base_url_is_refused(url: str) -> None:
    """A base URL must be http(s) with a host."""
    with pytest.raises(ConfigurationError):
        AsyncRodin(KEY, base_url=url)


@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        (
            httpx.Response(
                401, json={"error": "UNAUTHORIZED", "message": "Active API key is required."}
            ),
            AuthenticationError,
            "UNAUTHORIZED",
        ),
        (httpx.Response(403, text="forbidden"), AuthenticationError, None),
        (
            httpx.Response(201, json={"error": "UNAUTHORIZED", "message": "no"}),
            AuthenticationError,
            "UNAUTHORIZED",
        ),
        (
            httpx.Response(201, json={"error": "NO_ACTIVE_SUBSCRIPTION", "message": "Subscribe."}),
            APIError,
            "NO_ACTIVE_SUBSCRIPTION",
        ),
        (httpx.Response(400, json={"error": "BAD_TASK", "message": "what?"}), APIError, "BAD_TASK"),
        (httpx.Response(201, text="<html>hi</html>"), ResponseFormatError, None),
        (httpx.Response(201, json={"error": "OK"}), ResponseFormatError, None),
    ],
)
async def test_api_errors(
    response: httpx.Response, error: type[APIError], code: str | None
) -> None:
    """Refusals become the matching APIError carrying code, status and message; no retry."""
    transport, seen = recording(lambda r: response)
    async with AsyncRodin(KEY, base_url="https://api.example/api/v2", transport=transport) as rodin:
        with pytest.raises(error) as info:
            await rodin.list_files("t")
    assert type(info.value) is error
    assert info.value.code == code
    assert info.value.status_code == response.status_code
    assert KEY not in str(info.value)
    assert len(seen) == 1


async def test_transient_failures_are_retried() -> None:
    """5xx, 429 and connection errors are retried until the API answers."""
    answers: list[httpx.Response | Exception] = [
        httpx.Response(503, headers={"Retry-After": "1"}),
        httpx.Response(429, json={"error": "TOO_MANY"}),
        httpx.ConnectError("refused"),
        listing(("a", "https://f/a")),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    transport, seen = recording(handler)
    async with AsyncRodin(KEY, base_url="https://api.example/api/v2", transport=transport) as rodin:
        files = await rodin.list_files("t")
    assert [f.name for f in files] == ["a"]
    assert len(seen) == 4


async def test_retries_are_bounded() -> None:
    """A throttle that never lifts ends in RateLimitError after the policy's attempts."""
    transport, seen = recording(lambda r: httpx.Response(429, headers={"Retry-After": "2"}))
    policy = rodin_async.RetryPolicy(attempts=3)
    async with AsyncRodin(
        KEY, base_url="https://a.example/", transport=transport, retry=policy
    ) as rodin:
        with pytest.raises(RateLimitError) as info:
            await rodin.list_files("t")
    assert info.value.retry_after == 2.0
    assert len(seen) == 3


async def test_connection_failure_is_a_transport_error() -> None:
    """httpx errors never escape raw; they become TransportError with the cause kept."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    transport, _ = recording(refuse)
    async with AsyncRodin(
        KEY,
        base_url="https://a.example/",
        transport=transport,
        retry=rodin_async.RetryPolicy(attempts=2),
    ) as rodin:
        with pytest.raises(TransportError) as info:
            await rodin.list_files("t")
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("bad", ["", "  ", "../x", "a/b"])
async def test_bad_uuid_is_refused_before_traffic(bad: str) -> None:
    """A blank or path-like task uuid raises InvalidTaskError and sends nothing."""
    transport, seen = recording(lambda r: listing())
    async with AsyncRodin(KEY, transport=transport) as rodin:
        with pytest.raises(InvalidTaskError):
            await rodin.list_files(bad)
        with pytest.raises(InvalidTaskError):
            rodin.download_many(["ok", bad], "out")
    assert seen == []


async def test_closed_client_refuses_work() -> None:
    """After aclose the client raises ClientClosedError instead of failing obscurely."""
    rodin = AsyncRodin(KEY)
    await rodin.aclose()
    with pytest.raises(ClientClosedError):
        await rodin.list_files("t")
    assert isinstance(ClientClosedError("x"), RodinError)


async def test_download_many_needs_async_with(tmp_path: object) -> None:
    """download_many explains that it needs `async with`, instead of misbehaving later."""
    rodin = AsyncRodin(KEY)
    with pytest.raises(ClientClosedError, match="async with"):
        rodin.download_many(["t"], "out")
    await rodin.aclose()


async def test_download_many_refuses_a_bare_string() -> None:
    """A single uuid string is not iterated letter by letter."""
    transport, seen = recording(lambda r: listing())
    async with AsyncRodin(KEY, transport=transport) as rodin:
        with pytest.raises(InvalidTaskError, match="not one string"):
            rodin.download_many("task-uuid", "out")
    assert seen == []


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(400, json={"error": "BAD"}, headers={"X-Request-Id": "r-1"}), APIError),
        (httpx.Response(403, text="no", headers={"x-request-id": "r-1"}), AuthenticationError),
        (httpx.Response(201, json={"error": "NOPE"}, headers={"X-REQUEST-ID": "r-1"}), APIError),
        (httpx.Response(201, text="<html>", headers={"X-Request-Id": "r-1"}), ResponseFormatError),
        (httpx.Response(201, json={"error": "OK"}, headers={"X-Request-Id": "r-1"}),
         ResponseFormatError),
    ],
)  # fmt: skip
async def test_api_errors_keep_the_answers_headers(
    response: httpx.Response, error: type[APIError]
) -> None:
    """Every APIError keeps the status, a read-only copy of the headers and the request id."""
    response.headers["Server"] = "rodin"
    transport, _ = recording(lambda r: response)
    async with AsyncRodin(KEY, base_url="https://api.example/api/v2", transport=transport) as rodin:
        with pytest.raises(error) as info:
            await rodin.list_files("t")
    exc = info.value
    assert exc.status_code == response.status_code
    assert exc.request_id == "r-1"
    assert exc.headers["server"] == exc.headers["SERVER"] == "rodin"
    with pytest.raises(TypeError):
        exc.headers["server"] = "changed"  # type: ignore[index]
    response.headers["Server"] = "changed later"
    assert exc.headers["server"] == "rodin"


async def test_rate_limit_error_keeps_headers_and_retry_after() -> None:
    """A 429 that outlasts the retries keeps Retry-After both parsed and as a header."""
    headers = {"Retry-After": "7", "Request-Id": "abc"}
    transport, _ = recording(lambda r: httpx.Response(429, headers=headers))
    retry = rodin_async.RetryPolicy(attempts=2)
    async with AsyncRodin(
        KEY, base_url="https://api.example/", transport=transport, retry=retry
    ) as rodin:
        with pytest.raises(RateLimitError) as info:
            await rodin.balance()
    assert (info.value.retry_after, info.value.headers["retry-after"]) == (7.0, "7")
    assert info.value.request_id == "abc"


async def test_api_error_headers_never_hold_the_key() -> None:
    """A server echoing our Authorization header back leaves no trace of the key on the error."""

    def echo(request: httpx.Request) -> httpx.Response:
        sent = request.headers["authorization"]
        echoed = {"Authorization": sent, "X-Echo": sent, "X-Key": KEY, "Set-Cookie": "s=1"}
        return httpx.Response(500, headers={**echoed, "X-Request-Id": "r-9"})

    transport, _ = recording(echo)
    retry = rodin_async.RetryPolicy(attempts=1)
    async with AsyncRodin(
        KEY, base_url="https://api.example/", transport=transport, retry=retry
    ) as rodin:
        with pytest.raises(APIError) as info:
            await rodin.balance()
    exc = info.value
    assert dict(exc.headers) == {"x-request-id": "r-9"}
    assert KEY not in repr(exc.headers) + str(exc) + repr(exc)
    assert KEY.encode() not in pickle.dumps(exc)


def test_api_errors_survive_pickling() -> None:
    """An APIError pickles with its status, headers, request id and message intact."""
    exc = RateLimitError(
        "slow down", code="RATE", status_code=429, retry_after=3.0,
        headers={"X-Request-Id": "r-2", "Retry-After": "3"},
    )  # fmt: skip
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301  (bytes we just made)
    assert type(copy) is RateLimitError
    assert (copy.code, copy.status_code, copy.retry_after, copy.message) == (
        "RATE", 429, 3.0, "slow down"
    )  # fmt: skip
    assert dict(copy.headers) == {"x-request-id": "r-2", "retry-after": "3"}
    assert copy.request_id == "r-2"
    assert str(copy) == str(exc)


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_mock_transport_serves_downloads_too(tmp_path: Path, encoding: str) -> None:
    """httpx.MockTransport answers built with content=... work for file downloads as well."""
    body = b"glTF" + bytes(range(256)) * 40
    wire = gzip.compress(body) if encoding == "gzip" else body

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.example":
            return listing(("a.glb", "https://files.example/a.glb?sig=1"))
        return httpx.Response(200, content=wire, headers={"Content-Encoding": encoding})

    transport, seen = recording(handler)
    async with AsyncRodin(KEY, base_url="https://api.example/", transport=transport) as rodin:
        result = await rodin.download("task-1", tmp_path)
        (again,) = [r async for r in rodin.download_many(["task-2"], tmp_path)]
    assert (tmp_path / "task-1" / "a.glb").read_bytes() == body
    assert (tmp_path / "task-2" / "a.glb").read_bytes() == body
    assert result.ok and again.ok and result.files[0].size == len(body)
    assert [r.url.host for r in seen] == ["api.example", "files.example"] * 2
    assert "authorization" not in seen[1].headers

"""Defect 9: presigned URLs are credentials; no log record may show their query string."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from rodin_async.testing import FakeRodin

from .checks import client
from .servers import Bucket, unique

pytestmark = pytest.mark.anyio
LOGGERS = ["", "httpx", "httpcore", "stamina", "rodin_async", "asyncio", "anyio"]


def secrets_of(url: str) -> list[str]:
    """The parts of a presigned URL's query that must not be logged."""
    pairs = parse_qsl(urlsplit(url).query)
    assert any(name == "X-Amz-Signature" for name, _ in pairs)  # really presigned
    return [f"{name}=" for name, _ in pairs] + [value for _, value in pairs if len(value) >= 8]


async def test_presigned_query_never_logged(
    fake: FakeRodin, bucket: Bucket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 9: with every logger at DEBUG, downloads and retries never log the query."""
    urls = [bucket.put(unique("k-") + "/mesh.glb", b"m" * 200_000) for _ in range(2)]
    bucket.front.cut(urls[1], after=50_000)  # a retry, so failure paths log too
    task = fake.add_remote_task({"a.glb": urls[0], "b.glb": urls[1]})
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.clear()
    async with client(fake) as rodin:
        await rodin.download(task, tmp_path)
    # Logging really was on: httpx wrote its line per API call. (httpcore writes nothing on
    # a direct connection: both clients use our own connections, which keep no trace.)
    assert "httpx" in {r.name.split(".")[0] for r in caplog.records}
    formatter = logging.Formatter()
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += formatter.formatException(record.exc_info)
        for secret in (s for url in urls for s in secrets_of(url)):
            assert secret not in text, f"{record.name} logged {text[:300]!r}"

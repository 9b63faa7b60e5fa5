"""Defect 11: on trio the client works end to end, or refuses clearly (ConfigurationError)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from rodin_async import ConfigurationError
from rodin_async.testing import FakeRodin

from .checks import client
from .servers import Caddy

BODY = b"a model fetched under trio " * 4000


@pytest.mark.parametrize("call", ["download", "download_many"])
def test_trio_works_or_is_refused_naming_asyncio(
    fake: FakeRodin, caddy: Caddy, folder: str, tmp_path: Path, call: str
) -> None:
    """Defect 11: under trio a download succeeds or raises ConfigurationError naming asyncio."""
    url, _ = caddy.put(f"{folder}/model.glb", BODY)
    task = fake.add_remote_task({"model.glb": url})

    async def main() -> None:
        async with client(fake) as rodin:
            if call == "download":
                await rodin.download(task, tmp_path)
                return
            async for result in rodin.download_many([task], tmp_path):
                if result.error is not None:
                    raise result.error

    refusal: ConfigurationError | None = None
    try:
        anyio.run(main, backend="trio")
    except ConfigurationError as exc:  # anything else (ExceptionGroup, RuntimeError) fails
        refusal = exc
    if refusal is None:
        assert (tmp_path / task / "model.glb").read_bytes() == BODY
    else:
        assert "asyncio" in str(refusal)

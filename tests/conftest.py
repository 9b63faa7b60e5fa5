"""Shared fixtures: no backoff sleeps, a fresh fake Rodin server per test, anyio on asyncio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stamina


@pytest.fixture(autouse=True)
def _no_backoff_sleeps() -> Iterator[None]:
    """Retries happen at full count but without waiting (stamina's testing mode)."""
    stamina.set_testing(True, attempts=100, cap=True)
    yield
    stamina.set_testing(False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

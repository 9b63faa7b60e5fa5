"""The public surface as users meet it: typing, hashing, pickling, reprs and help()."""

from __future__ import annotations

import sys
import typing

import pytest

from rodin_async import AsyncRodin
from rodin_async.testing import FakeRodin

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

pytestmark = pytest.mark.anyio


class MyRodin(AsyncRodin):
    pass


async def test_aenter_returns_self() -> None:
    """`async with` on a subclass gives the subclass, and says so to type checkers."""
    assert typing.get_type_hints(AsyncRodin.__aenter__)["return"] is Self
    async with MyRodin("key", base_url="http://127.0.0.1:9/") as rodin:
        assert type(rodin) is MyRodin


def test_fake_server_enter_returns_self() -> None:
    """FakeRodin's `with` and `async with` are typed Self as well."""
    assert typing.get_type_hints(FakeRodin.__enter__)["return"] is Self
    assert typing.get_type_hints(FakeRodin.__aenter__)["return"] is Self

"""Helpers the conformance tests share: a client for the fake API, and disk checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from rodin_async import AsyncRodin
from rodin_async.testing import FakeRodin

MANIFEST = ".rodin-manifest.json"
# Short enough that a failing test fails fast, long enough for a loaded 2-core machine.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def client(fake: FakeRodin, **options: Any) -> AsyncRodin:
    """A client of the fake API (short timeouts); *options* are AsyncRodin keywords."""
    options.setdefault("timeout", TIMEOUT)
    return AsyncRodin(fake.api_key, base_url=options.pop("base_url", fake.base_url), **options)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """*exc* and everything chained to it: causes, contexts, group members, file errors."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += list(getattr(current, "exceptions", ()))
        todo += list(getattr(current, "errors", ()))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_manifest_matches_disk(directory: Path) -> None:
    """The manifest lists every file with the size and SHA-256 it has on disk."""
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["files"], manifest
    for entry in manifest["files"]:
        data = (directory / entry["file"]).read_bytes()
        assert (entry["size"], entry["sha256"]) == (len(data), sha256(data)), entry


def stray_parts(directory: Path) -> list[str]:
    """Partial files left in a task folder."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))

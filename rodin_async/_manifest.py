"""The manifest that lets a re-run skip finished tasks.

When every file of a task is on disk, ``dest/<task_uuid>/.rodin-manifest.json`` records
each file's listed name, file name, size and SHA-256. It is written atomically and only
after the files are final, so it never claims a file that isn't complete. A later run
that finds the manifest and the files still matching it skips the task entirely.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anyio
import attrs

from ._files import safe_name
from ._models import DownloadedFile

MANIFEST_NAME = ".rodin-manifest.json"
_VERSION = 1
FileCheck = Literal["size", "sha256"]
"""How a re-run checks that finished files are intact: ``"size"``, or ``"sha256"`` too."""
Verify = FileCheck  # the old name, used until the download option is renamed `check`


@attrs.frozen
class _Entry:
    name: str
    file: str
    size: int
    sha256: str


async def write_manifest(directory: Path, task_uuid: str, files: Sequence[DownloadedFile]) -> None:
    """Record *files* as the complete result of *task_uuid* (atomically)."""
    entries = [
        {"name": f.name, "file": f.path.name, "size": f.size, "sha256": f.sha256} for f in files
    ]
    body = json.dumps({"version": _VERSION, "task_uuid": task_uuid, "files": entries}, indent=1)
    await anyio.to_thread.run_sync(_write_atomically, directory / MANIFEST_NAME, body)


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".part")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)  # a full disk must not leave a stray temp file
        raise


async def reuse_or_forget(
    directory: Path, task_uuid: str, verify: Verify, *, reuse: bool = True
) -> list[DownloadedFile] | None:
    """The files the manifest records, if *reuse* and they are all still intact on disk.

    Sizes are always compared; hashes too when *verify* is ``"sha256"``. Otherwise the
    manifest is removed, since the task's files are about to change, and None returned.
    One worker-thread hop for both.
    """
    return await anyio.to_thread.run_sync(_reuse_or_forget, directory, task_uuid, verify, reuse)


def _reuse_or_forget(
    directory: Path, task_uuid: str, verify: Verify, reuse: bool
) -> list[DownloadedFile] | None:
    files = _verified_files(directory, task_uuid, verify) if reuse else None
    if files is None:
        (directory / MANIFEST_NAME).unlink(missing_ok=True)
    return files


def _verified_files(directory: Path, task_uuid: str, verify: Verify) -> list[DownloadedFile] | None:
    entries = _read_entries(directory / MANIFEST_NAME, task_uuid)
    if entries is None:
        return None
    files = []
    for entry in entries:
        path = directory / entry.file
        try:
            size = path.stat().st_size
        except OSError:
            return None
        if size != entry.size or (verify == "sha256" and sha256_file(path) != entry.sha256):
            return None
        files.append(DownloadedFile(entry.name, path, size, entry.sha256, attempts=0))
    return files


def _read_entries(path: Path, task_uuid: str) -> list[_Entry] | None:
    """The manifest's entries, or None if it is missing, corrupt, or not this task's."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw["version"] != _VERSION or raw["task_uuid"] != task_uuid:
            return None
        entries = [
            _Entry(e["name"], e["file"], int(e["size"]), str(e["sha256"])) for e in raw["files"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # A hand-edited manifest must not point outside the task folder either.
    if any(safe_name(e.file) != e.file for e in entries):
        return None
    return entries


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (blocking: run it in a worker thread)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()

"""The manifest that lets a re-run skip finished tasks, and keep files that still match.

When every file of a task is on disk, ``dest/<task_uuid>/.rodin-manifest.json`` records
each file's listed name, file name, size and SHA-256. It is written atomically and only
after the files are final, so it never claims a file that isn't complete. A later run
that finds the manifest and the files still matching it skips the task entirely; one
that finds some files missing or damaged downloads only those.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Sequence
from typing import Literal

import attrs

from ._errors import ConfigurationError
from ._files import Identity, TaskFolder, safe_name
from ._models import DownloadedFile

MANIFEST_NAME = ".rodin-manifest.json"
_VERSION = 1
_MAX_BYTES = 16 << 20  # far more than any task's list; a bigger file is not ours

Hashes = dict[str, tuple[Identity, str]]
"""SHA-256s computed while checking files: file name -> (its `TaskFolder.identity` then,
hex digest). A later check of the same, unchanged file reuses the digest."""

FileCheck = Literal["size", "sha256"]
"""How files an earlier run downloaded are checked before they are kept: by size, or
also by SHA-256 (reads every file)."""

_FILE_CHECKS = ("size", "sha256")


def check_file_check(value: object) -> FileCheck:
    """Return *value* if it is a `FileCheck`; raise `ConfigurationError` otherwise."""
    if value in _FILE_CHECKS:
        return typing.cast(FileCheck, value)
    raise ConfigurationError(f"check must be one of {_FILE_CHECKS}, got {value!r}")


@attrs.frozen
class Entry:
    """One file as the manifest records it."""

    name: str
    file: str
    size: int
    sha256: str


def write_manifest(folder: TaskFolder, task_uuid: str, files: Sequence[DownloadedFile]) -> None:
    """Record *files* as the complete result of *task_uuid* (atomically; blocking)."""
    entries = [
        {"name": f.name, "file": f.path.name, "size": f.size, "sha256": f.sha256} for f in files
    ]
    body = json.dumps({"version": _VERSION, "task_uuid": task_uuid, "files": entries}, indent=1)
    folder.write_atomically(MANIFEST_NAME, body.encode())


def intact_files(
    folder: TaskFolder, task_uuid: str, check: FileCheck, hashes: Hashes | None = None
) -> list[DownloadedFile]:
    """The files the manifest records that are still intact on disk (blocking).

    Sizes are always compared; hashes too when *check* is ``"sha256"`` (reusing those in
    *hashes* of files unchanged since, and adding the new ones). A file that is a link, or
    not a plain file, is not intact.
    """
    entries = read_entries(folder, task_uuid) or []
    return [
        DownloadedFile(e.name, folder.path / e.file, e.size, e.sha256, attempts=0)
        for e in entries
        if _intact(folder, e, check, hashes)
    ]


def all_intact(
    folder: TaskFolder, task_uuid: str, check: FileCheck, hashes: Hashes | None = None
) -> list[DownloadedFile] | None:
    """Every file the manifest records, if all are intact; None otherwise (blocking).

    *hashes* as for `intact_files`.
    """
    entries = read_entries(folder, task_uuid)
    if entries is None or not all(_intact(folder, e, check, hashes) for e in entries):
        return None
    return [
        DownloadedFile(e.name, folder.path / e.file, e.size, e.sha256, attempts=0)
        for e in entries
    ]


def forget(folder: TaskFolder) -> None:
    """Remove the manifest: the task's files are about to change (blocking)."""
    folder.unlink(MANIFEST_NAME)


def _intact(folder: TaskFolder, entry: Entry, check: FileCheck, hashes: Hashes | None) -> bool:
    identity = folder.identity(entry.file)
    if identity is None or identity[1] != entry.size:
        return False
    if check != "sha256":
        return True
    known = (hashes or {}).get(entry.file)
    if known is not None and known[0] == identity:
        return known[1] == entry.sha256
    digest = folder.sha256(entry.file)
    if hashes is not None:
        hashes[entry.file] = (identity, digest)
    return digest == entry.sha256


def read_entries(folder: TaskFolder, task_uuid: str) -> list[Entry] | None:
    """The manifest's entries, or None if it is missing, corrupt, or not this task's."""
    if folder.regular_size(MANIFEST_NAME) is None:
        return None
    try:
        with folder.open_read(MANIFEST_NAME) as f:
            raw = json.loads(f.read(_MAX_BYTES))
        if raw["version"] != _VERSION or raw["task_uuid"] != task_uuid:
            return None
        entries = [
            Entry(str(e["name"]), str(e["file"]), int(e["size"]), str(e["sha256"]))
            for e in raw["files"]
        ]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    # A hand-edited manifest must not point outside the task folder either.
    if any(safe_name(e.file) != e.file for e in entries):
        return None
    return entries

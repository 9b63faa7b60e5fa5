"""Where files go on disk: safe names, task folders, ``.part`` files and atomic renames.

Server-supplied names are untrusted. Every name that reaches the disk went through
`safe_name`, so nothing is ever written outside ``dest/<task_uuid>/``. A download is
written to a hidden ``.<name>.part`` beside its final name and renamed only when complete,
so nothing incomplete ever sits under a final name. Final names never start with a dot,
so they can't collide with part files or the manifest.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import aiofiles.threadpool
import anyio

from ._errors import DestinationError, InvalidTaskError

# Room for the ".<name>.part" of the part file within the usual 255-byte limit.
MAX_NAME_BYTES = 255 - len("..part")
_FALLBACK = "file"
_MAX_EXT_BYTES = 16  # a longer "extension" is just part of the name
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"|?*]')  # C0, DEL and C1 controls
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{p}{i}" for p in ("com", "lpt") for i in [*range(10), "¹", "²", "³"]}
)


def safe_name(name: str) -> str:
    """Turn an untrusted server name into one plain, portable file name.

    Path parts are dropped (both separators), control and reserved characters become
    ``_``, leading dots are replaced (no hidden files, no ``..``), Windows device names
    are prefixed, and the result is capped at `MAX_NAME_BYTES` keeping the extension.
    Never returns an empty string.
    """
    # Lone surrogates (legal in JSON) can't be encoded; they become "?" and then "_".
    text = name.encode("utf-8", "replace").decode("utf-8")
    base = unicodedata.normalize("NFC", text).replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_CHARS.sub("_", base).strip().rstrip(". ")
    if base.startswith("."):
        base = "_" + base.lstrip(".")
    if not base:
        base = _FALLBACK
    if base.split(".", 1)[0].rstrip(" ").lower() in _WINDOWS_RESERVED:
        base = "_" + base
    return _truncate(base, MAX_NAME_BYTES)


def _truncate(name: str, limit: int) -> str:
    """Cap *name* at *limit* UTF-8 bytes, keeping a short extension when there is one."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > _MAX_EXT_BYTES:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    room = limit - len(suffix.encode())
    cut = stem.encode()[:room].decode("utf-8", "ignore").rstrip(". ")
    return (cut or _FALLBACK) + suffix


def unique_names(names: Iterable[str]) -> list[str]:
    """Safe names for *names*, in order, made unique with ``-2``, ``-3``... suffixes.

    Deterministic for the same list. Uniqueness is case-insensitive, so two names never
    share a file on macOS or Windows either.
    """
    used: set[str] = set()
    result = []
    for name in names:
        candidate = safe = safe_name(name)
        n = 1
        while candidate.casefold() in used:
            n += 1
            candidate = _with_suffix(safe, f"-{n}")
        used.add(candidate.casefold())
        result.append(candidate)
    return result


def _with_suffix(name: str, suffix: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > _MAX_EXT_BYTES:  # as _truncate decides
        stem, ext = name, ""
    tail = f"{suffix}.{ext}" if ext else suffix
    return _truncate(stem, MAX_NAME_BYTES - len(tail.encode())) + tail


def check_task_uuid(task_uuid: object) -> str:
    """Return *task_uuid* stripped, or raise `InvalidTaskError` if it can't name a folder."""
    if not isinstance(task_uuid, str):
        raise InvalidTaskError(f"a task uuid must be a string, not {type(task_uuid).__name__}")
    uuid = task_uuid.strip()
    if not uuid:
        raise InvalidTaskError("the task uuid is empty")
    if safe_name(uuid) != uuid or len(uuid) > 200:
        raise InvalidTaskError(
            f"the task uuid {uuid!r} can't be used as a folder name "
            "(path separators, control characters, leading dots or too long)"
        )
    return uuid


async def prepare_destination(dest: str | os.PathLike[str]) -> Path:
    """Create *dest* if needed and check that files can be written in it."""
    path = Path(dest)
    apath = anyio.Path(path)
    if await apath.exists() and not await apath.is_dir():
        raise DestinationError(f"destination {str(path)!r} exists and is not a directory")
    try:
        await apath.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationError(f"can't create destination {str(path)!r}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise DestinationError(f"destination {str(path)!r} is not writable")
    return path


async def make_task_directory(dest: Path, task_uuid: str) -> Path:
    """Create and return ``dest/<task_uuid>``."""
    directory = dest / task_uuid
    try:
        await anyio.Path(directory).mkdir(exist_ok=True)
    except OSError as exc:
        raise DestinationError(
            f"can't create task folder {str(directory)!r}: {exc.strerror}"
        ) from exc
    return directory


def part_path(final: Path) -> Path:
    """The hidden ``.part`` file a download is written to before it is complete."""
    return final.with_name(f".{final.name}.part")


class _PartFile(io.BufferedIOBase):
    """A ``.part`` file as aiofiles' worker thread sees it: it hashes what it writes.

    Opening, fstat and hashing any bytes already there happen in one thread hop, and so
    do closing and renaming: per-file hops, not bytes, dominate small downloads.
    """

    def __init__(self, part: Path) -> None:
        self._path = part
        # Created when missing; appends after what's there. Closed by close().
        self._file = open(part, "ab")  # noqa: SIM115
        self._digest = hashlib.sha256()
        self.offset = os.fstat(self._file.fileno()).st_size
        if self.offset:
            with open(part, "rb") as existing:
                while block := existing.read(1 << 20):
                    self._digest.update(block)
        self._restart = False

    def restart(self) -> None:
        """Start the file over at the next write (the server ignored the Range)."""
        self._restart = True

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self._restart:
            self._restart = False
            self._file.truncate(0)
            self._digest = hashlib.sha256()
        self._digest.update(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()  # flushes through to the real file first
        finally:
            self._file.close()

    def commit(self, final: Path) -> str:
        """Close, move into place under *final*, and return the SHA-256."""
        if self._restart:  # restarted, and the new body was empty
            self.write(b"")
        self.close()
        os.replace(self._path, final)
        return self._digest.hexdigest()

    def abandon(self, *, discard: bool) -> None:
        """Close; remove the file when asked, or when it holds nothing worth resuming."""
        self.close()
        if discard or os.stat(self._path).st_size == 0:
            self._path.unlink(missing_ok=True)


class PartWriter:
    """Writes a download's ``.part`` file through aiofiles, hashing as it goes.

    Hashing rides along with each write in aiofiles' worker thread, where hashlib
    releases the GIL, instead of costing the event loop or a second pass over the file.
    Opening before the request tells how much is already there (`offset`), for a Range.
    """

    def __init__(self, part: _PartFile) -> None:
        self._part = part
        self._file = aiofiles.threadpool.wrap(part)
        self._done = False

    @classmethod
    async def open(cls, part: Path) -> PartWriter:
        """Open (or create) *part* to append to it."""
        # Shielded: a cancelled open would leak the file it opened in the thread.
        with anyio.CancelScope(shield=True):
            opened = await anyio.to_thread.run_sync(_PartFile, part)
        return cls(opened)

    @property
    def offset(self) -> int:
        """Bytes already in the part file when it was opened."""
        return self._part.offset

    def restart(self) -> None:
        """Throw away what the part file holds at the next write."""
        self._part.restart()

    async def write(self, chunk: bytes) -> None:
        await self._file.write(chunk)

    async def commit(self, final: Path) -> str:
        """Rename the complete part file to *final*; return its SHA-256."""
        self._done = True
        with anyio.CancelScope(shield=True):  # half a commit would leave no file at all
            digest = await anyio.to_thread.run_sync(self._part.commit, final)
        return digest

    async def aclose(self, *, discard: bool = False) -> None:
        """Close without committing: keep the bytes for a resume, unless *discard*."""
        if self._done:
            return
        self._done = True
        with anyio.CancelScope(shield=True):  # the bytes written so far must reach the disk
            await anyio.to_thread.run_sync(lambda: self._part.abandon(discard=discard))

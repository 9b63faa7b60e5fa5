"""Where files go on disk: safe names, task folders, ``.part`` files and atomic renames.

Server-supplied names are untrusted. Every name that reaches the disk went through
`safe_name`, so nothing is ever written outside ``dest/<task_uuid>/``. A download is
written to a hidden ``.<name>.part`` beside its final name and renamed only when complete
and exactly as long as written, so nothing incomplete ever sits under a final name.
Files in a task folder are opened relative to the folder's descriptor without following
symlinks, so a planted link can't redirect a write. Final names never start with a dot,
so they can't collide with the hidden companions: ``.<name>.part``, ``.<name>.meta`` (the
resume validator), ``.rodin-manifest.json``, ``.rodin.lock`` and unique ``.<hex>.tmp``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import stat
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import aiofiles.os
import anyio
import attrs
import filelock

from ._decode import Decoder
from ._errors import DestinationError, InvalidTaskError

T = TypeVar("T")

# A body is written in batches: each thread hop costs about as much CPU as copying
# 1 MiB, and slow links deliver far smaller chunks. A batch goes to disk when it holds
# this much, or when its first chunk is this old (so progress keeps moving).
BATCH_BYTES = 1 << 20
BATCH_SECONDS = 0.1

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
    """Create *dest* if needed and check that files can be written in it (one hop)."""
    return await run_shielded(_prepare_destination, Path(dest))


def _prepare_destination(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise DestinationError(f"destination {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationError(f"can't create destination {str(path)!r}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise DestinationError(f"destination {str(path)!r} is not writable")
    return path


def part_path(final: Path) -> Path:
    """The hidden ``.part`` file a download is written to before it is complete."""
    return final.with_name(_part_name(final.name))


def _part_name(name: str) -> str:
    return f".{name}.part"


def leftovers(names: Iterable[str]) -> frozenset[str]:
    """The final names that a ``.part`` or ``.meta`` among *names* (a folder's) belongs to."""
    return frozenset(
        name[1:-5] for name in names if name.startswith(".") and name.endswith((".part", ".meta"))
    )


def _meta_name(name: str) -> str:
    return f".{name}.meta"


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a planted FIFO must not hang the open
_CREATE_NEW = os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
LOCK_NAME = ".rodin.lock"
Identity = tuple[int, int, int, int]  # a plain file's inode, size, mtime and ctime (ns)
_TEMP = re.compile(r"\.[0-9a-f]{16}\.tmp")


class TaskFolder:
    """``dest/<task_uuid>``, opened once without following links.

    Every file inside is opened, renamed and removed relative to the folder's descriptor,
    never through a path that a planted symlink could redirect. Files we write are never
    links: a link (or anything but a plain file with one name) found where a part, meta
    or temp file should be is removed, not written through. Blocking: run its methods in
    a worker thread.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self._lock: filelock.FileLock | None = None

    @classmethod
    def make(cls, dest: Path, task_uuid: str) -> TaskFolder:
        """Open ``dest/<task_uuid>``, creating it first if needed.

        Raises:
            DestinationError: It can't be created, or it is a symlink or not a folder.
        """
        path = dest / task_uuid
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path)
            return cls(path, _open_folder(path))
        except OSError as exc:
            raise _folder_error(path, exc) from exc

    @classmethod
    def existing(cls, dest: Path, task_uuid: str) -> TaskFolder | None:
        """Open ``dest/<task_uuid>`` if it exists (see `make`)."""
        path = dest / task_uuid
        try:
            return cls(path, _open_folder(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _folder_error(path, exc) from exc

    def close(self) -> None:
        """Release the lock (if held) and the folder's descriptor."""
        try:
            self.unlock()
        finally:
            os.close(self.fd)

    def try_lock(self) -> bool:
        """Take the folder's cross-process lock if free; True when it is now held."""
        if self._lock is not None:
            return True
        self.remove_if_not_plain(LOCK_NAME)
        lock = filelock.FileLock(self.path / LOCK_NAME, thread_local=False)
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            return False
        self._lock = lock
        return True

    def unlock(self) -> None:
        """Release the cross-process lock (if held); the lock file stays for next time."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def sweep_temps(self) -> list[str]:
        """Remove temp files a crashed writer left (call it holding the lock); return the
        names of the other entries."""
        names = []
        for name in os.listdir(self.fd):
            if _TEMP.fullmatch(name):
                self.unlink(name)
            else:
                names.append(name)
        return names

    def regular_size(self, name: str) -> int | None:
        """The size of *name* if it is a plain file (not a link), else None."""
        identity = self.identity(name)
        return identity[1] if identity is not None else None

    def identity(self, name: str) -> Identity | None:
        """(inode, size, mtime, ctime in ns) of *name* if it is a plain file (not a link),
        else None: any write to the file changes it."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def open_read(self, name: str) -> io.BufferedReader:
        """Open *name* for reading, refusing links."""
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK, dir_fd=self.fd)
        return open(fd, "rb", closefd=True)

    def sha256(self, name: str) -> str:
        """Hex SHA-256 of the plain file *name*."""
        digest = hashlib.sha256()
        with self.open_read(name) as f:
            while block := f.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def create(self, name: str) -> int:
        """Create *name* afresh (whatever stood there is removed first); return its fd."""
        flags = os.O_RDWR | os.O_APPEND | _CREATE_NEW
        try:
            return os.open(name, flags, 0o666, dir_fd=self.fd)
        except FileExistsError:  # O_EXCL: a link there is not followed, it is in the way
            self.unlink(name)
        return os.open(name, flags, 0o666, dir_fd=self.fd)

    def write_atomically(self, name: str, data: bytes) -> None:
        """Replace *name* with *data* in one step: a unique temp file, then a rename."""
        temp = f".{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, os.O_WRONLY | _CREATE_NEW, 0o666, dir_fd=self.fd)
        try:
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
            self.replace(temp, name)
        except BaseException:
            self.unlink(temp)  # a full disk must not leave a stray temp file
            raise

    def replace(self, source: str, target: str) -> None:
        """Rename *source* over *target* (a link at *target* is replaced, not followed)."""
        os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        """Remove *name* if it exists (a link is removed itself)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def remove_if_not_plain(self, name: str) -> None:
        """Remove *name* if it is a link, a FIFO or anything but a plain single-named file."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            self.unlink(name)


def _open_folder(path: Path) -> int:
    return os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)


def _folder_error(path: Path, exc: OSError) -> DestinationError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and path.is_symlink():
        return DestinationError(
            f"task folder {str(path)!r} is a symbolic link; refusing to write through it "
            "(remove it, or choose another destination)"
        )
    return DestinationError(f"can't use task folder {str(path)!r}: {exc.strerror or exc}")


@attrs.frozen
class Validator:
    """What the file host said about a file when its part file was started.

    A resume is only asked for (``If-Range``) and accepted when the host still
    describes the same file: same strong ETag, same Last-Modified, same length.
    """

    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None

    def to_json(self) -> bytes:
        """The ``.meta`` file's contents."""
        return json.dumps(attrs.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Validator | None:
        """Read a ``.meta`` file; None if it isn't one we wrote."""
        try:
            raw = json.loads(data)
            etag, modified, total = raw["etag"], raw["last_modified"], raw["total"]
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
        if not all(isinstance(v, (str, type(None))) for v in (etag, modified)):
            return None
        if not (total is None or (isinstance(total, int) and total >= 0)):
            return None
        return cls(etag, modified, total)


class PartFileChanged(Exception):
    """The part file on disk is not what this writer wrote (another writer, or a swap)."""


class _PartFile:
    """A ``.part`` file as the worker thread sees it: it decodes and hashes writes.

    Opening, fstat, reading the validator and hashing any bytes already there happen in
    one thread hop, and so do the final checks, renaming and closing: per-file hops, not
    bytes, dominate small downloads. A part is only resumable with its ``.meta``
    validator; one without it (or of an encoded body) is started over. A part known not
    to exist yet is created at its first write, in that write's hop.
    """

    def __init__(self, folder: TaskFolder, final_name: str, *, exists: bool) -> None:
        self._folder = folder
        self._name = _part_name(final_name)
        self._meta = _meta_name(final_name)
        self._digest = hashlib.sha256()
        self._pending: tuple[bool, Validator | None] | None = None
        self._meta_may_exist = exists
        self._file: io.BufferedWriter | None = None
        self.decoder: Decoder | None = None
        self.validator: Validator | None = None
        self.offset = self.size = 0
        self.closed = False
        if exists:
            self._file = self._open()
            try:
                self.validator = self._resumable_validator(self._file)
                self.offset = self.size = self._hash_existing(self._file) if self.validator else 0
            except BaseException:
                self._file.close()
                raise

    @classmethod
    def existing(cls, folder: TaskFolder, final_name: str) -> _PartFile:
        """Open (or create) the part of *final_name* and read what it already holds."""
        return cls(folder, final_name, exists=True)

    def _open(self) -> io.BufferedWriter:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC | _NONBLOCK
        try:
            fd = os.open(self._name, flags, 0o666, dir_fd=self._folder.fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise
            fd = self._folder.create(self._name)  # a planted link: remove it, not follow it
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            fd = self._folder.create(self._name)
        return open(fd, "ab", closefd=True)

    def _resumable_validator(self, file: io.BufferedWriter) -> Validator | None:
        if os.fstat(file.fileno()).st_size == 0:
            return None
        validator = None
        if self._folder.regular_size(self._meta) is not None:
            with self._folder.open_read(self._meta) as f:
                validator = Validator.from_json(f.read(4096))
        if validator is None:  # not ours, or of an encoded body: start over now
            os.ftruncate(file.fileno(), 0)
        return validator

    def _hash_existing(self, file: io.BufferedWriter) -> int:
        fd, position = file.fileno(), 0
        while block := os.pread(fd, 1 << 20, position):
            self._digest.update(block)
            position += len(block)
        return position

    def begin(self, validator: Validator | None, decoder: Decoder | None) -> None:
        """A complete body follows (a 200): start over, remembering *validator*.

        The part is truncated and the validator written at the next write, in the
        same thread hop. An encoded body is never resumed, so it gets no validator.
        """
        self._pending = (self.size > 0, None if decoder else validator)
        self.decoder = decoder
        self.offset = self.size = 0
        self._digest = hashlib.sha256()

    def write(self, chunks: Sequence[bytes], *, resumable: bool = True) -> int:
        """Append chunks of the body (decoded first); return the bytes written to disk.

        With *resumable* False (the part is committed in this same hop) no validator is
        written: it would be removed again at once.
        """
        file = self._opened()
        self._apply_pending(file, resumable)
        decoder, written = self.decoder, 0
        for data in chunks:
            if decoder is None:
                written += self._append(file, data)
            else:
                written += sum(self._append(file, piece) for piece in decoder.feed(data))
        return written

    def _opened(self) -> io.BufferedWriter:
        if self._file is None:  # known not to exist: create it (a link planted meanwhile goes)
            self._file = self._create()
        return self._file

    def _create(self) -> io.BufferedWriter:
        return open(self._folder.create(self._name), "ab", closefd=True)

    def _append(self, file: io.BufferedWriter, piece: bytes) -> int:
        self._digest.update(piece)
        file.write(piece)
        self.size += len(piece)
        return len(piece)

    def _apply_pending(self, file: io.BufferedWriter, resumable: bool) -> None:
        if self._pending is None:
            return
        truncate, validator = self._pending
        self._pending = None
        if truncate:
            file.flush()
            os.ftruncate(file.fileno(), 0)
        self._unlink_meta()
        if validator is not None and resumable:
            self._folder.write_atomically(self._meta, validator.to_json())
            self._meta_may_exist = True

    def _unlink_meta(self) -> None:
        if self._meta_may_exist:
            self._folder.unlink(self._meta)
            self._meta_may_exist = False

    def close(self) -> None:
        """Close the part file (flushing what is buffered first)."""
        if self.closed:
            return
        self.closed = True
        if self._file is not None:
            self._file.close()

    def commit(self, final_name: str, chunks: Sequence[bytes] = ()) -> tuple[int, str]:
        """Write the last *chunks*, finish decoding, check the bytes on disk and rename
        the part into place; return (size, SHA-256).

        If the chunks can't be written the part is kept for a resume, as after any
        failed write, when its validator is beside it (this hop writes none for a part
        it starts); if a later step fails it is discarded.

        Raises:
            DecodeError: An encoded body was cut short.
            PartFileChanged: The file on disk doesn't hold exactly what was written.
        """
        try:
            self.write(chunks, resumable=False)
        except BaseException:
            self.abandon(discard=not self._meta_may_exist)  # no validator: not resumable
            raise
        try:
            self._check_and_rename(final_name)
        except BaseException:
            self.abandon(discard=True)
            raise
        self._unlink_meta()
        return self.size, self._digest.hexdigest()

    def _check_and_rename(self, final_name: str) -> None:
        file = self._opened()
        if self.decoder is not None:
            for piece in self.decoder.finish():
                self._append(file, piece)
        file.flush()
        if os.fstat(file.fileno()).st_size != self.size:
            raise PartFileChanged(f"{self._name} changed on disk while it was written")
        self.close()
        self._folder.replace(self._name, final_name)

    @property
    def on_disk(self) -> bool:
        """Whether the part file exists (was opened, or created by a write)."""
        return self._file is not None

    def abandon(self, *, discard: bool, chunks: Sequence[bytes] = ()) -> None:
        """Write the last *chunks* (unless discarding), then close; remove the part when
        asked, when empty, or when it can't be resumed.

        A part restarted by `begin` counts as empty until it is written: its old bytes
        belong to an older version of the file. A failure to write *chunks* is not
        raised: the error that abandons the part says more.
        """
        try:
            if chunks and not discard and self.decoder is None:
                with contextlib.suppress(OSError):
                    self.write(chunks)
        finally:
            self.close()
            if self.on_disk and (discard or self.decoder is not None or not self.size):
                self._folder.unlink(self._name)
                self._unlink_meta()


class PartWriter:
    """Writes a download's ``.part`` file through aiofiles, decoding and hashing as it goes.

    Chunks are gathered (`add`) and written in batches, one thread hop each, and the last
    batch rides along with the commit: a small file costs one hop in all. Decoding and
    hashing run in the worker thread, where zlib and hashlib release the GIL, instead of
    costing the event loop or a second pass. Every hop is shielded, and gathered bytes
    are written before the part is closed, whatever closes it: bytes that arrived are
    never lost to a buffer. Opening before the request tells how much is already there
    (`offset`), for a Range, and what the host said about the file then (`validator`),
    for ``If-Range``; a part known not to exist needs no hop before the request.
    """

    def __init__(self, part: _PartFile) -> None:
        self._part = part
        self._done = False
        self._chunks: list[bytes] = []
        self._since = 0.0
        self.pending = 0  # bytes gathered and not yet written

    @classmethod
    async def open(cls, folder: TaskFolder, final_name: str) -> PartWriter:
        """Open (or create) the part file of *final_name* in *folder*, to append to it."""
        # Shielded: a cancelled open would leak the file it opened in the thread.
        return cls(await run_shielded(_PartFile.existing, folder, final_name))

    @classmethod
    def new(cls, folder: TaskFolder, final_name: str) -> PartWriter:
        """A writer for a part that doesn't exist yet: created by the first write's hop."""
        return cls(_PartFile(folder, final_name, exists=False))

    @property
    def offset(self) -> int:
        """Bytes already in the part file, resumable, when it was opened (or restarted)."""
        return self._part.offset

    @property
    def size(self) -> int:
        """Bytes written to the part file (after decoding, for an encoded body)."""
        return self._part.size

    @property
    def validator(self) -> Validator | None:
        """What the host said about the file when the part was started."""
        return self._part.validator

    @property
    def decoding(self) -> bool:
        """Whether the body is being decoded (so it will not be resumed)."""
        return self._part.decoder is not None

    def begin(self, validator: Validator | None, decoder: Decoder | None = None) -> None:
        """Start the part over for a complete body (see `_PartFile.begin`)."""
        self._part.begin(validator, decoder)

    def add(self, chunk: bytes) -> bool:
        """Gather *chunk*; True when the batch is due: `BATCH_BYTES`, or `BATCH_SECONDS` old."""
        now = time.monotonic()
        if not self._chunks:
            self._since = now
        self._chunks.append(chunk)
        self.pending += len(chunk)
        return self.pending >= BATCH_BYTES or now - self._since >= BATCH_SECONDS

    def _take(self) -> list[bytes]:
        chunks, self._chunks, self.pending = self._chunks, [], 0
        return chunks

    async def write(self) -> int:
        """Write the gathered chunks in one hop; return the bytes that reached the file."""
        if not self._chunks:
            return 0
        return await run_shielded(self._part.write, self._take())

    async def commit(self, final_name: str) -> tuple[int, str]:
        """Write what is gathered and rename the complete part file to *final_name*, in
        one hop; return its size and SHA-256."""
        self._done = True  # half a commit would leave no file at all: shielded
        return await run_shielded(self._part.commit, final_name, self._take())

    async def aclose(self, *, discard: bool = False) -> None:
        """Close without committing: write what is gathered and keep the bytes for a
        resume, unless *discard*."""
        if self._done:
            return
        self._done = True
        chunks = [] if discard or self.decoding else self._take()
        if not chunks and not self._part.on_disk:
            return  # never created, nothing to add: nothing to close or remove
        # Shielded: the bytes received so far must reach the disk.
        await run_shielded(lambda: self._part.abandon(discard=discard, chunks=chunks))


async def run_shielded(func: Callable[..., T], *args: object) -> T:
    """Run blocking file work *func* in aiofiles' worker threads, to completion even if
    we are cancelled.

    Every disk operation (opening, writing, hashing, renaming, the lock and the manifest)
    goes through here, in batches, so a file costs few hops. A cancelled hop would drop
    what the thread opened (a folder, a lock, a file) on the floor, or close a file while
    the thread still writes to it.
    """
    with anyio.CancelScope(shield=True):
        result: T = await aiofiles.os.wrap(func)(*args)
    return result

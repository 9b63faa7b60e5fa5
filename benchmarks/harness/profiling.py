"""Reading a py-spy profile: where a download's CPU goes, by layer, by thread, by call path.

py-spy's ``--format raw`` output is one collapsed stack per line, root first, then a
sample count: ``thread (12): MainThread;main (x.py:3);...;write (rodin_async/_files.py:176) 42``.
Each sample is charged to the innermost frame that says what the work is, walking from the
leaf up: first by the *source line* a Python frame was executing (`LINE_HINTS`: a
``_digest.update(`` line is hashing, ``return self._file.write(`` the disk write,
``_sslobj.read(`` OpenSSL decrypting, ``recv_into(`` a socket read), then by module
(`LAYERS`). Frames that match nothing (the interpreter, libc, anonymous libcrypto code)
pass the sample up to their caller. So time spent in C is charged to what asked for it,
with or without ``--native``; with it, named C frames (``SHA256_Update``, ``SSL_read``)
match directly.
"""

from __future__ import annotations

import functools
import linecache
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<where>[^()]*?)(?::(?P<line>\d+))?\)$")

DISK_WRITE = "disk writes (write syscalls, worker threads)"
FILE_OPS = "file open, stat, rename, close (syscalls)"
SOCKET_READ = "socket reads (recv syscalls)"
OPENSSL = "TLS: OpenSSL (decrypt, records)"
SHA256 = "SHA-256"

# (needle in the executing source line, layer): what a line calling into C is doing.
LINE_HINTS: list[tuple[str, str]] = [
    ("_digest.update(", SHA256),
    ("return self._file.write(", DISK_WRITE),
    ("_sslobj.read(", OPENSSL),
    ("_sslobj.write(", OPENSSL),
    ("_sslobj.do_handshake(", OPENSSL),
    ("recv_into(", SOCKET_READ),
    ("os.replace(", FILE_OPS),
    ("os.fstat(", FILE_OPS),
    ("os.stat(", FILE_OPS),
    ('open(part, "ab")', FILE_OPS),
    ("self._file.close()", FILE_OPS),
    ("super().close()", FILE_OPS),
]

# (layer, substrings of "function (file...)"), tried in order on each frame.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("start-up: imports", ("<frozen importlib", "importlib/", "_find_and_load")),
    (SHA256, ("sha256", "SHA256", "hashlib", "_hashopenssl")),
    # libcrypto serves both SHA-256 and AES-GCM: its frames match neither, the caller decides.
    (OPENSSL, ("libssl", "_ssl__", "_ssl.c", "_ssl.cpython")),
    ("TLS: the loop's SSL protocol (sslproto)", ("sslproto", "SSLProtocol", "ssl.py:")),
    ("h11", ("h11/",)),
    ("httpcore", ("httpcore/",)),
    ("httpx client", ("httpx/",)),
    ("our transport (_transport.py)", ("rodin_async/_transport.py",)),
    ("part files (_files.py, Python side)", ("rodin_async/_files.py",)),
    ("aiofiles", ("aiofiles/",)),
    ("anyio (thread hops, scopes, limiter)", ("anyio/",)),
    ("worker-thread machinery", ("concurrent/futures/", "threading.py", "queue.py")),
    ("downloader (_download.py)", ("rodin_async/_download.py",)),
    ("retries (stamina)", ("stamina/", "tenacity/", "rodin_async/_retry.py")),
    ("manifest (_manifest.py)", ("rodin_async/_manifest.py",)),
    (
        "progress events, tally, display",
        ("rodin_async/_progress.py", "_cli/_tally.py", "_cli/_display.py", "rich/"),
    ),
    ("client, listing, models", ("rodin_async/", "attr/", "cattrs/", "json/")),
    ("event loop (uvloop)", ("uvloop", "loop.cpython")),
    ("event loop (asyncio)", ("asyncio/", "selectors.py")),
    ("CLI (typer, click)", ("typer/", "click/")),
]


@dataclass(frozen=True)
class Stack:
    thread: str
    frames: tuple[str, ...]  # root first
    count: int


# A pool thread waiting for work (in C, SimpleQueue.get) is sampled as if it ran: py-spy's
# idle test misses it on some kernels. Such samples are dropped, not charged to the pool.
_IDLE_LEAVES = ("_worker (concurrent/futures/thread.py",)


def parse(lines: Iterable[str]) -> list[Stack]:
    stacks = []
    for line in lines:
        body, _, count = line.rstrip("\n").rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = tuple(body.split(";"))
        if frames[-1].startswith(_IDLE_LEAVES):
            continue
        thread = frames[0] if frames[0].startswith("thread (") else "all threads"
        if frames[0].startswith("thread ("):
            frames = frames[1:]
        stacks.append(Stack(thread, frames, int(count)))
    return stacks


def layer_of(frames: tuple[str, ...]) -> str:
    """The layer a sample is charged to: the innermost frame that says what the work is."""
    for frame in reversed(frames):
        if layer := _layer(frame):
            return layer
    return "other"


@functools.cache
def _layer(frame: str) -> str | None:
    m = _FRAME.match(frame)
    if m and m.group("line") and (path := _source_path(m.group("where"))):
        text = linecache.getline(path, int(m.group("line")))
        for needle, layer in LINE_HINTS:
            if needle in text:
                return layer
    for layer, keys in LAYERS:
        if any(k in frame for k in keys):
            return layer
    return None  # the interpreter, libc...: the caller decides


@functools.cache
def _source_path(where: str) -> str | None:
    """py-spy shortens paths to be relative to a sys.path entry: find the file again."""
    if not where.endswith(".py"):
        return None
    if where.startswith("/"):
        return where
    for root in sys.path:
        if (candidate := Path(root or ".") / where).is_file():
            return str(candidate)
    return None


def event_loop_threads(stacks: list[Stack]) -> set[str]:
    """Threads whose stacks run an event loop (the others are worker threads)."""
    # Not base_events.py: pool threads call call_soon_threadsafe in it after every hop.
    marks = ("run_forever", "run_until_complete", "_run_once", "uvloop/__init__.py")
    return {s.thread for s in stacks if any(m in f for f in s.frames for m in marks)}


def by_layer(stacks: list[Stack]) -> Counter[str]:
    out: Counter[str] = Counter()
    for s in stacks:
        out[layer_of(s.frames)] += s.count
    return out


def inclusive(stacks: list[Stack], needle: str, without: str | None = None) -> int:
    """Samples with a frame containing *needle* (and, if given, none containing *without*)."""
    return sum(
        s.count
        for s in stacks
        if any(needle in f for f in s.frames)
        and not (without and any(without in f for f in s.frames))
    )


# Call paths worth knowing the inclusive share of (label, needle, excluded needle).
PATHS: list[tuple[str, str, str | None]] = [
    ("AsyncClient.send (whole request path)", "send (httpx/_client.py", None),
    (
        "  of which above our transport (auth, redirects, hooks, cookies)",
        "send (httpx/_client.py",
        "handle_async_request (rodin_async/_transport.py",
    ),
    ("FileTransport.handle_async_request", "handle_async_request (rodin_async/_transport.py", None),
    (
        "body loop _stream_to (reads + writes + progress)",
        "_stream_to (rodin_async/_download.py",
        None,
    ),
    (
        "  Response.aiter_raw (httpx/httpcore/h11 read path)",
        "Response.aiter_raw (httpx/_models.py",
        None,
    ),
    (
        "  PartWriter.write (the loop's side of each write hop)",
        "PartWriter.write (rodin_async/_files.py",
        None,
    ),
    ("progress callbacks (Tally.on_event)", "on_event (rodin_async/_cli/_tally.py", None),
    ("anyio.to_thread.run_sync (loop side)", "run_sync (anyio/to_thread.py", None),
    ("manifest write", "write_manifest (rodin_async/_manifest.py", None),
    (
        "manifest check on start (reuse_or_forget)",
        "reuse_or_forget (rodin_async/_manifest.py",
        None,
    ),
    ("listing via the API (list_files)", "list_files (rodin_async/_client.py", None),
    ("start-up imports", "_find_and_load", None),
]


def report(stacks: list[Stack], rate: int, cpu_seconds: float | None = None) -> str:
    """The tables: by layer (all threads, then the event loop alone), by thread, by path."""
    total = sum(s.count for s in stacks) or 1
    loops = event_loop_threads(stacks)
    loop_stacks = [s for s in stacks if s.thread in loops]
    loop_total = sum(s.count for s in loop_stacks) or 1
    cpu = f" (the run used {cpu_seconds:.1f} CPU s)" if cpu_seconds else ""
    lines = [
        f"{total} samples at {rate} Hz = {total / rate:.1f} s of sampled activity{cpu}; "
        f"event-loop thread {100 * loop_total / total:.0f} %",
        "",
    ]
    lines += [
        "| layer (self time, leaf-first) | all threads % | event-loop thread % |",
        "|---|---:|---:|",
    ]
    everything, loop_only = by_layer(stacks), by_layer(loop_stacks)
    for layer, n in everything.most_common():
        in_loop = 100 * loop_only.get(layer, 0) / loop_total
        lines.append(f"| {layer} | {100 * n / total:.1f} | {in_loop:.1f} |")
    lines += [
        "",
        "| call path (inclusive) | all threads % | event-loop thread % |",
        "|---|---:|---:|",
    ]
    for label, needle, without in PATHS:
        a, b = inclusive(stacks, needle, without), inclusive(loop_stacks, needle, without)
        lines.append(f"| {label} | {100 * a / total:.1f} | {100 * b / loop_total:.1f} |")
    return "\n".join(lines)

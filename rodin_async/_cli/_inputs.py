"""Reading what the user gives: task uuids from arguments, files or stdin, and the API key.

Lists of uuids come from spreadsheets, editors on Windows and other people's scripts, so
they are read leniently (a byte-order mark, CRLF, blank lines, ``#`` comments, spaces) and
checked strictly: a line that can't be a task id is reported with where it came from and
skipped, and the valid ones still download.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import attrs

from ._common import CliError

STDIN = "-"
_BOM = "\ufeff"
_MAX_LENGTH = 200  # the library's limit for a task folder name
# What a task id can be (an assumption: the API reference only says "the task's uuid").
# Rodin's are uuids (8-4-4-4-12 hex digits); the fake server's are uuid4s or the names of
# the --root folders. Letters, digits, '-' and '_' cover both and keep out everything that
# would mean something else in a path, a shell or a CSV.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_PLACEHOLDERS = ("...", "…")  # pasted from an example such as "download U1 U2 ..."
_QUOTES = "\"'`“”‘’"  # noqa: RUF001 -- curly quotes are exactly what spreadsheets add
_SHOWN = 60  # characters of a rejected line quoted in its message


@attrs.frozen
class Rejected:
    """An input that can't be a task id: where it was (``FILE:LINE``) and why."""

    where: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.why}"


@attrs.frozen
class Wanted:
    """The task uuids to download, in order and once each, and what was left out."""

    uuids: list[str]
    rejected: list[Rejected] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)


def collect_uuids(arguments: Sequence[str], files: Sequence[str]) -> Wanted:
    """Task uuids from *arguments* and the lines of *files*, deduplicated in order.

    ``-`` (as an argument or a file) reads standard input, once however often it's named;
    its uuids come after the others. A literal ``...`` argument is ignored with a note.

    Raises:
        CliError: A file can't be read.
    """
    entries = list(_argument_entries(arguments))
    for name in files:
        if name != STDIN:
            entries += uuid_lines(_read_file(Path(name)), name)
    if STDIN in arguments or STDIN in files:
        entries += uuid_lines(_read(sys.stdin, "standard input"), "<stdin>")
    return _sort_out(entries, _placeholder_notes(arguments))


def _argument_entries(arguments: Sequence[str]) -> Iterator[tuple[str, str]]:
    for number, argument in enumerate(arguments, 1):
        text = argument.strip()
        if argument != STDIN and text not in _PLACEHOLDERS:
            yield f"argument {number}", text


def _placeholder_notes(arguments: Sequence[str]) -> list[str]:
    if not any(a.strip() in _PLACEHOLDERS for a in arguments):
        return []
    return ["ignored '...' among the task uuids: it stands for more uuids in examples"]


def uuid_lines(lines: Iterable[str], source: str) -> Iterator[tuple[str, str]]:
    """``(FILE:LINE, text)`` for each line of *lines* that holds something.

    A byte-order mark, line ends, surrounding spaces, blank lines and ``#`` comments
    (whole lines, or the end of a line) are dropped.
    """
    for number, line in enumerate(lines, 1):
        text = line.removeprefix(_BOM) if number == 1 else line
        text = text.split("#", 1)[0].strip()
        if text:
            yield f"{source}:{number}", text


def _sort_out(entries: Iterable[tuple[str, str]], notes: list[str]) -> Wanted:
    uuids: dict[str, None] = {}  # dicts keep insertion order: the first mention wins
    rejected = []
    for where, text in entries:
        why = why_not_a_task_id(text)
        if why is None:
            uuids[text] = None
        else:
            rejected.append(Rejected(where, why))
    return Wanted(list(uuids), rejected, notes)


def why_not_a_task_id(text: str) -> str | None:
    """Why *text* (already stripped) can't be a task id, or None when it can."""
    if _TASK_ID.fullmatch(text) and len(text) <= _MAX_LENGTH:
        return None
    shown = _shown(text)
    if text in _PLACEHOLDERS:
        return f"{shown} is a placeholder from an example, not a task id"
    if len(text) > 1 and text[0] in _QUOTES and text[-1] in _QUOTES:
        return f"{shown} is in quotes; write the task id without them"
    if any(c.isspace() for c in text):
        return f"{shown} has spaces inside; write one task id per line"
    if "/" in text or "\\" in text or text.startswith("."):
        return f"{shown} looks like a path, not a task id"
    if len(text) > _MAX_LENGTH:
        return f"{shown} is longer than {_MAX_LENGTH} characters"
    bad = next((c for c in text if not (c.isascii() and (c.isalnum() or c in "-_"))), None)
    if bad is None:
        return f"{shown} starts with {text[0]!r}; a task id starts with a letter or digit"
    return f"{shown} contains {bad!r}; a task id is letters, digits, '-' and '_'"


def _shown(text: str) -> str:
    """*text* quoted for a message, control characters escaped, long ones shortened."""
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…")


def _read_file(path: Path) -> list[str]:
    try:
        # newline=None: lines end at \n, \r\n or \r, as editors count them.
        with path.open(encoding="utf-8", newline=None) as lines:
            return _read(lines, repr(str(path)))
    except OSError as exc:
        raise CliError(f"can't read task uuids from {str(path)!r}: {exc.strerror}") from exc


def _read(lines: Iterable[str], name: str) -> list[str]:
    try:
        return list(lines)
    except UnicodeDecodeError as exc:
        raise CliError(f"can't read task uuids from {name}: not UTF-8 text") from exc


def resolve_key(key_file: Path | None) -> str:
    """The API key: the first line of *key_file* if given, else ``RODIN_API_KEY``.

    There is deliberately no ``--api-key VALUE`` option: a key typed on the command line
    stays in shell history and is visible to other users in the process list.

    Raises:
        CliError: No key anywhere, or the key file can't be read or is empty.
    """
    if key_file is not None:
        return _key_from_file(key_file)
    key = os.environ.get("RODIN_API_KEY", "").strip()
    if not key:
        raise CliError(
            "no Rodin API key: set RODIN_API_KEY, or pass --api-key-file PATH "
            "(a file whose first line is the key)"
        )
    return key


def _key_from_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CliError(f"can't read the API key file {str(path)!r}: {reason}") from exc
    lines = text.strip().splitlines()
    key = lines[0].strip() if lines else ""
    if not key:
        raise CliError(f"the API key file {str(path)!r} is empty")
    return key

"""Reading what the user gives: task uuids from arguments, files or stdin, and the API key."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ._common import CliError

STDIN = "-"


def collect_uuids(arguments: Sequence[str], files: Sequence[str]) -> list[str]:
    """Task uuids from *arguments* and the lines of *files*, deduplicated in order.

    ``-`` (as an argument or a file) reads standard input, once however often it's named;
    its uuids come after the others.

    Raises:
        CliError: A file can't be read.
    """
    found = [argument.strip() for argument in arguments if argument != STDIN]
    for name in files:
        if name != STDIN:
            found += uuid_lines(_read_lines(Path(name)))
    if STDIN in arguments or STDIN in files:
        found += uuid_lines(sys.stdin)
    return list(dict.fromkeys(found))  # dicts keep insertion order: first mention wins


def uuid_lines(lines: Iterable[str]) -> Iterator[str]:
    """The uuids in *lines*: one per line; blank lines and ``#`` comments are skipped."""
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            yield text


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CliError(f"can't read task uuids from {str(path)!r}: {reason}") from exc


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

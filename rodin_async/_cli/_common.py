"""What every command shares: exit codes, one-line errors, consoles, and Ctrl-C handling."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import anyio
from rich.console import Console

import rodin_async

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # click's code for usage errors; configuration problems share it
EXIT_TIMEOUT = 124  # like coreutils timeout(1): "it is still running"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C (143 for SIGTERM)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Errors the user fixes by changing how the command is run, not by running it again.
# An API that can't be reached at all is a wrong base URL, proxy or trust store more
# often than an outage, and the download stops on it too.
_CONFIGURATION_ERRORS = (
    rodin_async.ConfigurationError,
    rodin_async.AuthenticationError,
    rodin_async.ConnectError,
    rodin_async.DestinationError,
    rodin_async.InvalidTaskError,
    rodin_async.ValidationError,
)


class CliError(Exception):
    """A problem to show as one line on stderr, then exit with *code* (no traceback)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Interrupted(Exception):
    """A signal stopped the work; whatever was running has been cancelled and cleaned up."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """What shells report for a process a signal ended: 130 for SIGINT, 143 for SIGTERM."""
        return exit_code_for(self.signum)


def exit_code_for(signum: int) -> int:
    """The exit status of a run that *signum* stopped: 128 + the signal's number."""
    return 128 + signum


_LOG_WIDTH = 1000  # columns of a console that is not a terminal: no line is ever wrapped


def error_console() -> Console:
    """The console for everything a human reads: stdout is kept for data (``--json``).

    Off a terminal (a log file, a pipe, CI), rich would wrap every line at 80 columns and
    split messages mid-word; there, lines stay whole so they can be grepped.
    """
    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        console.soft_wrap = True
        console.width = _LOG_WIDTH
    return console


def as_cli_error(exc: rodin_async.RodinError) -> CliError:
    """The exit code a library error deserves: 2 for set-up problems, 1 for the rest."""
    if isinstance(exc, _CONFIGURATION_ERRORS):
        return CliError(str(exc), EXIT_USAGE)
    if isinstance(exc, rodin_async.WaitTimeoutError):
        return CliError(str(exc), EXIT_TIMEOUT)
    return CliError(str(exc), EXIT_FAILED)


def print_json(value: object) -> None:
    """Write *value* as one JSON line on stdout, flushed so a pipeline sees it at once.

    Raises:
        CliError: The reader closed the pipe (``| head -1``): there is no one to report to.
    """
    try:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null, or Python's final flush fails again at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise CliError("stdout was closed by its reader; stopping", EXIT_FAILED) from None


def printable(text: str) -> str:
    """*text* with control characters escaped: server-sent names must not drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _loop_options() -> dict[str, bool]:
    # uvloop (in the cli extra where it builds) moves the same bytes with ~15% less CPU,
    # and CPU, not the network, is what bounds a bulk download.
    return {"use_uvloop": True} if importlib.util.find_spec("uvloop") else {}


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run *main* in a fresh event loop; Ctrl-C or SIGTERM cancels it: `Interrupted`.

    The first signal cancels the work, so the library's cleanup (closing part files,
    closing connections) runs; a second one interrupts the cleanup too.

    Raises:
        Interrupted: SIGINT (Ctrl-C) or SIGTERM (docker stop, systemd) stopped *main*.
        CliError: *main* raised a `RodinError`.
    """

    async def guarded() -> T:
        with anyio.CancelScope() as scope, _signals_cancel(scope) as received:
            return await main()
        # Only reached when the scope was cancelled, which only a signal does.
        raise Interrupted(received[0] if received else signal.SIGINT)

    try:
        return anyio.run(guarded, backend="asyncio", backend_options=_loop_options())
    except BaseException as exc:
        translated = _translate(exc)
        if translated is exc:
            raise
        raise translated from exc


def _translate(exc: BaseException) -> BaseException:
    """Map what escaped the event loop to what the command reports."""
    # Task groups (AsyncRodin's among them) wrap a lone error in a group: unwrap it.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, KeyboardInterrupt):  # no signal handler here (Windows), or a 2nd Ctrl-C
        return Interrupted(signal.SIGINT)
    if isinstance(exc, rodin_async.RodinError):
        return as_cli_error(exc)
    return exc


@contextlib.contextmanager
def _signals_cancel(scope: anyio.CancelScope) -> Iterator[list[int]]:
    """Turn the first SIGINT or SIGTERM into a cancellation of *scope*; yield what came.

    A KeyboardInterrupt can land anywhere, even between a write and a rename; a
    cancellation arrives at an await, where the library knows how to clean up. SIGTERM
    (docker stop, systemd, CI) would otherwise end the process with no summary at all.
    """
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        scope.cancel()
        for sig in installed:  # a second signal acts at once, as it would without us
            loop.remove_signal_handler(sig)

    installed = []
    for sig in _STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not main thread
            continue
        installed.append(sig)
    try:
        yield received
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)

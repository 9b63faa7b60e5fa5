"""The bulk download that ``download``, ``demo`` and ``generate --wait`` share.

It runs `AsyncRodin.download_many` (here, or in worker processes: `open_shards`), feeds a
`Tally` from the progress events, writes one ``--json`` line per finished task, and
reports at the end. Ctrl-C and SIGTERM are normal
ways out: the work is cancelled, the library keeps only hidden ``.part`` files, and the
summary of what finished is still printed.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import attrs
from rich.console import Console
from rich.markup import escape

import rodin_async
from rodin_async import AsyncRodin, TaskDownload
from rodin_async._processes import open_shards
from rodin_async._shard import ClientSettings, ShardSettings

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Interrupted,
    exit_code_for,
    print_json,
    run,
)
from ._display import live_progress, summary_table
from ._tally import Tally, first_line, status_of

ClientFactory = Callable[[], AsyncRodin]
FileCheck = Literal["size", "sha256"]


@attrs.frozen
class Job:
    """What to download, where, and how to treat tasks an earlier run completed."""

    uuids: list[str]
    dest: Path
    overwrite: bool = False
    check: FileCheck = "size"
    rejected: int = 0  # input lines that were not task ids, reported before the run
    proxy: str | None = None  # named when the API can't be reached through it
    processes: int = 1  # worker processes, each with its own event loop and connections


@attrs.frozen
class Output:
    """Where a bulk download reports: a console for humans, stdout for ``--json`` lines."""

    console: Console
    quiet: bool = False
    json_lines: bool = False

    @property
    def live(self) -> bool:
        """Bars only on a terminal: in a log file they would be thousands of lines."""
        return not self.quiet and self.console.is_terminal

    def task_done(self, result: TaskDownload) -> None:
        """Report one finished task: a JSON line, and a line for humans unless bars show."""
        if self.json_lines:
            print_json(task_json(result))
        if self.quiet or (self.live and result.ok):
            return
        status = status_of(result)
        style = {"ok": "green", "failed": "red", "skipped": "dim"}[status]
        count = len(result.files)
        detail = first_line(result.error) if not result.ok else f"{count} file{'s' * (count != 1)}"
        self.console.print(f"[{style}]{status:<7}[/] {escape(result.task_uuid)}  {escape(detail)}")


def task_json(result: TaskDownload) -> dict[str, object]:
    """The ``--json`` object of a finished task."""
    return {
        "uuid": result.task_uuid,
        "status": status_of(result),
        "files": [{"name": f.name, "path": str(f.path), "size": f.size} for f in result.files],
        "error": str(result.error) if result.error is not None else None,
    }


def download_all(
    settings: ClientSettings, job: Job, output: Output, *, title: str = "Downloading"
) -> Tally:
    """Download *job*'s tasks with progress; return the tally, even after Ctrl-C.

    With ``job.processes`` above 1 the tasks are shared among worker processes; their
    progress and results feed the one tally here, so the display and the summary are
    the same.

    Raises:
        CliError: The run could not start (bad key, unusable destination, bad uuid),
            or the API key was rejected.
    """
    tally = Tally(len(job.uuids), inputs_rejected=job.rejected)
    try:
        run(lambda: _download(settings, job, tally, output, title))
    except Interrupted as exc:
        tally.stopped_by = exc.signum
    finally:
        tally.stop_clock()
    return tally


async def _download(
    settings: ClientSettings, job: Job, tally: Tally, output: Output, title: str
) -> None:
    shard = ShardSettings(settings, job.dest, overwrite=job.overwrite, check=job.check)
    api = _api(settings, job)
    async with open_shards(
        shard, job.uuids, processes=job.processes, on_progress=tally.on_event
    ) as results:
        with _progress(tally, output, title):
            async for result in results:
                tally.record(result)
                if (stop := _stop_reason(result, api)) is not None:
                    raise stop  # every other task would fail the same way
                output.task_done(result)


@contextlib.contextmanager
def _progress(tally: Tally, output: Output, title: str) -> Iterator[None]:
    if not output.live:
        yield
        return
    with live_progress(tally, output.console, title):
        yield


def _api(settings: ClientSettings, job: Job) -> str:
    """The API as a message names it: its URL, and the proxy between when there is one."""
    return settings.api_url + (f" (through the proxy {job.proxy})" if job.proxy else "")


def _stop_reason(result: TaskDownload, api: str) -> CliError | None:
    """The error that ends the whole run when a task met it: a rejected key, no API."""
    error = result.error
    if isinstance(error, rodin_async.AuthenticationError):
        return CliError(f"the API key was rejected: {first_line(error)}")
    if isinstance(error, rodin_async.CertificateError):
        return CliError(
            f"the API at {api} can't be trusted: {first_line(error)}; stopped "
            "(to trust a private CA: --ca-bundle FILE)"
        )
    if isinstance(error, rodin_async.ConnectError):
        return CliError(f"the API at {api} can't be reached: {first_line(error)}; stopped")
    return None


def finish(
    tally: Tally,
    uuids: list[str],
    output: Output,
    *,
    failed_file: Path | None = None,
    rerun: Sequence[str] = (),
    title: str = "rodin-async download",
) -> int:
    """Print the summary and the failed tasks, write *failed_file*; return the exit code.

    After Ctrl-C or SIGTERM the failed file also lists the tasks that never finished, so
    running ``--from-file`` on it picks up where the interrupted run stopped. *rerun* is
    the options the hint to retry repeats (destination, connection, checks).
    """
    again = [r.task_uuid for r in tally.failed]
    if tally.interrupted:
        again += tally.unfinished(uuids)
    if failed_file is not None:
        write_lines(failed_file, again)
    if not output.quiet:
        output.console.print(summary_table(tally, title))
    _print_failures(tally, output.console)
    if again and failed_file is not None:
        _print_rerun(output.console, failed_file, rerun)
    return _exit_code(tally, output.console)


def _exit_code(tally: Tally, console: Console) -> int:
    if tally.stopped_by is not None:
        name = "interrupted" if tally.stopped_by == signal.SIGINT else "stopped by SIGTERM"
        console.print(
            f"[yellow]{name}:[/] finished files are complete; partial ones were kept "
            "as hidden .part files and resume when you run the same command again"
        )
        return exit_code_for(tally.stopped_by)
    return EXIT_FAILED if tally.failed or tally.inputs_rejected else EXIT_OK


def _print_failures(tally: Tally, console: Console) -> None:
    if not tally.failed:
        return
    console.print(f"[red]{len(tally.failed)} task(s) failed:[/]")
    for result in tally.failed:
        console.print(f"  {result.task_uuid}  {first_line(result.error)}", markup=False)


def _print_rerun(console: Console, failed_file: Path, options: Sequence[str]) -> None:
    """The command to download what is left, quoted to be pasted into a shell."""
    listed = str(failed_file)  # read in full before it is written again: a retry loop
    command = ["rodin-async", "download", "--from-file", listed, *options]
    command += ["--failed-file", listed]
    # soft_wrap: a command split over two lines can't be pasted, even on a terminal.
    console.print(f"retry them with: {shlex.join(command)}", markup=False, soft_wrap=True)


def write_lines(path: Path, lines: list[str]) -> None:
    """Write *lines* to *path*, one per line (an empty file for none)."""
    try:
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    except OSError as exc:
        raise CliError(f"can't write {str(path)!r}: {exc.strerror}", EXIT_FAILED) from exc

"""``rodin-async download``: many tasks' result files, in parallel, with live progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from rodin_async import RetryPolicy
from rodin_async._processes import SLOTS_PER_PROCESS, TASKS_PER_PROCESS, default_processes

from ._bulk import FileCheck, Job, Output, download_all, finish, write_lines
from ._common import EXIT_FAILED, EXIT_OK, error_console
from ._inputs import Wanted, collect_uuids
from ._options import ApiKeyFile, BaseUrl, CaBundle, Proxy, connect

_OUTPUT = "Output"


Dest = Annotated[
    Path,
    typer.Option(
        "-o", "--output", help="Folder for the results (one sub-folder per task).", file_okay=False
    ),
]
Concurrency = Annotated[
    int, typer.Option("-j", "--concurrency", min=1, help="Files transferring at once.")
]
Processes = Annotated[
    int | None,
    typer.Option(
        "--processes",
        min=1,
        metavar="N",
        help="Processes downloading (this one and N-1 workers), each with its own event loop "
        "and connections, sharing the tasks and the -j transfers (one event loop uses at "
        "most one core). Default: one "
        f"per core, but at most one per {TASKS_PER_PROCESS} tasks and per "
        f"{SLOTS_PER_PROCESS} transfers (so 1 for short lists).",
        show_default=False,
    ),
]


def download(
    uuids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="UUID...", help="Task uuids; '-' reads them from stdin.", show_default=False
        ),
    ] = None,
    output: Dest = Path("rodin-results"),
    concurrency: Concurrency = 8,
    processes: Processes = None,
    from_file: Annotated[
        list[str] | None,
        typer.Option(
            "--from-file",
            metavar="FILE",
            help="Read task uuids from FILE ('-' for stdin): one per line, blank lines "
            "and # comments ignored. May be repeated.",
            show_default=False,
        ),
    ] = None,
    api_key_file: ApiKeyFile = None,
    base_url: BaseUrl = None,
    proxy: Proxy = None,
    ca_bundle: CaBundle = None,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object per finished task on stdout "
            "(uuid, status, files, error); everything else goes to stderr.",
            rich_help_panel=_OUTPUT,
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "-q",
            "--quiet",
            help="Print only failures: no bars, no summary.",
            rich_help_panel=_OUTPUT,
        ),
    ] = False,
    failed_file: Annotated[
        Path | None,
        typer.Option(
            "--failed-file",
            help="Write the uuids of failed (and, after Ctrl-C, unfinished) tasks to this "
            "file, one per line, for a re-run with --from-file.",
            dir_okay=False,
            show_default=False,
            rich_help_panel=_OUTPUT,
        ),
    ] = None,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Retries per file and API call.")
    ] = 4,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Download tasks again even if an earlier run completed them."
        ),
    ] = False,
    check: Annotated[
        FileCheck,
        typer.Option(
            "--check",
            help="How files an earlier run completed are checked before they are kept "
            "(and not downloaded again): by size, or by SHA-256 (reads every file).",
        ),
    ] = "size",
) -> None:
    """Download the result files of many tasks into OUTPUT/<task uuid>/.

    Task uuids may come from arguments, files and stdin together. A line that can't be a
    task id (quoted, a path, two words, a stray comma) is reported as FILE:LINE, skipped
    and counted; the others still download, and the run exits 1.

    Exit status: 0 all tasks downloaded, 1 some failed or input lines were skipped, 2 usage
    or configuration error, 130 Ctrl-C, 143 SIGTERM (run the same command again to resume).
    """
    if not uuids and not from_file:
        raise typer.BadParameter(
            "give task uuids as arguments, with --from-file FILE, or '-' for stdin",
            param_hint="UUID",
        )
    out = Output(error_console(), quiet=quiet, json_lines=json_lines)
    wanted = _read_uuids(uuids or [], from_file or [], out)
    if not wanted.uuids:
        if failed_file is not None:
            write_lines(failed_file, [])  # nothing left to retry: a retry loop can end
        out.console.print("no task uuids to download")
        raise typer.Exit(EXIT_FAILED if wanted.rejected else EXIT_OK)
    settings = connect(
        api_key_file,
        base_url,
        proxy=proxy,
        ca_bundle=ca_bundle,
        max_concurrency=concurrency,
        retry=RetryPolicy(attempts=retries + 1),
    )
    job = Job(
        wanted.uuids, output, overwrite=overwrite, check=check,
        rejected=len(wanted.rejected), proxy=proxy,
        processes=worker_processes(processes, len(wanted.uuids), concurrency),
    )  # fmt: skip
    if not quiet:
        out.console.print(_intro(job))
    tally = download_all(settings, job, out)
    rerun = rerun_options(
        ("-o", output, None),
        ("-j", concurrency, 8),
        ("--processes", processes, None),
        ("--retries", retries, 4),
        ("--check", check, "size"),
        ("--api-key-file", api_key_file, None),
        ("--base-url", base_url, None),
        ("--proxy", proxy, None),
        ("--ca-bundle", ca_bundle, None),
    )
    raise typer.Exit(finish(tally, wanted.uuids, out, failed_file=failed_file, rerun=rerun))


def worker_processes(asked: int | None, tasks: int, concurrency: int) -> int:
    """How many processes to use: as asked (never more than tasks or transfers to share),
    or by default one per core where that pays (`default_processes`)."""
    if asked is None:
        return default_processes(tasks, concurrency)
    return max(1, min(asked, tasks, concurrency))


def _intro(job: Job) -> str:
    where = f"downloading {len(job.uuids)} task(s) to {escape(str(job.dest))}"
    return where + (f" in {job.processes} processes" if job.processes > 1 else "")


def _read_uuids(arguments: list[str], files: list[str], out: Output) -> Wanted:
    """The uuids to download; what can't be one is reported here, before the run."""
    wanted = collect_uuids(arguments, files)
    for note in wanted.notes:
        out.console.print(f"note: {note}", style="dim", markup=False)
    for rejected in wanted.rejected:
        out.console.print(f"{rejected} (skipped)", style="red", markup=False)
    return wanted


def rerun_options(*options: tuple[str, object, object]) -> list[str]:
    """The argv of each ``(flag, value, default)`` whose value is set and not the default."""
    argv = []
    for flag, value, default in options:
        if value is not None and value != default:
            argv += [flag, str(value)]
    return argv

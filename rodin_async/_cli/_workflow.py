"""The one-call commands around a generation: files, balance, status, wait, generate."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from rodin_async import AsyncRodin, GenerationJob, JobStatus, ResultFile, TaskStatus

from ._bulk import ClientFactory, Job, Output, download_all, finish
from ._common import error_console, print_json, printable, run
from ._options import ApiKeyFile, BaseUrl, JsonOutput, connect

T = TypeVar("T")

Interval = Annotated[
    float, typer.Option("--interval", min=0.1, help="Seconds between status polls.")
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout", min=0, help="Give up (exit 124) after this many seconds.", show_default=False
    ),
]


def _call(factory: ClientFactory, method: Callable[[AsyncRodin], Awaitable[T]]) -> T:
    """Open a client, await one call on it, close it."""

    async def main() -> T:
        async with factory() as rodin:
            return await method(rodin)

    return run(main)


# -- files -----------------------------------------------------------------------------------


def files(
    uuid: Annotated[str, typer.Argument(help="The task uuid.")],
    urls: Annotated[
        bool, typer.Option("--urls", help="Show the download URLs (valid about 10 minutes).")
    ] = False,
    json_output: JsonOutput = False,
    api_key_file: ApiKeyFile = None,
    base_url: BaseUrl = None,
) -> None:
    """List a finished task's result files (no download).

    Sizes show as '-': the listing doesn't carry them.
    """
    listed = _call(connect(api_key_file, base_url), lambda rodin: rodin.list_files(uuid))
    rows = [_file_row(f, urls) for f in listed]
    if json_output:
        for row in rows:
            print_json(row)
        return
    # Plain columns, not a rich table: URLs must stay on one line to be copied.
    names = [printable(f.name) for f in listed]
    width = max(map(len, names), default=4)
    for name, row in zip(names, rows, strict=True):
        size = "-" if row["size"] is None else str(row["size"])
        line = f"{name:<{width}}  {size:>10}"
        typer.echo(f"{line}  {row['url']}" if urls else line)
    error_console().print(f"{len(listed)} file(s)", style="dim")


def _file_row(file: ResultFile, with_url: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"name": file.name, "size": getattr(file, "size", None)}
    if with_url:
        row["url"] = file.url
    return row


# -- balance -----------------------------------------------------------------------------


def balance(
    json_output: JsonOutput = False,
    api_key_file: ApiKeyFile = None,
    base_url: BaseUrl = None,
) -> None:
    """Show the credits left on the account."""
    credits = _call(connect(api_key_file, base_url), lambda rodin: rodin.balance())
    if json_output:
        print_json({"balance": credits})
    else:
        typer.echo(f"{credits:g} credits")


# -- status and wait ---------------------------------------------------------------------


def status(
    key: Annotated[str, typer.Argument(help="The generation's subscription key.")],
    json_output: JsonOutput = False,
    api_key_file: ApiKeyFile = None,
    base_url: BaseUrl = None,
) -> None:
    """Show the status of a generation's jobs (one poll)."""
    answer = _call(connect(api_key_file, base_url), lambda rodin: rodin.status(key))
    _show_status(answer, json_output)


def _show_status(answer: TaskStatus, json_output: bool) -> None:
    if json_output:
        print_json(status_json(answer))
        return
    for job in answer.jobs:
        typer.echo(printable(f"{job.uuid}  {job.raw_status}"))
    error_console().print(f"overall: {overall(answer)}", style="dim")


def status_json(answer: TaskStatus) -> dict[str, Any]:
    """The ``--json`` form of a status."""
    return {
        "status": overall(answer),
        "jobs": [{"uuid": j.uuid, "status": j.raw_status} for j in answer.jobs],
    }


def overall(answer: TaskStatus) -> str:
    """One word for all the jobs: Failed, Done, or the status of the first job not done."""
    if answer.failed:
        return "Failed"
    if answer.done:
        return "Done"
    pending = [j.raw_status for j in answer.jobs if j.status is not JobStatus.DONE]
    return pending[0] if pending else "Unknown"


def wait(
    key: Annotated[str, typer.Argument(help="The generation's subscription key.")],
    interval: Interval = 5.0,
    timeout: Timeout = None,
    json_output: JsonOutput = False,
    api_key_file: ApiKeyFile = None,
    base_url: BaseUrl = None,
) -> None:
    """Poll until every job of a generation is Done.

    Exit status: 0 done, 1 a job failed or was canceled, 124 timed out, 130 Ctrl-C.
    """
    final = wait_for(connect(api_key_file, base_url), key, interval, timeout)
    _show_status(final, json_output)


def wait_for(
    factory: ClientFactory, key: str | GenerationJob, interval: float, timeout: float | None
) -> TaskStatus:
    """Wait for a generation, printing each change of status on stderr."""
    console = error_console()
    last: list[str] = []

    def on_status(answer: TaskStatus) -> None:
        now = [j.raw_status for j in answer.jobs]
        if now != last:
            last[:] = now
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            console.print(f"[dim]{stamp}[/] {escape(', '.join(now) or 'no jobs yet')}")

    def poll(rodin: AsyncRodin) -> Awaitable[TaskStatus]:
        return rodin.wait(key, poll_interval=interval, timeout=timeout, on_status=on_status)

    return _call(factory, poll)


# -- generate ----------------------------------------------------------------------------


def generate(
    prompt: Annotated[
        str | None, typer.Option(help="What to generate (required without --image).")
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image",
            help="An input image (repeat for up to 5).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    tier: Annotated[
        str | None, typer.Option(help="Sketch, Regular, Detail, Smooth, Gen-2, Gen-2.5-...")
    ] = None,
    seed: Annotated[int | None, typer.Option(min=0, max=65535)] = None,
    wait_: Annotated[
        bool, typer.Option("--wait", help="Wait until done, then download the results.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Where --wait downloads the results (implies --wait; default: rodin-results).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    interval: Interval = 5.0,
    timeout: Timeout = None,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the submitted job as JSON on stdout, then (with --wait) the "
            "downloaded task's line as `download --json` does.",
        ),
    ] = False,
    api_key_file: ApiKeyFile = None,
    base_url: BaseUrl = None,
) -> None:
    """Submit a generation (costs credits); with --wait, also wait and download it.

    Exit status: 0 submitted (and downloaded), 1 failed, 2 bad arguments, 124 timed out.
    """
    factory = connect(api_key_file, base_url)
    tier_name: Any = tier  # any string: the library checks it against the known tiers

    def submit(rodin: AsyncRodin) -> Awaitable[GenerationJob]:
        return rodin.generate(images=image or [], prompt=prompt, tier=tier_name, seed=seed)

    job = _call(factory, submit)
    _show_job(job, json_output)
    if not (wait_ or output is not None):
        _hint_next(job)
        return
    wait_for(factory, job, interval, timeout)
    out = Output(error_console(), json_lines=json_output)
    tally = download_all(factory, Job([job.uuid], output or Path("rodin-results")), out)
    raise typer.Exit(finish(tally, [job.uuid], out, title="rodin-async generate"))


def _show_job(job: GenerationJob, json_output: bool) -> None:
    if json_output:
        print_json(
            {"uuid": job.uuid, "subscription_key": job.subscription_key, "jobs": job.job_uuids}
        )
        return
    typer.echo(f"task uuid:        {job.uuid}")
    typer.echo(f"subscription key: {job.subscription_key}")


def _hint_next(job: GenerationJob) -> None:
    console = error_console()
    console.print("next:", style="dim")
    console.print(f"  rodin-async wait {job.subscription_key}", markup=False, soft_wrap=True)
    console.print(f"  rodin-async download {job.uuid}", markup=False, soft_wrap=True)

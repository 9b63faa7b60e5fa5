"""The one-call commands around a generation: files, balance, status and wait."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from rodin_async import AsyncRodin, GenerationJob, JobStatus, ResultFile, TaskStatus

from ._bulk import ClientFactory
from ._common import error_console, print_json, printable, run
from ._options import ApiKeyFile, BaseUrl, CaBundle, JsonOutput, Proxy, connect

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


def call(factory: ClientFactory, method: Callable[[AsyncRodin], Awaitable[T]]) -> T:
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
    proxy: Proxy = None,
    ca_bundle: CaBundle = None,
) -> None:
    """List a finished task's result files (no download).

    Sizes show as '-': the listing doesn't carry them.
    """
    listed = call(
        connect(api_key_file, base_url, proxy=proxy, ca_bundle=ca_bundle).open,
        lambda rodin: rodin.list_files(uuid),
    )
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
    proxy: Proxy = None,
    ca_bundle: CaBundle = None,
) -> None:
    """Show the credits left on the account."""
    credits = call(
        connect(api_key_file, base_url, proxy=proxy, ca_bundle=ca_bundle).open,
        lambda rodin: rodin.balance(),
    )
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
    proxy: Proxy = None,
    ca_bundle: CaBundle = None,
) -> None:
    """Show the status of a generation's jobs (one poll)."""
    answer = call(
        connect(api_key_file, base_url, proxy=proxy, ca_bundle=ca_bundle).open,
        lambda rodin: rodin.status(key),
    )
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
    proxy: Proxy = None,
    ca_bundle: CaBundle = None,
) -> None:
    """Poll until every job of a generation is Done.

    Exit status: 0 done, 1 a job failed or was canceled, 124 timed out, 130 Ctrl-C.
    """
    final = wait_for(
        connect(api_key_file, base_url, proxy=proxy, ca_bundle=ca_bundle).open,
        key,
        interval,
        timeout,
    )
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

    return call(factory, poll)

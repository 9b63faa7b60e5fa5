"""What a human sees of a bulk download: the live progress display and the final summary."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterator

from rich import box
from rich.console import Console, Group, RenderableType
from rich.filesize import decimal
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ._tally import Tally, Transfer

# Ten frames a second looks smooth and costs nothing next to the transfers.
REFRESH_SECONDS = 0.1
_MAX_ACTIVE_ROWS = 8
_NAME_WIDTH = 28


class ProgressView:
    """A renderable of a `Tally`: overall bar, counts, and the files transferring now."""

    def __init__(self, tally: Tally, title: str = "Downloading") -> None:
        self.tally = tally
        self.title = title
        self.speed: float | None = None

    def tick(self) -> None:
        """Take a throughput sample; call once per frame."""
        self.speed = self.tally.sample_speed()

    def __rich__(self) -> RenderableType:
        return Group(self._overall(), self._counts(), self._active())

    def _overall(self) -> Table:
        done, total = self.tally.bytes_on_disk, self.tally.estimated_total()
        grid = Table.grid(padding=(0, 1))
        bar = ProgressBar(total=total, completed=min(done, total or 0), width=36)
        percent = f"{min(done / total, 1.0):>4.0%}" if total else "   …"
        of = f"≈{decimal(total)}" if total else "?"
        grid.add_row(
            Text(self.title, style="bold"),
            bar,
            percent,
            f"{decimal(done)} / {of}",
            Text(f"{decimal(round(self.speed))}/s" if self.speed else "-", style="green"),
            Text(f"ETA {self._eta(done, total)}", style="cyan"),
        )
        return grid

    def _eta(self, done: int, total: int | None) -> str:
        if not total or not self.speed:
            return "-:--:--"
        return str(dt.timedelta(seconds=round(max(0, total - done) / self.speed)))

    def _counts(self) -> Text:
        t = self.tally
        text = Text.assemble(
            ("tasks ", "dim"),
            f"{len(t.results)}/{t.tasks_total}",
            ("   files ", "dim"),
            f"{t.files_done + t.files_present}/{t.files_expected}",
            ("   active ", "dim"),
            str(len(t.active)),
        )
        if t.retries:
            text.append(f"   {t.retries} retried", style="yellow")
        if failed := len(t.failed):
            text.append(f"   {failed} failed", style="red")
        return text

    def _active(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        transfers = list(self.tally.active.values())
        for transfer in transfers[:_MAX_ACTIVE_ROWS]:
            grid.add_row(*_transfer_row(transfer))
        if len(transfers) > _MAX_ACTIVE_ROWS:
            grid.add_row(Text(f"  … and {len(transfers) - _MAX_ACTIVE_ROWS} more", "dim"))
        return grid


def _transfer_row(transfer: Transfer) -> tuple[RenderableType, ...]:
    name = Text("  " + transfer.name, overflow="ellipsis", no_wrap=True)
    name.truncate(_NAME_WIDTH + 2, overflow="ellipsis", pad=True)
    size = decimal(transfer.total) if transfer.total is not None else "?"
    return (
        name,
        Text(transfer.task_uuid[:8], style="dim"),
        ProgressBar(total=transfer.total, completed=transfer.on_disk, width=20),
        f"{decimal(transfer.on_disk):>9} / {size}",
    )


@contextlib.contextmanager
def live_progress(tally: Tally, console: Console, title: str = "Downloading") -> Iterator[None]:
    """Show the live display on *console* while the block runs (in the event loop).

    Frames are drawn by a timer on the event loop, not by rich's refresh thread: the
    tally is only ever touched from one thread, and a stalled download still shows
    its speed falling.
    """
    view = ProgressView(tally, title)
    loop = asyncio.get_running_loop()
    # stdout stays untouched: it carries --json lines, which must not land in the display.
    with Live(
        view,
        console=console,
        auto_refresh=False,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:
        timer: asyncio.Handle

        def frame() -> None:
            nonlocal timer
            view.tick()
            live.refresh()
            timer = loop.call_later(REFRESH_SECONDS, frame)

        timer = loop.call_soon(frame)
        try:
            yield
        finally:
            timer.cancel()


def summary_table(tally: Tally, title: str = "rodin-async download") -> Table:
    """The end-of-run table: tasks, files and bytes (downloaded vs kept), time, MB/s.

    It adds up: ``files`` = downloaded + already present, and the size of those files =
    downloaded + resumed (bytes earlier runs left in ``.part`` files) + already present.
    Throughput counts what came over the network, retried bytes included.
    """
    table = Table(title=title, show_header=False, title_justify="left", box=box.SIMPLE)
    table.add_column(style="dim")
    table.add_column()
    table.add_row("tasks ok", _count(len(tally.ok), "green"))
    table.add_row("tasks failed", _count(len(tally.failed), "red"))
    table.add_row("tasks skipped", str(len(tally.skipped)))
    if tally.interrupted:
        unfinished = tally.tasks_total - len(tally.results)
        table.add_row("tasks not finished", _count(unfinished, "yellow"))
    if tally.inputs_rejected:
        table.add_row("input lines skipped", _count(tally.inputs_rejected, "red"))
    table.add_row("files", _files_cell(tally))
    table.add_row("size", _size_cell(tally))
    table.add_row("wall time", f"{tally.elapsed:.1f} s")
    table.add_row("throughput", _throughput_cell(tally))
    return table


def _count(n: int, style: str) -> Text:
    return Text(str(n), style=style if n else "")


def _files_cell(tally: Tally) -> Text:
    # Files completed in this run (including those of tasks a signal left unfinished),
    # and the files of finished tasks that an earlier run had completed.
    done, present = tally.files_done, tally.files_present
    text = Text(f"{done + present} ({done} downloaded, {present} already present)")
    if tally.retries:
        text.append(f" {tally.retries} retried", style="yellow")
    return text


def _size_cell(tally: Tally) -> str:
    total = tally.bytes_finished + tally.bytes_present
    parts = [f"{decimal(tally.bytes_downloaded)} downloaded"]
    if tally.bytes_resumed:
        parts.append(f"{decimal(tally.bytes_resumed)} resumed")
    parts.append(f"{decimal(tally.bytes_present)} already present")
    return f"{decimal(total)} ({', '.join(parts)})"


def _throughput_cell(tally: Tally) -> str:
    received = tally.bytes_received
    speed = received / 1e6 / max(tally.elapsed, 1e-9)
    return f"{speed:.1f} MB/s ({decimal(received)} received)"

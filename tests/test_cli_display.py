"""The command's progress accounting, live display and summary, without a real terminal."""

from __future__ import annotations

import io
import json
import re
import signal
from pathlib import Path

import pytest
from rich.console import Console

from rodin_async import (
    DownloadedFile,
    FileFailed,
    FileFinished,
    FileProgress,
    FileRetried,
    FileStarted,
    RodinError,
    TaskDownload,
    TaskStarted,
    TransportError,
)
from rodin_async._cli._bulk import Job, Output, download_all
from rodin_async._cli._display import ProgressView, summary_table
from rodin_async._cli._tally import Tally
from rodin_async._shard import ClientSettings
from rodin_async.testing import FakeRodin


def terminal() -> Console:
    """A console that believes it is a 100-column terminal, recording what it shows."""
    return Console(file=io.StringIO(), force_terminal=True, width=100, record=True)


def started(
    task: str, name: str, total: int | None, offset: int = 0, attempt: int = 1
) -> FileStarted:
    """A FileStarted event."""
    return FileStarted(task, name, Path(name), total, offset, attempt)


def test_tally_counts_a_resumed_file_once() -> None:
    """A retry that resumes at 40 bytes: 100 on disk, 100 received, one retry counted."""
    tally = Tally(tasks_total=1)
    tally.on_event(TaskStarted("t", 1))
    tally.on_event(started("t", "a.glb", 100))
    tally.on_event(FileProgress("t", "a.glb", Path("a.glb"), 40, 40))
    tally.on_event(FileRetried("t", "a.glb", Path("a.glb"), 1, TransportError("cut")))
    tally.on_event(started("t", "a.glb", 100, offset=40, attempt=2))
    assert tally.bytes_on_disk == 40
    tally.on_event(FileProgress("t", "a.glb", Path("a.glb"), 60, 100))
    tally.on_event(FileFinished("t", "a.glb", Path("a.glb"), 100))
    assert (tally.bytes_on_disk, tally.bytes_received, tally.retries) == (100, 100, 1)
    assert (tally.files_done, tally.active) == (1, {})


def test_summary_adds_up_downloaded_resumed_and_present_files() -> None:
    """files = downloaded + already present; size = downloaded + resumed + present."""
    tally = Tally(tasks_total=2)
    tally.on_event(TaskStarted("t", 2))
    tally.on_event(started("t", "a", 100, offset=40))  # an earlier run left 40 bytes
    tally.on_event(FileProgress("t", "a", Path("a"), 60, 100))
    tally.on_event(FileFinished("t", "a", Path("a"), 100))
    kept = DownloadedFile("b", Path("b"), 1000)  # still matched the manifest: kept
    tally.record(TaskDownload("t", Path("t"), [DownloadedFile("a", Path("a"), 100), kept]))
    tally.record(TaskDownload("s", Path("s"), [kept, kept], skipped=True))
    assert (tally.files_done, tally.files_present) == (1, 3)
    assert (tally.bytes_downloaded, tally.bytes_resumed, tally.bytes_present) == (60, 40, 3000)
    console = terminal()
    console.print(summary_table(tally))
    text = console.export_text()
    assert re.search(r"files\s+4 \(1 downloaded, 3 already present\)", text)
    assert "3.1 kB (60 bytes downloaded, 40 bytes resumed, 3.0 kB already present)" in text
    assert "60 bytes received" in text


def test_partly_kept_and_skipped_tasks_count_as_done_in_the_live_view() -> None:
    """A task with one of three files kept, and a skipped one: files 5/5, total known."""
    tally = Tally(tasks_total=2)
    tally.on_event(TaskStarted("t", 3))
    for name in ("a", "b"):
        tally.on_event(started("t", name, 100))
        tally.on_event(FileFinished("t", name, Path(name), 100))
    files = [DownloadedFile(n, Path(n), 100) for n in ("a", "b", "kept")]
    tally.record(TaskDownload("t", Path("t"), files))
    tally.record(TaskDownload("s", Path("s"), files[:2], skipped=True))
    console = terminal()
    console.print(ProgressView(tally))
    assert "files 5/5" in console.export_text()
    assert tally.estimated_total() == 200  # only what transfers: the kept file never does


def test_retry_that_starts_over_resumes_nothing() -> None:
    """A resumed .part discarded by a retry from offset 0 is not counted as resumed."""
    tally = Tally(tasks_total=1)
    tally.on_event(started("t", "a", 100, offset=40))
    tally.on_event(FileRetried("t", "a", Path("a"), 1, TransportError("wrong range")))
    tally.on_event(started("t", "a", 100, offset=0, attempt=2))
    tally.on_event(FileProgress("t", "a", Path("a"), 100, 100))
    tally.on_event(FileFinished("t", "a", Path("a"), 100))
    assert (tally.bytes_downloaded, tally.bytes_resumed) == (100, 0)


def test_tally_extrapolates_the_total_from_what_it_has_seen() -> None:
    """One 100-byte file of a 2-file task seen, 3 more tasks unlisted: about 800 bytes."""
    tally = Tally(tasks_total=4)
    assert tally.estimated_total() is None
    tally.on_event(TaskStarted("t", 2))
    tally.on_event(started("t", "a", 100))
    tally.on_event(FileFinished("t", "a", Path("a"), 100))
    assert tally.estimated_total() == 800


def test_failed_file_leaves_the_active_set() -> None:
    """A failed file is counted and no longer shown as transferring."""
    tally = Tally(tasks_total=1)
    tally.on_event(started("t", "a", None))
    tally.on_event(FileFailed("t", "a", Path("a"), RodinError("gone")))
    assert (tally.files_failed, tally.active) == (1, {})


def test_view_shows_counts_and_active_files() -> None:
    """The display names the files in flight and the task and file counts."""
    tally = Tally(tasks_total=3)
    tally.on_event(TaskStarted("0123456789", 2))
    tally.on_event(started("0123456789", "base_basic_pbr.glb", 4_000_000))
    tally.on_event(
        FileProgress(
            "0123456789", "base_basic_pbr.glb", Path("base_basic_pbr.glb"), 1_000_000, 1_000_000
        )
    )
    console = terminal()
    console.print(ProgressView(tally))
    text = console.export_text()
    assert "base_basic_pbr.glb" in text
    assert "01234567" in text  # the task, shortened
    assert "tasks 0/3" in text
    assert "1.0 MB / 4.0 MB" in text


def test_summary_after_ctrl_c_counts_unfinished_tasks() -> None:
    """An interrupted run's summary says how many tasks did not finish."""
    tally = Tally(tasks_total=5, stopped_by=signal.SIGINT)
    console = terminal()
    console.print(summary_table(tally))
    assert "tasks not finished" in console.export_text()


def test_quiet_or_not_a_terminal_means_no_bars() -> None:
    """Bars only on a terminal, and never with --quiet."""
    assert Output(terminal()).live
    assert not Output(terminal(), quiet=True).live
    assert not Output(Console(file=io.StringIO())).live


def test_live_display_leaves_stdout_to_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal the bars draw on the console while --json lines go to stdout alone."""
    with FakeRodin() as server:
        uuids = [server.add_task({"a.glb": 50_000, "preview.webp": 500}) for _ in range(3)]

        client = ClientSettings(server.api_key, base_url=server.base_url)
        console = terminal()
        tally = download_all(client, Job(uuids, tmp_path), Output(console, json_lines=True))
    assert len(tally.ok) == 3
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["uuid"] for line in lines) == sorted(uuids)
    assert "Downloading" in console.export_text()

"""`rodin-async download --processes N` as real processes: one summary, signals, dead workers."""

from __future__ import annotations

import functools
import io
import json
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from rodin_async._cli._bulk import Job, Output, download_all
from rodin_async._shard import ClientSettings
from rodin_async.testing import FakeRodin, Fault

from . import helpers
from .helpers import command, environ, start_command, worker_processes

FILES = {"base_basic_pbr.glb": 150_000, "preview.webp": 8_000}
# Bounds a little longer than the one-process tests': each worker imports and connects first.
run = functools.partial(helpers.run_command, timeout=60.0)
wait_until = functools.partial(helpers.wait_until, timeout=15.0)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    """One fake for the module, in this process; the command and its workers are children."""
    with FakeRodin(api_key="processes-key") as fake:
        yield fake


def gone(process: psutil.Process) -> bool:
    """Whether *process* has exited (and been reaped, or is a zombie)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def trickling(server: FakeRodin, count: int) -> list[str]:
    """Tasks whose big file arrives slowly (about 2 s), so signals land mid-transfer."""
    uuids = [server.add_task({"big.glb": 400_000, "meta.json": b"{}"}) for _ in range(count)]
    for uuid in uuids:
        server.add_faults(uuid, "big.glb", Fault.trickle(chunk=4096, interval=0.02))
    return uuids


def parts_with_bytes(out: Path) -> int:
    """How many .part files under *out* hold bytes (transfers under way)."""
    return sum(1 for p in out.glob("*/.big.glb.part") if p.stat().st_size > 0)


def assert_final_files_exact(server: FakeRodin, out: Path) -> None:
    """Whatever sits under a final name is the server's file, byte for byte."""
    for path in out.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert path.read_bytes() == server.content(path.parent.name, path.name), path


def test_two_processes_one_summary_that_adds_up(server: FakeRodin, tmp_path: Path) -> None:
    """--processes 2: every file exact, one --json line per task, one summary adding up."""
    uuids = [server.add_task(FILES) for _ in range(8)]
    out = tmp_path / "out"
    result = run(server, "download", *uuids, "--processes", "2", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["uuid"] for line in lines) == sorted(uuids)  # each exactly once
    assert {line["status"] for line in lines} == {"ok"}
    assert "in 2 processes" in result.stderr
    assert result.stderr.count("tasks ok") == 1
    assert re.search(r"tasks ok\s+8\b", result.stderr)
    assert re.search(r"files\s+16 \(16 downloaded, 0 already present\)", result.stderr)
    assert len(uuids) * sum(FILES.values()) == 1_264_000
    assert re.search(
        r"size\s+1\.3 MB \(1\.3 MB downloaded, 0 bytes already present\)", result.stderr
    )
    assert "(1.3 MB received)" in result.stderr  # every worker's bytes counted, once
    assert_final_files_exact(server, out)
    again = run(server, "download", *uuids, "--processes", "2", "-o", str(out))
    assert re.search(r"tasks skipped\s+8\b", again.stderr)  # manifests: nothing to fetch


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
def test_a_signal_stops_every_shard_cleanly(
    server: FakeRodin, tmp_path: Path, signum: int, code: int, said: str
) -> None:
    """Ctrl-C/SIGTERM mid-run: exit 130/143, summary, failed file; a re-run resumes."""
    slow = trickling(server, 4)
    out, failed = tmp_path / "out", tmp_path / "failed.txt"
    args = ["download", *slow, "--processes", "2", "-o", str(out), "--failed-file", str(failed)]
    child = start_command(server, *args)
    try:
        wait_until(lambda: len(worker_processes(child.pid)) == 1 and parts_with_bytes(out) >= 2)
        workers = worker_processes(child.pid)
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=20)
    finally:
        child.kill()
    assert child.returncode == code, stderr
    assert said in stderr
    assert re.search(r"tasks not finished\s+4", stderr), stderr
    assert sorted(failed.read_text().split()) == sorted(slow)
    assert "--processes 2" in stderr  # the retry hint keeps it
    wait_until(lambda: all(gone(w) for w in workers))
    assert_final_files_exact(server, out)
    resumed = run(server, "download", "--from-file", str(failed), "--processes", "2",
                  "-o", str(out))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"[\d.]+ kB resumed", resumed.stderr)
    assert_final_files_exact(server, out)
    assert all((out / uuid / "big.glb").exists() for uuid in slow)


def test_a_killed_worker_is_reported_and_the_run_ends(server: FakeRodin, tmp_path: Path) -> None:
    """SIGKILL the worker: the parent fails its tasks and finishes its own; exit 1."""
    slow = trickling(server, 4)
    out, failed = tmp_path / "out", tmp_path / "failed.txt"
    args = ["download", *slow, "--processes", "2", "-o", str(out), "--failed-file", str(failed)]
    child = start_command(server, *args)
    try:
        wait_until(lambda: len(worker_processes(child.pid)) == 1 and parts_with_bytes(out) >= 2)
        worker_processes(child.pid)[0].send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=30)  # bounded: no hang
    finally:
        child.kill()
    assert child.returncode == 1, stderr
    assert "stopped (killed by SIGKILL)" in stderr
    lost = failed.read_text().split()
    assert 0 < len(lost) < len(slow)
    assert re.search(rf"tasks ok\s+{len(slow) - len(lost)}\b", stderr)
    assert_final_files_exact(server, out)
    again = run(server, "download", "--from-file", str(failed), "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert all((out / uuid / "big.glb").exists() for uuid in slow)


def test_when_every_worker_dies_the_run_goes_on(server: FakeRodin, tmp_path: Path) -> None:
    """Both workers killed with tasks left: theirs fail and are listed, the rest is done."""
    # One transfer per shard, a window of 3 tasks each: 9 dealt at first, 6 left over.
    uuids = trickling(server, 3) + [server.add_task(FILES) for _ in range(12)]
    out, failed = tmp_path / "out", tmp_path / "failed.txt"
    args = ["download", *uuids, "--processes", "3", "-j", "3", "-o", str(out)]
    child = start_command(server, *args, "--failed-file", str(failed))
    try:
        wait_until(lambda: len(worker_processes(child.pid)) == 2 and parts_with_bytes(out) >= 2)
        for worker in worker_processes(child.pid):
            worker.send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 1, stderr
    assert "stopped (killed by SIGKILL)" in stderr
    lost = failed.read_text().split()
    assert 0 < len(lost) <= 6  # at most what the two workers held
    assert re.search(rf"tasks ok\s+{len(uuids) - len(lost)}\b", stderr), stderr
    assert_final_files_exact(server, out)


def test_workers_exit_when_the_parent_dies(server: FakeRodin, tmp_path: Path) -> None:
    """SIGKILL the command: its workers see their pipe end and exit, keeping .part files."""
    slow = trickling(server, 4)
    out = tmp_path / "out"
    child = start_command(server, "download", *slow, "--processes", "2", "-o", str(out))
    try:
        wait_until(lambda: len(worker_processes(child.pid)) == 1 and parts_with_bytes(out) >= 2)
        workers = worker_processes(child.pid)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
        wait_until(lambda: all(gone(w) for w in workers), timeout=10)
    finally:
        child.kill()
    assert parts_with_bytes(out) >= 1
    assert_final_files_exact(server, out)


def test_the_retry_hint_repeats_processes(server: FakeRodin, tmp_path: Path) -> None:
    """The printed retry command keeps --processes, and works pasted."""
    good, late = server.add_task(FILES), "appears-after-the-first-run-p"
    out, failed = tmp_path / "out", tmp_path / "failed.txt"
    first = run(server, "download", good, late, "--processes", "2", "-o", str(out),
                "--failed-file", str(failed))  # fmt: skip
    assert first.returncode == 1
    hint = next(line for line in first.stderr.splitlines() if "retry them with:" in line)
    argv = shlex.split(hint.split("retry them with: ", 1)[1])
    assert argv[argv.index("--processes") + 1] == "2"
    server.add_task(FILES, uuid=late)
    again = run(server, *argv[1:])
    assert again.returncode == 0, again.stderr


def test_a_rejected_key_stops_every_worker(server: FakeRodin, tmp_path: Path) -> None:
    """A wrong key with --processes 2: exit 2, said once, never echoed, no worker left."""
    uuids = [server.add_task(FILES) for _ in range(6)]
    env = {**environ(server), "RODIN_API_KEY": "sk-wrong-key"}
    child = subprocess.Popen(
        command("download", *uuids, "--processes", "2", "-o", str(tmp_path)),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: len(worker_processes(child.pid)) == 1 or child.poll() is not None)
        workers = worker_processes(child.pid)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 2, stderr
    assert stderr.count("API key was rejected") == 1
    assert "sk-wrong-key" not in stderr
    wait_until(lambda: all(gone(w) for w in workers))


def test_the_live_display_draws_every_workers_progress(
    server: FakeRodin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal, one display shows every shard's transfers; --json lines stay on stdout."""
    uuids = trickling(server, 2) + [server.add_task(FILES) for _ in range(4)]
    console = Console(file=io.StringIO(), force_terminal=True, width=100, record=True)
    settings = ClientSettings(server.api_key, base_url=server.base_url)
    job = Job(uuids, tmp_path, processes=2)
    tally = download_all(settings, job, Output(console, json_lines=True))
    assert len(tally.ok) == len(uuids)
    assert tally.files_done == 2 * len(uuids)
    assert tally.bytes_received == tally.bytes_finished  # every worker's bytes, counted once
    shown = console.export_text()
    assert "Downloading" in shown
    assert "big.glb" in shown  # a transfer in a worker, drawn here while it ran
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["uuid"] for line in lines) == sorted(uuids)


def test_demo_with_two_processes_verifies_every_file() -> None:
    """`demo --processes 2` runs the same workers against the in-process fake, all verified."""
    result = subprocess.run(
        command("demo", "--tasks", "6", "--processes", "2"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"tasks ok\s+6\b", result.stderr)
    assert re.search(r"verified \d+ files", result.stderr)

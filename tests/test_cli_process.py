"""The `rodin-async` command as real processes: exit codes, JSON lines, Ctrl-C, fake-server."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from typer.testing import CliRunner

import rodin_async
from rodin_async._cli._app import app
from rodin_async.testing import FakeRodin, Fault

from .helpers import command, environ, run_command, start_command, wait_until

FILES = {"base_basic_pbr.glb": 200_000, "preview.webp": 10_000}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    """One fake for the module, in this process; the commands run in children."""
    with FakeRodin(api_key="process-key") as fake:
        yield fake


def test_process_exit_codes_json_lines_and_rerun(server: FakeRodin, tmp_path: Path) -> None:
    """A real run: exit 1 with JSON lines and --failed-file, then exit 0 re-running from it."""
    good = [server.add_task(FILES) for _ in range(3)]
    failed = tmp_path / "failed.txt"
    out = str(tmp_path / "out")
    first = run_command(
        server, "download", *good, "late-task", "--json", "-o", out, "--failed-file", str(failed)
    )
    assert first.returncode == 1, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert sorted((x["uuid"], x["status"]) for x in lines) == sorted(
        [(u, "ok") for u in good] + [("late-task", "failed")]
    )
    assert "tasks ok" in first.stderr  # the summary goes to stderr
    server.add_task(FILES, uuid="late-task")
    again = run_command(server, "download", "--from-file", str(failed), "-o", out)
    assert again.returncode == 0, again.stderr
    assert run_command(server, "download").returncode == 2


def test_ctrl_c_stops_cleanly(server: FakeRodin, tmp_path: Path) -> None:
    """SIGINT mid-download: exit 130, every final-named file complete, and a re-run resumes."""
    uuids = [server.add_task({"big.glb": 400_000, "meta.json": b"{}"}) for _ in range(3)]
    for uuid in uuids:
        server.add_faults(uuid, "big.glb", Fault.trickle(chunk=4096, interval=0.02))
    out, failed = tmp_path / "out", tmp_path / "failed.txt"
    args = ["download", *uuids, "-o", str(out), "--json", "--failed-file", str(failed)]
    child = start_command(server, *args)
    try:
        part = out / uuids[0] / ".big.glb.part"
        wait_until(lambda: part.exists() and part.stat().st_size > 0)  # mid-transfer
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=15)
    finally:
        child.kill()
    assert child.returncode == 130, stderr
    assert "interrupted" in stderr
    assert stdout == ""  # no task finished, so no JSON line
    for path in out.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert path.read_bytes() == server.content(path.parent.name, path.name), path
    assert sorted(failed.read_text().split()) == sorted(uuids)
    resumed = run_command(server, "download", "--from-file", str(failed), "-o", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"size .*downloaded, [\d.]+ kB resumed", resumed.stderr)  # counted
    assert server.file_requests(uuids[0], "big.glb")[-1].range is not None
    assert (out / uuids[0] / "big.glb").read_bytes() == server.content(uuids[0], "big.glb")


def test_closed_stdout_stops_quietly(server: FakeRodin, tmp_path: Path) -> None:
    """`--json | head -1`: when the reader goes away the command stops with a message."""
    uuids = [server.add_task(FILES) for _ in range(20)]
    args = ["download", *uuids, "--json", "-o", str(tmp_path)]
    child = subprocess.Popen(
        command(*args), env=environ(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout is not None
    child.stdout.close()  # the reader is gone before the first line
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 1
    assert b"stdout was closed" in stderr
    assert b"Traceback" not in stderr


def test_fake_server_command(tmp_path: Path) -> None:
    """fake-server serves --root folders and generated tasks until SIGINT, then exits 0."""
    (tmp_path / "chair").mkdir()
    (tmp_path / "chair" / "model.glb").write_bytes(b"glTF" + bytes(1000))
    child = subprocess.Popen(
        command("fake-server", "--root", str(tmp_path), "--tasks", "1", "--key", "k1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        banner = list(iter(child.stdout.readline, "Serving until Ctrl-C.\n"))
        export = next(line for line in banner if "export" in line)
        settings = dict(re.findall(r"(RODIN_\w+)=(\S+)", export))
        uuids = [
            line.strip() for line in banner if line.startswith("  ") and len(line.split()) == 1
        ]
        assert settings["RODIN_API_KEY"] == "k1"
        assert "chair" in uuids
        assert len(uuids) == 2
        result = CliRunner(env=settings).invoke(
            app, ["download", *uuids, "-o", str(tmp_path / "out")]
        )
        assert result.exit_code == 0, result.output
        got = tmp_path / "out" / "chair" / "model.glb"
        assert got.read_bytes() == (tmp_path / "chair" / "model.glb").read_bytes()
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=10) == 0
    finally:
        child.kill()
        child.communicate()


def test_library_never_imports_typer() -> None:
    """`import rodin_async` (and its testing module) doesn't load the CLI framework."""
    # rich can't be checked this way: httpx imports it for its own CLI when installed.
    probe = "import sys, rodin_async, rodin_async.testing; print('typer' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "False"


def test_only_the_cli_package_imports_typer_or_rich() -> None:
    """Outside rodin_async/_cli, no module imports typer or rich (the cli extra is optional)."""
    package = Path(rodin_async.__file__).parent
    for path in package.rglob("*.py"):
        if "_cli" in path.relative_to(package).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("typer", "rich") for n in names), path


def trickling_tasks(server: FakeRodin, count: int) -> list[str]:
    """Tasks whose big file arrives slowly, so a signal lands mid-transfer."""
    uuids = [server.add_task({"big.glb": 400_000, "meta.json": b"{}"}) for _ in range(count)]
    for uuid in uuids:
        server.add_faults(uuid, "big.glb", Fault.trickle(chunk=4096, interval=0.02))
    return uuids


def test_sigterm_stops_cleanly_like_ctrl_c(server: FakeRodin, tmp_path: Path) -> None:
    """SIGTERM (docker stop): summary, --failed-file with the unfinished tasks, exit 143."""
    done = server.add_task(FILES)
    slow = trickling_tasks(server, 2)
    out, failed = tmp_path / "out", tmp_path / "failed.txt"
    args = ["download", done, *slow, "-o", str(out), "--failed-file", str(failed), "--json"]
    child = start_command(server, *args)
    try:
        part = out / slow[0] / ".big.glb.part"
        assert child.stdout is not None
        assert json.loads(child.stdout.readline())["uuid"] == done  # reported, not just written
        wait_until(lambda: part.exists() and part.stat().st_size > 0)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=15)
    finally:
        child.kill()
    assert child.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr
    assert re.search(r"tasks not finished\s+2", stderr), stderr
    assert sorted(failed.read_text().split()) == sorted(slow)
    for path in out.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert path.read_bytes() == server.content(path.parent.name, path.name), path


def test_messy_uuid_list_in_a_real_run(server: FakeRodin, tmp_path: Path) -> None:
    """BOM, CRLF, comments, quotes, paths, '...': bad lines reported, good ones downloaded."""
    good = [server.add_task(FILES) for _ in range(3)]
    lines = [
        f"\ufeff{good[0]}",
        "",
        "# exported from the spreadsheet",
        f'"{good[1]}"',
        "../../etc",
        f"  {good[1]}  # the chair",
        "...",
        "not a uuid",
        f"{good[2]},",
        good[2],
    ]
    listing = tmp_path / "uuids.txt"
    listing.write_bytes("\r\n".join(lines).encode("utf-8") + b"\r\n")
    out = tmp_path / "out"
    result = run_command(server, "download", "--from-file", str(listing), "-o", str(out), "--json")
    assert result.returncode == 1, result.stderr
    assert sorted(json.loads(line)["uuid"] for line in result.stdout.splitlines()) == sorted(good)
    reported = [line for line in result.stderr.splitlines() if line.startswith(f"{listing}:")]
    assert [line.split(":")[1] for line in reported] == ["4", "5", "7", "8", "9"]
    assert "in quotes" in reported[0]
    assert "path separators" not in result.stderr
    assert re.search(r"input lines skipped\s+5", result.stderr)
    assert sorted(p.name for p in out.iterdir()) == sorted(good)  # no folder for a bad line


def test_stdin_with_a_byte_order_mark(server: FakeRodin, tmp_path: Path) -> None:
    """`download -` reading a list that starts with a BOM downloads its first task too."""
    uuids = [server.add_task(FILES) for _ in range(2)]
    result = subprocess.run(
        command("download", "-", "-o", str(tmp_path), "--json"),
        input="\ufeff" + "\r\n".join(uuids) + "\r\n",
        env=environ(server),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(line)["uuid"] for line in result.stdout.splitlines()) == sorted(uuids)


def test_long_failure_lines_stay_whole_in_a_pipe(server: FakeRodin, tmp_path: Path) -> None:
    """Off a terminal a long error is one line, not wrapped at 80 columns mid-word."""
    uuid = server.add_task(FILES)
    message = " ".join(f"word{i}" for i in range(60))  # ~400 characters
    body = json.dumps({"error": "SOMETHING_LONG", "message": message}).encode()
    server.add_api_faults(Fault.status(400, body=body), endpoint="download")
    result = run_command(server, "download", uuid, "-o", str(tmp_path))
    assert result.returncode == 1
    failed_rows = [line for line in result.stderr.splitlines() if uuid in line]
    assert len(failed_rows) == 2  # the task's row, and the list of failures
    assert all(message in line for line in failed_rows), result.stderr
    assert max(map(len, result.stderr.splitlines())) > 400


def test_rerun_hint_repeats_the_options_and_works_pasted(server: FakeRodin, tmp_path: Path) -> None:
    """The printed retry command keeps -o, -j, --retries and the rest, quoted for a shell."""
    good, late = server.add_task(FILES), "appears-after-the-first-run"
    out, failed = tmp_path / "my results", tmp_path / "failed list.txt"
    bundle = tmp_path / "extra ca.pem"  # trusted besides the default CAs; unused over http
    trustme.CA().cert_pem.write_to_path(str(bundle))
    options = ["-o", str(out), "-j", "3", "--retries", "2", "--check", "sha256"]
    options += ["--ca-bundle", str(bundle)]
    first = run_command(server, "download", good, late, *options, "--failed-file", str(failed))
    assert first.returncode == 1
    hint = next(line for line in first.stderr.splitlines() if "retry them with:" in line)
    argv = shlex.split(hint.split("retry them with: ", 1)[1])
    assert argv[:4] == ["rodin-async", "download", "--from-file", str(failed)]
    for flag, value in zip(options[::2], options[1::2], strict=True):
        assert argv[argv.index(flag) + 1] == value
    assert argv[argv.index("--failed-file") + 1] == str(failed)
    server.add_task(FILES, uuid=late)
    again = run_command(server, *argv[1:])
    assert again.returncode == 0, again.stderr
    assert (out / late / "preview.webp").read_bytes() == server.content(late, "preview.webp")
    assert failed.read_text() == ""


def read_banner(child: subprocess.Popen[str]) -> list[str]:
    """The fake server's lines up to the one saying it serves."""
    assert child.stdout is not None
    return list(iter(child.stdout.readline, "Serving until Ctrl-C.\n"))


def test_fake_server_hint_works_when_pasted(tmp_path: Path) -> None:
    """The printed export and download lines, pasted as they are, download every task."""
    (tmp_path / "my chair").mkdir()  # served, but not a task id: said at once
    child = subprocess.Popen(
        command("fake-server", "--tasks", "5", "--key", "k2", "--root", str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = read_banner(child)
        export = next(line for line in banner if "export" in line)
        settings = dict(re.findall(r"(RODIN_\w+)=(\S+)", export))
        hint = next(line for line in banner if "rodin-async download" in line)
        argv = shlex.split(hint)
        assert argv[:2] == ["rodin-async", "download"]
        assert "..." not in argv
        out = tmp_path / "out"
        pasted = subprocess.run(
            [*command(*argv[1:]), "-o", str(out), "--json"],
            env={**os.environ, **settings},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert pasted.returncode == 1, pasted.stderr  # the 'my chair' task is skipped
        assert len(pasted.stdout.splitlines()) == 5
        assert re.search(r"argument \d+: 'my chair' has spaces", pasted.stderr)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=10)
        assert "warning: folder 'my chair' is served, but" in stderr
    finally:
        child.kill()
        child.communicate()


def test_fake_server_removes_its_uuid_file(tmp_path: Path) -> None:
    """With many tasks the uuids go to a temporary file, removed when the server stops."""
    child = subprocess.Popen(
        command("fake-server", "--tasks", "12"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = read_banner(child)
        listed = Path(
            next(re.findall(r"uuids in (\S+)", line)[0] for line in banner if "uuids in" in line)
        )
        assert len(listed.read_text().split()) == 12
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
        assert not listed.parent.exists()
    finally:
        child.kill()
        child.communicate()

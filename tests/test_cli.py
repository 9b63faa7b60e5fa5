"""The `rodin-async` command, driven in-process by typer's CliRunner against the fake server."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from rodin_async import AsyncRodin
from rodin_async._cli import main
from rodin_async._cli._app import app
from rodin_async._cli._download import rerun_options
from rodin_async._cli._inputs import collect_uuids
from rodin_async.testing import FakeRodin, Fault

FILES = {"base_basic_pbr.glb": 300_000, "preview.webp": 20_000}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRodin]:
    """One fake for the module (starting one costs ~0.2 s); tests add their own tasks."""
    with FakeRodin(api_key="cli-key", generation_time=0.2) as fake:
        yield fake


@pytest.fixture
def env(server: FakeRodin, monkeypatch: pytest.MonkeyPatch) -> FakeRodin:
    """Point the command at the fake through the environment, as a user would."""
    monkeypatch.setenv("RODIN_BASE_URL", server.base_url)
    monkeypatch.setenv("RODIN_API_KEY", server.api_key)
    return server


def invoke(*args: str, stdin: str | None = None) -> Result:
    """Run the command in-process; stdout and stderr are captured apart."""
    return CliRunner().invoke(app, list(args), input=stdin)


def json_lines(result: Result) -> list[dict[str, object]]:
    """Parse stdout, which must hold nothing but JSON lines."""
    return [json.loads(line) for line in result.stdout.splitlines()]


def task(server: FakeRodin, uuid: str | None = None) -> str:
    """A fresh finished task with two files."""
    return server.add_task(FILES, uuid=uuid)


# -- usage and configuration ------------------------------------------------------------


def test_help_lists_every_command() -> None:
    """--help names every command, the demo first."""
    result = invoke("--help")
    assert result.exit_code == 0
    names = ["demo", "download", "files", "generate", "generate-texture", "status", "wait"]
    names += ["balance", "fake-server"]
    for name in names:
        assert name in result.stdout
    assert result.stdout.index("│ demo") < result.stdout.index("│ download")


def test_download_without_uuids_is_a_usage_error() -> None:
    """No uuid, no --from-file and no '-': exit 2 with a hint."""
    result = invoke("download")
    assert result.exit_code == 2
    assert "--from-file" in result.stderr


def test_unknown_option_is_a_usage_error() -> None:
    """Typer's own usage errors exit 2 (and there is no --api-key to leak a key)."""
    assert invoke("download", "x", "--api-key", "secret").exit_code == 2
    assert invoke("download", "x", "-j", "0").exit_code == 2


def test_missing_key_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without RODIN_API_KEY or --api-key-file: exit 2, one line, no traceback."""
    monkeypatch.delenv("RODIN_API_KEY", raising=False)
    result = invoke("download", "some-task")
    assert result.exit_code == 2
    assert "no Rodin API key" in result.stderr
    assert "RODIN_API_KEY" in result.stderr
    assert "Traceback" not in result.output


def test_key_file(env: FakeRodin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--api-key-file's first line is the key, and it wins over the environment."""
    monkeypatch.setenv("RODIN_API_KEY", "wrong")
    key_file = tmp_path / "key"
    key_file.write_text(f"{env.api_key}\n# comment\n")
    result = invoke("files", task(env), "--api-key-file", str(key_file))
    assert result.exit_code == 0, result.output
    (tmp_path / "empty").write_text("\n")
    empty = invoke("files", task(env), "--api-key-file", str(tmp_path / "empty"))
    assert empty.exit_code == 2
    assert "empty" in empty.stderr


def test_rejected_key_stops_the_run(
    env: FakeRodin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong key is a configuration problem: exit 2, said once, never echoed."""
    monkeypatch.setenv("RODIN_API_KEY", "not-the-key")
    uuids = [task(env) for _ in range(3)]
    result = invoke("download", *uuids, "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "API key was rejected" in result.stderr
    assert "Active API key is required; check RODIN_API_KEY" in result.stderr  # not ".;"
    assert "not-the-key" not in result.output


def test_bad_uuid_argument_is_skipped_and_counted(env: FakeRodin, tmp_path: Path) -> None:
    """A uuid argument that can't name a folder is reported, skipped, and makes the exit 1."""
    good = task(env)
    result = invoke("download", "../escape", good, "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 1
    assert "argument 1: '../escape' looks like a path, not a task id (skipped)" in result.stderr
    assert [line["uuid"] for line in json_lines(result)] == [good]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [good]
    assert not (tmp_path / "escape").exists()


def test_unreadable_uuid_file_is_a_usage_error(tmp_path: Path) -> None:
    """--from-file on a missing file: exit 2 naming the file."""
    result = invoke("download", "--from-file", str(tmp_path / "nope.txt"))
    assert result.exit_code == 2
    assert "nope.txt" in result.stderr


def test_missing_extra_prints_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without typer installed, main() prints how to install the extra and exits 1."""
    monkeypatch.setitem(sys.modules, "typer", None)  # makes `import typer` fail
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert "pip install 'rodin-async[cli]'" in capsys.readouterr().err


def test_the_command_tunes_only_its_own_collector() -> None:
    """main() freezes start-up's objects and collects young ones less often; importing
    the library (or the CLI's modules) leaves the collector alone."""
    script = (
        "import gc, sys; from rodin_async import _cli; import rodin_async._cli._app\n"
        "before = (gc.get_threshold()[0], gc.get_freeze_count())\n"
        "sys.argv = ['rodin-async', '--version']\n"
        "try:\n    _cli.main()\nexcept SystemExit:\n    pass\n"
        "print(*before, gc.get_threshold()[0], gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out[2:4] == ["700", "0"]  # after the version line
    assert out[-2:] == ["10000", "True"]


def test_a_worker_process_tunes_its_collector_too() -> None:
    """A --processes worker (whose stdin ends at once, so it stops) tunes its collector."""
    script = (
        "import gc, sys; from rodin_async import _worker\n"
        "before = gc.get_threshold()[0]\n"
        "_worker.serve()\n"
        "print(before, gc.get_threshold()[0], gc.get_freeze_count() > 0, file=sys.stderr)\n"
    )
    done = subprocess.run(  # pipes, as its parent gives it
        [sys.executable, "-c", script], input="", capture_output=True, text=True, check=True,
        timeout=60,
    )  # fmt: skip
    assert done.stderr.split()[-3:] == ["700", "10000", "True"], done.stderr


# -- reading uuids ---------------------------------------------------------------------------


def test_collect_uuids_merges_sources_in_order(tmp_path: Path) -> None:
    """Arguments, then files; blanks and comments skipped; first mention kept."""
    listing = tmp_path / "uuids.txt"
    listing.write_text("# exported today\n\nb\n  c  # the chair\nA\nb\n")
    assert collect_uuids(["A", "b"], [str(listing)]).uuids == ["A", "b", "c"]


def test_messy_file_is_read_leniently(tmp_path: Path) -> None:
    """A BOM, CRLF, blank lines, comments (whole and trailing) and spaces are all fine."""
    listing = tmp_path / "uuids.txt"
    text = "\ufeffa1b2\r\n\r\n# header\r\n  c3-d4  \r\ne_5\t# trailing\r\n\u00a0f6\u00a0\r\n"
    listing.write_bytes(text.encode("utf-8"))
    wanted = collect_uuids([], [str(listing)])
    assert (wanted.uuids, wanted.rejected) == (["a1b2", "c3-d4", "e_5", "f6"], [])


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('"0a1b2c3d-1111-4222-8333-444455556666"', "is in quotes; write the task id without"),
        ("../../etc", "looks like a path, not a task id"),
        ("...", "is a placeholder from an example, not a task id"),
        ("not a uuid", "has spaces inside; write one task id per line"),
        ("uuid,", "contains ','; a task id is letters, digits, '-' and '_'"),
        ("-rf", "starts with '-'"),
        ("x" * 201, "is longer than 200 characters"),
    ],
)
def test_line_that_cannot_be_a_task_id_is_reported(tmp_path: Path, line: str, why: str) -> None:
    """Each kind of bad line is reported as FILE:LINE with a reason that fits it."""
    listing = tmp_path / "uuids.txt"
    listing.write_text(f"good-1\n{line}\ngood-2\n")
    wanted = collect_uuids([], [str(listing)])
    assert wanted.uuids == ["good-1", "good-2"]
    [rejected] = wanted.rejected
    assert str(rejected).startswith(f"{listing}:2: ")
    assert why in rejected.why
    assert "separator" not in rejected.why


def test_placeholder_argument_is_ignored_with_a_note(env: FakeRodin, tmp_path: Path) -> None:
    """`download U1 U2 ...` as an example prints it: the '...' is noted, not a failure."""
    uuids = [task(env), task(env)]
    result = invoke("download", *uuids, "...", "-o", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    assert "note: ignored '...'" in result.stderr
    assert sorted(line["uuid"] for line in json_lines(result)) == sorted(uuids)


def test_only_bad_lines_download_nothing_and_fail(tmp_path: Path) -> None:
    """A list with no usable uuid: each line reported, nothing downloaded, exit 1."""
    listing = tmp_path / "uuids.txt"
    listing.write_text("uuid,\n'x'\n")
    result = invoke("download", "--from-file", str(listing), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert f"{listing}:1: 'uuid,' contains ','" in result.stderr
    assert f"{listing}:2: " in result.stderr
    assert "no task uuids to download" in result.stderr
    assert not (tmp_path / "out").exists()


def test_stdin_with_comments_blanks_and_duplicates(env: FakeRodin, tmp_path: Path) -> None:
    """'-' reads uuids from stdin; each task downloads once (lines come as tasks finish)."""
    first, second = task(env), task(env)
    stdin = f"# from a pipeline\n\n{first}\n{first}  # again\n{second}\n"
    result = invoke("download", "-", "--json", "-o", str(tmp_path), stdin=stdin)
    assert result.exit_code == 0, result.output
    assert sorted(str(line["uuid"]) for line in json_lines(result)) == sorted([first, second])


def test_empty_uuid_file_is_nothing_to_do(tmp_path: Path) -> None:
    """A file with only comments downloads nothing and succeeds (a finished retry loop)."""
    listing = tmp_path / "failed.txt"
    listing.write_text("# nothing failed\n")
    result = invoke("download", "--from-file", str(listing))
    assert result.exit_code == 0
    assert "no task uuids" in result.stderr


# -- download --------------------------------------------------------------------------------


def test_rerun_options_repeat_what_was_given() -> None:
    """Options set to something other than their default are repeated; -o always is."""
    argv = rerun_options(
        ("-o", Path("out dir"), None),
        ("-j", 8, 8),
        ("--proxy", "http://proxy:3128", None),
        ("--ca-bundle", None, None),
        ("--check", "sha256", "size"),
    )
    assert argv == ["-o", "out dir", "--proxy", "http://proxy:3128", "--check", "sha256"]


def test_json_lines_report_each_task(env: FakeRodin, tmp_path: Path) -> None:
    """--json: one object per task on stdout, nothing else there; exit 1 when one failed."""
    good = task(env)
    result = invoke("download", good, "no-such-task", "--json", "-o", str(tmp_path))
    assert result.exit_code == 1
    lines = {line["uuid"]: line for line in json_lines(result)}
    assert lines[good]["status"] == "ok"
    assert lines[good]["error"] is None
    assert {(f["name"], f["size"]) for f in lines[good]["files"]} == set(FILES.items())  # type: ignore[attr-defined]
    for file in lines[good]["files"]:  # type: ignore[attr-defined]
        assert Path(file["path"]).read_bytes() == env.content(good, file["name"])
    assert lines["no-such-task"]["status"] == "failed"
    assert "TASK_NOT_FOUND" in str(lines["no-such-task"]["error"])
    assert "no-such-task" in result.stderr  # the failed uuids are listed for humans too


def test_failed_file_then_rerun_from_it(env: FakeRodin, tmp_path: Path) -> None:
    """--failed-file lists what failed; --from-file on it finishes the job."""
    good, late = task(env), "task-that-appears-later"
    failed = tmp_path / "failed.txt"
    first = invoke("download", good, late, "-o", str(tmp_path), "--failed-file", str(failed))
    assert first.exit_code == 1
    assert failed.read_text() == f"{late}\n"
    task(env, uuid=late)
    again = invoke("download", "--from-file", str(failed), "-o", str(tmp_path), "--json")
    assert again.exit_code == 0, again.output
    assert [line["uuid"] for line in json_lines(again)] == [late]


def test_rerun_skips_finished_tasks(env: FakeRodin, tmp_path: Path) -> None:
    """A second run reports finished tasks as skipped; --overwrite downloads them again."""
    uuid = task(env)
    assert invoke("download", uuid, "-o", str(tmp_path)).exit_code == 0
    again = invoke("download", uuid, "-o", str(tmp_path), "--json", "--check", "sha256")
    assert again.exit_code == 0
    assert json_lines(again)[0]["status"] == "skipped"
    assert "tasks skipped" in again.stderr
    assert "skipped" in again.stderr and "2 files" in again.stderr  # the task's own row
    assert re.search(r"files\s+2 \(0 downloaded, 2 already present\)", again.stderr)
    forced = invoke("download", uuid, "-o", str(tmp_path), "--json", "--overwrite")
    assert json_lines(forced)[0]["status"] == "ok"


def test_rerun_after_a_deleted_file_counts_it_apart(env: FakeRodin, tmp_path: Path) -> None:
    """One file of a finished task deleted: the summary says 1 downloaded, 1 already present."""
    uuid = task(env)
    assert invoke("download", uuid, "-o", str(tmp_path)).exit_code == 0
    (tmp_path / uuid / "preview.webp").unlink()
    again = invoke("download", uuid, "-o", str(tmp_path))
    assert again.exit_code == 0, again.output
    assert re.search(r"files\s+2 \(1 downloaded, 1 already present\)", again.stderr)
    size = FILES["base_basic_pbr.glb"] + FILES["preview.webp"]
    assert re.search(rf"size\s+{size / 1000:.1f} kB \(20.0 kB downloaded, ", again.stderr)


def test_retries_are_counted(env: FakeRodin, tmp_path: Path) -> None:
    """A 503 then success: the task is ok and the summary says a file was retried."""
    uuid = task(env)
    env.add_faults(uuid, "preview.webp", Fault.status(503, retry_after=0))
    result = invoke("download", uuid, "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "1 retried" in result.stderr


def test_quiet_prints_only_failures(env: FakeRodin, tmp_path: Path) -> None:
    """--quiet: no per-task lines and no summary, but failures still show."""
    result = invoke("download", task(env), "missing-task", "-q", "-o", str(tmp_path))
    assert result.exit_code == 1
    assert "missing-task" in result.stderr
    assert "tasks ok" not in result.stderr
    assert result.stdout == ""


def test_unusable_destination_is_a_usage_error(env: FakeRodin, tmp_path: Path) -> None:
    """-o under a file (the folder can't be created): exit 2 with the library's message."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("download", task(env), "-o", str(blocker / "results"))
    assert result.exit_code == 2
    assert "can't create destination" in result.stderr


# -- the other commands ------------------------------------------------------------------


def test_files_lists_names_and_urls_on_request(env: FakeRodin) -> None:
    """files: names with '-' sizes; --urls adds working URLs; --json parses."""
    uuid = task(env)
    plain = invoke("files", uuid)
    assert plain.exit_code == 0
    assert [line.split()[0] for line in plain.stdout.splitlines()] == list(FILES)
    assert "http" not in plain.stdout
    with_urls = invoke("files", uuid, "--urls")
    assert all("http://127.0.0.1" in line for line in with_urls.stdout.splitlines())
    rows = json_lines(invoke("files", uuid, "--json"))
    assert rows == [{"name": name, "size": None} for name in FILES]


def test_files_of_unknown_task_fails(env: FakeRodin) -> None:
    """files on a task the API doesn't know: exit 1 with the API's message."""
    result = invoke("files", "unknown-task")
    assert result.exit_code == 1
    assert "TASK_NOT_FOUND" in result.stderr


def test_balance(env: FakeRodin) -> None:
    """balance prints the credits; --json as an object."""
    env.balance = 42.5
    assert invoke("balance").stdout.strip() == "42.5 credits"
    assert json_lines(invoke("balance", "--json")) == [{"balance": 42.5}]


def test_generate_then_status_and_wait(env: FakeRodin) -> None:
    """generate prints the job; status polls it; wait returns when it's Done."""
    submitted = invoke("generate", "--prompt", "a chair", "--seed", "7", "--json")
    assert submitted.exit_code == 0, submitted.output
    job = json_lines(submitted)[0]
    key = str(job["subscription_key"])
    status = json_lines(invoke("status", key, "--json"))[0]
    assert status["jobs"] == [{"uuid": job["jobs"][0], "status": status["status"]}]  # type: ignore[index]
    waited = invoke("wait", key, "--interval", "0.1", "--json")
    assert waited.exit_code == 0, waited.output
    assert json_lines(waited)[0]["status"] == "Done"


def test_generate_wait_downloads(env: FakeRodin, tmp_path: Path) -> None:
    """generate -o waits and downloads the result into the folder."""
    result = invoke("generate", "--prompt", "a lamp", "-o", str(tmp_path), "--interval", "0.1")
    assert result.exit_code == 0, result.output
    uuid = result.stdout.split()[2]  # "task uuid: <uuid>"
    assert (tmp_path / uuid / "preview.webp").is_file()


def test_wait_for_failed_job_exits_1(env: FakeRodin) -> None:
    """A job that ends Failed: wait exits 1 naming it."""
    job = json_lines(invoke("generate", "--prompt", "x fake-status:Failed", "--json"))[0]
    result = invoke("wait", str(job["subscription_key"]), "--interval", "0.1")
    assert result.exit_code == 1
    assert "Failed" in result.stderr


def test_wait_timeout_exits_124(env: FakeRodin) -> None:
    """A job still generating at --timeout: exit 124."""
    job = json_lines(invoke("generate", "--prompt", "slow", "--json"))[0]
    env.set_job_status(str(job["uuid"]), "Generating")
    result = invoke("wait", str(job["subscription_key"]), "--interval", "0.1", "--timeout", "0.3")
    assert result.exit_code == 124
    assert "Generating" in result.stderr


def test_generate_refuses_bad_arguments(env: FakeRodin) -> None:
    """No prompt and no image, or an unknown tier: exit 2 before spending a credit."""
    assert invoke("generate").exit_code == 2
    result = invoke("generate", "--prompt", "x", "--tier", "Bogus")
    assert result.exit_code == 2
    assert "tier" in result.stderr


# The library's keyword and the CLI's parameter, where the CLI names it differently.
CLI_NAMES = {
    "images": "image",
    "TAPose": "ta_pose",
    "bbox_condition": "bbox",
    "addons": "addon",
}


@pytest.mark.parametrize(
    ("method", "command"),
    [(AsyncRodin.generate, "generate"), (AsyncRodin.generate_texture, "generate-texture")],
)
def test_generate_commands_offer_every_field_of_the_library(method: object, command: str) -> None:
    """Each keyword of generate/generate_texture is an option (or argument) of the command."""
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    offered = {param.name for param in click_command.params}
    wanted = set(inspect.signature(method).parameters) - {"self"}  # type: ignore[arg-type]
    assert {CLI_NAMES.get(name, name) for name in wanted} <= offered


def test_generate_sends_every_option(env: FakeRodin) -> None:
    """Choices, switches, the bbox and addons reach the form as the API spells them."""
    result = invoke(
        "generate", "--prompt", "a lamp", "--tier", "Gen-2", "--material", "Shaded",
        "--format", "fbx", "--quality", "low", "--quality-override", "5000",
        "--mesh-mode", "Raw", "--mesh-simplify", "--no-ta-pose", "--bbox", "1", "2", "3",
        "--addon", "HighPack", "--condition-mode", "fuse", "--hd-texture",
        "--texture-mode", "x", "--geometry-instruct-mode", "creative", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    form = env.submissions[-1].fields
    assert form["tier"] == ["Gen-2"] and form["material"] == ["Shaded"]
    assert form["geometry_file_format"] == ["fbx"] and form["quality"] == ["low"]
    assert form["quality_override"] == ["5000"] and form["mesh_mode"] == ["Raw"]
    assert form["mesh_simplify"] == ["true"] and form["TAPose"] == ["false"]
    assert json.loads(form["bbox_condition"][0]) == [1, 2, 3]
    assert form["addons"] == ["HighPack"] and form["condition_mode"] == ["fuse"]
    assert form["hd_texture"] == ["true"] and form["geometry_instruct_mode"] == ["creative"]
    assert "use_hyper" not in form  # left out: not sent, the API's default applies


def test_generate_refuses_a_value_outside_its_choices(env: FakeRodin) -> None:
    """--material Gold is a usage error naming the choices, before anything is sent."""
    before = len(env.submissions)
    result = invoke("generate", "--prompt", "x", "--material", "Gold")
    assert result.exit_code == 2
    assert "Shaded" in result.stderr
    assert len(env.submissions) == before


def test_generate_texture_submits_waits_and_downloads(env: FakeRodin, tmp_path: Path) -> None:
    """generate-texture IMAGE MODEL -o DIR: the texture endpoint, then the results on disk."""
    image, model = tmp_path / "look.png", tmp_path / "mesh.glb"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    model.write_bytes(b"glTF" + bytes(100))
    out = tmp_path / "out"
    args = [str(image), str(model), "--material", "PBR", "--resolution", "High"]
    result = invoke("generate-texture", *args, "-o", str(out), "--interval", "0.1", "--json")
    assert result.exit_code == 0, result.output
    submission = env.submissions[-1]
    assert submission.endpoint == "rodin_texture_only"
    assert submission.fields["resolution"] == ["High"]
    assert [name for name, _ in submission.files["model"]] == ["mesh.glb"]
    job, downloaded = json_lines(result)
    assert downloaded["uuid"] == job["uuid"] and downloaded["status"] == "ok"
    assert (out / str(job["uuid"]) / "preview.webp").is_file()


def test_demo_verifies_every_file() -> None:
    """demo: a small run with the faults injected ends verified, exit 0."""
    result = invoke("demo", "--tasks", "3", "-j", "4")
    assert result.exit_code == 0, result.output
    assert "verified" in result.stderr
    assert "retried" in result.stderr  # the injected faults were met and overcome


def test_demo_keeps_its_output_folder(tmp_path: Path) -> None:
    """demo -o keeps the results where asked."""
    result = invoke("demo", "--tasks", "2", "--no-faults", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2

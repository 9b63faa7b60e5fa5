"""``rodin-async fake-server``: the bundled fake Rodin API, in the foreground, for pipelines."""

from __future__ import annotations

import contextlib
import json
import random
import shlex
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from ._common import CliError
from ._inputs import why_not_a_task_id

if TYPE_CHECKING:  # the testing extra is imported only by the commands that need it
    from rodin_async.testing import FakeRodin

KIB = 1024
MIB = 1024 * KIB

# What one Rodin generation typically yields: the model in two formats, a texture, and
# the preview image the API always lists. Sizes are typical, and vary per task.
TYPICAL_MIX = {
    "base_basic_pbr.glb": 4 * MIB,
    "base_basic_pbr.fbx": 1 * MIB,
    "texture_diffuse.png": 512 * KIB,
    "preview.webp": 100 * KIB,
}
_SHOWN_UUIDS = 10  # more than this go to a file instead of the screen
DEFAULT_KEY = "test-key"


def typical_files(rng: random.Random) -> dict[str, bytes | int]:
    """One task's result files: sizes (so content is generated) and a small JSON."""
    files: dict[str, bytes | int] = {
        name: round(size * rng.uniform(0.6, 1.4)) for name, size in TYPICAL_MIX.items()
    }
    if rng.random() < 0.5:
        meta = {"tier": rng.choice(["Regular", "Gen-2"]), "seed": rng.randrange(65536)}
        files["meta.json"] = json.dumps(meta).encode()
    return files


def add_typical_tasks(server: FakeRodin, count: int, seed: int = 0) -> dict[str, list[str]]:
    """Add *count* tasks of the typical file mix; return each task's file names.

    The same *seed* gives the same sizes.
    """
    rng = random.Random(seed)  # noqa: S311 -- file sizes for a fake, not secrets
    tasks = {}
    for _ in range(count):
        files = typical_files(rng)
        tasks[server.add_task(files)] = list(files)
    return tasks


def import_testing() -> type[FakeRodin]:
    """`FakeRodin`, or a clear error if the testing extra (starlette, uvicorn) is missing."""
    try:
        from rodin_async.testing import FakeRodin
    except ImportError as exc:
        raise CliError(
            f"this command needs the fake server's dependencies ({exc.name}): "
            "pip install 'rodin-async[cli]'",
            1,
        ) from exc
    return FakeRodin


def fake_server(
    host: Annotated[
        str, typer.Option(help="Loopback address to listen on (127.0.0.0/8 only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="API port; 0 picks a free one.")] = 0,
    tasks: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Generate this many tasks of the typical Rodin file mix "
            "(default: 10 without --root).",
            show_default=False,
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            help="Serve this folder: each sub-folder is a task (named after it), "
            "its files are the task's results.",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    key: Annotated[str, typer.Option(help="The API key the server accepts.")] = DEFAULT_KEY,
    uuids_file: Annotated[
        Path | None,
        typer.Option(
            help="Write the task uuids here, one per line (default: a temporary file "
            f"when there are more than {_SHOWN_UUIDS}).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the bundled fake Rodin API and file host until Ctrl-C.

    It answers like the real API (POST /download and the file URLs it lists), on
    loopback only, with no key or network needed: point RODIN_BASE_URL at it.
    """
    server = _build(import_testing(), host, port, key)
    uuids = _add_folders(server, root) if root is not None else []
    if tasks is not None or root is None:
        uuids += add_typical_tasks(server, 10 if tasks is None else tasks).keys()
    try:
        server.start()
    except OSError as exc:
        raise CliError(f"can't listen on {host}:{port}: {exc.strerror}") from exc
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(server.stop)
        if uuids_file is None and len(uuids) > _SHOWN_UUIDS:
            # Removed when the server stops: its uuids mean nothing to a later server.
            folder = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="rodin-fake-"))
            uuids_file = Path(folder) / "tasks.txt"
        # Before the banner: a script that reads it may stop the server at once.
        stop = cleanup.enter_context(_stop_signals())
        _announce(server, uuids, uuids_file)
        stop.wait()
    typer.echo("stopped", err=True)


def _add_folders(server: FakeRodin, root: Path) -> list[str]:
    """Serve *root*'s folders as tasks; warn about names ``download`` won't take as ids."""
    uuids = server.add_directory(root)
    for uuid in uuids:
        if why_not_a_task_id(uuid) is not None:
            typer.echo(
                f"warning: folder {uuid!r} is served, but `rodin-async download` skips it: "
                "a task id is letters, digits, '-' and '_'",
                err=True,
            )
    return uuids


def _build(fake_rodin: type[FakeRodin], host: str, port: int, key: str) -> FakeRodin:
    try:
        return fake_rodin(api_key=key, host=host, api_port=port)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _announce(server: FakeRodin, uuids: list[str], uuids_file: Path | None) -> None:
    # On stdout, so a wrapper script can read the export line (echo flushes each line).
    say = typer.echo
    say(f"Fake Rodin API: {server.base_url}   (result files on {server.files_url})")
    if uuids_file is not None:
        uuids_file.write_text("".join(f"{u}\n" for u in uuids), encoding="utf-8")
        say(f"{len(uuids)} tasks, uuids in {uuids_file}")
        source = f"--from-file {shlex.quote(str(uuids_file))}"
    else:
        say(f"{len(uuids)} tasks:")
        for uuid in uuids:
            say(f"  {uuid}")
        source = shlex.join(uuids)  # all of them (few): the hint works when pasted
    say()
    say("Use it from another shell:")
    say(
        f"  export RODIN_BASE_URL={shlex.quote(server.base_url)} "
        f"RODIN_API_KEY={shlex.quote(server.api_key)}"
    )
    say(f"  rodin-async download {source}")
    say()
    say("Serving until Ctrl-C.")


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM; the server runs in its own thread meanwhile."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Handlers of our own, not KeyboardInterrupt: a shell starts background jobs with
    # SIGINT ignored, and `kill -INT` should still stop the server.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

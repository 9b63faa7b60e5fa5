"""``rodin-async demo``: the real bulk download against a fake server, verified file by file.

It needs no key and no network: the bundled fake Rodin server runs in this process on
loopback, serving realistic tasks, with a few faults so the retries can be seen working.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape

from rodin_async import RetryPolicy, TaskDownload
from rodin_async._shard import ClientSettings

from ._bulk import Job, Output, download_all, finish
from ._common import EXIT_FAILED, error_console
from ._download import Processes, worker_processes
from ._fake_server import add_typical_tasks, import_testing

if TYPE_CHECKING:
    from rodin_async.testing import FakeRodin

# The server is local: waiting seconds between attempts would only slow the show.
_DEMO_RETRY = RetryPolicy(attempts=5, wait_initial=0.05, wait_max=0.5, wait_jitter=0.05)
_HASH_CHUNK = 1024 * 1024


def demo(
    tasks: Annotated[int, typer.Option(min=1, help="How many tasks to download.")] = 50,
    concurrency: Annotated[
        int, typer.Option("-j", "--concurrency", min=1, help="Files transferring at once.")
    ] = 8,
    processes: Processes = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Keep the results in this folder (default: a temporary folder, removed "
            "afterwards unless --keep).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the temporary folder.")] = False,
    faults: Annotated[
        bool,
        typer.Option(help="Inject a cut-off transfer, a 503 and an expired URL."),
    ] = True,
) -> None:
    """Download realistic results from a local fake Rodin server and verify every file.

    No API key, no network: this is the real bulk download, with the same progress
    display as `download`, against the fake server bundled with rodin-async.
    """
    console = error_console()
    server = import_testing()(api_key="demo-key")
    expected = add_typical_tasks(server, tasks)
    injected = _inject_faults(server, list(expected)) if faults else []
    with _destination(output, keep, console) as dest, server:
        _introduce(console, server, expected, injected, dest)
        processes = worker_processes(processes, tasks, concurrency)
        code = _run(server, expected, dest, (concurrency, processes), console)
    raise typer.Exit(code)


def _run(
    server: FakeRodin,
    expected: dict[str, list[str]],
    dest: Path,
    parallel: tuple[int, int],
    console: Console,
) -> int:
    concurrency, processes = parallel
    settings = ClientSettings(
        server.api_key, base_url=server.base_url, max_concurrency=concurrency, retry=_DEMO_RETRY
    )
    uuids = list(expected)
    output = Output(console)
    tally = download_all(settings, Job(uuids, dest, processes=processes), output)
    code = finish(tally, uuids, output, title="rodin-async demo")
    with console.status("verifying files…"):
        problems = verify(server, expected, tally.results, dest)
    checked = sum(len(r.files) for r in tally.results)
    for problem in problems:
        console.print(f"[red]✗[/] {escape(problem)}")
    if problems:
        return EXIT_FAILED
    console.print(f"[green]✓ verified {checked} files[/] (SHA-256); none incomplete")
    return code


def _inject_faults(server: FakeRodin, uuids: list[str]) -> list[str]:
    """Queue one of each common trouble on tasks spread through the run."""
    from rodin_async.testing import Fault

    def pick(fraction: float) -> str:
        return uuids[int(len(uuids) * fraction)]

    glb, png, fbx = "base_basic_pbr.glb", "texture_diffuse.png", "base_basic_pbr.fbx"
    cut = pick(0.2)
    server.add_faults(cut, glb, Fault.truncate(at=server.size(cut, glb) // 2))
    server.add_faults(pick(0.5), png, Fault.status(503, retry_after=0))
    server.add_faults(pick(0.8), fbx, Fault.expire())
    return [
        "a transfer cut off halfway (resumed with a Range request)",
        "a 503 from the file host (retried)",
        "an expired file URL (the task is listed again)",
    ]


@contextlib.contextmanager
def _destination(output: Path | None, keep: bool, console: Console) -> Iterator[Path]:
    if output is not None:
        yield output
        return
    folder = Path(tempfile.mkdtemp(prefix="rodin-async-demo-"))
    try:
        yield folder
    finally:
        if keep:
            console.print(f"results kept in {escape(str(folder))}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _introduce(
    console: Console,
    server: FakeRodin,
    expected: dict[str, list[str]],
    injected: list[str],
    dest: Path,
) -> None:
    files = sum(len(names) for names in expected.values())
    size = sum(server.size(u, n) for u, names in expected.items() for n in names)
    console.print(
        f"[bold]rodin-async demo[/]: {len(expected)} tasks · {files} files · {decimal(size)}"
    )
    console.print(
        f"  [dim]server:[/] a fake Rodin API at {escape(server.base_url)} (no key, no network)"
    )
    for i, fault in enumerate(injected):
        console.print(f"  [yellow]{'faults:' if i == 0 else '':<7}[/] {fault}")
    console.print(f"  [dim]saving to[/] {escape(str(dest))}")


def verify(
    server: FakeRodin, expected: dict[str, list[str]], results: list[TaskDownload], dest: Path
) -> list[str]:
    """Compare every downloaded file with the server's; return what's wrong.

    Files of tasks that didn't finish (after Ctrl-C) are checked too: whatever sits
    under a final, non-hidden name must be complete. Hidden ``.part`` files may remain.
    """
    problems: list[str] = []
    for result in results:
        problems += _verify_task(server, expected[result.task_uuid], result)
    reported = {f.path.resolve() for r in results for f in r.files}
    for path in sorted(dest.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.resolve() not in reported:
            uuid, name = path.parent.name, path.name
            if uuid not in expected or _sha256(path) != server.sha256(uuid, name):
                problems.append(f"{path} is not a complete result file")
    return problems


def _verify_task(server: FakeRodin, names: list[str], result: TaskDownload) -> list[str]:
    uuid = result.task_uuid
    got = Counter(f.name for f in result.files)
    problems = [f"{uuid}: {name} missing" for name in names if not got[name]] if result.ok else []
    index: Counter[str] = Counter()
    for file in result.files:
        want = server.sha256(uuid, file.name, index=index[file.name])
        index[file.name] += 1
        if _sha256(file.path) != want:
            problems.append(f"{uuid}: {file.name} differs from the server's")
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

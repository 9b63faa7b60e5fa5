"""The README's runnable examples keep running."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import rodin_async
from rodin_async.testing import FakeRodin

ROOT = Path(__file__).parent.parent


def test_workflow_example_runs(tmp_path: Path) -> None:
    """examples/workflow.py generates, waits, downloads and then skips the finished task."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "workflow.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    assert "second download skipped: True" in done.stdout
    (task,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sorted(p.name for p in task.iterdir() if p.name != ".rodin.lock") == [
        ".rodin-manifest.json",
        "base_basic_pbr.glb",
        "preview.webp",
    ]


def test_readme_runs_scripts_with_the_venv_python() -> None:
    """The README's script commands name .venv/bin/python: a bare python lacks the package."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/python examples/workflow.py" in readme
    assert not re.search(r"(?<![./\w])python3? [\w./-]+\.py", readme)


def readme_block(heading: str) -> str:
    """The first python code block of the README section under *heading*."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(f"### {heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.anyio
async def test_notebook_example_runs_inside_a_running_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's notebook cell runs with top-level await where anyio.run() refuses to."""

    async def main() -> None:
        pass

    with pytest.raises(RuntimeError, match="Already running"):
        anyio.run(main)  # what the README warns about: a loop is already running
    cell = readme_block("In Jupyter, IPython or any running event loop")
    code = compile(cell, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    async with FakeRodin(api_key="sk-notebook") as server:
        server.add_task({"base.glb": 1000, "preview.webp": 100}, uuid="TASK-UUID")
        monkeypatch.setenv("RODIN_API_KEY", server.api_key)
        monkeypatch.setenv("RODIN_BASE_URL", server.base_url)
        monkeypatch.chdir(tmp_path)
        await eval(code, {"rodin_async": rodin_async})  # noqa: S307  (the README's own cell)
    assert capsys.readouterr().out == "True ['base.glb', 'preview.webp']\n"
    assert (tmp_path / "results" / "TASK-UUID" / "base.glb").stat().st_size == 1000

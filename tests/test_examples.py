"""The README's runnable examples keep running."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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

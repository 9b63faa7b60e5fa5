"""MkDocs hooks: the CLI page shows the command's own ``--help``, so it can't drift."""

from __future__ import annotations

import re
from typing import Any

from mkdocs.exceptions import PluginError

# <!-- cli-help: download --> becomes the output of `rodin-async download --help`.
_MARKER = re.compile(r"<!-- cli-help:(?P<args>[\w -]*) -->")
_ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}


def on_page_markdown(markdown: str, /, **_: Any) -> str:
    """Replace each help marker with that command's help text."""
    return _MARKER.sub(lambda m: _help(m.group("args").split()), markdown)


def _help(args: list[str]) -> str:
    from typer.testing import CliRunner

    from rodin_async._cli._app import app

    result = CliRunner().invoke(app, [*args, "--help"], prog_name="rodin-async", env=_ENV)
    if result.exit_code != 0:
        raise PluginError(f"rodin-async {' '.join(args)} --help failed: {result.output}")
    lines = [line.rstrip() for line in result.output.strip("\n").splitlines()]
    return "```text\n" + "\n".join(lines) + "\n```"

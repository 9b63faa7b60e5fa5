"""The rendered ``--help`` of every command, as a user sees it from a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer

from rodin_async._cli._app import app

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def help_text(*command: str) -> str:
    """``rodin-async COMMAND --help`` on a wide pretend terminal, so no row wraps."""
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "rodin_async", *command, "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def flags_of(command: str) -> list[str]:
    """The long names of *command*'s on/off options (both halves of --x/--no-x)."""
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return [
        name
        for param in click_command.params
        if getattr(param, "is_flag", False)
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_read_as_flags(command: str) -> None:
    """No option of any command shows a value type for a flag (`--quiet <bool>`)."""
    text = help_text(command)
    for flag in flags_of(command):
        # The flag's own row (as --x, or as the --no-x beside it), not a mention in a help.
        own_row = re.compile(rf"│\s+(--[\w-]+\s+)?{flag}\b")
        row = next(line for line in text.splitlines() if own_row.match(line))
        after = row.split(flag, 1)[1]
        assert not re.match(r"(\s+-\w)?\s+(<|BOOL|TEXT\b)", after), row
    assert "<bool>" not in text
    assert "BOOLEAN" not in text
    assert "list[" not in text


def test_download_help_shows_uuids_as_a_list_and_values_with_types() -> None:
    """`download --help`: the usage says UUID..., and options that take values show them."""
    text = help_text("download")
    assert {"--quiet", "--json", "--overwrite"} <= set(flags_of("download"))
    assert re.search(r"Usage: rodin-async download \[OPTIONS\] \[UUID\.\.\.\]\s*$", text, re.M)
    assert re.search(r"│\s+UUID\.\.\.\s", text)
    concurrency = next(line for line in text.splitlines() if "--concurrency" in line)
    assert re.search(r"-j\s+(<int|INTEGER)", concurrency)  # value options keep their type
    for option in ("--check", "--proxy", "--ca-bundle", "SSL_CERT_FILE"):
        assert option in text

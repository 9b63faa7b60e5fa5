"""The reference site covers the whole public surface (CI builds it with --strict)."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

import rodin_async
import rodin_async.testing
from rodin_async._cli._app import app

DOCS = Path(__file__).parent.parent / "docs"


def documented() -> set[str]:
    """Every object the pages render with a ``::: path`` directive."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.md"))
    return set(re.findall(r"^::: ([\w.]+)$", text, flags=re.MULTILINE))


def test_every_export_has_a_reference_entry() -> None:
    """Each name in rodin_async.__all__ and rodin_async.testing.__all__ has its own entry."""
    names = {f"rodin_async.{n}" for n in rodin_async.__all__}
    names |= {f"rodin_async.testing.{n}" for n in rodin_async.testing.__all__}
    assert names - documented() == set()


def test_every_command_has_its_help_on_the_cli_page() -> None:
    """docs/cli.md renders the --help of every command the CLI has."""
    commands = set(typer.main.get_command(app).commands)
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert commands
    assert commands - set(re.findall(r"<!-- cli-help: ([\w-]+) -->", page)) == set()

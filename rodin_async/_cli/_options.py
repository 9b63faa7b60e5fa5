"""Options several commands share, and the client they configure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rodin_async import AsyncRodin

from ._bulk import ClientFactory
from ._inputs import resolve_key

_CONNECTION = "Connection"

ApiKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--api-key-file",
        help="Read the API key from this file's first line (default: $RODIN_API_KEY). "
        "There is no --api-key option: keys typed in a command stay in shell history.",
        dir_okay=False,
        show_default=False,
        rich_help_panel=_CONNECTION,
    ),
]
BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        envvar="RODIN_BASE_URL",
        help="The API root (default: https://hyperhuman.deemos.com/api/v2).",
        show_default=False,
        rich_help_panel=_CONNECTION,
    ),
]
JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")
]


def connect(key_file: Path | None, base_url: str | None, **options: Any) -> ClientFactory:
    """A factory of configured clients; the key is resolved now, so a missing one fails early.

    Raises:
        CliError: No API key could be found.
    """
    key = resolve_key(key_file)
    return lambda: AsyncRodin(key, base_url=base_url, **options)

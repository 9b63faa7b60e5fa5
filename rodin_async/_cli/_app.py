"""The typer application: the commands, and how errors become one line and an exit code."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, NoReturn, ParamSpec

import typer
from rich.text import Text

import rodin_async

from ._common import EXIT_INTERRUPTED, CliError, Interrupted, as_cli_error, error_console
from ._demo import demo
from ._download import download
from ._fake_server import fake_server
from ._generate import generate, generate_texture
from ._workflow import balance, files, status, wait

P = ParamSpec("P")


def _command(function: Callable[P, None], name: str | None = None) -> Callable[P, None]:
    """Register *function* as a command that reports deliberate errors in one line."""

    @functools.wraps(function)  # typer reads the wrapped signature for the options
    def command(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            function(*args, **kwargs)
        except rodin_async.RodinError as exc:
            _fail(as_cli_error(exc))
        except CliError as exc:
            _fail(exc)
        except Interrupted as exc:
            _stop(exc.exit_code)
        except KeyboardInterrupt:  # Ctrl-C outside an event loop
            _stop(EXIT_INTERRUPTED)

    app.command(name)(command)
    return function


def _stop(code: int) -> NoReturn:
    error_console().print("interrupted", style="yellow")
    raise typer.Exit(code) from None


def _fail(error: CliError) -> NoReturn:
    message = Text.assemble(("rodin-async: error: ", "bold red"), error.message)
    error_console().print(message, soft_wrap=True)
    raise typer.Exit(error.code) from None


app = typer.Typer(
    name="rodin-async",
    help="Bulk-download Hyper3D Rodin results, fast and safely. Start with: rodin-async demo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold the API key
)
# In the order a new user meets them: the demo first, then the everyday bulk download.
_command(demo)
_command(download)
_command(files)
_command(generate)
_command(generate_texture, "generate-texture")
_command(status)
_command(wait)
_command(balance)
_command(fake_server)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"rodin-async {rodin_async.__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Bulk-download Hyper3D Rodin results, fast and safely. Start with: rodin-async demo"""
    # stamina logs each retry as a warning, which Python's last-resort handler would print
    # in the middle of the progress display; the command counts retries itself.
    logging.getLogger("stamina").addHandler(logging.NullHandler())

"""The ``rodin-async`` command. Its dependencies (typer, rich) live in the ``cli`` extra.

Only `main` is here, and it imports nothing heavy until it has checked the extra is
installed: a user without it gets the install hint, not a traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

_HINT = "rodin-async's command line needs its extra: pip install 'rodin-async[cli]'"


def main() -> None:
    """Run the ``rodin-async`` command (the console script and ``python -m rodin_async``)."""
    try:
        import rich  # noqa: F401
        import typer  # noqa: F401
    except ImportError:
        print(_HINT, file=sys.stderr)
        raise SystemExit(1) from None
    from .._gc import settle
    from ._app import app

    settle()  # this process is ours alone: tune its collector (the library never does)
    app(prog_name="rodin-async")

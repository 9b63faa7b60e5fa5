"""The ``rodin-async`` command. Its dependencies (typer, rich) live in the ``cli`` extra.

Only `main` is here, and it imports nothing heavy until it has checked the extra is
installed: a user without it gets the install hint, not a traceback.
"""

from __future__ import annotations

import gc
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
    from ._app import app

    _settle_gc()
    app(prog_name="rodin-async")


# Young objects are collected once this many more are allocated than freed (Python's
# default is 700). A bulk download allocates many short-lived objects per file, nearly
# all freed by reference counting; the collector finds little each time it runs.
_YOUNG_THRESHOLD = 10_000


def _settle_gc() -> None:
    """Tune the collector for this process, which is ours alone (the library never does).

    What start-up made (modules, classes, functions) lives as long as the process:
    frozen, it is skipped by every later full collection.
    """
    gc.freeze()
    _, *older = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, *older)

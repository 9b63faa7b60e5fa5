"""Collector settings for the processes rodin-async owns: the command and its workers.

The library never applies them to an application's process: a bulk download is all a
process of ours does, so the collector can be tuned to it.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle"]

# Young objects are collected once this many more are allocated than freed (Python's
# default is 700). A bulk download allocates many short-lived objects per file, nearly
# all freed by reference counting; the collector finds little each time it runs.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Freeze what start-up made and collect young objects less often.

    Start-up's objects (modules, classes, functions) live as long as the process:
    frozen, they are skipped by every later full collection.
    """
    gc.freeze()
    _, *older = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, *older)

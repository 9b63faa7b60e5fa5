"""The public surface: everything exported is listed, and the list is sorted."""

from __future__ import annotations

import rodin_async
import rodin_async.testing


def test_all_is_sorted() -> None:
    """__all__ is sorted so additions are easy to review."""
    assert rodin_async.__all__ == sorted(rodin_async.__all__)
    assert rodin_async.testing.__all__ == sorted(rodin_async.testing.__all__)


def test_all_names_public_members() -> None:
    """Every public name defined in the package is exported, and every export exists."""
    public = {n for n in dir(rodin_async) if not n.startswith("_")} - {"testing", "annotations"}
    assert public == set(rodin_async.__all__)
    for name in rodin_async.__all__:
        member = getattr(rodin_async, name)
        # Type aliases (ProgressEvent, ProgressCallback) have no home module.
        if isinstance(member, type) and not hasattr(member, "__origin__"):
            assert member.__module__.startswith("rodin_async")


def test_version_comes_from_metadata() -> None:
    """__version__ is the installed distribution's version."""
    from importlib.metadata import version

    assert rodin_async.__version__ == version("rodin-async")

"""Show public classes under the package's name, as httpx does.

Tracebacks, pickles and ``help()`` then say ``rodin_async.DownloadError`` rather than
``rodin_async._errors.DownloadError``: the private module a class lives in is an
implementation detail that may move.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["publish"]


def publish(module: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Set ``__module__`` to *module* on every class among *names* (aliases are skipped).

    String annotations are resolved first, against the module that defined each class:
    `typing.get_type_hints` and cattrs look names up in ``__module__``, where the
    private module's imports (``Path``, ``Sequence``...) are not.
    """
    classes = [member for name in names if _is_class(member := namespace[name])]
    for cls in classes:
        _resolve_annotations(cls)
    for cls in classes:
        cls.__module__ = module


def _is_class(member: object) -> typing.TypeGuard[type]:
    # On 3.10, `list[int]` and `Callable[..., None]` pass isinstance(x, type) too.
    return isinstance(member, type) and not isinstance(member, types.GenericAlias)


def _resolve_annotations(cls: type) -> None:
    own = inspect.get_annotations(cls)
    if not own:
        return
    hints = typing.get_type_hints(cls, include_extras=True)
    cls.__annotations__ = {name: hints[name] for name in own}
    if attrs.has(cls):
        attrs.resolve_types(cls)

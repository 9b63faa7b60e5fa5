"""The unit of work a shard runs: settings that pickle, and a function over a batch of uuids.

A bulk download can be split into shards, each with its own event loop and its own
`AsyncRodin` (connection pool), in other processes or on other machines. What a shard needs
travels as a `ShardSettings`, which pickles (no ``ssl.SSLContext``, no open client: a CA
bundle path and a proxy URL instead), and `download_shard` is a plain module-level
function, so any executor that pickles a call can run it::

    with ProcessPoolExecutor() as pool:          # or Dask's client.map, or ray.remote
        for results in pool.map(download_shard, repeat(settings), batches):
            ...

`rodin_async._processes` runs the same unit in worker processes fed from a queue, with
live progress; this module knows nothing of processes. The settings carry the API key:
send them only over channels you would send the key over.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

import anyio
import attrs
import httpx

from ._client import AsyncRodin
from ._client import _resolve_base_url as resolve_base_url
from ._errors import ConfigurationError
from ._manifest import FileCheck
from ._models import TaskDownload
from ._progress import ProgressCallback
from ._retry import RetryPolicy

__all__ = [
    "ClientSettings",
    "ShardSettings",
    "download_shard",
    "open_shard",
    "run_loop",
    "trust_also",
]

T = TypeVar("T")


@attrs.frozen
class ClientSettings:
    """How to build an `AsyncRodin` anywhere: only values that pickle.

    Attributes:
        api_key: The Rodin API key (never shown in the repr).
        base_url: The API root; None for the library's default (or ``RODIN_BASE_URL``
            where the client is built).
        max_concurrency: Files transferring at once, across the client.
        max_api_concurrency: API calls in flight at once.
        retry: The retry policy; None for the default one.
        proxy: A proxy URL for the API and the file hosts; None for the environment's.
        ca_bundle: A PEM file of CA certificates trusted *besides* the default ones.
    """

    api_key: str = attrs.field(repr=False)
    base_url: str | None = None
    max_concurrency: int = 8
    max_api_concurrency: int = 4
    retry: RetryPolicy | None = None
    proxy: str | None = None
    ca_bundle: str | None = None

    @property
    def api_url(self) -> str:
        """The API root these settings resolve to (``RODIN_BASE_URL``, else the default)."""
        return str(resolve_base_url(self.base_url))

    def open(self) -> AsyncRodin:
        """A new client built from these settings (use it with ``async with``).

        Raises:
            ConfigurationError: The settings are invalid, or the CA bundle can't be used.
        """
        verify: ssl.SSLContext | bool = True
        if self.ca_bundle is not None:
            verify = trust_also(self.ca_bundle)
        return AsyncRodin(
            self.api_key,
            base_url=self.base_url,
            max_concurrency=self.max_concurrency,
            max_api_concurrency=self.max_api_concurrency,
            retry=self.retry,
            proxy=self.proxy,
            verify=verify,
        )

    def share(self, index: int, count: int) -> ClientSettings:
        """Shard *index*'s part of *count*: the concurrency limits split between shards.

        Every shard gets at least one transfer and one API call, so *count* shards never
        run fewer than *count* of each.
        """
        return attrs.evolve(
            self,
            max_concurrency=_part(self.max_concurrency, index, count),
            max_api_concurrency=_part(self.max_api_concurrency, index, count),
        )


def _part(total: int, index: int, count: int) -> int:
    """Shard *index*'s whole share of *total* split *count* ways (the first get the rest)."""
    return max(1, total // count + (index < total % count))


def trust_also(ca_bundle: str) -> ssl.SSLContext:
    """httpx's default TLS context (certifi, or SSL_CERT_FILE/DIR) that also trusts *ca_bundle*.

    Raises:
        ConfigurationError: The file can't be read or holds no PEM certificate.
    """
    context = httpx.create_ssl_context()
    try:
        context.load_verify_locations(cafile=ca_bundle)
    except ssl.SSLError as exc:  # before OSError: it is one
        raise ConfigurationError(
            f"can't use the CA bundle {ca_bundle!r}: not a PEM file of CA certificates "
            f"({exc.reason})"
        ) from exc
    except OSError as exc:
        raise ConfigurationError(f"can't use the CA bundle {ca_bundle!r}: {exc.strerror}") from exc
    return context


@attrs.frozen
class ShardSettings:
    """What a shard downloads into, and with which client: everything pickles.

    Attributes:
        client: How to build the shard's own client.
        dest: The destination folder (one sub-folder per task), as for `download_many`.
        overwrite: Download tasks an earlier run completed again.
        check: How files an earlier run completed are checked before they are kept.
    """

    client: ClientSettings
    dest: Path
    overwrite: bool = False
    check: FileCheck = "size"


@contextlib.asynccontextmanager
async def open_shard(
    settings: ShardSettings,
    uuids: Iterable[str] | AsyncIterable[str],
    on_progress: ProgressCallback | None = None,
) -> AsyncIterator[AsyncIterator[TaskDownload]]:
    """Download *uuids* with a client of the shard's own; the block iterates the results.

    *uuids* is consumed lazily and results come as each task ends, as from
    `AsyncRodin.download_many`; leaving the block cancels what is still running.
    """
    async with settings.client.open() as rodin:
        results = rodin.download_many(
            uuids,
            settings.dest,
            overwrite=settings.overwrite,
            check=settings.check,
            on_progress=on_progress,
        )
        async with contextlib.aclosing(results):
            yield results


def download_shard(settings: ShardSettings, uuids: Iterable[str]) -> list[TaskDownload]:
    """Download one batch of tasks in a fresh event loop; the unit a shard worker runs.

    A plain function of picklable arguments, returning picklable results: hand it to a
    process pool, Dask (``client.map``) or Ray (``ray.remote``) to spread a bulk download
    over processes or machines. Each task's folder is locked while it changes, so two
    shards given the same task take turns; manifests make a re-run skip finished tasks.

    Raises:
        DestinationError: *settings.dest* is not a writable directory.
        ConfigurationError: The settings are invalid.
    """

    async def collect() -> list[TaskDownload]:
        async with open_shard(settings, uuids) as results:
            return [result async for result in results]

    return run_loop(collect)


def run_loop(main: Callable[[], Awaitable[T]]) -> T:
    """Run *main* in a new event loop: asyncio's, on uvloop when it is installed."""
    # uvloop (the cli extra) moves the same bytes with ~15% less CPU, and CPU bounds a shard.
    options = {"use_uvloop": True} if importlib.util.find_spec("uvloop") else {}
    return anyio.run(main, backend="asyncio", backend_options=options)

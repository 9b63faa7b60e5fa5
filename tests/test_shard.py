"""The shard unit: settings that pickle, and a plain function any process pool can run."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

import pytest
import trustme

import rodin_async
from rodin_async import RetryPolicy
from rodin_async._shard import ClientSettings, ShardSettings, download_shard
from rodin_async.testing import FakeRodin

FILES = {"base_basic_pbr.glb": 40_000, "preview.webp": 3_000}


def test_settings_pickle_and_hide_the_key(tmp_path: Path) -> None:
    """Settings survive a pickle round trip (how they reach a worker); the repr hides the key."""
    client = ClientSettings(
        "sk-secret-key", base_url="http://127.0.0.1:9/api", retry=RetryPolicy(attempts=2)
    )
    settings = ShardSettings(client, tmp_path, overwrite=True, check="sha256")
    copy = pickle.loads(pickle.dumps(settings))  # noqa: S301  (bytes we just made)
    assert copy == settings
    assert "sk-secret-key" not in repr(settings)


@pytest.mark.parametrize(("total", "count"), [(8, 2), (9, 2), (16, 3), (3, 3), (2, 4)])
def test_shares_split_the_limits(total: int, count: int) -> None:
    """Each shard gets a whole part of -j and of the API limit, at least one, adding up."""
    client = ClientSettings("k", max_concurrency=total, max_api_concurrency=total)
    shares = [client.share(i, count) for i in range(count)]
    assert all(s.max_concurrency >= 1 and s.max_api_concurrency >= 1 for s in shares)
    assert sum(s.max_concurrency for s in shares) == max(total, count)
    assert max(s.max_concurrency for s in shares) - min(s.max_concurrency for s in shares) <= 1


def test_a_bad_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    """A CA bundle that holds no certificate fails when the client is built, saying why."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    with pytest.raises(rodin_async.ConfigurationError, match="CA bundle"):
        ClientSettings("k", ca_bundle=str(bundle)).open()


def test_a_ca_bundle_is_trusted_besides_the_defaults(tmp_path: Path) -> None:
    """The bundle's CA is added to the default ones, not put in their place."""
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    rodin = ClientSettings("k", ca_bundle=str(bundle)).open()
    assert rodin.base_url.startswith("https://")  # built; closed without being opened


def test_download_shard_runs_in_any_process_pool(tmp_path: Path) -> None:
    """`download_shard` runs in spawned processes (as under Dask or Ray): exact files back."""
    with FakeRodin(api_key="shard-key") as server:
        uuids = [server.add_task(FILES) for _ in range(4)]
        settings = ShardSettings(
            ClientSettings(server.api_key, base_url=server.base_url, max_concurrency=2), tmp_path
        )
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            batches = list(pool.map(download_shard, repeat(settings), [uuids[:2], uuids[2:]]))
        again = download_shard(settings, uuids[:1])  # in this process, a finished task
    results = [result for batch in batches for result in batch]
    assert sorted(r.task_uuid for r in results) == sorted(uuids)
    for result in results:
        assert result.ok, result.error
        for file in result.files:
            assert file.path.read_bytes() == server.content(result.task_uuid, file.name)
    assert again[0].skipped  # the manifest makes a re-run (or a second shard) skip it

"""Defect 3: bodies S3 stores gzip-encoded (`Content-Encoding: gzip`, sent even to identity).

S3 serves the stored (compressed) bytes and counts Content-Length and ranges in them. The
file a user wants is what they decode to; a `.part` of decoded bytes can't be resumed with
a Range into the compressed object, a broken body must not poison later runs, and a body
that decodes to far more than it weighs must not be held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from rodin_async import RetryPolicy, TaskDownloadError
from rodin_async.testing import FakeRodin

from .checks import assert_manifest_matches_disk, client, stray_parts
from .servers import Bucket, unique

pytestmark = pytest.mark.anyio
# ~3 MB of text that gzips to about half: a cut in the middle of the compressed body.
TEXT = b"".join(
    b"%08d %s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest().encode()) for i in range(40_000)
)
GIB = 1 << 30
ZEROS_GIB_SHA256 = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"


@pytest.fixture
def gzipped(fake: FakeRodin, bucket: Bucket) -> tuple[str, str]:
    """(task, url): one object stored with ContentEncoding=gzip."""
    url = bucket.put(unique("gz-"), gzip.compress(TEXT), ContentEncoding="gzip")
    return fake.add_remote_task({"mesh.obj": url}), url


async def test_gzip_cut_mid_transfer_is_retried_to_the_decoded_file(
    fake: FakeRodin, bucket: Bucket, gzipped: tuple[str, str], tmp_path: Path
) -> None:
    """Defect 3: a gzip body cut mid-way, retried in the same run, ends as the decoded file."""
    task, url = gzipped
    bucket.front.cut(url, after=len(gzip.compress(TEXT)) // 2)
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert result.files[0].path.read_bytes() == TEXT
    assert stray_parts(result.directory) == []
    assert_manifest_matches_disk(result.directory)


async def test_gzip_cut_then_rerun_leaves_no_stale_part(
    fake: FakeRodin, bucket: Bucket, gzipped: tuple[str, str], tmp_path: Path
) -> None:
    """Defect 3: after a cut gzip run fails, a re-run gets the decoded file and no `.part`."""
    task, url = gzipped
    bucket.front.cut(url, after=len(gzip.compress(TEXT)) // 2)
    async with client(fake, retry=RetryPolicy(attempts=1)) as rodin:
        with pytest.raises(TaskDownloadError):
            await rodin.download(task, tmp_path)
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert result.files[0].path.read_bytes() == TEXT
    assert stray_parts(result.directory) == []


async def test_corrupt_gzip_body_discards_the_part_and_starts_over(
    fake: FakeRodin, bucket: Bucket, gzipped: tuple[str, str], tmp_path: Path
) -> None:
    """Defect 3: a body that fails to decode is thrown away and fetched again from byte 0."""
    task, url = gzipped
    bucket.front.corrupt(url, at=len(gzip.compress(TEXT)) // 2)
    async with client(fake) as rodin:
        result = await rodin.download(task, tmp_path)
    assert result.files[0].path.read_bytes() == TEXT
    assert stray_parts(result.directory) == []
    exchanges = bucket.front.exchanges(url)
    assert len(exchanges) == 2 and "range" not in exchanges[1].headers


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of *size* zero bytes (a multiple of 1 MiB), ~1000 times smaller.

    Each MiB is compressed after a full flush, so every MiB but the first compresses to
    the same bytes; they are repeated instead of compressing 1 GiB (4 s).
    """
    zeros, count = bytes(1 << 20), size >> 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    other = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    final_empty_block = b"\x03\x00"
    return first + other * (count - 1) + final_empty_block + struct.pack("<II", crc, size)


def test_gzip_bomb_streams_in_bounded_memory(
    fake: FakeRodin, bucket: Bucket, tmp_path: Path
) -> None:
    """Defect 3: 1 MiB of gzip decoding to 1 GiB is saved whole, with peak RSS < 150 MiB."""
    bomb = gzip_bomb(GIB)
    assert len(bomb) < 1_100_000
    url = bucket.put(unique("bomb-"), bomb, ContentEncoding="gzip")
    task = fake.add_remote_task({"zeros.bin": url})
    script = textwrap.dedent(
        f"""
        import anyio, httpx, rodin_async
        async def main():
            async with rodin_async.AsyncRodin(
                {fake.api_key!r}, base_url={fake.base_url!r}, timeout=httpx.Timeout(30)
            ) as rodin:
                result = await rodin.download({task!r}, {str(tmp_path)!r})
            print(result.files[0].size, result.files[0].sha256)
        anyio.run(main)
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(status["VmHWM"].split()[0])
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=50
        )
        assert done.returncode == 0, done.stderr[-2000:]
        size, digest, peak_kib = done.stdout.split()
        assert (int(size), digest) == (GIB, ZEROS_GIB_SHA256)
        assert (tmp_path / task / "zeros.bin").stat().st_size == GIB
        assert int(peak_kib) < 150 * 1024, f"peak RSS {int(peak_kib) / 1024:.0f} MiB"
    finally:
        (tmp_path / task / "zeros.bin").unlink(missing_ok=True)  # 1 GiB: don't keep it

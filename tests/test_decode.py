"""Decoding Content-Encoding ourselves, in bounded pieces (issue 9, defect 3)."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

from rodin_async._decode import PIECE, DecodeError, Decoder

DATA = os.urandom(300_000) + b"\0" * 3_000_000


def decode(codings: tuple[str, ...], body: bytes, step: int = 65_536) -> list[bytes]:
    decoder = Decoder(codings)
    pieces = []
    for i in range(0, len(body), step):
        pieces += decoder.feed(body[i : i + step])
    return pieces + list(decoder.finish())


@pytest.mark.parametrize(
    ("codings", "body"),
    [
        (("gzip",), gzip.compress(DATA)),
        (("x-gzip",), gzip.compress(DATA)),
        (("deflate",), zlib.compress(DATA)),
        (("deflate",), zlib.compress(DATA)[2:-4]),  # raw deflate, no zlib wrapper
        (("gzip",), gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])),  # two members
        (("gzip", "gzip"), gzip.compress(gzip.compress(DATA))),
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate", "gzip-members", "gzip-twice"],
)
def test_decoded_bodies_round_trip(codings: tuple[str, ...], body: bytes) -> None:
    """Every supported coding, whatever the read sizes, gives back the file."""
    assert b"".join(decode(codings, body)) == DATA
    assert b"".join(decode(codings, body, step=1_000_003)) == DATA


def test_a_compression_bomb_comes_out_in_bounded_pieces() -> None:
    """1 MiB of gzip inflating to 1 GiB never yields more than PIECE bytes at once."""
    bomb = gzip.compress(b"\0" * (1 << 30), compresslevel=9)
    decoder = Decoder(("gzip",))
    total = biggest = 0
    for piece in decoder.feed(bomb):  # one read of the whole compressed body
        total += len(piece)
        biggest = max(biggest, len(piece))
    assert list(decoder.finish()) == []
    assert total == 1 << 30 and biggest <= PIECE


def test_a_body_cut_short_is_a_decode_error() -> None:
    """A gzip body that ends before its end marker is incomplete, not a file."""
    with pytest.raises(DecodeError, match="ended before"):
        decode(("gzip",), gzip.compress(DATA)[:5000])


@pytest.mark.parametrize("codings", [("gzip",), ("deflate",)])
def test_garbage_is_a_decode_error(codings: tuple[str, ...]) -> None:
    """Bytes that aren't the announced coding fail the attempt."""
    with pytest.raises(DecodeError):
        decode(codings, b"this is not compressed at all" * 100)

"""Undo a body's ``Content-Encoding`` (gzip, deflate) with bounded memory.

A host may compress a file although we asked for ``identity`` (S3 objects stored with
``ContentEncoding=gzip`` are always sent that way). httpx's decoders inflate a whole read
at once, so one 1 MiB read of a compression bomb can become gigabytes in memory; these
hand back at most `PIECE` bytes at a time, to be written before the next piece is made.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

PIECE = 1 << 20


class DecodeError(Exception):
    """The body is not valid for its ``Content-Encoding``, or it ended too soon."""


class _Inflater:
    """One coding: gzip (several members allowed) or deflate (zlib-wrapped or raw)."""

    def __init__(self, coding: str) -> None:
        self._gzip = coding in ("gzip", "x-gzip")
        self._first = True
        self._inflater = self._new()

    def _new(self) -> zlib._Decompress:
        return zlib.decompressobj(zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decoded pieces of *data*, each at most `PIECE` bytes."""
        while True:
            try:
                piece = self._inflater.decompress(data, PIECE)
            except zlib.error as exc:
                if self._gzip or not self._first:
                    raise DecodeError(f"the body is not valid {self._name}: {exc}") from None
                # Some servers send raw deflate without the zlib wrapper (as httpx allows).
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                self._first = False
                continue
            self._first = False
            data = self._inflater.unconsumed_tail
            if self._inflater.eof and self._inflater.unused_data:
                data = self._next_member()
            if piece:
                yield piece
            # A full piece may leave output inside zlib even when all input is taken.
            if not data and len(piece) < PIECE:
                return

    def _next_member(self) -> bytes:
        rest = self._inflater.unused_data
        if not self._gzip:
            raise DecodeError("the deflate body has data after its end")
        self._inflater = self._new()
        return rest

    def finish(self) -> Iterator[bytes]:
        """Check that the stream was complete when the body ended (nothing is left)."""
        yield from ()
        if not self._inflater.eof:
            raise DecodeError(f"the {self._name} body ended before its end marker")

    @property
    def _name(self) -> str:
        return "gzip" if self._gzip else "deflate"


class Decoder:
    """Undoes *codings* (as listed in ``Content-Encoding``, first applied first)."""

    def __init__(self, codings: Sequence[str]) -> None:
        self._stages = [_Inflater(c) for c in reversed(codings)]

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of the next part of the body, in bounded pieces."""
        return self._through(0, [data])

    def finish(self) -> Iterator[bytes]:
        """The last decoded bytes; raises `DecodeError` if the body was incomplete."""
        for i, stage in enumerate(self._stages):
            yield from self._through(i + 1, stage.finish())

    def _through(self, start: int, pieces: Iterator[bytes] | list[bytes]) -> Iterator[bytes]:
        if start == len(self._stages):
            yield from pieces
            return
        stage = self._stages[start]
        for piece in pieces:
            yield from self._through(start + 1, stage.feed(piece))

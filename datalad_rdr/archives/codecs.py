"""Decompressors for the members of ZIP and 7z archives, fed in pieces and bounded.

Each decoder takes the member's packed bytes chunk by chunk (``pieces``) and yields its
content at most :data:`PIECE` bytes at a time, so a caller can stop at the member's
recorded size instead of inflating a damaged or hostile stream into memory whole;
``end`` returns the last bytes and whether the stream ended where it should.
ZIP methods: deflate (8), Deflate64 (9: Windows Explorer for large files, via inflate64,
a dependency of py7zr), bzip2 (12), LZMA (14); 7z coders: LZMA, LZMA2, deflate, and the
x86 branch filter in front of LZMA(2).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Iterator

PIECE = 1024 * 1024
# Deflate64's inflater has no output bound: smaller inputs keep its output small.
_DEFLATE64_INPUT = 64 * 1024


def lzma1_filter(props: bytes) -> dict:
    """The liblzma filter of 5 bytes of LZMA properties (lc/lp/pb byte, dictionary size)."""
    if len(props) < 5:
        raise ValueError(f"LZMA properties are {len(props)} bytes, not 5")
    lc, rest = props[0] % 9, props[0] // 9
    return {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": rest % 5, "pb": rest // 5,
            "dict_size": struct.unpack_from("<I", props, 1)[0]}


def lzma2_filter(props: bytes) -> dict:
    """The liblzma filter of LZMA2's one property byte (the dictionary size)."""
    p = props[0] if props else 0
    dict_size = 0xFFFFFFFF if p >= 40 else (2 | (p & 1)) << (p // 2 + 11)
    return {"id": lzma.FILTER_LZMA2, "dict_size": dict_size}


class Decoder:
    """Deflate (raw zlib), bzip2 or raw LZMA: stdlib decompressors with an output bound."""

    def __init__(self, decompressor):
        self.d = decompressor
        self.after_end = b""

    def pieces(self, data: bytes) -> Iterator[bytes]:
        d = self.d
        if isinstance(d, (lzma.LZMADecompressor, bz2.BZ2Decompressor)):
            if d.eof:  # bytes after the end: end() reports them
                self.after_end += data
                return
            yield d.decompress(data, PIECE)
            while not d.needs_input and not d.eof:
                yield d.decompress(b"", PIECE)
            return
        yield d.decompress(data, PIECE)
        while d.unconsumed_tail:
            yield d.decompress(d.unconsumed_tail, PIECE)

    def end(self) -> tuple[bytes, bool]:
        d = self.d
        if isinstance(d, (lzma.LZMADecompressor, bz2.BZ2Decompressor)):
            return b"", d.eof and not (d.unused_data or self.after_end)
        return d.flush(), d.eof and not d.unused_data


class Deflate64:
    def __init__(self):
        import inflate64

        self.d = inflate64.Inflater()

    def pieces(self, data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), _DEFLATE64_INPUT):
            yield self.d.inflate(data[i:i + _DEFLATE64_INPUT])

    def end(self) -> tuple[bytes, bool]:
        return b"", self.d.eof


class ZipLzma:
    """ZIP's LZMA (APPNOTE 5.8): a 4-byte header and 5 property bytes, then raw LZMA."""

    def __init__(self, end_marker: bool):
        self.head = b""
        self.inner: Decoder | None = None
        self.end_marker = end_marker

    def pieces(self, data: bytes) -> Iterator[bytes]:
        if self.inner is None:
            self.head += data
            if len(self.head) < 4:
                return
            props_len = struct.unpack_from("<H", self.head, 2)[0]
            if len(self.head) < 4 + props_len:
                return
            props, data = self.head[4:4 + props_len], self.head[4 + props_len:]
            self.inner = Decoder(lzma.LZMADecompressor(
                lzma.FORMAT_RAW, filters=[lzma1_filter(props)]))
        yield from self.inner.pieces(data)

    def end(self) -> tuple[bytes, bool]:
        if self.inner is None:
            return b"", False
        tail, ended = self.inner.end()
        # Without an end marker the stream just stops: its size and CRC-32 say if it is whole.
        return tail, ended or not self.end_marker


def zip_decoder(method: int, flags: int):
    """The decoder of a ZIP method; None for stored. ``method`` must be in ZIP_METHODS."""
    if method == 8:
        return Decoder(zlib.decompressobj(-15))
    if method == 9:
        return Deflate64()
    if method == 12:
        return Decoder(bz2.BZ2Decompressor())
    if method == 14:
        return ZipLzma(end_marker=bool(flags & 0x0002))
    return None


#: ZIP methods read here: stored, deflated, Deflate64, bzip2, LZMA.
ZIP_METHODS = frozenset({0, 8, 9, 12, 14})


def sevenzip_decoder(coder: str, props: bytes):
    """The decoder of a 7z coder chain named like "lzma2" or "x86+lzma"; None for copy."""
    *branch, last = coder.split("+")
    if last == "copy":
        return None
    if last == "deflate":
        return Decoder(zlib.decompressobj(-15))
    compressor = lzma2_filter(props) if last == "lzma2" else lzma1_filter(props)
    filters = [{"id": lzma.FILTER_X86}] * len(branch) + [compressor]
    return Decoder(lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters))

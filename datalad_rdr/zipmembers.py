"""Members in, laid-out members out: what the ZIP stream reads, and what it checks.

A :class:`Member` says where a file's bytes come from (``open``) and what they must be
(size, :class:`Checksum`); :func:`datalad_rdr.zipstream.layout_zip` turns it into a
:class:`LaidOutMember` (method, CRC-32, offsets); every pass that reads the bytes again
checks them (:func:`read_chunks`, :func:`check_read`) and raises :class:`MemberError`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple, Protocol

from .zipformat import RAW_DEFLATE

#: Size of the reads of a member streamed in chunks, and of most chunks yielded: 128 KiB,
#: coreutils' choice (``ioblksize.h``). A buffer this small is still in the CPU's cache when
#: its bytes are hashed and sent; measured here, a pass over 4 GB of cached files costs
#: 0.5 s of kernel copy in 128 KiB reads, 2.1 s in 4 MiB reads (benchmarks/README.md).
CHUNK_SIZE = 2**17
#: The layout's buffer for a member read whole, in one read: a kept one, or one smaller
#: than this that is compressed (in one call: compression, not the copy, is its cost).
READ_SIZE = 4 * 2**20
# Small pieces (headers, small members) are joined into chunks of at least this.
JOIN_SIZE = CHUNK_SIZE


class HashLike(Protocol):
    """What `hashlib` objects offer."""

    def update(self, data: bytes, /) -> None: ...

    def copy(self) -> HashLike: ...

    def hexdigest(self) -> str: ...


class Checksum(NamedTuple):
    """The verifier of a member: its content must hash to ``hexdigest``.

    ``new`` makes a hash object (`hashlib` style: ``update``, ``copy``,
    ``hexdigest``), e.g. ``Checksum(hashlib.sha256, key_hash)`` for a
    git-annex SHA256E key. ``copy`` lets a check continue from one byte range
    into the next.
    """

    new: Callable[[], HashLike]
    hexdigest: str


@dataclass(frozen=True, slots=True)  # one a file of the bundle: no dict each
class Member:
    """A file to put into the ZIP.

    ``open`` returns a binary file object positioned at 0 (it is called once
    per pass, and the file must be seekable). ``crc32``, if known from an
    earlier layout, spares reading a large STORED member while laying out; the
    stream still checks it (a small member is read, kept and checked against it
    while laid out).
    """

    arcname: str
    size: int
    open: Callable[[], BinaryIO]
    checksum: Checksum | None = None
    crc32: int | None = None


@dataclass(frozen=True, slots=True)
class LaidOutMember:
    """Where a member is in the ZIP and how it is stored there."""

    arcname: str
    size: int
    method: int
    crc32: int
    compressed_size: int
    header_offset: int
    data_offset: int
    member: Member = field(repr=False, compare=False)

    @property
    def data_end(self) -> int:
        return self.data_offset + self.compressed_size


class MemberError(Exception):
    """A member's content is not what was laid out or declared."""

    def __init__(self, arcname: str, problem: str):
        super().__init__(f"bundle member {arcname!r}: {problem}")
        self.arcname = arcname


#: zlib level; 1 is 5-8 times faster than 6 on text, for 10-15 % more bytes. The layout
#: and every range compress with it: the same zlib, level and input give the same bytes.
DEFLATE_LEVEL = 1


def deflater():
    """A raw DEFLATE compressor (method 8) at `DEFLATE_LEVEL`."""
    return zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, RAW_DEFLATE)


def deflate(data) -> bytes:
    """``data`` compressed in one call: the same bytes as `deflater` fed it in any chunks
    (zlib's output does not depend on where its input was cut; pinned in the tests)."""
    return zlib.compress(data, DEFLATE_LEVEL, RAW_DEFLATE)


def read_chunks(f: BinaryIO, e: LaidOutMember, lo: int, hi: int) -> Iterator[bytes]:
    """Chunks of the member's bytes [lo, hi), the file being at ``lo``."""
    pos = lo
    while pos < hi:
        chunk = f.read(min(CHUNK_SIZE, hi - pos))
        if not chunk:
            raise MemberError(e.arcname, smaller(pos, e.size))
        pos += len(chunk)
        yield chunk


def read_whole(f: BinaryIO, arcname: str, size: int, buffer: memoryview) -> memoryview:
    """All bytes of a member that fits ``buffer`` with a byte to spare (the spare byte
    tells a file that grew), read into it: one read where a loop of chunks would take two
    and a compressor of its own."""
    want, n = size + 1, 0
    while n < want and (got := f.readinto(buffer[n:want])):
        n += got
    if n > size:
        raise MemberError(arcname, larger(size))
    if n < size:
        raise MemberError(arcname, smaller(n, size))
    return buffer[:size]


def check_read(e: LaidOutMember, f: BinaryIO, crc: int, hasher: HashLike | None
               ) -> None:
    """Check a member whose bytes have all been read from ``f``."""
    if f.read(1):
        raise MemberError(e.arcname, larger(e.size))
    check_sums(e, crc, hasher)


def check_sums(e: LaidOutMember, crc: int, hasher: HashLike | None) -> None:
    """Check the CRC-32 and checksum of all of a member's bytes."""
    if crc != e.crc32:
        raise MemberError(
            e.arcname, f"CRC32 {crc:08x} differs from the {e.crc32:08x} laid out "
            "(changed since laid out?)",
        )
    check_checksum(e.member, hasher)


def check_checksum(m: Member, hasher: HashLike | None) -> None:
    """Raise MemberError if ``hasher`` (fed all of the member's bytes) is not its key's."""
    expected = m.checksum
    if hasher and hasher.hexdigest() != expected.hexdigest.lower():
        name = getattr(hasher, "name", "checksum")
        raise MemberError(
            m.arcname, f"content does not match its {name} {expected.hexdigest} "
            f"(got {hasher.hexdigest()})",
        )


def larger(size: int) -> str:
    return f"file is larger than the {size} bytes declared (changed since listed?)"


def smaller(nread: int, size: int) -> str:
    return (f"file has {nread} bytes, fewer than the {size} declared "
            "(changed since listed?)")

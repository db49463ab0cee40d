"""The bytes of a laid-out ZIP: any range, in any order, each member checked as it goes.

:class:`ZipLayout` knows every member's place (from
:func:`datalad_rdr.zipstream.layout_zip`), and so the offset of every header, of the
central directory and of the end records; :mod:`datalad_rdr.zipformat` packs the headers,
:mod:`datalad_rdr.zipmembers` reads the members' bytes again and checks them. How ranges
hand on the running CRC-32, checksum and MD5: :mod:`datalad_rdr.zipstream` ("Byte ranges").
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from zipfile import ZIP_STORED

from isal import isal_zlib

from . import zipformat as zf
from .zipmembers import (
    CHUNK_SIZE,
    JOIN_SIZE,
    READ_SIZE,
    HashLike,
    LaidOutMember,
    MemberError,
    check_read,
    check_sums,
    deflate,
    deflater,
    larger,
    read_chunks,
    read_whole,
    smaller,
)


class Kept:
    """Small members' ZIP data kept from the layout (:mod:`datalad_rdr.zipstream`, "Kept
    members"): one buffer, not an object a member, and where each member's data starts in
    it (-1: not kept, read again)."""

    __slots__ = ("data", "starts", "view")

    def __init__(self):
        self.data = bytearray()
        self.starts = array("q")
        self.view: memoryview | None = None

    def add(self, data: memoryview | None) -> None:
        """The next member's data (copied), or None for a member read again."""
        if data is None:
            self.starts.append(-1)
        else:
            self.starts.append(len(self.data))
            self.data += data

    def done(self) -> Kept:
        # read-only from here: parts in other threads take slices of it
        self.view = memoryview(self.data).toreadonly()
        return self

    def of(self, index: int, size: int) -> memoryview | None:
        start = self.starts[index]
        return None if start < 0 else self.view[start:start + size]


@dataclass
class _Carry:
    """What is known at an offset where a range ended: the running MD5 of the
    ZIP up to there (None if unknown) and, if the offset is inside the data of
    STORED member number ``member``, that member's running CRC32 and checksum."""

    md5: HashLike | None = None
    member: int = -1
    crc: int = 0
    check: HashLike | None = None

    def copy(self) -> _Carry:
        return _Carry(
            self.md5.copy() if self.md5 else None, self.member, self.crc,
            self.check.copy() if self.check else None,
        )


def _local_header(e: LaidOutMember, dos: tuple[int, int]) -> bytes:
    return zf.write_local_header(e.arcname.encode("utf-8"), e.method, e.crc32, e.size,
                                 e.compressed_size, e.header_offset, dos)


def _central_header(e: LaidOutMember, dos: tuple[int, int]) -> bytes:
    return zf.write_central_header(e.arcname.encode("utf-8"), e.method, e.crc32, e.size,
                                   e.compressed_size, e.header_offset, dos)


class ZipLayout:
    """The exact layout of a ZIP: every member's place, and the total size.

    ``entries`` are in ZIP order (sorted by name); ``size`` is the ZIP's
    length in bytes. Make one with `layout_zip`.
    """

    #: Carries kept for ranges that may follow; a retry needs the latest one.
    KEEP_CARRIES = 8

    def __init__(self, entries: list[LaidOutMember], dos: tuple[int, int],
                 md5: bool = True, kept: Kept | None = None):
        self.entries: tuple[LaidOutMember, ...] = tuple(entries)
        if kept is None:
            kept = Kept()
            for _ in self.entries:
                kept.add(None)
        self._kept = kept.done()
        self._dos = dos
        # arrays, not lists of ints: 5 MB less at 100,000 members
        self._data_ends = array("q", (e.data_end for e in self.entries))
        offset = self.entries[-1].data_end if self.entries else 0
        self.central_directory_offset = offset
        self._central_ends = array("q")
        for e in self.entries:
            offset += zf.central_header_length(e.arcname.encode("utf-8"), e.size,
                                               e.compressed_size, e.header_offset)
            self._central_ends.append(offset)
        self._end = zf.write_end_records(
            len(self.entries), self.central_directory_offset,
            offset - self.central_directory_offset,
        )
        self._end_offset = offset
        self.size: int = offset + len(self._end)
        self._carries: dict[int, _Carry] = {}
        self._hash_md5 = md5
        self._md5: str | None = None

    @property
    def md5(self) -> str | None:
        """Hex MD5 of the ZIP, once it was produced from 0 to the end (else None)."""
        return self._md5

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of the ZIP from ``start`` to ``end`` (excluded).

        Chunks are `bytes` of about `CHUNK_SIZE` (more where a kept member is joined).
        Every member whose last byte is in the range is checked (size, CRC32, checksum)
        before that byte is yielded; `MemberError` names the first that fails.
        """
        end = self.size if end is None else end
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"range [{start}, {end}) not within [0, {self.size})")
        return self._iter_range(start, end)

    def iter_raw(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of [start, end) like `iter_range`, but check nothing.

        For a consumer that checks the whole ZIP in another pass (the uploader's parts in
        parallel, gated on that pass): no CRC32, no checksum, no MD5, no state shared with
        other ranges, so several raw ranges may run at once in threads.
        """
        end = self.size if end is None else end
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"range [{start}, {end}) not within [0, {self.size})")
        return self._iter_raw(start, end)

    def _iter_raw(self, start: int, end: int) -> Iterator[bytes]:
        pending: list[bytes | memoryview] = []
        pending_size = 0
        for piece in self._pieces(start, end, _Carry(), _Carry(), check=False):
            if pending_size >= JOIN_SIZE:
                yield _join(pending)
                pending, pending_size = [], 0
            pending.append(piece)
            pending_size += len(piece)
        if pending:
            yield _join(pending)

    def _iter_range(self, start: int, end: int) -> Iterator[bytes]:
        resume = self._carries.get(start)
        resume = resume.copy() if resume else _Carry()
        if start == 0 and self._hash_md5:
            resume.md5 = hashlib.md5()
        carry = _Carry(md5=resume.md5)
        md5 = carry.md5  # fed the joined chunks: one call a chunk, not two a small member
        pending: list[bytes | memoryview] = []
        pending_size = 0
        for piece in self._pieces(start, end, resume, carry):
            # Hold back one piece, so the carry is saved before the last one
            # goes out: a consumer may never ask for more after it.
            if pending_size >= JOIN_SIZE:
                chunk = _join(pending)
                if md5 is not None:
                    md5.update(chunk)
                yield chunk
                pending, pending_size = [], 0
            pending.append(piece)
            pending_size += len(piece)
        last = _join(pending) if pending else b""
        if md5 is not None:
            md5.update(last)
        self._keep(end, carry)
        if last:
            yield last

    def _keep(self, offset: int, carry: _Carry) -> None:
        if offset == self.size and carry.md5 is not None:
            self._md5 = carry.md5.hexdigest()
        self._carries.pop(offset, None)
        self._carries[offset] = carry
        while len(self._carries) > self.KEEP_CARRIES:
            del self._carries[next(iter(self._carries))]

    def _pieces(self, start: int, end: int, resume: _Carry, carry: _Carry,
                check: bool = True):
        """Yield the bytes of [start, end) as pieces; set ``carry`` for ``end``."""
        for index in range(bisect_right(self._data_ends, start), len(self.entries)):
            e = self.entries[index]
            if e.header_offset >= end:
                break
            header = _local_header(e, self._dos)
            yield from _overlap(header, e.header_offset, start, end)
            # An empty member is checked with its header's last byte.
            if e.data_offset > end or (e.data_offset == end and e.size):
                break
            lo = max(start, e.data_offset) - e.data_offset
            hi = min(end, e.data_end) - e.data_offset
            kept = self._kept.of(index, e.compressed_size)
            if kept is not None:  # checked while laid out: these very bytes
                if lo < hi:
                    yield kept[lo:hi]
            elif not check:
                yield from self._unchecked(e, lo, hi)
            elif e.method == ZIP_STORED:
                yield from self._stored(index, lo, hi, resume, carry)
            else:
                yield from self._deflated(e, lo, hi)
        if end <= self.central_directory_offset:
            return
        offset = self.central_directory_offset
        first = bisect_right(self._central_ends, start)
        if first:
            offset = self._central_ends[first - 1]
        for e in self.entries[first:]:
            if offset >= end:
                return
            header = _central_header(e, self._dos)
            yield from _overlap(header, offset, start, end)
            offset += len(header)
        yield from _overlap(self._end, self._end_offset, start, end)

    def _stored(self, index: int, lo: int, hi: int, resume: _Carry, carry: _Carry):
        e = self.entries[index]
        check = e.member.checksum
        with e.member.open() as f:
            if lo == 0:
                crc, hasher = 0, check.new() if check else None
            elif resume.member == index:
                crc, hasher = resume.crc, resume.check
                f.seek(lo)
            else:
                # No range ended here: rebuild the running checks from the start.
                crc, hasher = 0, check.new() if check else None
                for chunk in read_chunks(f, e, 0, lo):
                    crc = isal_zlib.crc32(chunk, crc)
                    if hasher:
                        hasher.update(chunk)
            pos = lo
            for chunk in read_chunks(f, e, lo, hi):
                crc = isal_zlib.crc32(chunk, crc)
                if hasher:
                    hasher.update(chunk)
                pos += len(chunk)
                if pos == e.size:
                    check_read(e, f, crc, hasher)
                yield chunk
            if e.size == 0:
                check_read(e, f, crc, hasher)
        if hi < e.size:
            carry.member, carry.crc, carry.check = index, crc, hasher

    def _unchecked(self, e: LaidOutMember, lo: int, hi: int):
        if lo >= hi:
            return
        with e.member.open() as f:
            if e.method == ZIP_STORED:
                f.seek(lo)
                yield from read_chunks(f, e, lo, hi)
                return
            if e.size < READ_SIZE:
                data = read_whole(f, e.arcname, e.size, memoryview(bytearray(e.size + 1)))
                yield from _overlap(deflate(data), 0, lo, hi)
                return
            deflate_ = deflater()
            out = 0
            while out < hi:
                chunk = f.read(CHUNK_SIZE)
                compressed = deflate_.compress(chunk) if chunk else deflate_.flush()
                yield from _overlap(compressed, out, lo, hi)
                out += len(compressed)
                if not chunk:
                    break

    def _deflated(self, e: LaidOutMember, lo: int, hi: int):
        check = e.member.checksum
        hasher = check.new() if check else None
        if e.size < READ_SIZE:
            yield from self._deflated_whole(e, lo, hi, hasher)
            return
        deflate_ = deflater()
        crc = nread = out = 0
        with e.member.open() as f:
            while chunk := f.read(CHUNK_SIZE):
                nread += len(chunk)
                if nread > e.size:
                    raise MemberError(e.arcname, larger(e.size))
                crc = isal_zlib.crc32(chunk, crc)
                if hasher:
                    hasher.update(chunk)
                compressed = deflate_.compress(chunk)
                yield from _overlap(compressed, out, lo, hi)
                out += len(compressed)
                if out >= hi and hi < e.compressed_size:
                    return  # the range ends inside this member
            if nread < e.size:
                raise MemberError(e.arcname, smaller(nread, e.size))
            # flush() always returns the final block: these bytes wait for the checks.
            compressed = deflate_.flush()
            _check_compressed(e, out + len(compressed))
            check_read(e, f, crc, hasher)
            yield from _overlap(compressed, out, lo, hi)

    def _deflated_whole(self, e: LaidOutMember, lo: int, hi: int, hasher):
        """A member read again that fits one read: read and compressed in one call each."""
        with e.member.open() as f:
            data = read_whole(f, e.arcname, e.size, memoryview(bytearray(e.size + 1)))
            if hasher:
                hasher.update(data)
        compressed = deflate(data)
        _check_compressed(e, len(compressed))
        check_sums(e, isal_zlib.crc32(data), hasher)
        yield from _overlap(compressed, 0, lo, hi)


def _check_compressed(e: LaidOutMember, size: int) -> None:
    if size != e.compressed_size:
        raise MemberError(e.arcname, f"compressed to {size} bytes, not the "
                                     f"{e.compressed_size} laid out (changed since laid out?)")


def _overlap(data: bytes, offset: int, start: int, end: int):
    """Yield the part of ``data`` (at ``offset`` in the ZIP) inside [start, end)."""
    lo, hi = max(start - offset, 0), min(end - offset, len(data))
    if lo <= 0 and hi >= len(data):
        if data:
            yield data
    elif lo < hi:
        yield memoryview(data)[lo:hi]


def _join(pieces: list[bytes | memoryview]) -> bytes:
    if len(pieces) == 1 and isinstance(pieces[0], bytes):
        return pieces[0]
    return b"".join(pieces)

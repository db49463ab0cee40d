"""One file read by byte ranges, every request counted; a seekable file object over it.

A :class:`Ranges` is what the archive readers need of a file on a server: its size and
a way to get bytes ``start..end`` (end exclusive) in one request. ``read`` returns them
at once; ``stream`` yields them in chunks as they arrive, for members too large to hold
in memory. Both count requests and bytes, which is how the tests and the benchmark show
that listing a ZIP reads its central directory and not the archive.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from functools import cached_property

CHUNK = 1024 * 1024


class ArchiveError(ValueError):
    """An archive cannot be read as asked; the message says why and what to do."""


class CorruptMember(ArchiveError):
    """A member's bytes are not what the archive's directory says (size, CRC-32)."""


class Unsupported(ArchiveError):
    """A member stored in a way this reader does not decode (method, encryption)."""


class Listing:
    """What the member lists of ZIP and 7z archives share: ``members`` in the archive's
    order, each with a ``name``, found by name with :meth:`get`; ``source`` is what they
    are read from."""

    def __iter__(self):
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    @cached_property
    def _by_name(self) -> dict:
        return {m.name: m for m in reversed(self.members)}  # the first of equal names

    def get(self, name: str):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.source.name} has no member {name!r}") from None


class Ranges:
    """A file of ``size`` bytes read by ranges, counting ``requests`` and ``bytes_read``.

    ``read(start, end) -> bytes`` fetches a range in one request; ``stream(start, end)``,
    if given, yields it in chunks (one request too). ``name`` appears in error messages.
    """

    disks = 1

    def __init__(self, size: int, read: Callable[[int, int], bytes] | None = None,
                 stream: Callable[[int, int], Iterator[bytes]] | None = None,
                 name: str = "archive"):
        if read is None and stream is None:
            raise TypeError("Ranges needs read or stream")
        self.size, self.name = size, name
        self._read, self._stream = read, stream
        self.requests = 0
        self.bytes_read = 0

    def _span(self, start: int, end: int) -> None:
        if not 0 <= start <= end <= self.size:
            raise ArchiveError(f"{self.name}: bytes {start}-{end} are outside its "
                               f"{self.size} bytes (the archive is cut short or damaged)")

    def read(self, start: int, end: int) -> bytes:
        self._span(start, end)
        if start == end:
            return b""
        if self._read is None:
            return b"".join(self.stream(start, end))
        self.requests += 1
        data = self._read(start, end)
        self.bytes_read += len(data)
        if len(data) != end - start:
            raise ArchiveError(f"{self.name}: asked for {end - start} bytes at {start}, "
                               f"got {len(data)}")
        return data

    def stream(self, start: int, end: int) -> Iterator[bytes]:
        self._span(start, end)
        if start == end:
            return
        if self._stream is None:
            yield self.read(start, end)
            return
        self.requests += 1
        got = 0
        for chunk in self._stream(start, end):
            got += len(chunk)
            self.bytes_read += len(chunk)
            yield chunk
        if got != end - start:
            raise ArchiveError(f"{self.name}: the connection ended after {got} of "
                               f"{end - start} bytes at {start}")

    def disk_offset(self, disk: int, offset: int) -> int:
        """The offset in this file of ``offset`` on ``disk`` (a ZIP's disk number)."""
        if disk:
            raise ArchiveError(f"{self.name} is the last part of a split ZIP (its "
                               f"directory starts on part {disk + 1}): open all its parts "
                               f"as volumes")
        return offset


def from_path(path: str | os.PathLike, chunk: int = CHUNK) -> Ranges:
    """A local file as :class:`Ranges` (tests, benchmarks, archives already downloaded)."""
    path = os.fspath(path)

    def read(start: int, end: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def stream(start: int, end: int) -> Iterator[bytes]:
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            while left:
                data = f.read(min(chunk, left))
                if not data:
                    return
                left -= len(data)
                yield data

    return Ranges(os.path.getsize(path), read, stream, name=os.path.basename(path))


def from_bundle_reader(reader, file_id: int, size: int, name: str) -> Ranges:
    """A file on RDR, read with :class:`datalad_rdr.remote.reader.BundleReader`."""

    def stream(start: int, end: int) -> Iterator[bytes]:
        body = reader.open(file_id, start, end - 1)
        try:
            yield from body.iter_content(CHUNK)
        finally:
            body.close()

    return Ranges(size, stream=stream, name=name)


class RangeFile(io.RawIOBase):
    """A read-only, seekable file object over ranges, for libraries that want one (py7zr).

    A read that misses the cache fetches at least ``readahead`` bytes in one request (near
    the end: the last ``readahead`` bytes) and keeps the last ``keep`` such windows, so a
    reader's many small reads of a header cost few requests.
    """

    def __init__(self, source, readahead: int = 65536, keep: int = 4):
        super().__init__()
        self.source, self.readahead, self.keep = source, readahead, keep
        self.pos = 0
        self._windows: list[tuple[int, bytes]] = []

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.source.size + offset}[whence]
        if self.pos < 0:
            raise ValueError("negative seek position")
        return self.pos

    def read(self, n: int = -1) -> bytes:
        size = self.source.size
        end = size if n is None or n < 0 else min(size, self.pos + n)
        out = []
        while self.pos < end:
            piece = self._cached(self.pos, end)
            if piece is None:
                first = self.pos
                if first >= size - self.readahead:
                    # Archive headers near the end are read back to front (7z: the header,
                    # then its packed stream before it): one request gets them all.
                    first = max(0, size - self.readahead)
                last = min(size, max(end, first + self.readahead))
                data = self.source.read(first, last)
                self._windows = [*self._windows[-(self.keep - 1):], (first, data)]
                piece = data[self.pos - first:end - first]
            out.append(piece)
            self.pos += len(piece)
        return b"".join(out)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _cached(self, start: int, end: int) -> bytes | None:
        for first, data in reversed(self._windows):
            if first <= start < first + len(data):
                return data[start - first:end - first]
        return None

    def close(self) -> None:
        self._windows.clear()
        super().close()


"""Split archives: several files on the server read as one.

Two ways of splitting are in use, and both are one byte stream cut into pieces:

7-Zip ``7z a -v20g data.zip ...`` (also ``.7z``)
    ``data.zip.001``, ``data.zip.002``, ... Every volume but the last has the size asked
    for; the archive inside knows nothing of the cut (its disk numbers are all 0), so
    offsets in its directory are offsets in the joined stream.
Info-ZIP ``zip -s 20g data.zip ...``
    ``data.z01``, ``data.z02``, ..., ``data.zip`` (the last part, with the directory).
    The ZIP knows the cut: every offset is relative to the start of its part ("disk"),
    and the disk numbers say which part. :meth:`Volumes.disk_offset` turns them into
    offsets in the joined stream.

:class:`Volumes` needs every volume's size up front (the server's file list has them), so
mapping an offset to a volume costs nothing; a range that crosses a boundary is one
request per volume it touches.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .ranges import ArchiveError, Ranges

_SEVEN_ZIP = re.compile(r"(?P<base>.+\.(?:zip|7z))\.(?P<n>\d{3,})", re.IGNORECASE)
_INFO_ZIP = re.compile(r"(?P<base>.+)\.z(?P<n>\d{2,})", re.IGNORECASE)


class Volumes:
    """Volumes (each a :class:`~datalad_rdr.archives.ranges.Ranges`) as one file."""

    def __init__(self, parts: Sequence[Ranges], name: str | None = None):
        if not parts:
            raise ArchiveError("no volumes given")
        self.parts = list(parts)
        self.name = name or self.parts[0].name
        self.starts = [0]
        for part in self.parts:
            self.starts.append(self.starts[-1] + part.size)
        self.size = self.starts[-1]

    @property
    def disks(self) -> int:
        return len(self.parts)

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.parts)

    @property
    def bytes_read(self) -> int:
        return sum(p.bytes_read for p in self.parts)

    def locate(self, offset: int) -> tuple[int, int]:
        """(volume index, offset in that volume) of a logical offset."""
        if not 0 <= offset < self.size:
            raise ArchiveError(f"{self.name}: offset {offset} is outside its {self.size} "
                               f"bytes")
        index = bisect_right(self.starts, offset) - 1
        return index, offset - self.starts[index]

    def _pieces(self, start: int, end: int) -> Iterator[tuple[Ranges, int, int]]:
        if not 0 <= start <= end <= self.size:
            raise ArchiveError(f"{self.name}: bytes {start}-{end} are outside its "
                               f"{self.size} bytes (a volume is missing or cut short?)")
        while start < end:
            index, offset = self.locate(start)
            part = self.parts[index]
            take = min(end - start, part.size - offset)
            yield part, offset, offset + take
            start += take

    def read(self, start: int, end: int) -> bytes:
        return b"".join(part.read(lo, hi) for part, lo, hi in self._pieces(start, end))

    def stream(self, start: int, end: int) -> Iterator[bytes]:
        for part, lo, hi in self._pieces(start, end):
            yield from part.stream(lo, hi)

    def disk_offset(self, disk: int, offset: int) -> int:
        if disk >= len(self.parts):
            raise ArchiveError(f"{self.name}: the ZIP refers to part {disk + 1} of a split "
                               f"archive, and {len(self.parts)} volumes were given")
        return self.starts[disk] + offset


@dataclass(frozen=True)
class VolumeSet:
    """The files of one split archive, in order; ``missing`` are numbers not found."""

    name: str                  # the archive's name, e.g. "data.zip"
    volumes: tuple[str, ...]
    style: str                 # "7-zip" (.zip.001) or "info-zip" (.z01 ... .zip)
    missing: tuple[int, ...] = ()


def volume_sets(names: Iterable[str]) -> list[VolumeSet]:
    """Group file names into split archives; names that are no volume are left out.

    A ``.zip`` is in a set only when ``.z01`` of the same name is there. The last volume
    of a 7-Zip set cannot be told missing from the names: opening the set then fails
    with "no end of central directory record".
    """
    names = list(names)
    present = {n.lower(): n for n in names}
    groups: dict[tuple[str, str], dict[int, str]] = {}
    for name in names:
        for style, pattern in (("7-zip", _SEVEN_ZIP), ("info-zip", _INFO_ZIP)):
            m = pattern.fullmatch(name)
            if m:
                groups.setdefault((style, m["base"]), {})[int(m["n"])] = name
                break
    sets = []
    for (style, base), numbered in sorted(groups.items(), key=lambda kv: kv[0][::-1]):
        last = max(numbered)
        missing = tuple(n for n in range(1, last + 1) if n not in numbered)
        volumes = [numbered[n] for n in sorted(numbered)]
        archive = base
        if style == "info-zip":
            final = present.get(f"{base}.zip".lower())
            archive = f"{base}.zip"
            if final is None:
                missing += (last + 1,)
            else:
                volumes.append(final)
        sets.append(VolumeSet(archive, tuple(volumes), style, missing))
    return sets

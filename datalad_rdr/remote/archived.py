"""Read a member of an archive made by another tool (7-Zip, zipfile, py7zr) on RDR.

``datalad rdr-clone`` of a record uploaded by hand records every member with an
:class:`~.locations.ArchiveLocation`: the volumes' file ids and sizes and what the
archive's directory says of the member. Reading it is the archive reader's job
(:mod:`datalad_rdr.archives`): one Range request for a ZIP member's local header and
data (with a bounded over-read, since the data offset is only known from the local
header), two when the member crosses a volume boundary; a non-solid 7z member's packed
range. The size and CRC-32 are checked before success is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from ..archives import ArchiveError, Volumes, from_bundle_reader
from ..archives.sevenzip import SevenZipMember
from ..archives.sevenzip import read_member as read_7z_member
from ..archives.ziparchive import ZipMember
from ..archives.ziparchive import read_member as read_zip_member
from .errors import Denied, ReadError, request_access
from .locations import ArchiveLocation

if TYPE_CHECKING:  # the reader (and requests) is loaded when a member is read
    from .reader import BundleReader


class _Counted:
    """``out`` that tells git-annex how far the member has come."""

    def __init__(self, out: BinaryIO, progress: Callable[[int], None]):
        self.out, self.progress, self.written = out, progress, 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.written += len(data)
        self.progress(self.written)
        return len(data)


def source(reader: BundleReader, loc: ArchiveLocation):
    """The archive's volumes, read by ranges, as one file."""
    parts = [from_bundle_reader(reader, fid, size, loc.archive if i == 0 else
                                f"{loc.archive} (volume {i + 1})")
             for i, (fid, size) in enumerate(loc.volumes)]
    return parts[0] if len(parts) == 1 else Volumes(parts, loc.archive)


def member(loc: ArchiveLocation) -> ZipMember | SevenZipMember:
    """The member as the archive's directory described it."""
    crc = int(loc.crc32, 16) if loc.crc32 else None
    if loc.format == "zip":
        raw = bytes.fromhex(loc.field("raw")) if loc.field("raw") else loc.member.encode()
        return ZipMember(loc.member, raw, loc.number("method"), loc.number("flags"), crc,
                         loc.number("csize"), loc.size, loc.number("header"),
                         loc.number("cextra"))
    whole = loc.field("whole") or None
    packed = None
    if not whole and loc.size:
        first, _, last = loc.field("packed").partition("-")
        packed = (int(first), int(last))
    return SevenZipMember(loc.member, loc.size, crc, False, packed,
                          loc.field("coder") or None,
                          bytes.fromhex(loc.field("props")), whole)


def read(reader: BundleReader, loc: ArchiveLocation, out: BinaryIO,
         progress: Callable[[int], None] = lambda n: None) -> int:
    """Write the member to ``out`` (checked); returns the bytes read from the server.

    Raises :class:`ReadError` saying why; ``out`` may then hold wrong bytes."""
    src = source(reader, loc)
    counted = _Counted(out, progress)
    try:
        if loc.format == "file":
            for chunk in src.stream(0, src.size):
                counted.write(chunk)
            if counted.written != loc.size:
                raise ReadError(f"{loc.archive}: {counted.written} bytes, not {loc.size}")
        elif loc.format == "zip":
            read_zip_member(src, member(loc), counted)
        else:
            read_7z_member(src, member(loc), counted)
    except Denied as exc:
        raise Denied(f"{exc}; {request_access(loc.server, loc.pid)}") from exc
    except ArchiveError as exc:
        raise ReadError(str(exc)) from exc
    return src.bytes_read

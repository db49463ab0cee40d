"""A ZIP on a server, read by byte ranges: its directory, then any one member.

Listing reads the end of the archive (one request: the end records and usually the end
of the central directory) and then the rest of the central directory (one more request,
if it did not fit), never a member. Reading a member is one request for its local header
and data together: the data's offset depends on the local header's name and extra-field
lengths, which only the local header tells, so the request asks for the member's size
plus the central header's lengths plus :data:`LOCAL_SLACK`, and a second request fetches
what is left in the rare case the local extra field was longer still.

Members are checked before success is reported: the local header must name the member,
the inflated size and CRC-32 must be the central directory's. Members with a data
descriptor (general purpose bit 3) need nothing from it, since the central directory has
the sizes and CRC-32.
"""

from __future__ import annotations

import logging
import lzma
import stat
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from .. import zipformat as zf
from .codecs import ZIP_METHODS, zip_decoder
from .ranges import ArchiveError, CorruptMember, Listing, Unsupported

lgr = logging.getLogger("datalad.rdr.archives")

#: Bytes asked for beyond the central header's extra field when reading a member: local
#: extra fields are usually as long as the central one, or a little longer (timestamps,
#: zip64 sizes that the central header did not need).
LOCAL_SLACK = 256
_ZIP64_END_SIG = zf.ZIP64_END_SIG.to_bytes(4, "little")


@dataclass(frozen=True, slots=True)
class ZipMember:
    """A member as the central directory describes it; offsets are in the joined file."""

    name: str
    raw_name: bytes
    method: int
    flags: int
    crc32: int
    compressed_size: int
    size: int
    header_offset: int
    extra_len: int  # of the central header: the guess for the local header's
    made_by: int = 0
    external_attr: int = 0

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    @property
    def mode(self) -> int | None:
        """The UNIX mode (file type and permissions) if a UNIX-like tool wrote it."""
        mode = self.external_attr >> 16
        return mode if mode and self.made_by >> 8 in zf.UNIX_HOSTS else None

    @property
    def is_symlink(self) -> bool:
        """A symbolic link: its content is the link's target, not data."""
        return self.mode is not None and stat.S_ISLNK(self.mode)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & (zf.FLAG_ENCRYPTED | zf.FLAG_STRONG_ENCRYPTION)) or (
            self.method == 99)

    @property
    def method_name(self) -> str:
        return zf.METHOD_NAMES.get(self.method, f"method {self.method}")

    @property
    def unsupported(self) -> str | None:
        """Why this member cannot be read here, or None."""
        if self.encrypted:
            return "encrypted"
        if self.method not in ZIP_METHODS:
            return (f"compressed with {self.method_name} (stored, deflated, Deflate64, "
                    f"bzip2 and LZMA are read)")
        return None


@dataclass
class ZipDirectory(Listing):
    """The members of a ZIP and where its directory is."""

    source: object
    members: list[ZipMember]
    cd_offset: int
    cd_size: int
    zip64: bool
    comment: bytes

    def read(self, member: ZipMember, out: BinaryIO) -> int:
        return read_member(self.source, member, out)


def read_directory(source) -> ZipDirectory:
    """List a ZIP's members from its end records and central directory (1-3 requests).

    ``source`` is a :class:`~.ranges.Ranges` or :class:`~.volumes.Volumes`. Raises
    :class:`ArchiveError` if it is no ZIP, is cut short, or is split and not all parts
    were given.
    """
    name = source.name
    tail_start = max(0, source.size - zf.TAIL_SIZE)
    tail = source.read(tail_start, source.size)
    try:
        end_pos = zf.find_end(tail)
        end = zf.End.parse(tail, end_pos)
    except ValueError as exc:
        raise ArchiveError(f"{name}: {exc}") from None
    comment = tail[end_pos + zf.END_SIZE:end_pos + zf.END_SIZE + end.comment_len]
    records_start = tail_start + end_pos  # where the end records begin, in the joined file
    disk, cd_disk, total, cd_size, cd_offset = (
        end.disk, end.cd_disk, end.total_entries, end.cd_size, end.cd_offset)
    locator_pos = end_pos - zf.ZIP64_LOCATOR_SIZE
    zip64 = locator_pos >= 0 and tail[locator_pos:locator_pos + 4] == (
        zf.ZIP64_LOCATOR_SIG.to_bytes(4, "little"))
    if end.needs_zip64 and not zip64:
        raise ArchiveError(f"{name}: the end record needs zip64 and there is no zip64 "
                           f"locator before it (the archive is damaged)")
    if zip64:
        try:
            locator = zf.Zip64Locator.parse(tail, locator_pos)
            at = source.disk_offset(locator.zip64_end_disk, locator.zip64_end_offset)
            before = tail_start + locator_pos - zf.ZIP64_END_SIZE
            if at != before and before >= tail_start and tail[
                    before - tail_start:before - tail_start + 4] == _ZIP64_END_SIG:
                at = before  # bytes before the ZIP moved it, as below; zipfile looks here
            if at >= tail_start and at + zf.ZIP64_END_SIZE <= source.size:
                record = zf.Zip64End.parse(tail, at - tail_start)
            else:
                record = zf.Zip64End.parse(source.read(at, at + zf.ZIP64_END_SIZE))
        except ValueError as exc:
            raise ArchiveError(f"{name}: {exc}") from None
        records_start = at
        disk, cd_disk, total, cd_size, cd_offset = (
            record.disk, record.cd_disk, record.total_entries, record.cd_size,
            record.cd_offset)
    if disk + 1 != source.disks and not (disk == 0 and source.disks > 1):
        raise ArchiveError(f"{name}: the ZIP is split into {disk + 1} parts (Info-ZIP "
                           f".z01 ... .zip) and {source.disks} were given")
    cd_start = source.disk_offset(cd_disk, cd_offset)
    shift = 0
    if disk == 0 and cd_start + cd_size != records_start:
        # Bytes before the ZIP (a self-extractor, or a cut-off prefix): offsets in the
        # directory are off by the same amount everywhere, as zipfile assumes too.
        shift = records_start - cd_size - cd_start
        cd_start += shift
    if cd_start < 0 or cd_start + cd_size > records_start:
        raise ArchiveError(f"{name}: its central directory ({cd_size} bytes at {cd_start}) "
                           f"does not fit before its end records (cut short or damaged)")
    cd_end = cd_start + cd_size
    if cd_start >= tail_start:
        directory = tail[cd_start - tail_start:cd_end - tail_start]
    else:
        directory = source.read(cd_start, min(cd_end, tail_start)) + tail[
            :max(0, cd_end - tail_start)]
    members = _parse_directory(directory, source, shift)
    if len(members) != total:
        raise ArchiveError(f"{name}: {len(members)} members in the central directory, "
                           f"the end record says {total} (damaged)")
    lgr.debug("%s: %d members, central directory %d bytes, %d requests", name,
              len(members), cd_size, source.requests)
    return ZipDirectory(source, members, cd_start, cd_size, zip64, comment)


def _parse_directory(data: bytes, source, shift: int) -> list[ZipMember]:
    members = []
    pos = 0
    while pos < len(data):
        try:
            h = zf.CentralHeader.parse(data, pos)
            name_at = pos + zf.CENTRAL_HEADER_SIZE
            raw = data[name_at:name_at + h.name_len]
            extra = data[name_at + h.name_len:name_at + h.name_len + h.extra_len]
            size, csize, offset, disk = zf.zip64_values(
                extra, h.size, h.compressed_size, h.header_offset, h.disk_start)
            name = zf.decode_name(raw, h.flags, extra, h.made_by)
        except ValueError as exc:
            raise ArchiveError(f"{source.name}: central directory entry {len(members) + 1}:"
                               f" {exc}") from None
        members.append(ZipMember(
            name=name, raw_name=raw, method=h.method, flags=h.flags, crc32=h.crc32,
            compressed_size=csize, size=size,
            header_offset=source.disk_offset(disk, offset) + shift, extra_len=h.extra_len,
            made_by=h.made_by, external_attr=h.external_attr))
        pos += h.length
    return members


def read_member(source, member: ZipMember, out: BinaryIO,
                slack: int = LOCAL_SLACK) -> int:
    """Write ``member``'s content to ``out``; return the offset of its first data byte.

    One request (two if the local extra field is longer than the guess). Raises
    :class:`CorruptMember` naming the member if its bytes do not match the central
    directory, having written possibly wrong bytes to ``out``: the caller discards them.
    """
    where = f"{member.name} in {source.name}"
    if member.unsupported:
        raise Unsupported(f"{where}: {member.unsupported}; extract the archive with 7-Zip")
    start = member.header_offset
    guess = zf.LOCAL_HEADER_SIZE + len(member.raw_name) + member.extra_len + slack
    end = min(source.size, start + guess + member.compressed_size)
    chunks = source.stream(start, end)
    try:
        head = b""
        for chunk in chunks:
            head += chunk
            if len(head) >= zf.LOCAL_HEADER_SIZE:
                break
        header = _local_header(head, member, where)
        while len(head) < header.length:
            chunk = next(chunks, b"")
            if not chunk:
                break
            head += chunk
        if len(head) < header.length:  # a local extra longer than the slack and the data
            if start + header.length > source.size:
                raise CorruptMember(f"{where}: the local header runs past the "
                                    f"archive's end")
            head += source.read(start + len(head), start + header.length)
        _check_local(head, header, member, where)
        data_offset = start + header.length
        data_end = data_offset + member.compressed_size
        if data_end > source.size:
            raise CorruptMember(f"{where}: its data runs past the archive's end")
        check = _Check(member, out, where)
        check.feed(head[header.length:header.length + member.compressed_size])
        received = start + len(head)
        for chunk in chunks:
            check.feed(chunk[:max(0, data_end - received)])
            received += len(chunk)
            if received >= data_end:
                break
    finally:
        chunks.close()
    if received < data_end:
        lgr.debug("%s: local extra field longer than guessed, one more request", where)
        for chunk in source.stream(received, data_end):
            check.feed(chunk)
    check.finish()
    return data_offset


def _local_header(head: bytes, member: ZipMember, where: str) -> zf.LocalHeader:
    try:
        return zf.LocalHeader.parse(head)
    except ValueError as exc:
        raise CorruptMember(f"{where}: {exc} at offset {member.header_offset} (the "
                            f"archive is damaged, or its parts are in the wrong order)"
                            ) from None


def _check_local(head: bytes, h: zf.LocalHeader, member: ZipMember, where: str) -> None:
    if head[zf.LOCAL_HEADER_SIZE:zf.LOCAL_HEADER_SIZE + h.name_len] != member.raw_name:
        raise CorruptMember(f"{where}: the local header names another member")
    if h.method != member.method:
        raise CorruptMember(f"{where}: the local header says method {h.method}, the "
                            f"central directory {member.method}")
    if not h.flags & zf.FLAG_DATA_DESCRIPTOR and h.crc32 != member.crc32:
        raise CorruptMember(f"{where}: the local header's CRC-32 differs from the central "
                            f"directory's")


class _Check:
    """Decode, count and CRC the member's bytes on their way to ``out``."""

    def __init__(self, member: ZipMember, out: BinaryIO, where: str):
        self.member, self.out, self.where = member, out, where
        self.decoder = zip_decoder(member.method, member.flags)
        self.crc = self.size = 0

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        if self.size > self.member.size:
            raise CorruptMember(f"{self.where}: more than the {self.member.size} bytes the "
                                f"central directory says")
        self.out.write(data)

    def feed(self, data: bytes) -> None:
        if self.decoder is None:
            self._emit(data)
            return
        try:
            for piece in self.decoder.pieces(data):
                self._emit(piece)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            raise CorruptMember(f"{self.where}: cannot decompress ({exc}): the archive is "
                                f"damaged") from None

    def finish(self) -> None:
        if self.decoder is not None:
            self.feed(b"")
            tail, ended = self.decoder.end()
            self._emit(tail)
            if not ended:
                raise CorruptMember(f"{self.where}: the {self.member.method_name} stream "
                                    f"does not end where the central directory says "
                                    f"(damaged)")
        if self.size != self.member.size:
            raise CorruptMember(f"{self.where}: {self.size} bytes, not the "
                                f"{self.member.size} the central directory says")
        if self.crc != self.member.crc32:
            raise CorruptMember(f"{self.where}: CRC-32 {self.crc:08x}, not the "
                                f"{self.member.crc32:08x} the central directory says "
                                f"(the archive is damaged on the server or in transit)")

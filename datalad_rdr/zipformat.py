"""The records of the ZIP format, their sizes, and readers that parse them from bytes.

PKWARE's APPNOTE 6.3.10 fixes every record's layout; this module is the one place that
knows it, for writing (:mod:`datalad_rdr.zipstream` packs the bundles' headers with the
``write_*`` functions at the end) and for reading (:mod:`datalad_rdr.archives.ziparchive`
reads hand-made ZIPs by byte ranges with it, :mod:`datalad_rdr.remote.reader` checks a
member's local header). Each ``parse`` checks the record's signature and length and raises
:class:`ValueError` naming the record and the offset on garbage, so a caller can say
"this is not a ZIP" instead of failing later on nonsense numbers.

Numbers that do not fit 32 bits (16 for counts and disk numbers) are saturated in the
fixed records (``0xFFFFFFFF``/``0xFFFF``) and given in full by the zip64 extra field
(4.5.3) and the zip64 end of central directory record (4.3.14): :func:`zip64_values`
and :class:`Zip64End` resolve them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

# -- Signatures (4.3.x) and sizes of the fixed parts -------------------------

LOCAL_SIG = 0x04034B50            # 4.3.7
CENTRAL_SIG = 0x02014B50          # 4.3.12
ZIP64_END_SIG = 0x06064B50        # 4.3.14
ZIP64_LOCATOR_SIG = 0x07064B50    # 4.3.15
END_SIG = 0x06054B50              # 4.3.16
DESCRIPTOR_SIG = 0x08074B50       # 4.3.9.3, also the split-archive marker (8.5.3)

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_ZIP64_END = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")

LOCAL_HEADER_SIZE = _LOCAL.size            # 30, then name and extra field
CENTRAL_HEADER_SIZE = _CENTRAL.size        # 46, then name, extra field and comment
ZIP64_END_SIZE = _ZIP64_END.size           # 56 (without the extensible data sector)
ZIP64_LOCATOR_SIZE = _ZIP64_LOCATOR.size   # 20
END_SIZE = _END.size                       # 22, then the archive comment
MAX_COMMENT = 0xFFFF
#: The end of an archive that holds every end record whatever its comment.
TAIL_SIZE = END_SIZE + MAX_COMMENT + ZIP64_LOCATOR_SIZE + ZIP64_END_SIZE
#: Data descriptor (4.3.9): optional signature, CRC-32, two sizes of 4 (8 in zip64) bytes.
DESCRIPTOR_SIZES = (12, 16, 20, 24)

# -- Flags, methods, extra fields --------------------------------------------

FLAG_ENCRYPTED = 0x0001           # 4.4.4 bit 0
FLAG_DATA_DESCRIPTOR = 0x0008     # bit 3: CRC and sizes follow the data
FLAG_STRONG_ENCRYPTION = 0x0040   # bit 6
FLAG_UTF8 = 0x0800                # bit 11: name and comment are UTF-8
STORED = 0
DEFLATED = 8
#: 4.4.5 (and WinZip's AES marker 99): names for the methods we cannot read.
METHOD_NAMES = {
    0: "stored", 1: "shrunk", 6: "imploded", 8: "deflated", 9: "deflate64",
    12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "xz", 96: "JPEG", 97: "WavPack",
    98: "PPMd", 99: "AES-encrypted",
}
ZIP64_EXTRA_ID = 0x0001           # 4.5.3
EXTRA_HEADER_SIZE = 4             # 4.5.1: header id and data size before each block
UNICODE_PATH_EXTRA_ID = 0x7075    # 4.6.9, Info-ZIP Unicode Path
SATURATED_32 = 0xFFFFFFFF
SATURATED_16 = 0xFFFF


def _check(data: bytes, offset: int, size: int, sig: int, what: str) -> None:
    if offset < 0 or len(data) < offset + size:
        raise ValueError(f"{what} cut short: {len(data) - offset} of {size} bytes")
    found = struct.unpack_from("<I", data, offset)[0]
    if found != sig:
        raise ValueError(f"no {what} here (signature {found:08x}, not {sig:08x})")


class _Record:
    """A fixed-layout record: ``parse`` checks its signature and length, then unpacks."""

    __slots__ = ()
    _layout: ClassVar[struct.Struct]
    _signature: ClassVar[int]
    _what: ClassVar[str]

    @classmethod
    def parse(cls, data: bytes, offset: int = 0):
        _check(data, offset, cls._layout.size, cls._signature, cls._what)
        return cls(*cls._layout.unpack_from(data, offset)[1:])


@dataclass(frozen=True, slots=True)
class LocalHeader(_Record):
    """4.3.7 local file header; ``name`` and ``extra`` follow the 30 fixed bytes."""

    _layout = _LOCAL
    _signature = LOCAL_SIG
    _what = "ZIP local header"

    version_needed: int
    flags: int
    method: int
    time: int
    date: int
    crc32: int
    compressed_size: int
    size: int
    name_len: int
    extra_len: int

    @property
    def length(self) -> int:
        """Bytes from the header's signature to the member's first data byte."""
        return LOCAL_HEADER_SIZE + self.name_len + self.extra_len


@dataclass(frozen=True, slots=True)
class CentralHeader(_Record):
    """4.3.12 central directory file header (fixed part; sizes may be saturated)."""

    _layout = _CENTRAL
    _signature = CENTRAL_SIG
    _what = "ZIP central directory header"

    made_by: int
    version_needed: int
    flags: int
    method: int
    time: int
    date: int
    crc32: int
    compressed_size: int
    size: int
    name_len: int
    extra_len: int
    comment_len: int
    disk_start: int
    internal_attr: int
    external_attr: int
    header_offset: int

    @property
    def length(self) -> int:
        return CENTRAL_HEADER_SIZE + self.name_len + self.extra_len + self.comment_len

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> CentralHeader:
        header = super(CentralHeader, cls).parse(data, offset)
        if len(data) < offset + header.length:
            raise ValueError("ZIP central directory header: name, extra field or comment "
                             "cut short")
        return header


@dataclass(frozen=True, slots=True)
class End(_Record):
    """4.3.16 end of central directory record."""

    _layout = _END
    _signature = END_SIG
    _what = "ZIP end of central directory record"

    disk: int                 # number of this disk (the last one)
    cd_disk: int              # disk where the central directory starts
    disk_entries: int
    total_entries: int
    cd_size: int
    cd_offset: int            # on ``cd_disk``
    comment_len: int

    @property
    def needs_zip64(self) -> bool:
        return (SATURATED_16 in (self.disk, self.cd_disk, self.disk_entries,
                                 self.total_entries)
                or SATURATED_32 in (self.cd_size, self.cd_offset))


@dataclass(frozen=True, slots=True)
class Zip64Locator(_Record):
    """4.3.15 zip64 end of central directory locator (just before the end record)."""

    _layout = _ZIP64_LOCATOR
    _signature = ZIP64_LOCATOR_SIG
    _what = "zip64 end locator"

    zip64_end_disk: int
    zip64_end_offset: int     # on ``zip64_end_disk``
    total_disks: int


@dataclass(frozen=True, slots=True)
class Zip64End(_Record):
    """4.3.14 zip64 end of central directory record (the extensible data is skipped)."""

    _layout = _ZIP64_END
    _signature = ZIP64_END_SIG
    _what = "zip64 end of central directory"

    record_size: int          # bytes after this field: 44 + extensible data
    made_by: int
    version_needed: int
    disk: int
    cd_disk: int
    disk_entries: int
    total_entries: int
    cd_size: int
    cd_offset: int

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> Zip64End:
        record = super(Zip64End, cls).parse(data, offset)
        if record.record_size < ZIP64_END_SIZE - 12:
            raise ValueError(f"zip64 end of central directory: size {record.record_size} "
                             f"is less than its fixed fields")
        return record


@dataclass(frozen=True, slots=True)
class DataDescriptor:
    """4.3.9 data descriptor after a member's data (general purpose bit 3)."""

    crc32: int
    compressed_size: int
    size: int
    length: int               # 12, 16 (with signature), 20 or 24 (zip64)

    @classmethod
    def parse(cls, data: bytes, offset: int = 0, zip64: bool = False) -> DataDescriptor:
        """The signature is optional (4.3.9.3); ``zip64``: 8-byte sizes (4.3.9.2)."""
        signed = len(data) >= offset + 4 and struct.unpack_from(
            "<I", data, offset)[0] == DESCRIPTOR_SIG
        fmt = "<IQQ" if zip64 else "<III"
        start = offset + 4 * signed
        if len(data) < start + struct.calcsize(fmt):
            raise ValueError("ZIP data descriptor cut short")
        crc, csize, size = struct.unpack_from(fmt, data, start)
        return cls(crc, csize, size, start - offset + struct.calcsize(fmt))


def find_end(tail: bytes) -> int:
    """Offset in ``tail`` (an archive's last bytes) of its end of central directory record.

    The record is the last one whose comment reaches the end of ``tail`` exactly; failing
    that (tools that miscount the comment), the last signature whose record fits.
    """
    sig = struct.pack("<I", END_SIG)
    pos = len(tail) - END_SIZE
    fallback = -1
    while pos >= 0:
        pos = tail.rfind(sig, 0, pos + 4)
        if pos < 0:
            break
        comment_len = struct.unpack_from("<H", tail, pos + 20)[0] if pos + 22 <= len(
            tail) else -1
        if pos + END_SIZE + comment_len == len(tail):
            return pos
        if fallback < 0 and 0 <= comment_len and pos + END_SIZE + comment_len <= len(tail):
            fallback = pos
        pos -= 1
    if fallback >= 0:
        return fallback
    raise ValueError("no ZIP end of central directory record in the last "
                     f"{len(tail)} bytes: not a ZIP archive, or cut short")


def iter_extra(extra: bytes) -> Iterator[tuple[int, bytes]]:
    """The (header id, data) blocks of an extra field (4.5.1); stops at a cut block."""
    pos = 0
    while pos + 4 <= len(extra):
        header_id, length = struct.unpack_from("<HH", extra, pos)
        if pos + 4 + length > len(extra):
            return
        yield header_id, extra[pos + 4:pos + 4 + length]
        pos += 4 + length


def zip64_values(extra: bytes, size: int, compressed_size: int, header_offset: int,
                 disk_start: int) -> tuple[int, int, int, int]:
    """Resolve the saturated fields of a central header from its zip64 extra (4.5.3).

    The extra holds, in this order, only the values whose fixed field is saturated.
    """
    if SATURATED_32 not in (size, compressed_size, header_offset) and (
            disk_start != SATURATED_16):
        return size, compressed_size, header_offset, disk_start
    values = [size, compressed_size, header_offset, disk_start]
    wanted = [i for i, (v, full) in enumerate(zip(values, (SATURATED_32,) * 3 + (
        SATURATED_16,))) if v == full]
    block = next((data for header_id, data in iter_extra(extra)
                  if header_id == ZIP64_EXTRA_ID), None)
    if block is None:
        raise ValueError("ZIP central directory header: 32-bit field saturated and no "
                         "zip64 extra field")
    pos = 0
    for i in wanted:
        width = 4 if i == 3 else 8
        if pos + width > len(block):
            raise ValueError("ZIP zip64 extra field cut short")
        values[i] = int.from_bytes(block[pos:pos + width], "little")
        pos += width
    return tuple(values)


def unicode_path(extra: bytes, raw_name: bytes) -> str | None:
    """The UTF-8 name of Info-ZIP's Unicode Path extra (4.6.9), if it belongs to this name.

    The block carries the CRC-32 of the header's own name: a tool that renamed the member
    without updating the block makes it stale, and then it is ignored.
    """
    for header_id, data in iter_extra(extra):
        if header_id == UNICODE_PATH_EXTRA_ID and len(data) >= 5 and data[0] == 1:
            if struct.unpack_from("<I", data, 1)[0] == zlib.crc32(raw_name):
                try:
                    return data[5:].decode("utf-8")
                except UnicodeDecodeError:
                    return None
    return None


#: Hosts (4.4.2) of UNIX-like tools: their names are in the system's encoding, today
#: UTF-8 (Info-ZIP on Linux and macOS sets neither the UTF-8 flag nor a Unicode Path
#: extra), and the high 16 bits of the external attributes are a UNIX mode.
UNIX_HOSTS = frozenset({3, 19})  # UNIX, OS X


def decode_name(raw_name: bytes, flags: int, extra: bytes = b"", made_by: int = 0) -> str:
    """A member name as its writer meant it.

    UTF-8 if flagged (4.4.4 bit 11); else Info-ZIP's Unicode Path extra; else UTF-8 if
    the writer ran on a UNIX-like host and the bytes are UTF-8; else IBM code page 437,
    as the APPNOTE says (D.1).
    """
    if flags & FLAG_UTF8:
        try:
            return raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"ZIP member name {raw_name!r} is flagged UTF-8 and is "
                             f"not") from None
    name = unicode_path(extra, raw_name)
    if name is None and made_by >> 8 in UNIX_HOSTS:
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw_name.decode("cp437") if name is None else name


# -- Writing: the records of the ZIPs we make --------------------------------
# Our writer's choices within the format: names always UTF-8, every member a regular
# file rw-r--r-- from a UNIX host, no comments, no data descriptors (the CRC-32 and sizes
# are in the local header), zip64 only for a value that does not fit.

VERSION_DEFLATE = 20              # 4.4.3.2: 2.0, deflate and folders
VERSION_ZIP64 = 45                # 4.4.3.2: 4.5, zip64
MADE_BY = (3 << 8) | VERSION_ZIP64   # 4.4.2: UNIX, so the attributes are a mode
FILE_ATTRIBUTES = 0o100644 << 16     # regular file, rw-r--r--
#: zlib's ``wbits`` for the raw DEFLATE stream of method 8 (no zlib header or trailer).
RAW_DEFLATE = -15
#: A local header's zip64 extra holds both sizes (4.5.3); a central header's at most the
#: two sizes and the header offset (the disk number never: one disk).
LOCAL_ZIP64_EXTRA_SIZE = EXTRA_HEADER_SIZE + 2 * 8
CENTRAL_ZIP64_EXTRA_MAX = EXTRA_HEADER_SIZE + 3 * 8
#: The most bytes that a member adds to a ZIP we write beyond its data and its name (which
#: is written twice): local and central header with their largest zip64 extras.
MEMBER_OVERHEAD = (LOCAL_HEADER_SIZE + LOCAL_ZIP64_EXTRA_SIZE
                   + CENTRAL_HEADER_SIZE + CENTRAL_ZIP64_EXTRA_MAX)
#: The most bytes of the end records of a ZIP we write (no comment).
END_OVERHEAD = ZIP64_END_SIZE + ZIP64_LOCATOR_SIZE + END_SIZE


def dos_datetime(mtime: datetime | int | float) -> tuple[int, int]:
    """(time, date) fields of 4.4.6 for ``mtime`` (a datetime, or seconds since the epoch)
    in UTC."""
    if isinstance(mtime, datetime):
        dt = mtime.astimezone(UTC) if mtime.tzinfo else mtime
    else:
        dt = datetime.fromtimestamp(mtime, UTC)
    # DOS dates run from 1980 to 2107, in steps of 2 seconds.
    fields = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    fields = max((1980, 1, 1, 0, 0, 0), min((2107, 12, 31, 23, 59, 58), fields))
    y, mo, d, h, mi, s = fields
    return (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d


def zip64_extra(*values: int) -> bytes:
    """The zip64 extra block (4.5.3) of ``values`` (8 bytes each, the APPNOTE's order)."""
    return struct.pack(f"<HH{len(values)}Q", ZIP64_EXTRA_ID, 8 * len(values), *values)


def _local_zip64(size: int, compressed_size: int) -> bool:
    return size >= SATURATED_32 or compressed_size >= SATURATED_32


def _central_zip64(size: int, compressed_size: int, header_offset: int) -> list[int]:
    # 4.5.3: only the values whose 32-bit field is saturated, in this order.
    return [v for v in (size, compressed_size, header_offset) if v >= SATURATED_32]


def _version_needed(size: int, compressed_size: int, header_offset: int) -> int:
    zip64 = _local_zip64(size, compressed_size) or header_offset >= SATURATED_32
    return VERSION_ZIP64 if zip64 else VERSION_DEFLATE


def local_header_length(name: bytes, size: int, compressed_size: int) -> int:
    """Bytes of the local header that :func:`write_local_header` makes, with the extra."""
    return (LOCAL_HEADER_SIZE + len(name)
            + (LOCAL_ZIP64_EXTRA_SIZE if _local_zip64(size, compressed_size) else 0))


def write_local_header(name: bytes, method: int, crc32: int, size: int,
                       compressed_size: int, header_offset: int, dos: tuple[int, int]
                       ) -> bytes:
    """A member's local header (4.3.7), complete: CRC-32 and sizes, no data descriptor."""
    version = _version_needed(size, compressed_size, header_offset)
    if _local_zip64(size, compressed_size):
        extra = zip64_extra(size, compressed_size)
        compressed_size = size = SATURATED_32
    else:
        extra = b""
    return _LOCAL.pack(LOCAL_SIG, version, FLAG_UTF8, method, *dos, crc32, compressed_size,
                       size, len(name), len(extra)) + name + extra


def central_header_length(name: bytes, size: int, compressed_size: int,
                          header_offset: int) -> int:
    """Bytes of the central header :func:`write_central_header` makes."""
    n = len(_central_zip64(size, compressed_size, header_offset))
    return (CENTRAL_HEADER_SIZE + len(name)
            + (EXTRA_HEADER_SIZE + 8 * n if n else 0))


def write_central_header(name: bytes, method: int, crc32: int, size: int,
                         compressed_size: int, header_offset: int, dos: tuple[int, int]
                         ) -> bytes:
    """A member's central directory header (4.3.12)."""
    wide = _central_zip64(size, compressed_size, header_offset)
    extra = zip64_extra(*wide) if wide else b""
    return _CENTRAL.pack(
        CENTRAL_SIG, MADE_BY, _version_needed(size, compressed_size, header_offset),
        FLAG_UTF8, method, *dos, crc32, min(compressed_size, SATURATED_32),
        min(size, SATURATED_32), len(name), len(extra), 0, 0, 0, FILE_ATTRIBUTES,
        min(header_offset, SATURATED_32),
    ) + name + extra


def write_end_records(count: int, cd_offset: int, cd_size: int) -> bytes:
    """The end of central directory record (4.3.16), after the zip64 end record and its
    locator (4.3.14, 4.3.15) if a count or offset does not fit."""
    end = _END.pack(END_SIG, 0, 0, min(count, SATURATED_16), min(count, SATURATED_16),
                    min(cd_size, SATURATED_32), min(cd_offset, SATURATED_32), 0)
    if count < SATURATED_16 and cd_size < SATURATED_32 and cd_offset < SATURATED_32:
        return end
    # record_size counts the bytes after itself: the whole record less signature and size
    zip64_end = _ZIP64_END.pack(ZIP64_END_SIG, ZIP64_END_SIZE - 12, MADE_BY, VERSION_ZIP64,
                                0, 0, count, count, cd_size, cd_offset)
    locator = _ZIP64_LOCATOR.pack(ZIP64_LOCATOR_SIG, 0, cd_offset + cd_size, 1)
    return zip64_end + locator + end

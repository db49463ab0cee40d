"""Stream a bundle as a ZIP archive whose every byte is known before the first is sent.

A bundle travels to RDR as one ZIP file, written straight into the upload: no
temporary ZIP on disk, a few MiB of memory whatever the size of the members.
The Dataverse direct-upload API wants the file size before any byte is sent,
and the uploader sends the file in parts that may need to be sent again, so
this stage works in two steps::

    layout = layout_zip(members, mtime=commit_date)   # reads members once
    layout.size                                        # exact size of the ZIP
    for chunk in layout.iter_range(0, layout.size):    # or one part at a time
        upload(chunk)
    layout.md5                                         # MD5 of the whole ZIP

`layout_zip` fixes the name, method, CRC32, compressed size and offsets of
every member, and therefore every header, the central directory and the total
size. `ZipLayout.iter_range` then produces any byte range of the ZIP, reading
the members again and checking each one (size, CRC32, and the caller's
checksum, e.g. the git-annex key's hash) before its last byte goes out. A
member that fails raises `MemberError` naming it; the upload is aborted and
nothing corrupt gets published.

The output is a standard ZIP (zip64 only where needed: members or offsets of
4 GiB or more, 65535 members or more), tested with Info-ZIP `unzip`, 7-Zip and
Python's `zipfile`, and free of the data descriptors that macOS Archive Utility
and streaming readers trip over (see Design). Already-compressed
formats are STORED, other files DEFLATEd (see `STORED_SUFFIXES` and
`choose_method`, the policy a user can read and replace). The same content and
the same `mtime` give the same bytes: members are sorted by name, every member
gets `mtime`, mode 0644 and the UTF-8 name flag.

Design
------
Why not a library. stdlib `zipfile` writing to a stream cannot tell the size
in advance, writes STORED members with data descriptors, and cannot restart in
the middle; zipstream-ng predicts the size only when nothing is compressed,
and has no byte ranges; stream-zip and zipfly predict nothing. What we need is
small: fixed-layout records from PKWARE's APPNOTE 6.3.10 (4.3.7 local file
header, 4.3.12 central directory header, 4.3.14-4.3.16 zip64 end records and
end of central directory, 4.5.3 zip64 extra field), packed by
:mod:`datalad_rdr.zipformat` (the one module that knows the format) and checked in
the tests against `zipfile`, 7-Zip and Info-ZIP `unzip`.

CRC32 in the layout, no data descriptors. A streaming writer normally puts
CRC32 after the data (a data descriptor, general purpose bit 3). We compute
it while laying out instead, and write complete local headers, because:

- macOS Archive Utility (what a researcher gets by double-clicking a download)
  and streaming readers (Java's ZipInputStream, commons-compress) fail on
  STORED members followed by a data descriptor;
- every byte of the ZIP is then a function of the layout and the members
  alone, so any part can be regenerated in any order, in another process,
  without a cache of CRCs from an earlier pass to write the central directory;
- the streaming pass recomputes each CRC32 and compares it, so a file that
  changed between layout and upload is caught.

The cost is one more sequential read of the STORED members and their CRC32
(about 0.3 s CPU per GB, see docs/zipstream-notes.md). Pass `Member.crc32`
(e.g. kept from an earlier layout's `entries`) to skip it.

DEFLATE members are compressed once to learn their compressed size and,
unless kept, again while streaming: deflate is deterministic for the same zlib, level and
input, and the stream checks the size it gets against the layout. Level 1 is
5-8 times faster than zlib's default 6 on TSV/JSON (114-149 vs 14-30 MB/s here)
for 10-15 % larger text, which is a small share of a bundle; by default files
over 64 MiB are STORED, which bounds the cost of compressing twice. A file that
DEFLATE does not make smaller is STORED.

Kept members. For a small member (see `KEEP_MEMBER_MAX`) the cost is per file,
not per byte: an open, a read, a check and a compressor each time it is read.
So the layout reads it whole, checks it against its size and checksum (the
annex key) right away, and keeps its ZIP data (compressed, or as it is) for
the stream, up to `KEEP_BYTES` a layout (`layout_zip`'s ``keep``): every
range and every part sent again takes those bytes, the file is not opened
again. A kept member that fails its check fails the layout, before a byte is
sent; one that changes after the layout changes nothing, the ZIP carries the
bytes that were checked. Members past the budget, large ones and empty ones
are read and checked again as below. Which members are kept does not change a
byte of the ZIP: a member that fits one read is compressed in one call, which
gives the bytes of a compressor fed in chunks (pinned in the tests).

Byte ranges. For a range, STORED members are read from the right offset;
a DEFLATE member is compressed again from its start and the bytes before the
range are dropped. A member is checked by the range that holds its last byte.
For a STORED member that straddles the range's start, the running CRC32 and
checksum are taken from the range that ended there (the uploader's previous
part, also when a part is sent again); without one (parts out of order, a new
process), the member's leading bytes are read again to rebuild them. The MD5
of the whole ZIP is chained the same way: `ZipLayout.md5` is known once ranges,
each starting where an earlier one ended, have covered the ZIP from 0 to its
end.

Determinism holds for the same zlib: another zlib (e.g. zlib-ng) may compress
text differently. The CRC-32s are ISA-L's (``isal``): a checksum has one answer, and
ISA-L's takes 0.09 s/GB here against zlib's 0.39; a large member's CRC is taken twice
(layout, and the stream's check). Correctness does not depend on it: a member compressed to
another size than its layout says raises MemberError, and other bytes of the
same size still inflate to the content that the CRC32 covers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from itertools import pairwise
from typing import Self
from zipfile import ZIP_DEFLATED, ZIP_STORED

from isal import isal_zlib

from .zipformat import dos_datetime, local_header_length
from .zipmembers import (  # noqa: F401 (the stage's public names are importable here)
    CHUNK_SIZE,
    DEFLATE_LEVEL,
    READ_SIZE,
    Checksum,
    HashLike,
    LaidOutMember,
    Member,
    MemberError,
    check_checksum,
    deflate,
    deflater,
    larger,
    read_whole,
    smaller,
)
from .zipnames import check_arcname, name_clashes, name_problems, shown  # noqa: F401
from .zipranges import Kept, ZipLayout

__all__ = [
    "KEEP_BYTES",
    "KEEP_MEMBER_MAX",
    "STORED_SUFFIXES",
    "TURN_MEMBER_MAX",
    "Checksum",
    "LaidOutMember",
    "Member",
    "MemberError",
    "ZipLayout",
    "check_arcname",
    "choose_method",
    "layout_zip",
    "name_clashes",
    "name_problems",
    "shown",
]

# -- Policy: which members are compressed ------------------------------------

#: Formats that are compressed already: DEFLATE would cost CPU and save nothing.
#: TIFF, DICOM, EDF/BDF and similar raw formats are left out on purpose: they
#: are often uncompressed, and large ones are STORED by size anyway.
STORED_SUFFIXES = frozenset({
    # compressed streams and archives
    ".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".zst", ".lz4", ".lz",
    ".lzma", ".br", ".zip", ".7z", ".rar", ".jar", ".whl", ".mgz", ".svgz",
    # office documents and e-books are ZIP archives
    ".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp", ".epub", ".pdf",
    # images, audio, video
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".jp2", ".heic", ".avif",
    ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac",
    ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi",
    # scientific containers usually written with compression
    ".h5", ".hdf5", ".rtdc", ".npz", ".mat", ".parquet", ".bam", ".cram",
})
#: Below this, DEFLATE rarely gains a byte.
MIN_DEFLATE_SIZE = 64
#: Above this, a member is STORED: DEFLATE members are compressed twice.
MAX_DEFLATE_SIZE = 64 * 2**20


# -- Policy: which members' bytes the layout keeps for the stream -------------

#: Bytes of members' ZIP data (compressed, or as they are) that one layout keeps in memory
#: for its stream: a member is kept if its size fits what is left; the others are read
#: again. 32 MiB holds 100,000 files of 300 bytes, deflated; with ``-J`` bundles in
#: flight, each has its own.
KEEP_BYTES = 32 * 2**20
#: Members up to this size may be kept: their cost is per file (open, read, check,
#: compress); a larger one costs its bytes, and would take the budget from many small ones.
KEEP_MEMBER_MAX = 2**20
#: Members up to this size are laid out in ``turns`` (see `layout_zip`): their cost is the
#: interpreter's (an open, a read, a compressor), not the bytes'.
TURN_MEMBER_MAX = 64 * 2**10


def choose_method(name: str, size: int) -> int:
    """Return ``zipfile.ZIP_STORED`` or ``zipfile.ZIP_DEFLATED`` for a member.

    A DEFLATE member that does not get smaller is STORED by `layout_zip`.
    """
    if not MIN_DEFLATE_SIZE <= size <= MAX_DEFLATE_SIZE:
        return ZIP_STORED
    if _suffix(name).lower() in STORED_SUFFIXES:
        return ZIP_STORED
    return ZIP_DEFLATED


def _suffix(name: str) -> str:
    """``PurePosixPath(name).suffix`` of a valid member name, without a Path a member."""
    last = name.rpartition("/")[2]
    dot = last.rfind(".")
    return last[dot:] if 0 < dot < len(last) - 1 else ""


def layout_zip(
    members: Iterable[Member],
    mtime: datetime | int | float,
    *,
    method: Callable[[str, int], int] = choose_method,
    md5: bool = True,
    keep: int = KEEP_BYTES,
    turns: AbstractContextManager | None = None,
) -> ZipLayout:
    """Lay out a ZIP of ``members``, reading each one once (see module docstring).

    ``mtime`` (a datetime, or seconds since the epoch, e.g. the commit date) is
    given to every member, in UTC. ``method(arcname, size)`` chooses
    ``ZIP_STORED`` or ``ZIP_DEFLATED``. ``md5=False`` leaves `ZipLayout.md5`
    unset, for a consumer that hashes the bytes itself: MD5 is the largest
    cost of streaming. ``keep``: bytes of small members' data kept for the
    stream (see "Kept members"; 0 keeps none). ``turns``: a lock shared by layouts that
    run in threads of one process, held while a run of small members (`TURN_MEMBER_MAX`)
    is laid out: Python runs one thread at a time, and two threads reading small files at
    once hand the interpreter to each other at every system call (100,000 files of 300
    bytes: 5.4 s one bundle after the other, 8.1 s at once). Raises ValueError for a bad or
    duplicate name, MemberError for a file whose size is not the declared one,
    or a kept member whose content is not its checksum's.
    """
    members = list(members)
    for m in members:
        check_arcname(m.arcname)
        if not isinstance(m.size, int) or m.size < 0:
            raise ValueError(f"bundle member {m.arcname!r}: invalid size {m.size!r}")
    members.sort(key=lambda m: m.arcname)
    for a, b in pairwise(members):
        if a.arcname == b.arcname:
            raise ValueError(f"duplicate bundle member name {a.arcname!r}")

    buffer = memoryview(bytearray(READ_SIZE))  # a member read whole
    # a large member's reads: a buffer of its own (a slice of the one above is read into
    # at four times the kernel's cost here, benchmarks/README.md "seventh pass")
    chunk = memoryview(bytearray(CHUNK_SIZE))
    kept = Kept()
    entries = []
    offset = 0
    with _Turns(turns) as turn:
        for m in members:
            turn.take(m.size <= TURN_MEMBER_MAX)
            entry = _lay_out(m, method, keep, kept, buffer, chunk, offset)
            entries.append(entry)
            offset = entry.data_offset + entry.compressed_size
    return ZipLayout(entries, dos_datetime(mtime), md5, kept.done())


class _Turns:
    """Holds a lock of `layout_zip`'s ``turns`` across a run of small members."""

    def __init__(self, lock: AbstractContextManager | None):
        self.lock, self.held = lock or nullcontext(), False

    def take(self, small: bool) -> None:
        if small and not self.held:
            self.lock.__enter__()
        elif self.held and not small:
            self.lock.__exit__(None, None, None)
        self.held = small

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.take(False)


def _lay_out(m: Member, method, keep: int, kept: Kept, buffer: memoryview,
             chunk: memoryview, offset: int) -> LaidOutMember:
    """One member's entry, at ``offset`` of the ZIP (its data kept in ``kept`` if it fits)."""
    wanted = method(m.arcname, m.size)
    if wanted not in (ZIP_STORED, ZIP_DEFLATED):
        raise ValueError(f"bundle member {m.arcname!r}: unknown method {wanted!r}")
    room = min(keep - len(kept.data), KEEP_MEMBER_MAX)
    if 0 < m.size <= room:
        chosen, crc, data = _read_kept(m, wanted, buffer)
        compressed_size = len(data)
        kept.add(data)
    else:
        chosen, crc, compressed_size = _scan(m, wanted, buffer, chunk)
        kept.add(None)
    name = m.arcname.encode("utf-8")
    header_size = local_header_length(name, m.size, compressed_size)
    return LaidOutMember(
        arcname=m.arcname, size=m.size, method=chosen, crc32=crc,
        compressed_size=compressed_size, header_offset=offset,
        data_offset=offset + header_size, member=m,
    )


def _read_kept(m: Member, method: int, buffer: memoryview) -> tuple[int, int, memoryview]:
    """(method, crc32, ZIP data) of a member read whole and checked against its checksum
    now: these bytes, not the file, go into the stream."""
    with m.open() as f:
        data = read_whole(f, m.arcname, m.size, buffer)
    crc = isal_zlib.crc32(data)
    if m.crc32 is not None and m.crc32 != crc:
        raise MemberError(m.arcname, f"CRC32 {crc:08x} differs from the {m.crc32:08x} "
                                     "known from an earlier export (changed since?)")
    if m.checksum:
        hasher = m.checksum.new()
        hasher.update(data)
        check_checksum(m, hasher)
    if method == ZIP_DEFLATED:
        compressed = deflate(data)
        if len(compressed) < m.size:
            return ZIP_DEFLATED, crc, memoryview(compressed)
    return ZIP_STORED, crc, data


def _scan(m: Member, method: int, buffer: memoryview, chunk: memoryview
          ) -> tuple[int, int, int]:
    """Return (method, crc32, compressed size) of a member, reading it if needed: whole
    into ``buffer`` if it is to be compressed and fits, else in reads of ``chunk``."""
    if m.size == 0:
        return ZIP_STORED, 0, 0
    if method == ZIP_STORED and m.crc32 is not None:
        return ZIP_STORED, m.crc32, m.size
    if method == ZIP_DEFLATED and m.size < len(buffer):  # one read, compressed in one call
        with m.open() as f:
            data = read_whole(f, m.arcname, m.size, buffer)
        crc = isal_zlib.crc32(data)
        compressed_size = len(deflate(data))
        if compressed_size < m.size:
            return ZIP_DEFLATED, crc, compressed_size
        return ZIP_STORED, crc, m.size
    deflate_ = deflater() if method == ZIP_DEFLATED else None
    crc = compressed_size = nread = 0
    with m.open() as f:
        while n := f.readinto(chunk):
            nread += n
            if nread > m.size:
                raise MemberError(m.arcname, larger(m.size))
            crc = isal_zlib.crc32(chunk[:n], crc)
            if deflate_ is not None:
                compressed_size += len(deflate_.compress(chunk[:n]))
    if nread < m.size:
        raise MemberError(m.arcname, smaller(nread, m.size))
    if deflate_ is not None:
        compressed_size += len(deflate_.flush())
        if compressed_size < m.size:
            return ZIP_DEFLATED, crc, compressed_size
    return ZIP_STORED, crc, m.size

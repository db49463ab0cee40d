"""A ``.7z`` on a server, read by byte ranges: its member list, and members one by one.

py7zr reads the headers through a :class:`~.ranges.RangeFile` (a file object with a
read-ahead cache): the signature header at the start, the header at the end, a few
requests. The data is laid out in *folders*, each one or more packed streams run through
a chain of coders. A *solid* archive packs many members into one folder: a member can
then only be had by decoding its folder from the start, so it needs the whole folder
(usually the whole archive). In a non-solid archive (``7z a -ms=off``) every member is
a folder of its own; when that folder is one coder that Python decodes (copy, LZMA,
LZMA2, deflate), or LZMA(2) behind the x86 branch filter (py7zr's default), the member
is read here from its packed byte range alone, in one request, and checked
against its size and CRC-32. Other members say why they need the whole archive
(:attr:`SevenZipMember.whole_archive`), for a caller to download it and use 7-Zip.
"""

from __future__ import annotations

import logging
import lzma
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from .codecs import sevenzip_decoder
from .ranges import (
    ArchiveError,
    CorruptMember,
    Listing,
    RangeFile,
    Unsupported,
)

lgr = logging.getLogger("datalad.rdr.archives")

SIGNATURE_HEADER_SIZE = 32  # the packed streams start right after it
_CODERS = {b"\x00": "copy", b"\x21": "lzma2", b"\x03\x01\x01": "lzma",
           b"\x04\x01\x08": "deflate"}
_AES = b"\x06\xf1\x07\x01"
_BCJ_X86 = b"\x03\x03\x01\x03"


@dataclass(frozen=True, slots=True)
class SevenZipMember:
    name: str
    size: int
    crc32: int | None
    is_dir: bool
    #: Packed bytes ``[start, end)`` in the (joined) file, if the member can be read alone.
    packed: tuple[int, int] | None
    coder: str | None
    properties: bytes
    #: Why the member can only be had by extracting the whole archive; None if it can not.
    whole_archive: str | None


@dataclass
class SevenZipDirectory(Listing):
    source: object
    members: list[SevenZipMember]
    solid: bool

    def read(self, member: SevenZipMember, out: BinaryIO) -> int:
        return read_member(self.source, member, out)


def read_directory(source, readahead: int = 65536) -> SevenZipDirectory:
    """List a ``.7z``'s members and where each one's packed bytes are (a few requests)."""
    import py7zr
    from py7zr.exceptions import ArchiveError as SevenZipError
    from py7zr.exceptions import PasswordRequired

    try:
        with py7zr.SevenZipFile(RangeFile(source, readahead), mode="r") as archive:
            files = list(archive.files)
            streams = archive.header.main_streams
    except PasswordRequired:
        raise ArchiveError(f"{source.name}: its member list is encrypted: extract it with "
                           f"7-Zip and the password") from None
    except (SevenZipError, EOFError, OSError, struct.error, ValueError) as exc:
        if isinstance(exc, ArchiveError):
            raise
        raise ArchiveError(f"{source.name}: not a readable 7z archive ({exc})") from None
    folders = streams.unpackinfo.folders if streams else []
    first_pack = {}
    index = 0
    for i, folder in enumerate(folders):
        first_pack[id(folder)] = (i, index)
        index += len(folder.packed_indices)
    per_folder = streams.substreamsinfo.num_unpackstreams_folders if (
        streams and streams.substreamsinfo) else [1] * len(folders)
    solid = any(n > 1 for n in per_folder)
    members = []
    for f in files:
        members.append(_member(f, streams, first_pack, per_folder))
    lgr.debug("%s: %d members, solid=%s, %d requests", source.name, len(members), solid,
              source.requests)
    return SevenZipDirectory(source, members, solid)


def _member(f, streams, first_pack, per_folder) -> SevenZipMember:
    name = f.filename + ("/" if f.is_directory else "")
    if f.is_directory or f.emptystream:
        return SevenZipMember(name, 0 if f.emptystream else f.uncompressed, f.crc32,
                              f.is_directory, None, None, b"", None)
    folder = f.folder
    folder_index, pack_index = first_pack[id(folder)]
    crc = f.crc32
    if crc is None and per_folder[folder_index] == 1 and folder.digestdefined:
        crc = folder.crc  # a folder of one member may carry its CRC-32 itself
    coders = folder.coders
    methods = [c["method"] for c in coders]
    why = None
    if per_folder[folder_index] != 1:
        why = "solid: it is packed together with other members"
    elif _AES in methods:
        why = "encrypted"
    elif not (len(folder.packed_indices) == 1 and (
            (len(coders) == 1 and methods[0] in _CODERS) or _x86_chain(folder))):
        why = f"packed with 7z coders {'+'.join(map(_coder_name, methods))}"
    if why:
        return SevenZipMember(name, f.uncompressed, crc, False, None, None, b"", why)
    start = (SIGNATURE_HEADER_SIZE + streams.packinfo.packpos
             + streams.packinfo.packpositions[pack_index])
    end = start + streams.packinfo.packsizes[pack_index]
    coder = "+".join(_coder_name(m) for m in reversed(methods))
    return SevenZipMember(name, f.uncompressed, crc, False, (start, end), coder,
                          coders[0]["properties"] or b"", None)


def _coder_name(method: bytes) -> str:
    return _CODERS.get(method) or ("x86" if method == _BCJ_X86 else method.hex())


def _x86_chain(folder) -> bool:
    """LZMA(2) whose output goes through the x86 branch filter: py7zr's default chain."""
    methods = [c["method"] for c in folder.coders]
    return (len(methods) == 2 and methods[1] == _BCJ_X86
            and _CODERS.get(methods[0]) in ("lzma", "lzma2")
            and folder.packed_indices == [0]
            and [(b.incoder, b.outcoder) for b in folder.bindpairs] == [(1, 0)])


def read_member(source, member: SevenZipMember, out: BinaryIO) -> int:
    """Write a member read from its packed range alone to ``out``; returns bytes written.

    Raises :class:`Unsupported` if the member needs the whole archive, and
    :class:`CorruptMember` if its size or CRC-32 is not what the header says (``out`` may
    then hold wrong bytes: the caller discards them).
    """
    where = f"{member.name} in {source.name}"
    if member.whole_archive:
        raise Unsupported(f"{where}: {member.whole_archive}, so it cannot be read alone; "
                          f"download the whole archive and extract it with 7-Zip")
    if member.packed is None:
        return 0  # a directory or an empty file
    decoder = sevenzip_decoder(member.coder, member.properties)
    crc = size = 0

    def emit(data: bytes) -> None:
        nonlocal crc, size
        crc, size = zlib.crc32(data, crc), size + len(data)
        if size > member.size:
            raise CorruptMember(f"{where}: more than the {member.size} bytes the 7z header "
                                f"says")
        out.write(data)

    try:
        for chunk in source.stream(*member.packed):
            for data in [chunk] if decoder is None else decoder.pieces(chunk):
                emit(data)
        if decoder is not None:
            emit(decoder.end()[0])  # 7z's LZMA has no end marker: size and CRC-32 tell
    except (lzma.LZMAError, zlib.error) as exc:
        raise CorruptMember(f"{where}: cannot decode ({exc}): the archive is damaged"
                            ) from None
    if size != member.size:
        raise CorruptMember(f"{where}: {size} bytes, not the {member.size} the 7z header "
                            f"says")
    if member.crc32 is not None and crc != member.crc32:
        raise CorruptMember(f"{where}: CRC-32 {crc:08x}, not the {member.crc32:08x} the 7z "
                            f"header says (the archive is damaged on the server or in "
                            f"transit)")
    return size

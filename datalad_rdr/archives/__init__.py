"""Archives uploaded to RDR by hand (ZIP, 7z, split volumes), read by byte ranges.

People upload datasets to RDR as they have them: ZIPs made with 7-Zip or Info-ZIP, ``.7z``
archives, and archives too large for one file as split volumes (``7z a -v20g`` gives
``data.zip.001``, ``.002``, ...). To turn such a dataset into a DataLad dataset whose
files are fetched one at a time, this package lists an archive's members and reads any
one member without downloading the archive::

    source = from_bundle_reader(reader, file_id, size, "data.zip")  # or from_path(...)
    archive = open_archive(source)          # ZIP: the central directory, 1-3 requests
    member = archive.get("sub-01/anat/T1w.nii.gz")
    with open(dest, "wb") as out:
        archive.read(member, out)           # one request of about the member's size
    source.requests, source.bytes_read      # what it cost

Volumes of one archive are joined first: ``Volumes([from_path(p) for p in parts])``;
:func:`volume_sets` finds them among a dataset's file names. Every member read is checked
against its size and CRC-32 before the call returns; a mismatch raises
:class:`CorruptMember` naming the member. See docs/archives.rst.
"""

from __future__ import annotations

from .ranges import (
    ArchiveError,
    CorruptMember,
    RangeFile,
    Ranges,
    Unsupported,
    from_bundle_reader,
    from_path,
)
from .sevenzip import SevenZipDirectory, SevenZipMember
from .volumes import Volumes, VolumeSet, volume_sets
from .ziparchive import LOCAL_SLACK, ZipDirectory, ZipMember

__all__ = [
    "LOCAL_SLACK",
    "ArchiveError",
    "CorruptMember",
    "RangeFile",
    "Ranges",
    "SevenZipDirectory",
    "SevenZipMember",
    "Unsupported",
    "VolumeSet",
    "Volumes",
    "ZipDirectory",
    "ZipMember",
    "from_bundle_reader",
    "from_path",
    "open_archive",
    "volume_sets",
]

SEVEN_ZIP_SIGNATURE = b"7z\xbc\xaf\x27\x1c"


def open_archive(source) -> ZipDirectory | SevenZipDirectory:
    """The member list of a ZIP or 7z archive (told apart by name, else by first bytes)."""
    from . import sevenzip, ziparchive

    name = source.name.lower().rstrip("0123456789").rstrip(".")
    if name.endswith(".7z"):
        return sevenzip.read_directory(source)
    if name.endswith(".zip") or name.endswith(".z"):
        return ziparchive.read_directory(source)
    if source.read(0, min(source.size, 6)) == SEVEN_ZIP_SIGNATURE:
        return sevenzip.read_directory(source)
    return ziparchive.read_directory(source)

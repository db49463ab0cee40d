"""Where an annex key lies on RDR: the location record, the one format this module owns.

A key's bytes on RDR are one member of one ZIP bundle, a file of a Dataverse dataset. The
``rdr`` special remote records that place, per key, as a URI in the key's URL log in the
git-annex branch (``git annex registerurl --remote`` from ``rdr-export`` and from sessions
that ended after git-annex stopped listening; ``SETURIPRESENT`` inside a session), so every
clone -- also one made through a RIA store -- knows where to read each key::

    rdr+https://rdr.kuleuven.be/api/access/datafile/1234?pid=doi%3A10.48804/ABCDEF
        &bundle=raw-01.zip&bsize=2000000000&member=sub-01/anat/sub-01_T1w.nii.gz
        &size=1536000&method=stored&crc32=0a1b2c3d&csize=1536000&header=1048576&data=1048650
        &v=1

(one line). The part before ``?`` is the bundle's access URL with ``rdr+`` in front: no
other remote claims the scheme, and a reader sees where the bytes come from. The query:

``pid``
    the dataset the bundle belongs to: a remote claims (``CLAIMURL``) only records of its
    own server and dataset, so two rdr remotes of one repository never claim the same;

``bundle``, ``bsize``
    the bundle's label and size on the server (a DataFile id never changes its bytes:
    Dataverse gives a replaced file a new id);
``member``
    the member's name in the ZIP (percent-encoded). Only compared with the name in the
    ZIP's local header, never used as a path on disk;
``size``, ``method`` (``stored``/``deflated``), ``crc32``, ``csize``
    the member's size, compression, CRC-32 and compressed size;
``header``, ``data``
    byte offsets of the member's local header and of its first data byte in the ZIP;
``vols``
    only for a bundle written as split volumes (``raw.zip.001``, ...): the volumes' file ids
    and sizes in order, ``1234:1000000,1235:731`` (the path names the first volume,
    ``bundle`` the ZIP's name, ``bsize`` the whole ZIP's size; ``header`` and ``data`` are
    offsets in the volumes joined). Such a record is version 2;
``v``
    the version of this format: 1, or 2 with ``vols``. Records written before it was added
    have none and are version 1. A record of a later version (a newer datalad-rdr wrote it)
    is refused with "upgrade datalad-rdr" rather than misread; any new field means a new
    version.

A key may have several records (the same content in two bundles); the remote tries them in
turn. Records of another server or dataset are not this remote's (``claims``). docs/remote.rst
describes the format for users.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode

from ..zipformat import LOCAL_HEADER_SIZE, METHOD_NAMES

SCHEME = "rdr+"
#: The version of the record format this module writes and reads: 1, and 2 (``vols``).
VERSION = 2
_ACCESS = "/api/access/datafile/"
METHODS = ("stored", "deflated")


class NewerFormat(ValueError):
    """A record of a format version this datalad-rdr does not know."""


@dataclass(frozen=True)
class Location:
    server: str  # Dataverse base URL, no trailing slash
    pid: str  # the dataset's persistent id
    file_id: int  # the bundle's DataFile id
    bundle: str  # the bundle's label on the server, e.g. "raw-01.zip"
    bundle_size: int
    member: str  # name of the member inside the ZIP
    size: int  # the member's (uncompressed) size
    method: str  # "stored" or "deflated"
    crc32: str  # 8 hex digits
    compressed_size: int
    header_offset: int  # local file header in the ZIP
    data_offset: int  # first byte of the member's (compressed) data
    #: (file id, size) of each split volume, in order; () for a bundle in one file
    volumes: tuple[tuple[int, int], ...] = ()
    #: the record as recorded (older ones have no ``v``): what unregistering must name
    recorded: str = field(default="", compare=False, repr=False)

    @property
    def record(self) -> str:
        """The record as it is in the git-annex branch."""
        return self.recorded or self.uri()

    @property
    def data_end(self) -> int:
        return self.data_offset + self.compressed_size

    def uri(self) -> str:
        head, tail = _bundle_parts(self.server, self.pid, self.file_id, self.bundle,
                                   self.bundle_size, self.volumes)
        return _record(head, self.member, self.size, self.method, self.crc32,
                       self.compressed_size, self.header_offset, self.data_offset, tail)

    @property
    def file_ids(self) -> list[int]:
        """The files on the server that hold its bundle."""
        return [fid for fid, _ in self.volumes] or [self.file_id]


def prefix(server: str) -> str:
    """The start of every record of ``server``: what GETURLS asks for."""
    return f"{SCHEME}{server.rstrip('/')}{_ACCESS}"


def claims(uri: str, server: str, pid: str) -> bool:
    """Is it a record of this server and dataset (also one of a newer format version, so
    that reading it says "upgrade" rather than git-annex "claimed by remote web")?"""
    if not uri.startswith(prefix(server)):
        return False
    try:
        return parse(uri).pid == pid
    except NewerFormat:
        return dict(parse_qsl(uri.partition("?")[2])).get("pid") == pid
    except ValueError:
        return False


def parse(uri: str) -> Location:
    """The location a record says; ValueError (naming the problem) if it is not one."""
    if not uri.startswith(SCHEME) or _ACCESS not in uri or "?" not in uri:
        raise ValueError(f"not an rdr location record: {uri!r}")
    head, query = uri[len(SCHEME):].split("?", 1)
    server, file_id = head.rsplit(_ACCESS, 1)
    fields = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True))
    version = fields.get("v", "1")
    if version not in ("1", "2"):
        if version.isdigit() and int(version) > VERSION:
            raise NewerFormat(f"a location record of format version {version} (this "
                              f"datalad-rdr reads version {VERSION}): upgrade datalad-rdr "
                              f"(pip install -U datalad-rdr)")
        raise ValueError(f"rdr location record: unknown version v={version!r}")

    def number(name: str) -> int:
        value = fields.get(name, "")
        if not value.isdigit():
            raise ValueError(f"rdr location record: {name}={value!r} is not a byte count")
        return int(value)

    if not file_id.isdigit():
        raise ValueError(f"rdr location record: file id {file_id!r} is not a number")
    volumes = ()
    if version == "2":
        try:
            volumes = tuple((int(fid), int(size)) for fid, size in (
                v.split(":") for v in fields.get("vols", "").split(",")))
        except ValueError:
            raise ValueError("rdr location record: vols= is not a list of file ids and "
                             "sizes") from None
    loc = Location(
        server=server, pid=fields.get("pid", ""), file_id=int(file_id),
        bundle=fields.get("bundle", ""),
        bundle_size=number("bsize"), member=fields.get("member", ""), size=number("size"),
        method=fields.get("method", ""), crc32=fields.get("crc32", "").lower(),
        compressed_size=number("csize"), header_offset=number("header"),
        data_offset=number("data"), volumes=volumes, recorded=uri)
    if loc.method not in METHODS:
        raise ValueError(f"rdr location record: unknown method {loc.method!r}")
    if not re.fullmatch(r"[0-9a-f]{8}", loc.crc32):
        raise ValueError(f"rdr location record: crc32 {loc.crc32!r} is not 8 hex digits")
    if not loc.member or not loc.bundle or not loc.pid:
        raise ValueError("rdr location record: dataset, bundle or member name missing")
    if volumes and (volumes[0][0] != loc.file_id
                    or sum(size for _, size in volumes) != loc.bundle_size):
        raise ValueError("rdr location record: the volumes do not make the bundle")
    if loc.method == "stored" and loc.compressed_size != loc.size:
        raise ValueError("rdr location record: a stored member's sizes differ")
    if (loc.data_offset < loc.header_offset + LOCAL_HEADER_SIZE + len(loc.member.encode())
            or loc.data_end > loc.bundle_size):
        raise ValueError("rdr location record: offsets do not fit the bundle")
    return loc


def manifest_records(server: str, pid: str, bundle, members) -> list[str]:
    """The records of ``members`` of one manifest bundle, as :meth:`Location.uri` writes
    them; the bundle's part made once (100,000 Locations made and formatted: 2.4 s)."""
    head, tail = _bundle_parts(server.rstrip("/"), pid, bundle.file_id, bundle.filename,
                               bundle.size, tuple((v.file_id, v.size) for v in bundle.volumes))
    return [_record(head, m.path, m.size, m.method, m.crc32, m.compressed_size,
                    m.header_offset, m.data_offset, tail) for m in members]


def _bundle_parts(server, pid, file_id, bundle, bundle_size, volumes) -> tuple[str, str]:
    # as urlencode(quote_via=quote, safe="/") writes it; only the names need quoting
    # (numbers, method and crc32 are safe as they are), 7x faster at 100,000 records
    head = (f"{prefix(server)}{file_id}?pid={quote(pid, safe='/')}"
            f"&bundle={quote(bundle, safe='/')}&bsize={bundle_size}")
    tail = (f"&vols={','.join(f'{fid}:{size}' for fid, size in volumes)}&v=2" if volumes
            else "&v=1")
    return head, tail


def _record(head, member, size, method, crc32, compressed_size, header_offset,
            data_offset, tail) -> str:
    return (f"{head}&member={quote(member, safe='/')}&size={size}&method={method}"
            f"&crc32={crc32}&csize={compressed_size}&header={header_offset}"
            f"&data={data_offset}{tail}")


def from_entry(server: str, pid: str, file_id: int, bundle: str, bundle_size: int,
               entry) -> Location:
    """The location of a :class:`datalad_rdr.zipstream.LaidOutMember` of a bundle."""
    return Location(server.rstrip("/"), pid, file_id, bundle, bundle_size, entry.arcname,
                    entry.size, METHOD_NAMES[entry.method],
                    f"{entry.crc32:08x}", entry.compressed_size, entry.header_offset,
                    entry.data_offset)


# -- members of archives made by other tools (datalad rdr-clone) ------------------------
# A record of its own kind, with its own scheme and version: the bundle record above
# knows the data offset from our manifest; here only the central directory (or the 7z
# header) was read, and the archive may be split into volumes, each a file on RDR:
#
#     rdr-archive+https://rdr.kuleuven.be/api/access/datafile/1234?pid=doi%3A10.48804/X
#         &archive=data.zip&vols=1234:20000000000,1235:731&format=zip&member=a/b.csv
#         &size=1000&crc32=0a1b2c3d&method=8&flags=0&csize=400&header=123456&cextra=24&v=1
#
# ``vols`` are the volumes' file ids and sizes in order (the path names the first);
# ``header`` is the member's local header in the volumes joined; ``cextra`` the central
# header's extra length (the guess for the local one: the data offset is only known
# once the local header is read, in the same request). ``raw`` (hex) is the name's bytes
# when they are not its UTF-8. For ``format=7z``: ``packed`` (start-end, joined),
# ``coder``, ``props`` (hex), or ``whole`` (why only the whole archive gives it: solid,
# encrypted); ``format=file``: the volumes are one plain file, read whole.
ARCHIVE_SCHEME = "rdr-archive+"
ARCHIVE_VERSION = 1
ARCHIVE_FORMATS = ("zip", "7z", "file")


@dataclass(frozen=True)
class ArchiveLocation:
    server: str
    pid: str
    archive: str  # the archive's name on the server, e.g. "data.zip"
    volumes: tuple[tuple[int, int], ...]  # (file id, size) of each volume, in order
    format: str  # "zip", "7z" or "file"
    member: str
    size: int
    crc32: str = ""  # 8 hex digits; "" when the archive has none (some 7z members)
    extra: tuple[tuple[str, str], ...] = ()  # the format's own fields, as recorded

    def field(self, name: str, default: str = "") -> str:
        return dict(self.extra).get(name, default)

    def number(self, name: str) -> int:
        value = self.field(name)
        if not value.isdigit():
            raise ValueError(f"rdr archive record: {name}={value!r} is not a number")
        return int(value)

    def uri(self) -> str:
        vols = ",".join(f"{fid}:{size}" for fid, size in self.volumes)
        query = urlencode([
            ("pid", self.pid), ("archive", self.archive), ("vols", vols),
            ("format", self.format), ("member", self.member), ("size", self.size),
            *([("crc32", self.crc32)] if self.crc32 else []), *self.extra,
            ("v", ARCHIVE_VERSION)], safe="/:,", quote_via=quote)
        return f"{archive_prefix(self.server)}{self.volumes[0][0]}?{query}"


def archive_prefix(server: str) -> str:
    return f"{ARCHIVE_SCHEME}{server.rstrip('/')}{_ACCESS}"


def claims_archive(uri: str, server: str, pid: str) -> bool:
    if not uri.startswith(archive_prefix(server)):
        return False
    return dict(parse_qsl(uri.partition("?")[2])).get("pid") == pid


def parse_archive(uri: str) -> ArchiveLocation:
    """The member an archive record names; ValueError (NewerFormat) if it is not one."""
    if not uri.startswith(ARCHIVE_SCHEME) or _ACCESS not in uri or "?" not in uri:
        raise ValueError(f"not an rdr archive record: {uri!r}")
    head, query = uri[len(ARCHIVE_SCHEME):].split("?", 1)
    server = head.rsplit(_ACCESS, 1)[0]
    fields = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True))
    version = fields.pop("v", "")
    if version != str(ARCHIVE_VERSION):
        if version.isdigit() and int(version) > ARCHIVE_VERSION:
            raise NewerFormat(f"an archive record of format version {version} (this "
                              f"datalad-rdr reads version {ARCHIVE_VERSION}): upgrade "
                              f"datalad-rdr (pip install -U datalad-rdr)")
        raise ValueError(f"rdr archive record: unknown version v={version!r}")
    try:
        volumes = tuple((int(fid), int(size)) for fid, size in (
            v.split(":") for v in fields.pop("vols", "").split(",")))
        size = int(fields.pop("size", ""))
    except ValueError:
        raise ValueError("rdr archive record: vols= or size= is not a list of numbers"
                         ) from None
    loc = ArchiveLocation(server, fields.pop("pid", ""), fields.pop("archive", ""),
                          volumes, fields.pop("format", ""), fields.pop("member", ""),
                          size, fields.pop("crc32", "").lower(), tuple(fields.items()))
    if loc.format not in ARCHIVE_FORMATS:
        raise ValueError(f"rdr archive record: unknown format {loc.format!r}")
    if loc.crc32 and not re.fullmatch(r"[0-9a-f]{8}", loc.crc32):
        raise ValueError(f"rdr archive record: crc32 {loc.crc32!r} is not 8 hex digits")
    if not loc.pid or not loc.archive or not (loc.member or loc.format == "file"):
        raise ValueError("rdr archive record: dataset, archive or member name missing")
    return loc

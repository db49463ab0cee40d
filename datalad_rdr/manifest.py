"""Record stage: the manifest, the one source of truth of what was published where.

``.datalad/rdr/manifest.json`` and ``.datalad/rdr/members.tsv`` are committed to the dataset
with ``datalad save`` after an export. The first names the dataset commit (and subdataset
commits), the server and the dataset PID, and every bundle's file on the server; the second
holds one short line per bundle member with its place inside the ZIP: enough to pull one
member back out of a bundle by an HTTP Range request. One line a member, about 100 bytes,
with what can be derived left out (the size a key already says, offsets that follow from the
previous member), so 100,000 members stay a few MB in git and load in a second
(docs/manifest.rst describes the format; this module is the only code that reads or writes
it). Manifests of format 1 (members inline in the JSON) still load; the next export writes
format 2, or 3 when a bundle is written as split volumes (:class:`VolumeRecord`: a format 2
reader would not know where its bytes are, so it must refuse the manifest, not misread it).

While an export runs, the same records go to a journal under ``.git/datalad-rdr/`` after each
bundle is registered, so a rerun after a crash or a kill sends only what is not on the server.
The journal is written as soon as the draft is known, with the settings that shape what lands
on the server (:class:`Settings`); the manifest keeps them after the export, so a plain
``datalad rdr-export`` repeats the last one. One export of a dataset runs at a time
(:class:`ExportLock`).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .gitannex import key_size

FORMAT = "datalad-rdr-manifest/2"
FORMAT_3 = "datalad-rdr-manifest/3"  # format 2 and bundles' volumes: written only then
FORMAT_1 = "datalad-rdr-manifest/1"  # members inline in the JSON: read, never written
MANIFEST = ".datalad/rdr/manifest.json"
MEMBERS = ".datalad/rdr/members.tsv"
MEMBERS_HEADER = ("# datalad-rdr members/1: [bundle], folder/, then per member: name, key or "
                  "blob, crc32[, header, data, size, csize] (docs/manifest.rst)")
# ZIP local header (APPNOTE 4.3.7): 30 fixed bytes, then the name (our writer adds no extra
# field below 4 GiB): a member's data follows its header by this much and its name
LOCAL_HEADER_SIZE = 30


@dataclass(slots=True)
class MemberRecord:
    path: str  # in the dataset (and in the ZIP)
    size: int
    key: str | None  # git-annex key, or None for a file in git
    blob: str | None  # git blob id for a file in git
    method: str  # "stored" or "deflated"
    crc32: str  # 8 hex digits
    compressed_size: int
    header_offset: int  # local file header in the ZIP
    data_offset: int  # first byte of the member's (compressed) data in the ZIP


@dataclass
class VolumeRecord:
    """One split volume of a bundle: a file of its own on the server."""

    label: str  # "raw.zip.001"
    size: int
    md5: str
    file_id: int
    storage_identifier: str


@dataclass
class BundleRecord:
    name: str  # "raw-01"
    logical: str  # "raw"
    filename: str  # "raw-01.zip", the file's label on the server (the volumes' name stem)
    size: int  # of the whole ZIP, also when it is split into volumes
    md5: str  # "" for a bundle in volumes: each volume has its own
    file_id: int  # the first volume's for a bundle in volumes
    storage_identifier: str
    restricted: bool
    fingerprint: str  # of the member list: same fingerprint, same ZIP bytes
    members: list[MemberRecord] = field(default_factory=list)
    #: the ZIP's bytes in order, when it is split (members' offsets are in the whole ZIP)
    volumes: list[VolumeRecord] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> "BundleRecord":
        data = dict(data)
        text = data.pop("members_tsv", None)
        if text is not None:
            members = parse_members(text).get(data["name"], [])
        else:
            members = [MemberRecord(**m) for m in data.get("members", [])]
        volumes = [VolumeRecord(**v) for v in data.pop("volumes", [])]
        return cls(**{**data, "members": members, "volumes": volumes})

    def header(self) -> dict:
        """Its fields but the members (those go to the members file); volumes only when
        there are some, so that manifests without them read as they always did."""
        data = {f: getattr(self, f) for f in self.__dataclass_fields__
                if f not in ("members", "volumes")}
        if self.volumes:
            data["volumes"] = [asdict(v) for v in self.volumes]
        return data

    @property
    def files(self) -> list[tuple[str, int]]:
        """``(label, file id)`` of each file it is on the server: itself or its volumes."""
        if self.volumes:
            return [(v.label, v.file_id) for v in self.volumes]
        return [(self.filename, self.file_id)]


@dataclass
class DocumentRecord:
    """A file sent as itself, public, besides the bundles: the README, documentation."""

    path: str  # in the dataset
    label: str  # its file name on the server
    directory: str | None  # its directoryLabel on the server (the path's folder)
    size: int
    md5: str
    file_id: int
    storage_identifier: str
    restricted: bool
    key: str | None = None  # git-annex key, or None for a file in git
    blob: str | None = None  # git blob id for a file in git


@dataclass
class Settings:
    """What shapes what lands on the server besides the commit, as the export was given it."""

    collection: str | None = None  # where the draft was created
    cap: int | None = None  # --max-bundle-size
    recursive: bool = False  # -r
    ignore_preflight: list[str] = field(default_factory=list)
    restrict: bool = True  # False: --no-restrict

    @classmethod
    def from_json(cls, data: dict | None) -> "Settings | None":
        if not data:
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Manifest:
    server: str
    pid: str
    dataset_commit: str
    subdatasets: dict = field(default_factory=dict)
    bundles: list[BundleRecord] = field(default_factory=list)
    doi: str | None = None
    exported: str | None = None
    format: str = FORMAT
    documents: list[DocumentRecord] = field(default_factory=list)
    # pre-flight errors the export went on despite (--ignore-preflight): code, message, paths
    preflight_overrides: list[dict] = field(default_factory=list)
    version: str | None = None  # the published version ("1.0") that has ``doi``
    published: str | None = None  # its release time, as the server gives it
    settings: dict | None = None  # the export's :class:`Settings`, reused by a plain rerun

    def bundle(self, name: str) -> BundleRecord | None:
        return next((b for b in self.bundles if b.name == name), None)

    def _header(self) -> dict:
        data = {f: getattr(self, f) for f in self.__dataclass_fields__
                if f not in ("bundles", "documents")}
        data["documents"] = [asdict(d) for d in self.documents]
        data["bundles"] = [b.header() for b in self.bundles]
        if self.format != FORMAT_1:  # format 1 is never the same as what is written now
            data["format"] = self.written_format()
        return data

    def to_json(self) -> str:
        """``manifest.json``: everything but the members (:meth:`members_text`)."""
        return json.dumps({**self._header(), "format": self.written_format()}, indent=1) + "\n"

    def written_format(self) -> str:
        return FORMAT_3 if any(b.volumes for b in self.bundles) else FORMAT

    def members_text(self) -> str:
        """``members.tsv``: one line per member of every bundle."""
        return members_text(self.bundles)

    def as_dict(self) -> dict:
        """Everything in one dict, members inside their bundles (format 1's shape): for
        scripts and tests that look at one member."""
        return asdict(self)

    def digest(self) -> str:
        """Identity of what the manifest says, both files."""
        return hashlib.sha256((self.to_json() + self.members_text()).encode()).hexdigest()

    def same_export(self, other: "Manifest | None") -> bool:
        """The same files in the same place: only the commit and the time may differ (an
        export of the previous export's manifest commit changes nothing on the server).
        A manifest of format 1 is never the same: the next export rewrites it as 2."""
        if other is None:
            return False
        mine, theirs = self._header(), other._header()
        for volatile in ("dataset_commit", "exported"):
            mine.pop(volatile), theirs.pop(volatile)
        return mine == theirs and all(a.members == b.members
                                      for a, b in zip(self.bundles, other.bundles))

    @classmethod
    def from_json(cls, text: str, members: str | None = None) -> "Manifest":
        """A manifest from ``manifest.json`` and (format 2) ``members.tsv``."""
        data = json.loads(text)
        if data.get("format") not in (FORMAT_3, FORMAT, FORMAT_1):
            raise ValueError(f"not a {FORMAT_3} manifest: format {data.get('format')!r}")
        split = data["format"] != FORMAT_1  # members in members.tsv
        by_bundle = parse_members(members or "") if split else {}
        bundles = []
        for b in data.pop("bundles", []):
            record = BundleRecord.from_json(b)
            if split:
                record.members = by_bundle.get(record.name, [])
            bundles.append(record)
        documents = [DocumentRecord(**d) for d in data.pop("documents", [])]
        return cls(**{**data, "bundles": bundles, "documents": documents})


# -- members.tsv --------------------------------------------------------------------------

_ESCAPES = {"%": "%25", "\t": "%09", "\n": "%0A", "\r": "%0D"}
_SPECIAL = re.compile("[%\t\n\r]")  # a name without them is written as it is
_UNESCAPE = re.compile("%(25|09|0A|0D|23|5B)")
_UNESCAPES = {"25": "%", "09": "\t", "0A": "\n", "0D": "\r", "23": "#", "5B": "["}


def _escape(name: str, line_start: bool = False) -> str:
    for char, code in _ESCAPES.items():
        if char in name:
            name = name.replace(char, code)
    if line_start and name[:1] in ("#", "["):  # would read as a comment or a bundle
        name = {"#": "%23", "[": "%5B"}[name[0]] + name[1:]
    return name


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(lambda m: _UNESCAPES[m.group(1)], text) if "%" in text else text


def _name_size(path: str) -> int:
    return len(path.encode("utf-8", "surrogateescape"))


def members_text(bundles: list[BundleRecord]) -> str:
    return MEMBERS_HEADER + "\n" + "".join(map(_bundle_text, bundles))


#: where a bundle record keeps its lines of ``members.tsv`` (not a field: not compared,
#: not written)
_TEXT = "_members_tsv"


def _bundle_text(bundle: BundleRecord) -> str:
    """A bundle's lines of ``members.tsv`` (its ``[name]`` line first), made once per
    record: the journal, the manifest and its digest each need them, 1.5 s a pass at
    100,000 members. A record's members do not change once it is made; a list replaced or
    grown, or a new name, makes them again."""
    members = bundle.members
    memo = bundle.__dict__.get(_TEXT)
    if memo is not None and memo[0] is members and memo[1] == len(members) \
            and memo[2] == bundle.name:
        return memo[3]
    out = [f"[{_escape(bundle.name)}]"]
    append, special = out.append, _SPECIAL.search
    folder, end = None, 0
    for m in members:
        path, key, header, data = m.path, m.key, m.header_offset, m.data_offset
        parent, _, name = path.rpartition("/")
        parent = f"{parent}/" if parent else "./"
        if parent != folder:
            append(_escape(parent, line_start=True))
            folder = parent
        cols = [
            _escape(name) if special(name) else name, key or m.blob or "", m.crc32,
            "" if header == end else str(header),
            "" if data == header + LOCAL_HEADER_SIZE + (
                len(path) if path.isascii() else _name_size(path)) else str(data),
            "" if key and key_size(key) == m.size else str(m.size),
            "" if m.method == "stored" else str(m.compressed_size),
        ]
        while not cols[-1]:
            cols.pop()
        append("\t".join(cols))
        end = data + m.compressed_size
    text = "\n".join(out) + "\n"
    bundle.__dict__[_TEXT] = (members, len(members), bundle.name, text)
    return text


def parse_members(text: str) -> dict[str, list[MemberRecord]]:
    """bundle name -> its members, from the text :func:`members_text` writes."""
    bundles: dict[str, list[MemberRecord]] = {}
    members: list[MemberRecord] = []
    folder, end = "", 0
    for number, line in enumerate(text.split("\n"), 1):
        if "\t" not in line:
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                members = bundles.setdefault(_unescape(line[1:-1]), [])
                folder, end = "", 0
            elif line.endswith("/"):
                folder = "" if line == "./" else _unescape(line)
            else:
                raise ValueError(f"{MEMBERS} line {number}: not a bundle, folder or member")
            continue
        cols = line.split("\t")
        cols += [""] * (7 - len(cols))
        name, ident, crc, header, data, size, csize = cols[:7]
        path = folder + _unescape(name)
        key = ident if "--" in ident else None
        try:
            header_offset = int(header) if header else end
            data_offset = int(data) if data else \
                header_offset + LOCAL_HEADER_SIZE + _name_size(path)
            nbytes = int(size) if size else key_size(key or "")
            if nbytes is None:
                raise ValueError("no size")
            compressed = int(csize) if csize else nbytes
        except ValueError:
            raise ValueError(f"{MEMBERS} line {number}: a size or offset is not a number"
                             ) from None
        members.append(MemberRecord(path, nbytes, key, None if key else ident,
                                    "deflated" if csize else "stored", crc, compressed,
                                    header_offset, data_offset))
        end = data_offset + compressed
    return bundles


def known_crc32s(*sources: "Manifest | Journal | None") -> dict[str, int]:
    """CRC32 of content already exported, by annex key or git blob id (content-addressed:
    the same key is the same bytes), so a new layout need not read a STORED member for it;
    the stream still checks it."""
    crcs = {}
    for source in sources:
        bundles = (source.bundles.values() if isinstance(source, Journal)
                   else source.bundles if source else [])
        for bundle in bundles:
            for m in bundle.members:
                if m.key or m.blob:
                    crcs[m.key or m.blob] = int(m.crc32, 16)
    return crcs


def fingerprint(members: list[tuple[str, str | None, str | None, int]]) -> str:
    """Identity of a bundle's content: sorted (path, key, blob, size)."""
    digest = hashlib.sha256()
    for path, key, blob, size in sorted(members):
        digest.update(f"{path}\0{key or ''}\0{blob or ''}\0{size}\n".encode())
    return digest.hexdigest()


def load(dataset: Path) -> Manifest | None:
    path = Path(dataset) / MANIFEST
    if not path.exists():
        return None
    members = Path(dataset) / MEMBERS
    return Manifest.from_json(path.read_text(),
                              members.read_text() if members.exists() else None)


def save(dataset: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (returned) and ``members.tsv`` (:func:`files` names both,
    for the commit)."""
    manifest.exported = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest.format = manifest.written_format()
    path = Path(dataset) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    members = Path(dataset) / MEMBERS
    text = manifest.members_text()
    if not members.exists() or members.read_text() != text:
        _atomic_write(members, text)
    _atomic_write(path, manifest.to_json())
    return path


def files(dataset: Path) -> list[Path]:
    """The files of the manifest, to be committed together."""
    return [Path(dataset) / MANIFEST, Path(dataset) / MEMBERS]


class Journal:
    """What the export in progress has done: its server, draft and settings, bundles confirmed
    on the server, and the state of the upload under way (its URLs and the parts already
    sent), so a rerun after a crash or a kill continues in the same draft and sends neither
    a confirmed bundle nor a part the store already has."""

    def __init__(self, git_dir: Path, server: str, pid: str,
                 settings: Settings | None = None):
        self.path = journal_path(git_dir)
        self.server, self.pid = server, pid
        self.settings = settings or Settings()
        self.bundles: dict[str, BundleRecord] = {}
        self.uploads: dict[str, dict] = {}  # bundle name -> {"fingerprint", "state"}
        data = read_journal(git_dir)
        if data and (data.get("server"), data.get("pid")) == (server, pid):
            self.bundles = {name: BundleRecord.from_json(b)
                            for name, b in data.get("bundles", {}).items()}
            self.uploads = data.get("uploads", {})

    def start(self) -> None:
        """Written before the first byte is sent: a rerun finds the draft even when the run
        is killed before a bundle is confirmed."""
        self._write()

    def record(self, bundle: BundleRecord) -> None:
        self.bundles[bundle.name] = bundle
        self.uploads.pop(bundle.name, None)
        for volume in bundle.volumes:  # each volume was an upload of its own
            self.uploads.pop(volume.label, None)
        self._write()

    def upload_state(self, name: str, fingerprint: str) -> dict | None:
        """The interrupted upload of this bundle with this content, if any."""
        known = self.uploads.get(name)
        if known and known.get("fingerprint") == fingerprint:
            return known["state"]
        return None

    def record_upload(self, name: str, fingerprint: str, state: dict | None) -> None:
        if state is None:
            self.uploads.pop(name, None)
        else:
            self.uploads[name] = {"fingerprint": fingerprint, "state": state}
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # members in the compact form of members.tsv: rewritten after every bundle and
        # upload part, so no JSON object per member, and each record's lines made once
        _atomic_write(self.path, json.dumps({
            "server": self.server, "pid": self.pid, "settings": asdict(self.settings),
            "bundles": {n: {**b.header(), "members_tsv": members_text([b])}
                        for n, b in self.bundles.items()},
            "uploads": self.uploads}))

    def clear(self) -> None:
        self.bundles = {}
        self.uploads = {}
        if self.path.exists():
            self.path.unlink()


def journal_path(git_dir: Path) -> Path:
    return Path(git_dir) / "datalad-rdr" / "export-journal.json"


def read_journal(git_dir: Path) -> dict | None:
    """The journal of an export in progress (interrupted), or None."""
    path = journal_path(git_dir)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # cannot happen with atomic writes; treat as no journal


class ExportBusy(Exception):
    pass


class ExportLock:
    """One export of a dataset at a time: an ``flock`` on a file in its git dir.

    The kernel drops the lock when its process dies, however it dies, so a crashed or
    killed export never leaves a stale lock behind.
    """

    def __init__(self, git_dir: Path, wait: float = 60, on_wait=None):
        self.path = Path(git_dir) / "datalad-rdr" / "export.lock"
        self.wait, self.on_wait = wait, on_wait
        self._fd = None

    def __enter__(self) -> "ExportLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if time.monotonic() >= deadline:
                os.close(fd)
                raise ExportBusy(holder)
            if not told and self.on_wait is not None:
                self.on_wait(holder)
                told = True
            time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _atomic_write(path: Path, text: str) -> None:
    # a temporary file of its own: two writers never rename each other's
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

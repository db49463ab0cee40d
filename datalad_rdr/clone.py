"""``rdr-clone``: a DataLad dataset from a record on the server.

A record exported by datalad-rdr holds the dataset's history (:mod:`datalad_rdr.history`):
it is cloned from that (:func:`clone_history`). A record uploaded by hand is made into a
new dataset from the record itself, as follows.

The data's way: the SOURCE the user gave becomes a server and a dataset PID
(:func:`resolve`); the chosen version's file list comes from the server; every file is
planned (:func:`plan`) as annexed files with location records -- a plain file as itself,
every ZIP or ``.7z`` (and every set of split volumes, read as one archive) as its members,
listed from the central directory (or 7z header) by Range requests; then the dataset is
made or updated (:func:`apply`) in one commit, with git-annex's plumbing only: nothing is
downloaded, and nothing is ever written to the server.

Keys: a plain file gets the checksum key of the checksum the server lists (``MD5E``);
a member gets a URL key with its size, named by its archive, name, size and CRC-32
(git-annex accepts it without the content; the ``rdr`` remote checks the CRC-32 on every
read), or with ``--hash`` an ``MD5E`` key computed by reading every member once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from .archives import ArchiveError, Volumes, from_bundle_reader, open_archive, volume_sets
from .dataverse import Dataverse, DataverseError, NoAnswer, NotFound, RecordFile, Unauthorized
from .history import NAME as HISTORY
from .gitannex import Annex, AnnexError, GitError, git, git_or_none
from .remote.locations import ArchiveLocation
from .remote.reader import BundleReader, Denied, ReadError, request_access

lgr = logging.getLogger("datalad.rdr.clone")

DOI_RESOLVER = "https://doi.org/"
REMOTE = "rdr"
RECORD_FILE = ".datalad/rdr/record.json"
_ARCHIVE = re.compile(r"\.(zip|7z)$", re.IGNORECASE)
_CHECKSUM_BACKENDS = {"MD5": "MD5E", "SHA-1": "SHA1E", "SHA-256": "SHA256E",
                      "SHA-512": "SHA512E"}


class CloneError(Exception):
    """The clone cannot go on; the message says why and what to do (one line)."""


@dataclass(frozen=True)
class Source:
    server: str
    pid: str
    version: str | None  # None: the latest published


def resolve(source: str, url: str | None = None, version: str | None = None,
            resolver: str = DOI_RESOLVER) -> Source:
    """Server, PID and version of a DOI, a landing-page URL, or a PID with ``url``."""
    text = source.strip()
    parts = urlsplit(text)
    server = url.rstrip("/") if url else None
    if parts.scheme in ("http", "https"):
        query = parse_qs(parts.query)
        if parts.netloc.lower() in ("doi.org", "dx.doi.org"):
            pid = "doi:" + parts.path.lstrip("/")
        elif query.get("persistentId"):
            pid = query["persistentId"][0]
            server = server or f"{parts.scheme}://{parts.netloc}"
            version = version or (query.get("version") or [None])[0]
        else:
            raise CloneError(f"{text} is neither a DOI nor a dataset's page: give the "
                             f"page's URL (https://SERVER/dataset.xhtml?persistentId=doi:"
                             f"...), the DOI, or the PID with --url SERVER")
    elif re.match(r"^(doi|hdl):\S+/\S+$", text, re.IGNORECASE):
        pid = text
    elif re.match(r"^10\.\d{4,9}/\S+$", text):
        pid = "doi:" + text
    else:
        raise CloneError(f"{text!r} is not a DOI (doi:10.48804/ABCDEF), a dataset's page "
                         f"URL or a PID: give one of them (a PID with --url SERVER)")
    if version and version.lower() == "latest":
        version = None
    return Source(server or _server_of_doi(pid, resolver), pid, version)


def _server_of_doi(pid: str, resolver: str) -> str:
    """The server of a DOI's landing page, from the resolver's redirect."""
    if not pid.lower().startswith("doi:"):
        raise CloneError(f"{pid} is not a DOI: name its server with --url SERVER")
    where = resolver + pid[4:]
    try:
        r = requests.head(where, allow_redirects=False, timeout=30)
    except requests.RequestException as exc:
        raise CloneError(f"cannot resolve {pid} through {resolver} ({type(exc).__name__}): "
                         f"check the network, or name the server with --url (e.g. --url "
                         f"https://rdr.kuleuven.be)") from None
    target = urlsplit(r.headers.get("Location", ""))
    if r.status_code not in (301, 302, 303, 307, 308) or not target.netloc:
        raise CloneError(f"{resolver} does not resolve {pid} (HTTP {r.status_code}; a "
                         f"sandbox or unregistered DOI?): name the server with --url")
    return f"{target.scheme}://{target.netloc}"


def open_version(client: Dataverse, src: Source):
    """The version's label and files (:class:`datalad_rdr.dataverse.RecordVersion`)."""
    spec = {None: ":latest-published", "draft": ":draft"}.get(
        (src.version or "").lower() or None, src.version)
    try:
        return client.record_version(src.pid, spec)
    except NotFound:
        if spec == ":latest-published":
            raise CloneError(f"{src.server} has no published version of {src.pid}: check "
                             f"the PID and --url, or clone the draft with --record-version draft "
                             f"and an API token that may edit it") from None
        raise CloneError(f"{src.server} has no version {src.version} of {src.pid} that "
                         f"this user may read: check --record-version (a draft needs a token "
                         f"that may edit it)") from None
    except Unauthorized:
        raise CloneError(f"{src.server} refused the API token (Bad API key): renew it in "
                         f"the credential, or clone public files without one") from None
    except NoAnswer as exc:
        raise CloneError(f"cannot reach {src.server} ({exc.message}): check --url and "
                         f"the network") from None
    except DataverseError as exc:
        raise CloneError(f"{src.server}: {exc}") from None


@dataclass
class Entry:
    """An annexed file to be: its path, key, and where git-annex finds it."""

    path: str
    key: str
    rdr: list[str] = field(default_factory=list)  # location records of the rdr remote
    web: list[str] = field(default_factory=list)  # plain URLs (public files)


def plan(reader: BundleReader, src: Source, files: list[RecordFile], merge: bool = False,
         hash: bool = False) -> Iterator[dict | Entry]:
    """Entries for the record's files, and a result per archive and per problem."""
    by_path = {f.path: f for f in files}
    archives: list[tuple[str, list[RecordFile]]] = []
    in_sets = set()
    for vs in volume_sets(by_path):
        if vs.missing:
            yield _result(vs.name, "error", f"split archive {vs.name}: volumes "
                          f"{', '.join(map(str, vs.missing))} are not in the record; "
                          f"its volumes are annexed as they are")
            continue
        archives.append((vs.name, [by_path[v] for v in vs.volumes]))
        in_sets.update(vs.volumes)
    for f in files:
        if f.path in in_sets:
            continue
        if _ARCHIVE.search(f.label):
            archives.append((f.path, [f]))
        else:
            yield _plain(src, f)
    for name, parts in archives:
        yield from _archive(reader, src, name, parts, merge, hash)


def _plain(src: Source, f: RecordFile) -> Entry:
    backend = _CHECKSUM_BACKENDS.get(f.checksum_type.upper())
    key = (f"{backend}-s{f.size}--{f.checksum}{_extension(f.label)}" if backend and
           f.checksum else _url_key(f.size, f"{src.pid}\0{f.id}"))
    loc = ArchiveLocation(src.server, src.pid, f.label, ((f.id, f.size),), "file", "",
                          f.size)
    web = [] if f.restricted else [f"{src.server}/api/access/datafile/{f.id}"]
    return Entry(f.path, key, [loc.uri()], web)


def _archive(reader, src: Source, name: str, parts: list[RecordFile], merge: bool,
             hash: bool) -> Iterator[dict | Entry]:
    lgr.info("listing the members of %s", name)
    ranges = [from_bundle_reader(reader, f.id, f.size, f.label) for f in parts]
    joined = ranges[0] if len(ranges) == 1 else Volumes(ranges, posixpath.basename(name))
    try:
        listing = open_archive(joined)
    except (ArchiveError, ReadError) as exc:
        restricted = any(f.restricted for f in parts)
        yield _result(name, "error", f"{name}: cannot list its members ({exc})"
                      + ("; it is restricted: use 'Request Access' on the dataset's page"
                         if restricted and "Request" not in str(exc) else "")
                      + "; the file is annexed as it is")
        for f in parts:
            yield _plain(src, f)
        return
    base = posixpath.dirname(name)
    folder = base if merge else _ARCHIVE.sub("", name)
    volumes = tuple((f.id, f.size) for f in parts)
    count = skipped = 0
    for m in listing:
        if m.is_dir or getattr(m, "is_symlink", False):
            continue
        path = _safe_path(folder, m.name)
        if path is None:
            skipped += 1
            yield _result(f"{folder}/{m.name!r}", "impossible", f"{name}: member name "
                          f"{m.name!r} is not a safe path in a dataset; left out")
            continue
        loc = _member_location(src, posixpath.basename(name), volumes, m)
        key = _url_key(m.size, f"{name}\0{m.name}\0{loc.crc32}\0{m.size}")
        if hash and getattr(m, "whole_archive", None):
            yield _result(path, "impossible", f"--hash: {name}: {m.name} is "
                          f"{m.whole_archive}; it keeps a URL key with its size")
        elif hash:
            digest = _Hashing()
            try:
                listing.read(m, digest)
            except (ArchiveError, ReadError) as exc:
                yield _result(path, "error", f"--hash: {exc}")
                continue
            key = f"MD5E-s{m.size}--{digest.md5.hexdigest()}{_extension(m.name)}"
        count += 1
        yield Entry(path, key, [loc.uri()])
    what = f"{len(parts)} volumes" if len(parts) > 1 else "archive"
    yield _result(folder or ".", "ok", f"{name} ({what}): {count} members from its "
                  f"directory ({joined.requests} requests, {joined.bytes_read} bytes read)"
                  + (f", {skipped} left out" if skipped else ""),
                  requests=joined.requests, bytes_read=joined.bytes_read, members=count)


def _member_location(src: Source, archive: str, volumes, m) -> ArchiveLocation:
    if hasattr(m, "header_offset"):  # a ZIP member
        extra = [("method", m.method), ("flags", m.flags), ("csize", m.compressed_size),
                 ("header", m.header_offset), ("cextra", m.extra_len)]
        if m.raw_name != m.name.encode():
            extra.append(("raw", m.raw_name.hex()))
        return ArchiveLocation(src.server, src.pid, archive, volumes, "zip", m.name,
                               m.size, f"{m.crc32:08x}",
                               tuple((k, str(v)) for k, v in extra))
    if m.whole_archive or m.packed is None:
        extra = [("whole", m.whole_archive)] if m.whole_archive else []
    else:
        extra = [("packed", f"{m.packed[0]}-{m.packed[1]}"), ("coder", m.coder or ""),
                 ("props", m.properties.hex())]
    crc = f"{m.crc32:08x}" if m.crc32 is not None else ""
    return ArchiveLocation(src.server, src.pid, archive, volumes, "7z", m.name, m.size,
                           crc, tuple(extra))


class _Hashing:
    def __init__(self):
        self.md5 = hashlib.md5()

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        return len(data)


def _safe_path(folder: str, name: str) -> str | None:
    """The member's path in the dataset, or None if it would leave its folder, enter
    ``.git``/``.datalad``, or cannot be a file name."""
    parts = name.replace("\\", "/").split("/")
    if (name.startswith("/") or any(p in ("", ".", "..") for p in parts)
            or any(c in name for c in "\n\r\0")):
        return None
    path = posixpath.join(folder, *parts) if folder else posixpath.join(*parts)
    if path.split("/")[0] in (".git", ".datalad") or ".git" in parts:
        return None
    return path


def _url_key(size: int, what: str) -> str:
    return f"VURL-s{size}--rdr-{hashlib.md5(what.encode()).hexdigest()}"


def _extension(name: str) -> str:
    """The key's extension as git-annex's E backends make it (up to two of 4 chars)."""
    ext = ""
    for part in reversed(posixpath.basename(name).split(".")[1:][-2:]):
        if not (0 < len(part) <= 4 and part.isalnum() and part.isascii()):
            break
        ext = "." + part + ext
    return ext


def _result(path: str, status: str, message: str, **extra) -> dict:
    return dict(action="rdr-clone", path=path, status=status, message=message, **extra)


# -- the dataset ---------------------------------------------------------------------
def previous(path: Path) -> dict | None:
    """What an earlier rdr-clone into ``path`` recorded, or None."""
    try:
        return json.loads((path / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def init_remote(path: Path, src: Source, credential: str | None) -> None:
    try:
        Annex(path).run(["initremote", REMOTE, "type=external", "externaltype=rdr",
                         "encryption=none", f"url={src.server}", f"pid={src.pid}",
                         "nowrite=yes", "autoenable=true",
                         *([f"credential={credential}"] if credential else [])])
    except AnnexError as exc:
        raise CloneError(f"{exc}; remove {path} and try again") from None


def apply(path: Path, entries: list[Entry]) -> tuple[int, int, int]:
    """Make the work tree hold exactly ``entries`` (plus .datalad); (added, changed,
    removed). The caller saves."""
    annex = Annex(path / ".git")
    lgr.info("recording %d annexed files and their locations", len(entries))
    annex.register_urls([(e.key, u) for e in entries for u in e.rdr], REMOTE)
    annex.register_urls([(e.key, u) for e in entries for u in e.web], "web")
    current = _annexed(annex)
    wanted = {e.path: e.key for e in entries}
    gone = sorted(p for p in current if p not in wanted)
    todo = [(p, k) for p, k in wanted.items() if current.get(p) != k]
    for p, _ in todo:
        if p in current or (path / p).is_symlink() or (path / p).exists():
            (path / p).unlink()
    if gone:
        git(path, "rm", "-q", "--cached", "--ignore-unmatch", "--", *gone)
        for p in gone:
            (path / p).unlink(missing_ok=True)
    for p, _ in todo:
        (path / p).parent.mkdir(parents=True, exist_ok=True)
    if todo:
        annex.run(["fromkey", "--force", "--batch"], "".join(f"{k} {p}\n" for p, k in todo))
    changed = sum(1 for p, _ in todo if p in current)
    return len(todo) - changed, changed, len(gone)


def commit(path: Path, message: str) -> None:
    """Commit what fromkey staged and the record file (in git, not annexed); git-annex's
    commands committed their branch already. (``datalad save`` would look at every
    file again: 10 s for 3,000 members.)"""
    git(path, "-c", "annex.largefiles=nothing", "add", RECORD_FILE)
    if git_or_none(path, "diff", "--cached", "--quiet") is None:  # something is staged
        git(path, "commit", "-q", "-m", message)


def _annexed(annex: Annex) -> dict[str, str]:
    r = annex.run(["find", "--include=*", "--json"], check=False)
    found = {}
    for line in r.stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        found[record["file"]] = record["key"]
    return found


def write_record(path: Path, src: Source, version: str, files: list[RecordFile]) -> None:
    target = path / RECORD_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({
        "server": src.server, "pid": src.pid, "version": version,
        "files": [{"id": f.id, "path": f.path, "size": f.size} for f in files]},
        indent=1) + "\n")


def run_clone(src: Source, path: Path, token: str | None, credential: str | None = None,
              merge: bool = False, hash: bool = False) -> Iterator[dict]:
    """The stages, as result records; the last says what the dataset now holds."""
    import datalad.api as dl

    before = previous(path) or _cloned_history(path)
    if path.exists() and any(path.iterdir()) and (
            before is None or (before["server"], before["pid"]) != (src.server, src.pid)):
        raise CloneError(f"{path} exists and is not an rdr-clone of {src.pid}: give a new "
                         f"PATH (a rerun into the same PATH updates it)")
    client = Dataverse(src.server, token)
    version = open_version(client, src)
    if before and before["version"] == version.label and version.label != "draft":
        yield _result(str(path), "notneeded", f"{path} already holds version "
                      f"{version.label} of {src.pid}")
        return
    deposit = next((f for f in version.files if f.path == HISTORY), None)
    if deposit is not None:  # exported by datalad-rdr: its own history, not a new one
        if before is not None and not before.get("history"):
            raise CloneError(f"{path} was made from the listing of {src.pid}, which now "
                             f"holds its dataset's history ({HISTORY}): clone that into a "
                             f"new PATH")
        yield from clone_history(client, src, path, version.label, version.files,
                                 deposit, token, update=before is not None)
        return
    if before is not None and before.get("history"):
        raise CloneError(f"version {version.label} of {src.pid} holds no {HISTORY}, the "
                         f"history {path} was cloned from: clone it into a new PATH")
    reader = BundleReader(src.server, lambda: token)
    entries: dict[str, Entry] = {}
    for item in plan(reader, src, version.files, merge, hash):
        if isinstance(item, Entry):
            first = entries.setdefault(item.path, item)
            if first.key != item.key:
                yield _result(str(path / item.path), "impossible", f"{item.path} is in "
                              f"more than one archive with different content: the first "
                              f"is kept (clone without --merge to have them all)")
        else:
            yield {**item, "path": str(path / item["path"])}
    if before is None:
        dl.create(path=str(path), result_renderer="disabled")
        init_remote(path, src, credential)
    try:
        added, changed, removed = apply(path, list(entries.values()))
    except (AnnexError, OSError) as exc:
        raise CloneError(f"cannot record the files in {path}: {exc}") from None
    write_record(path, src, version.label, version.files)
    try:
        commit(path, f"rdr-clone: version {version.label} of {src.pid} from {src.server}")
    except GitError as exc:
        raise CloneError(f"cannot commit in {path}: {exc}") from None
    yield _result(str(path), "ok", f"version {version.label} of {src.pid}: "
                  f"{len(entries)} annexed files ({added} new, {changed} changed, "
                  f"{removed} removed); 'datalad get' reads them from {src.server}",
                  type="dataset", version=version.label, files=len(entries))


# -- a record exported by datalad-rdr ------------------------------------------------
def clone_history(client: Dataverse, src: Source, path: Path, label: str,
                  files: list[RecordFile], deposit: RecordFile, token: str | None,
                  update: bool = False) -> Iterator[dict]:
    """The dataset the record was exported from, cloned from its deposited history
    (:mod:`datalad_rdr.history`): the same commits, the ``rdr`` remote enabled from the
    git-annex branch, the public documents recorded at their own files. ``update``: an
    earlier such clone in ``path`` is brought forward to this version (fast-forward)."""
    def here(*args):
        return git(path, *args).strip()

    try:
        with tempfile.TemporaryDirectory(prefix="rdr-clone-") as tmp:
            bundle = Path(tmp) / HISTORY
            _download(src, deposit, token, bundle)
            if update:
                here("fetch", "--quiet", str(bundle), f"+refs/heads/*:{_FETCHED}/*")
            else:
                git(Path(tmp), "clone", "--quiet", "--origin", "rdr-history", str(bundle),
                    str(Path(path).absolute()))
        branch = here("symbolic-ref", "--short", "HEAD")
        if update and git_or_none(path, "merge", "--ff-only", "--quiet",
                                  f"{_FETCHED}/{branch}") is None:
            raise CloneError(f"{path} has commits that version {label} of {src.pid} does "
                             f"not have: merge rdr-history/{branch} (fetched) by hand, or "
                             f"clone into a new PATH")
        # git-annex merges the deposited git-annex branch (rdr-history/git-annex) and, at
        # init, enables the autoenable=true remotes: the rdr remote needs no token for that
        Annex(path).run(["merge" if update else "init", "--quiet"])
        if not update:
            here("remote", "remove", "rdr-history")  # the downloaded file, gone now
        for ref in here("for-each-ref", "--format=%(refname)", _FETCHED).split():
            here("update-ref", "-d", ref)
        _public_documents(src, path, files)
        for key, value in (("server", src.server), ("pid", src.pid), ("version", label)):
            here("config", f"{_CLONED}.{key}", value)
        head = here("rev-parse", "HEAD")
        commits = here("rev-list", "--count", "HEAD")
    except AnnexError as exc:  # GitError too
        raise CloneError(f"cannot make {path} the dataset of {src.pid}: {exc}") from None
    yield _result(str(path), "ok", f"version {label} of {src.pid}: the dataset's history "
                  f"from {HISTORY} ({commits} commits, {head[:8]}"
                  f"{', updated' if update else ''}); 'datalad get' reads its files from "
                  f"{src.server}", type="dataset", version=label, commit=head, history=True)


_FETCHED = "refs/remotes/rdr-history"
_CLONED = "rdr-clone"  # in .git/config: where a clone of a deposited history came from


def _cloned_history(path: Path) -> dict | None:
    """What an earlier clone of a deposited history into ``path`` recorded, or None."""
    out = git_or_none(path, "config", "--get-regexp", f"^{_CLONED}\\.") or ""
    found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    if not {f"{_CLONED}.server", f"{_CLONED}.pid"} <= set(found) or not (
            path / ".git").exists():
        return None
    return {k.split(".", 1)[1]: v for k, v in found.items()} | {"history": True}


def _download(src: Source, deposit: RecordFile, token: str | None, out: Path) -> None:
    reader = BundleReader(src.server, lambda: token)
    digest = hashlib.md5()
    try:
        body = reader.open(deposit.id, 0, deposit.size - 1)
        try:
            with open(out, "wb") as f:
                for chunk in body.iter_content(1024 * 1024):
                    digest.update(chunk)
                    f.write(chunk)
        finally:
            body.close()
    except Denied:
        raise CloneError(
            f"the history of {src.pid} ({HISTORY}) is restricted: clone with the API token "
            f"of a user who has access (--credential NAME, or DATALAD_CREDENTIAL_RDR_SECRET)"
            f"; {request_access(src.server, src.pid)}") from None
    except ReadError as exc:
        raise CloneError(f"cannot read {HISTORY} of {src.pid}: {exc}") from None
    if deposit.checksum_type.upper() == "MD5" and digest.hexdigest() != deposit.checksum:
        raise CloneError(f"{HISTORY} of {src.pid}: MD5 {digest.hexdigest()} read, the "
                         f"server lists {deposit.checksum}; try again, or tell RDR support")


def _public_documents(src: Source, path: Path, files: list[RecordFile]) -> None:
    """Public documents (README, documentation) are files of their own besides their
    bundle, at their path: recorded for the annexed file there, anyone gets them without a
    token (by the rdr remote, as a plain file of the record, and by git-annex's web remote).
    From the record's listing, not the manifest: that may be annexed, and not here."""
    public = {f.path: f for f in files if not f.restricted}
    annex = Annex(path / ".git")
    found = [(key, _plain(src, public[p])) for p, key in _annexed(annex).items()
             if p in public and f"-s{public[p].size}-" in key]
    annex.register_urls([(key, u) for key, e in found for u in e.rdr], REMOTE)
    annex.register_urls([(key, u) for key, e in found for u in e.web], "web")

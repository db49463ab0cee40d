"""STORE's bundles: keys collected into a size-capped ZIP, uploaded when it is flushed.

git-annex sends one key at a time and has no "flush" message, so ``git annex copy --to rdr``
of 10 000 files would otherwise make 10 000 files on RDR. The remote collects the keys of a
session in an *open bundle* instead and uploads it as one ZIP (through the export's own
stages: :func:`~datalad_rdr.zipstream.layout_zip`, :class:`~datalad_rdr.upload.Uploader`,
:func:`~datalad_rdr.register.register_bundle`) when it is full, when a pending key is asked
about, and when git-annex ends the session. The remote (``special.py``) decides when; this
module keeps the promise durable:

- each stored key's content is hard-linked (copied across file systems) into a spool under
  ``.git/datalad-rdr/remote/<uuid>/`` before git-annex hears "stored", so it survives
  ``git annex move`` dropping the object;
- the bundle's journal (JSON lines, fsynced) lists its name, its ZIP timestamp and its
  members, then ``flushing`` and ``registered`` (with the location records) as the flush goes;
  the ZIP is a function of that journal alone, so flushing it again gives the same bytes,
  which :func:`~datalad_rdr.register.register_bundle` adopts if a dead process registered it;
- the owning process holds an exclusive ``flock`` on its journal; a journal whose lock can be
  taken is an orphan of a process that died (kill -9, power loss) and is repaired by the next
  session: flushed, or, if that fails, its keys are recorded absent and content no longer in
  the annex is put back.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..zipformat import END_OVERHEAD, MEMBER_OVERHEAD
from . import keys as annex_keys
from . import locations

if TYPE_CHECKING:
    from ..dataverse import Dataverse

#: The member that lists a bundle's keys (member name -> key), so that REMOVE can tell when
#: nothing is left in a bundle and repack knows what to keep.
INDEX = ".datalad-rdr/keys.json"
INDEX_FORMAT = "datalad-rdr-bundle-keys/1"
#: Names of the bundles the remote makes: ``annex-<UTC time>-<random>.zip``.
PREFIX = "annex-"
# The index member's own ZIP bytes (its name twice) and its JSON framing.
_INDEX = MEMBER_OVERHEAD + 2 * len(INDEX) + 200


def member_cost(size: int, member: str, key: str) -> int:
    """An upper bound of what a member adds to a bundle (STORED at worst), its index line
    included."""
    name = len(member.encode())
    # the name twice in headers, and in the index (JSON escapes may double it)
    return size + MEMBER_OVERHEAD + 2 * name + 2 * name + len(key) + 16


class FlushError(Exception):
    """A bundle could not be uploaded or registered."""


@dataclass
class Pending:
    key: str
    member: str
    size: int
    spool: str  # file name in the bundle's spool directory


@dataclass
class OpenBundle:
    """An open (or orphaned) bundle and its journal."""

    name: str
    mtime: int
    remote: str  # the UUID of the remote that made it
    journal: Path
    spool: Path
    members: list[Pending] = field(default_factory=list)
    state: str = "open"  # open -> flushing -> registered
    registered: dict | None = None  # file_id, bundle_size, locations {key: uri}
    _fd: int | None = None

    @property
    def keys(self) -> set[str]:
        return {m.key for m in self.members}

    def estimate(self) -> int:
        """An upper bound of the ZIP's size."""
        return END_OVERHEAD + _INDEX + sum(member_cost(m.size, m.member, m.key)
                                           for m in self.members)

    def index_bytes(self) -> bytes:
        return json.dumps({"format": INDEX_FORMAT, "remote": self.remote,
                           "keys": {m.member: m.key for m in self.members}},
                          indent=0, sort_keys=True).encode()

    def _append(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode()
        os.write(self._fd, line)
        os.fsync(self._fd)

    def mark(self, state: str, **extra) -> None:
        self.state = state
        if state == "registered":
            self.registered = extra
        self._append({"state": state, **extra})

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Store:
    """The pending bundles of one remote (by UUID) in one repository."""

    def __init__(self, gitdir: str | os.PathLike, uuid: str, cap: int):
        self.uuid = uuid
        self.root = _root(gitdir, uuid)
        self.cap = cap
        self.open: OpenBundle | None = None
        self._estimate = 0  # of the open bundle, kept as members are added
        self._elsewhere: dict[Path, tuple[tuple, set]] = {}

    # -- the open bundle -----------------------------------------------------------
    @property
    def pending(self) -> set[str]:
        return self.open.keys if self.open else set()

    def fits(self, size: int, member: str, key: str) -> bool:
        """Would the key still fit in the open bundle (or in an empty one)?"""
        empty = END_OVERHEAD + _INDEX
        return self._fits(self._estimate if self.open else empty, size, member, key)

    def fits_alone(self, size: int, member: str, key: str) -> bool:
        """Would the key fit in an empty bundle?"""
        return self._fits(END_OVERHEAD + _INDEX, size, member, key)

    def _fits(self, base: int, size: int, member: str, key: str) -> bool:
        # the member may be renamed keys/<key> if its name is taken
        longest = max(member, f"keys/{key}", key=lambda n: len(n.encode()))
        return base + member_cost(size, longest, key) <= self.cap

    @staticmethod
    def journals(gitdir: str | os.PathLike, uuid: str) -> list[Path]:
        """The journals of pending bundles of a remote, cheaply: usually there are none."""
        return _journals(_root(gitdir, uuid))

    def add(self, key: str, path: str, member: str, size: int) -> None:
        """Take the key's content into the open bundle, durably."""
        bundle = self.open or self._new()
        names = {m.member for m in bundle.members}
        if member in names or member == INDEX:
            member = f"keys/{key}"
        spool = str(len(bundle.members))
        target = bundle.spool / spool
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
        if os.path.getsize(target) != size:
            target.unlink()
            raise FlushError(f"{key}: the file changed while it was taken")
        bundle._append({"key": key, "member": member, "size": size, "spool": spool})
        bundle.members.append(Pending(key, member, size, spool))
        self._estimate += member_cost(size, member, key)

    def _new(self) -> OpenBundle:
        stamp = dt.datetime.now(dt.UTC)
        name = f"{PREFIX}{stamp:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}.zip"
        self.root.mkdir(parents=True, exist_ok=True)
        bundle = OpenBundle(name, int(stamp.timestamp()), self.uuid,
                            self.root / f"{name}.jsonl", self.root / "spool" / name)
        bundle.spool.mkdir(parents=True, exist_ok=True)
        bundle._fd = os.open(bundle.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(bundle._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        bundle._append({"bundle": name, "mtime": bundle.mtime, "pid": os.getpid()})
        self.open = bundle
        self._estimate = END_OVERHEAD + _INDEX
        return bundle

    # -- flushing --------------------------------------------------------------------
    def flush(self, bundle: OpenBundle, client: Dataverse, server: str, pid: str,
              restrict: bool, description: str,
              progress: Callable[[int], None] | None = None
              ) -> dict[str, locations.Location]:
        """Upload and register the bundle; returns each key's location, recorded as on
        ``server`` (the remote's ``url=``, which ``client`` may reach under another name).
        The caller records them, then calls :meth:`done`. Raises FlushError."""
        # the upload's stages (and requests) are loaded for the first flush, not at the
        # remote's start
        from ..dataverse import DataverseError
        from ..register import RegisterError, register_bundle
        from ..upload import Uploader, UploadError
        from ..zipstream import Member, MemberError, layout_zip

        if bundle.state == "registered":
            return {k: locations.parse(u) for k, u in bundle.registered["locations"].items()}
        bundle.mark("flushing")
        members = [Member(m.member, m.size, _opener(bundle.spool / m.spool),
                          annex_keys.checksum(m.key)) for m in bundle.members]
        index = bundle.index_bytes()
        members.append(Member(INDEX, len(index), lambda: io.BytesIO(index)))
        try:
            layout = layout_zip(members, mtime=bundle.mtime, md5=False)
            uploaded = Uploader(client, pid).upload(layout, progress=progress)
            registered = register_bundle(client, pid, bundle.name, uploaded, restrict,
                                         description)
        except (MemberError, UploadError, RegisterError, DataverseError, OSError,
                ValueError) as exc:
            raise FlushError(f"bundle {bundle.name} ({len(bundle.members)} keys) could "
                             f"not be stored on {client.url}: {exc}") from exc
        by_member = {m.member: m.key for m in bundle.members}
        found = {by_member[e.arcname]: locations.from_entry(
            server, pid, registered.file_id, bundle.name, registered.size, e)
            for e in layout.entries if e.arcname in by_member}
        bundle.mark("registered", file_id=registered.file_id, bundle_size=registered.size,
                    locations={k: loc.uri() for k, loc in found.items()})
        return found

    def rescue(self, bundle: OpenBundle, members: list[Pending]) -> Path:
        """Keep the spooled content of ``members`` (it is nowhere else) out of the way."""
        target = self.root / "rescued" / bundle.name
        target.mkdir(parents=True, exist_ok=True)
        with open(target / "keys.tsv", "a") as listing:
            for m in members:
                os.replace(bundle.spool / m.spool, target / m.spool)
                listing.write(f"{m.spool}\t{m.key}\t{m.member}\n")
        return target

    def done(self, bundle: OpenBundle) -> None:
        """Forget a bundle whose keys are recorded (present, or absent after a failure)."""
        try:
            bundle.journal.unlink()
        except FileNotFoundError:
            pass
        shutil.rmtree(bundle.spool, ignore_errors=True)
        try:
            bundle.spool.parent.rmdir()  # the spool directory, once no bundle uses it
        except OSError:
            pass
        bundle.release()
        if self.open is bundle:
            self.open = None

    # -- other processes' bundles ------------------------------------------------------
    def orphans(self) -> list[OpenBundle]:
        """Bundles of processes that died; each is returned locked by this process."""
        found = []
        for journal in _journals(self.root):
            if self.open and journal == self.open.journal:
                continue
            try:
                fd = os.open(journal, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            bundle = _read(journal, self.root, self.uuid)
            if bundle is None:  # removed meanwhile, or empty
                os.close(fd)
                continue
            bundle._fd = fd
            found.append(bundle)
        return found

    def pending_elsewhere(self, key: str) -> bool:
        """Is the key in a bundle another live process has not uploaded yet?"""
        for journal in _journals(self.root):
            if self.open and journal == self.open.journal:
                continue
            try:
                st = journal.stat()
            except FileNotFoundError:
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            cached = self._elsewhere.get(journal)
            if not cached or cached[0] != stamp:
                bundle = _read(journal, self.root, self.uuid)
                cached = (stamp, bundle.keys if bundle and bundle.state != "registered"
                          else set())
                self._elsewhere[journal] = cached
            if key in cached[1] and _locked(journal):
                return True
        return False

    def close(self) -> None:
        if self.open is not None:
            self.open.release()


def _root(gitdir: str | os.PathLike, uuid: str) -> Path:
    return Path(gitdir).absolute() / "datalad-rdr" / "remote" / uuid


def _journals(root: Path) -> list[Path]:
    return sorted(root.glob(f"{PREFIX}*.jsonl")) if root.is_dir() else []


def _read(journal: Path, root: Path, uuid: str) -> OpenBundle | None:
    try:
        lines = journal.read_text().splitlines()
    except FileNotFoundError:
        return None
    bundle = None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash: that key was never confirmed to git-annex
        if "bundle" in record:
            bundle = OpenBundle(record["bundle"], record["mtime"], uuid, journal,
                                root / "spool" / record["bundle"])
        elif bundle is None:
            continue
        elif "key" in record:
            bundle.members.append(Pending(record["key"], record["member"], record["size"],
                                          record["spool"]))
        elif "state" in record:
            bundle.state = record["state"]
            if record["state"] == "registered":
                bundle.registered = {k: v for k, v in record.items() if k != "state"}
    return bundle


def _locked(journal: Path) -> bool:
    """Is the journal held by a live process (its owner keeps an exclusive flock)?"""
    try:
        fd = os.open(journal, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _opener(path: Path):
    return lambda: open(path, "rb")

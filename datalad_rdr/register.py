"""Register stage: make an uploaded bundle a file of the Dataverse draft.

One ``/addFiles`` (or ``/replaceFiles`` when the dataset already has a file of that name) per
bundle, after the dataset's locks are gone, reading the per-file result inside the 200 reply
(Dataverse answers 200 even when a file failed).

Dataverse 6.7.1 never refuses a name that is taken: it registers the file under a new name
(``core.zip`` becomes ``core-1.zip``, ``raw-02.zip`` becomes ``raw-3.zip``; fidelity row 12).
So before any add, and before any retry, the files the draft holds are looked at -- or, when
there is no draft, those of the latest version, from which the server makes the draft:

- a file of the same name and MD5 is adopted, not added again (a rerun after a crash);
- a file of the same name and other bytes is replaced;
- a file that holds this very upload (its storage identifier) is ours already: a reply
  that was lost, or a 500 (OptimisticLock) after the server had saved it;
- a renamed copy of the same bytes (``-N``, left by a lost reply and a retry) is deleted,
  and the result says so.

Registrations of one dataset never run at once on this machine (an ``flock`` per server and
dataset, :func:`registration_lock`): the export and the ``rdr`` special remote both register,
and concurrent updates of one dataset give OptimisticLock 500s on Dataverse
(IQSS/dataverse#11265).

Nothing here calls ``cleanStorage``: it deletes *every* object of the dataset that no file
references, including uploads of other processes (other clones, SLURM tasks) that are not
registered yet (fidelity row 49), and no lock on this machine can see those. An upload that
ends up unused (adopted bytes, a failed registration) stays in the store until the RDR team
cleans the dataset's storage.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .dataverse import Dataverse, DataverseError, FileEntry, NewFile, NoAnswer
from .dataverse_records import find
from .upload import Uploaded

log = logging.getLogger("datalad.rdr.register")

ZIP_MIME = "application/zip"
#: Tries of one registration when the server fails (5xx, no answer), each after a look.
TRIES = 3


class RegisterError(Exception):
    pass


@dataclass
class Registered:
    file_id: int
    label: str
    md5: str
    size: int
    storage_identifier: str
    restricted: bool
    adopted: bool = False  # the dataset already held these bytes under this name
    notes: list[str] = field(default_factory=list)  # repairs done on the way, for the user


def _registered(entry: FileEntry, adopted: bool = False) -> Registered:
    return Registered(entry.file_id, entry.label, entry.md5, entry.size,
                      entry.storage_identifier, entry.restricted, adopted)


# -- one registration at a time ---------------------------------------------------------
def lock_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "datalad-rdr" / "locks"


def lock_file(server: str, pid: str) -> Path:
    """The lock file of one dataset on one server: the same for every clone on this machine."""
    digest = hashlib.sha1(f"{server.rstrip('/')} {pid}".encode()).hexdigest()[:16]
    return lock_dir() / f"register-{digest}.lock"


@contextlib.contextmanager
def registration_lock(server: str, pid: str, timeout: float = 300, poll: float = 0.2):
    """Hold the dataset's registration lock (an ``flock``: gone when the process dies)."""
    path = lock_file(server, pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegisterError(
                        f"another process has been registering files in {pid} for "
                        f"{timeout:.0f} s (lock {path}); wait until it ends, then rerun")
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the flock


def renamed_copy(label: str, original: str) -> bool:
    """Whether ``label`` is a name Dataverse gives a second file called ``original``:
    ``a.zip`` -> ``a-1.zip``, ``a-2.zip`` ...; ``raw-02.zip`` -> ``raw-3.zip`` ... (the
    number is incremented; IngestUtil.generateNewFileName)."""
    stem, dot, ext = original.rpartition(".") if "." in original else (original, "", "")
    m = re.fullmatch(r"(.*)-(\d+)", stem)
    base, start = (m.group(1), int(m.group(2))) if m else (stem, 0)
    n = re.fullmatch(re.escape(base) + r"-(\d+)" + re.escape(dot + ext), label)
    return bool(n) and int(n.group(1)) > start and not n.group(1).startswith("0")


def _renamed_copies(listing, label, directory, md5, keep_id=None) -> list[FileEntry]:
    return [e for e in listing
            if e.directory == (directory or None) and renamed_copy(e.label, label)
            and e.md5 == md5 and e.file_id != keep_id]


def _holding(listing, storage_identifier) -> FileEntry | None:
    return next((e for e in listing if e.storage_identifier == storage_identifier), None)


# -- registering -----------------------------------------------------------------------
def register_bundle(client: Dataverse, pid: str, label: str, uploaded: Uploaded,
                    restrict: bool, description: str, directory: str | None = None,
                    lock_timeout: float = 300, mime_type: str = ZIP_MIME) -> Registered:
    with registration_lock(client.url, pid, lock_timeout):
        client.wait_unlocked(pid, timeout=lock_timeout)
        registered, notes, listing = _register(client, pid, label, uploaded, restrict,
                                               description, directory, mime_type)
        notes += _remove_copies(client, listing, label, directory, registered)
    registered.notes = notes
    for note in notes:
        log.warning("%s", note)
    if registered.size != uploaded.size:
        raise RegisterError(f"{label}: the server holds {registered.size} bytes, "
                            f"{uploaded.size} were sent")
    if registered.restricted != restrict:
        client.restrict(registered.file_id, restrict)
        registered.restricted = restrict
    return registered


def _register(client, pid, label, uploaded, restrict, description, directory, mime_type):
    notes: list[str] = []
    new = NewFile(uploaded.storage_identifier, label, uploaded.md5, mime_type, description,
                  directory, restrict)
    for attempt in range(1, TRIES + 1):
        listing = client.current_files(pid)
        mine = _holding(listing, uploaded.storage_identifier)
        if mine is not None:  # an earlier try was saved although its reply was lost
            return _take(client, mine, label, directory, listing, notes), notes, listing
        existing = find(listing, label, directory)
        if existing is not None and existing.md5 == uploaded.md5:
            return _registered(existing, adopted=True), notes, listing
        try:
            if existing is not None:
                result = client.replace_file(pid, existing.file_id, new)
            else:
                result = client.add_file(pid, new)
        except DataverseError as exc:
            if not (isinstance(exc, NoAnswer) or exc.status >= 500) or attempt == TRIES:
                raise
            # e.g. OptimisticLockException on a concurrent update: it may have been saved
            log.info("registering %s: %s; looking in the draft before trying again",
                     label, exc)
            time.sleep(0.5 * attempt)
            continue
        entry = result.entry
        if entry is None:
            raise RegisterError(f"Dataverse did not register {label}: {result.problem}")
        if not entry.is_at(label, directory):
            listing = client.current_files(pid)
            return _take(client, entry, label, directory, listing, notes), notes, listing
        return _registered(entry), notes, listing
    raise AssertionError("unreachable")


def _take(client, entry, label, directory, listing, notes) -> Registered:
    """Our upload is ``entry``; if the server renamed it, make it the file called ``label``."""
    if entry.is_at(label, directory):
        return _registered(entry)
    holder = find(listing, label, directory)
    if holder is not None and holder.md5 == entry.md5:
        # the same bytes are at the name already: the renamed file is a duplicate
        client.delete_file(entry.file_id)
        listing[:] = [e for e in listing if e.file_id != entry.file_id]
        notes.append(f"{label}: the server had registered these bytes twice; deleted the "
                     f"renamed copy {entry.label}")
        return _registered(holder, adopted=True)
    if holder is not None:
        client.delete_file(holder.file_id)
    client.set_file_label(entry.file_id, label, directory)
    notes.append(f"{label}: the server had registered it as {entry.label}"
                 + (" next to an older file of that name (deleted)" if holder else "")
                 + f"; renamed it back to {label}")
    return _registered(entry.moved(label, directory))


def _remove_copies(client, listing, label, directory, registered) -> list[str]:
    """Renamed copies of the same bytes (a lost reply, then a retry, in an earlier run),
    in the listing looked at before registering."""
    copies = _renamed_copies(listing, label, directory, registered.md5,
                             keep_id=registered.file_id)
    for entry in copies:
        client.delete_file(entry.file_id)
    return [f"{label}: deleted {e.label}, a renamed copy of the same bytes left by an "
            f"earlier registration" for e in copies]


# -- the file-count budget ----------------------------------------------------------------
@dataclass
class FileBudget:
    limit: int | None  # the dataset's file-count limit (None: none the server tells)
    owned: int  # files the dataset has ever owned: what the server counts
    adding: int

    @property
    def fits(self) -> bool:
        # /addFiles refuses at count + N >= limit (AddReplaceFileHelper; fidelity row 21)
        return self.limit is None or self.owned + self.adding < self.limit

    def message(self, pid: str) -> str:
        if self.limit is None:
            return f"{pid}: no file-count limit known; {self.owned} files owned so far"
        left = max(self.limit - 1 - self.owned, 0)
        if self.fits:
            return (f"{pid}: {self.owned} of at most {self.limit - 1} files used (every file "
                    f"ever registered counts, replaced ones too); {self.adding} more "
                    f"leave {left - self.adding}")
        return (f"{pid} would run out of files: the server allows {self.limit - 1} files "
                f"per dataset and counts every file it ever held (replaced bundles too); "
                f"{self.owned} are used, {self.adding} more are needed, {left} left. "
                f"Export with a larger --max-bundle-size (fewer bundles), or ask the RDR "
                f"team to raise the dataset's file-count limit; nothing was uploaded")


def file_budget(client: Dataverse, pid: str, adding: int, limit: int | None = None,
                collection: str | None = None) -> FileBudget:
    """Whether ``adding`` new files (bundles to add or replace) still fit the dataset's
    file-count limit. ``limit`` is the server's limit when known (server discovery),
    otherwise read from the dataset, then from ``collection``."""
    if limit is None:
        limit = client.file_count_limit(pid, collection)
    return FileBudget(limit, client.files_ever_owned(pid), adding)

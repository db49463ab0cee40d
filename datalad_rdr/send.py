"""Send stage: every bundle that changed is streamed, uploaded and registered, up to
``-J`` bundles at once.

Per bundle: unchanged since the last export (same member list, its file still in the draft)?
Then nothing is sent. Else its content is fetched, its ZIP laid out and streamed to the store
(:mod:`.upload`), and the upload registered in the draft (:mod:`.register`).

Where each step runs, and why:

- Up to ``opts.jobs`` bundles are fetched, streamed and uploaded at once, each by a worker
  thread: one connection rarely fills a WAN link. The worker threads share one
  :class:`~.upload.Uploader`, whose ``jobs`` PUTs in flight are counted over all bundles, so
  memory (a few MiB of body per PUT) and open files stay bounded in total, not per bundle.
  Their layouts take turns at small members (``zipstream.layout_zip``'s ``turns``): that
  work is the interpreter's, which runs one thread at a time, and two threads at it together
  took half as long again as one after the other.
- Registration, result records and the journal's confirmed bundles happen in the calling
  thread, one bundle at a time in the order their uploads finish: Dataverse refuses
  concurrent updates of one dataset (and :func:`~.register.register_bundle` holds the
  dataset's lock besides), while the other bundles' uploads go on.
- The journal is written from both (upload states from the workers, confirmed bundles from
  the caller) under one lock, each write a whole atomic snapshot: a ``kill -9`` at any moment
  leaves every confirmed bundle in it, and a rerun sends none of them again.
- A bundle counts as in flight until it is registered (and its fetched content dropped with
  ``--drop-after``): at most ``jobs`` bundles' content is on disk at once.
- A bundle in split volumes (:mod:`.volumes`) is one layout sent as one upload per volume,
  in turn, each volume's upload state journaled under the volume's name; its volumes are
  registered one after the other, and the bundle is confirmed once all are. A rerun after a
  kill between volumes continues every volume's upload (one already complete sends nothing)
  and registration takes a volume the draft holds already (:mod:`.register`).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from datalad.log import log_progress
from datalad.support.exceptions import CapturedException

from . import cluster, content, gitannex, manifest as mf, volumes
from .dataverse import DataverseError, FileEntry
from .dataverse_records import find
from .plan import Bundle, Plan, split_bundle
from .register import RegisterError, register_bundle
from .sizes import human
from .upload import TooSlowForUrlLifetime, Uploaded, Uploader, UploadError
from .zipformat import METHOD_NAMES
from .zipstream import MemberError, layout_zip

log = logging.getLogger("datalad.rdr.send")

_progress = threading.Lock()  # one bar per bundle in flight, drawn from several threads


def result(action_path: Path, status: str, message: str, exc: BaseException | None = None,
           **extra) -> dict:
    """One result record of ``rdr-export``."""
    if exc is not None:
        extra["exception"] = CapturedException(exc)
    return {"action": "rdr-export", "path": str(action_path), "type": "file",
            "status": status, "message": message, **extra}


def fingerprint(bundle: Bundle) -> str:
    members = mf.fingerprint([(f.path, f.key, f.blob, f.size) for f in bundle.files])
    # the same ZIP cut at other places is other files on the server
    return f"{members}/v{bundle.volume_size}" if bundle.volume_size else members


@dataclass
class Streamed:
    """A bundle whose bytes are in the store, not yet registered."""

    bundle: Bundle
    fingerprint: str
    entries: list  # the ZIP layout's entries, by member path
    uploaded: Uploaded | list[Uploaded]  # one per volume for a bundle in volumes
    fetched: list[str]  # annex keys fetched for it, to drop after registration
    size: int = 0  # of the ZIP


class SharedJournal:
    """The export's :class:`~.manifest.Journal`, written from several threads under one
    lock (a write snapshots all of it: two writers must not interleave)."""

    def __init__(self, journal: mf.Journal):
        self.journal = journal
        self._lock = threading.Lock()

    @property
    def bundles(self) -> dict[str, mf.BundleRecord]:
        return self.journal.bundles

    @property
    def path(self) -> Path:
        return self.journal.path

    @property
    def server(self) -> str:
        return self.journal.server

    def record(self, bundle: mf.BundleRecord) -> None:
        with self._lock:
            self.journal.record(bundle)

    def upload_state(self, name: str, fingerprint: str) -> dict | None:
        with self._lock:
            return self.journal.upload_state(name, fingerprint)

    def record_upload(self, name: str, fingerprint: str, state: dict | None) -> None:
        with self._lock:
            self.journal.record_upload(name, fingerprint, state)

    def known_crc32s(self, previous: mf.Manifest | None) -> dict[str, int]:
        with self._lock:
            return mf.known_crc32s(previous, self.journal)


def send_bundles(dataset, plan: Plan, opts, client, pid, uploader: Uploader, previous,
                 journal: mf.Journal, found: content.Found | None = None) -> Iterator[dict]:
    """One result per bundle (``record``: its manifest record when it is on the server),
    in the plan's order whatever order the bundles finish in. ``found``: the pre-flight's
    look-up of the content (:func:`.content.look_up`), so that objects found present are
    not looked up again."""
    commit_time = _commit_time(dataset, plan.commit)
    listing = _listing(client, pid)  # once: unchanged bundles need no request of their own
    journal = SharedJournal(journal)
    todo, done = deque(plan.bundles), queue.Queue()
    order, ready = [b.name for b in plan.bundles], {}  # a result waits for those before it
    workers: list[threading.Thread] = []
    in_flight = 0
    turns = threading.Lock()  # the layouts' turns at small members (layout_zip's ``turns``)

    def work(bundle):
        try:
            done.put((bundle, _stream_bundle(dataset, bundle, opts, uploader, commit_time,
                                             previous, journal, found, turns), None))
        except BaseException as exc:  # handed to the calling thread
            done.put((bundle, None, exc))

    def finished(bundle, res):
        ready[bundle.name] = res
        while order and order[0] in ready:
            yield ready.pop(order.pop(0))

    try:
        while todo or in_flight:
            while todo and in_flight < max(1, opts.jobs):
                bundle = todo.popleft()
                try:
                    unchanged = _unchanged(bundle, opts, client, previous, journal, listing)
                except DataverseError as exc:
                    yield from finished(bundle, _failed(dataset, bundle, exc))
                    continue
                if unchanged is not None:
                    yield from finished(bundle, _done(dataset, bundle, *unchanged))
                    continue
                try:  # uploaded by a SLURM task (rdr-export --slurm): registered, not sent
                    taken = cluster.take_upload(dataset, bundle, fingerprint(bundle), opts,
                                                client, pid, journal)
                except (UploadError, RegisterError, DataverseError) as exc:
                    yield from finished(bundle, _failed(dataset, bundle, exc))
                    continue
                if taken is not None:
                    yield from finished(bundle, _done(dataset, bundle, *taken))
                    continue
                worker = threading.Thread(target=work, args=(bundle,), daemon=True,
                                          name=f"rdr-send-{bundle.name}")
                workers.append(worker)
                worker.start()
                in_flight += 1
            if not in_flight:
                continue
            bundle, streamed, exc = _next(done)
            try:
                smaller = (_split(bundle, exc) if isinstance(exc, TooSlowForUrlLifetime)
                           else [])
                if smaller:
                    at = order.index(bundle.name) + 1
                    order[at:at] = [b.name for b in smaller]
                    todo.extendleft(reversed(smaller))
                    res = result(dataset / bundle.filename, "notneeded",
                                 f"{exc}: split into {len(smaller)} bundles",
                                 bundle=bundle.filename)
                elif exc is not None:
                    res = _failed(dataset, bundle, exc)
                else:
                    try:
                        res = _done(dataset, bundle, *_register_streamed(
                            dataset, streamed, opts, client, pid, journal))
                    except (RegisterError, DataverseError) as exc:
                        res = _failed(dataset, bundle, exc)
            finally:
                in_flight -= 1
            yield from finished(bundle, res)
    finally:
        if in_flight:  # stopped early (Ctrl-C, the caller closed us): end the uploads
            uploader.stop()
            for worker in workers:
                worker.join(timeout=10)


def _next(done: queue.Queue):
    while True:  # a timeout: Ctrl-C reaches the calling thread while it waits
        try:
            return done.get(timeout=0.5)
        except queue.Empty:
            continue


def _done(dataset, bundle, record, status, message) -> dict:
    extra = {"volumes": [v.label for v in record.volumes]} if record.volumes else {}
    return result(dataset / bundle.filename, status, message, bundle=bundle.filename,
                  file_id=record.file_id, md5=record.md5, size=record.size, record=record,
                  **extra)


def _failed(dataset, bundle: Bundle, exc: BaseException) -> dict:
    if not isinstance(exc, (content.ContentError, MemberError, UploadError, RegisterError,
                            DataverseError)):
        raise exc  # not a failure of this bundle: a bug, or an interruption
    advice = ""
    if isinstance(exc, MemberError):
        advice = (f"; nothing of {bundle.filename} was registered: check the copy here "
                  f"with 'git annex fsck {exc.arcname}' and get a good one from another "
                  f"remote")
    return result(dataset / bundle.filename, "error", f"{bundle.filename}: {exc}{advice}",
                  exc, bundle=bundle.filename)


def _split(bundle: Bundle, exc: TooSlowForUrlLifetime) -> list[Bundle]:
    """Smaller bundles that fit the URLs' lifetime at the measured rate, or [] if none."""
    if bundle.volume_size:
        return []  # a file alone is too large: no smaller bundle can hold it
    smaller = split_bundle(bundle.logical, bundle.files, max(exc.fits, 1))
    if len(smaller) <= 1 or any(part.volume_size for part in smaller):
        return []
    # Name the parts after the bundle they replace: raw -> raw-01.., raw-02 -> raw-02-01..
    for i, part in enumerate(smaller, 1):
        part.name = f"{bundle.name}-{i:02d}"
    log.warning("%s; splitting %s into %d bundles", exc, bundle.filename, len(smaller))
    return smaller


def _unchanged(bundle: Bundle, opts, client, previous, journal, listing):
    """``(record, status, message)`` of a bundle already in the draft, else None."""
    known = journal.bundles.get(bundle.name) or (previous and previous.bundle(bundle.name))
    if not known or known.fingerprint != fingerprint(bundle):
        log.debug("%s: %s", bundle.filename, "content changed" if known else "new bundle")
        return None
    on_server = [find(listing, label) for label, _ in known.files]
    if any(not entry or entry.file_id != file_id
           for entry, (_, file_id) in zip(on_server, known.files)):
        return None
    differ = [e.file_id for e in on_server if e.restricted != opts.restrict]
    if differ:
        # changed by hand in the web UI, or the dataset's access changed
        for file_id in differ:
            client.restrict(file_id, opts.restrict)
        known.restricted = opts.restrict
        return known, "ok", (f"{bundle.filename} unchanged since the last export; made "
                             f"{'restricted' if opts.restrict else 'public'}")
    return known, "notneeded", f"{bundle.filename} unchanged since the last export"


def _stream_bundle(dataset, bundle: Bundle, opts, uploader: Uploader, commit_time,
                   previous, journal: SharedJournal, found=None,
                   turns: threading.Lock | None = None) -> Streamed:
    """Fetch, lay out and upload one bundle (in a worker thread; ``turns``: the lock its
    layout shares with the other bundles' at small members)."""
    fp = fingerprint(bundle)
    located = content.fetch(bundle.files, found)
    fetched = located.fetched
    blobs: dict[str, content.BlobReader] = {}
    try:
        # the uploader hashes the ZIP in its check pass: no MD5 in the layout
        layout = layout_zip(content.members(bundle.files, blobs,
                                            journal.known_crc32s(previous), located),
                            mtime=commit_time, md5=False, turns=turns)
        del located  # its look-up went into the members
        # the same members, sizes and timestamps give the same bytes: parts sent by an
        # interrupted run of this very layout can be kept
        same_bytes = f"{fp}:{layout.size}:{commit_time.isoformat()}"
        bar = f"rdr-export-{bundle.name}"
        _bar(bar, f"Sending {bundle.filename}", total=layout.size, unit=" Bytes",
             label=bundle.filename)

        def send(source, name):
            return uploader.upload(
                source, progress=lambda n: _bar(bar, "", update=n, increment=True),
                on_state=lambda state: journal.record_upload(name, same_bytes, state),
                resume=journal.upload_state(name, same_bytes))

        try:
            if bundle.volume_size:
                cuts = volumes.cuts(layout.size, bundle.volume_size)
                labels = volumes.labels(bundle.filename, len(cuts))
                uploaded = [send(volumes.Volume(layout, start, end), label)
                            for (start, end), label in zip(cuts, labels)]
            else:
                uploaded = send(layout, bundle.name)
        finally:
            _bar(bar, f"Sent {bundle.filename}")
    except BaseException:
        _drop(bundle, opts, fetched)
        raise
    finally:
        for reader in blobs.values():
            reader.close()
    return Streamed(bundle, fp, layout.entries, uploaded, fetched, layout.size)


def _register_streamed(dataset, streamed: Streamed, opts, client, pid, journal):
    """Register an uploaded bundle and journal its record: ``(record, status, message)``."""
    bundle = streamed.bundle
    files = sorted(bundle.files, key=lambda f: f.path)
    members = [_member_record(e, f) for e, f in zip(streamed.entries, files)]
    try:
        if bundle.volume_size:
            return _register_volumes(dataset, streamed, members, opts, client, pid, journal)
        record, registered = register_uploaded(
            dataset, bundle, streamed.uploaded, streamed.fingerprint, members,
            opts, client, pid, journal)
    finally:
        _drop(bundle, opts, streamed.fetched)
    verb = "adopted" if registered.adopted else "sent"
    return record, "ok", (f"{bundle.filename} {verb}: {len(bundle.files)} files, "
                          f"{human(registered.size)}, file id {registered.file_id}"
                          + "".join(f"; {note}" for note in registered.notes))


def _register_volumes(dataset, streamed: Streamed, members, opts, client, pid, journal):
    """Register every volume of a bundle in turn, then journal the bundle's record."""
    bundle = streamed.bundle
    labels = volumes.labels(bundle.filename, len(streamed.uploaded))
    done, notes = [], []
    for n, (label, uploaded) in enumerate(zip(labels, streamed.uploaded), 1):
        registered = register_bundle(
            client, pid, label, uploaded, opts.restrict,
            f"datalad-rdr bundle '{bundle.logical}', volume {n} of {len(labels)} "
            f"(7z x {labels[0]}): {len(bundle.files)} files of {Path(dataset).name}",
            lock_timeout=opts.lock_timeout, mime_type=volumes.VOLUME_MIME)
        done.append(mf.VolumeRecord(label, registered.size, registered.md5,
                                    registered.file_id, registered.storage_identifier))
        notes += registered.notes
    first = done[0]
    record = mf.BundleRecord(
        bundle.name, bundle.logical, bundle.filename, streamed.size, "", first.file_id,
        first.storage_identifier, opts.restrict, streamed.fingerprint, members, done)
    journal.record(record)
    return record, "ok", (f"{bundle.filename} sent in {len(done)} volumes ({labels[0]} to "
                          f"{labels[-1]}, at most {human(bundle.volume_size)} each): "
                          f"{len(bundle.files)} files, {human(streamed.size)}"
                          + "".join(f"; {note}" for note in notes))


def register_uploaded(dataset, bundle: Bundle, uploaded: Uploaded, fingerprint: str,
                      members: list[mf.MemberRecord], opts, client, pid, journal):
    """The uploaded bundle made a file of the draft and its record journaled (here, or by
    the SLURM hook for a bundle a task sent): ``(record, registered)``."""
    registered = register_bundle(
        client, pid, bundle.filename, uploaded, opts.restrict,
        f"datalad-rdr bundle '{bundle.logical}': {len(bundle.files)} files of "
        f"{Path(dataset).name}", lock_timeout=opts.lock_timeout)
    record = mf.BundleRecord(
        bundle.name, bundle.logical, bundle.filename, registered.size, registered.md5,
        registered.file_id, registered.storage_identifier, registered.restricted,
        fingerprint, members)
    journal.record(record)
    return record, registered


def _drop(bundle: Bundle, opts, fetched: list[str]) -> None:
    if not (opts.drop_after and fetched):
        return
    for repo in {f.repo for f in bundle.files if f.key in fetched}:
        content.drop(repo, [f.key for f in bundle.files if f.repo == repo and f.key in fetched])


def _bar(bar_id: str, message: str, **kw) -> None:
    with _progress:
        log_progress(log.info, bar_id, message, **kw)


def _member_record(entry, f) -> mf.MemberRecord:
    assert entry.arcname == f.path
    return mf.MemberRecord(f.path, f.size, f.key, f.blob,
                           METHOD_NAMES[entry.method],
                           f"{entry.crc32:08x}", entry.compressed_size, entry.header_offset,
                           entry.data_offset)


def _listing(client, pid) -> list[FileEntry]:
    return client.latest_files(pid)[1]


def _commit_time(dataset: Path, commit: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(gitannex.commit_time(dataset, commit), dt.timezone.utc)

"""Documents: the README and listed documentation, sent as separate public files.

The RDR guide asks for the README (and documentation such as an HTML data descriptor) to be
uploaded as files of their own, not inside a ZIP, and public even when the data bundles are
restricted, so that they show on the landing page without an access request. They stay inside
their bundle too (the README in ``core``).

Each document is read from the exported commit (annexed content checked against its key),
sent by direct upload like a bundle, and registered unrestricted at its path: ``README`` at the
top, ``docs/index.html`` as ``index.html`` in the folder ``docs``. A document whose bytes are on
the server already (same name, folder and MD5) is not sent again; one that was restricted by
hand is made public again.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from pathlib import Path, PurePosixPath
from typing import Iterator

from datalad.log import log_progress

from . import content
from .dataverse import Dataverse, FileEntry
from .dataverse_records import find
from .manifest import DocumentRecord, Manifest
from .plan import Plan, PlannedFile
from .preflight import committed_files, find_readme
from .register import register_bundle
from .upload import Uploader

log = logging.getLogger("datalad.rdr.documents")


class Bytes:
    """A small file's bytes as an upload source."""

    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        yield self.data[start:end]

    iter_raw = iter_range


def select(plan: Plan, documentation: list[str]) -> list[PlannedFile]:
    """The README and the listed documentation files that are in the commit's bundles."""
    files = committed_files(plan)
    readme = find_readme(files)
    chosen = [readme] if readme else []
    for path in documentation:
        f = files.get(path)
        if f is not None and f not in chosen:
            chosen.append(f)
    return chosen


def place(path: str) -> tuple[str, str | None]:
    """Label and directoryLabel of a document on the server."""
    p = PurePosixPath(path)
    return p.name, (str(p.parent) if str(p.parent) != "." else None)


def mime_type(path: str) -> str:
    if PurePosixPath(path).name.upper().startswith("README") and "." not in path:
        return "text/plain"
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def read(f: PlannedFile) -> bytes:
    """The committed bytes of a document; annexed content is fetched and checked."""
    if not f.key:
        reader = content.BlobReader(f.repo)
        try:
            return reader.read(f.blob)
        finally:
            reader.close()
    content.fetch([f])
    location = content.content_locations(f.repo, [f.key])[f.key]
    if location is None:
        raise content.ContentError(f"content of {f.path} is not present; run "
                                   f"'datalad get {f.path}'")
    data = location.read_bytes()
    checksum = content.key_checksum(f.key)
    if checksum is not None:
        digest = checksum.new()
        digest.update(data)
        if digest.hexdigest() != checksum.hexdigest:
            raise content.ContentError(f"content of {f.path} does not match its annex key "
                                       f"{f.key} (corrupt); nothing of it was sent; run "
                                       f"'git annex fsck {f.path}'")
    return data


def send(dataset: Path, docs: list[PlannedFile], client: Dataverse, pid: str,
         uploader: Uploader, listing: list[FileEntry], lock_timeout: float = 300
         ) -> Iterator[tuple[DocumentRecord, str, str]]:
    """Send each document unless the server has its bytes; yields (record, status, message)."""
    for f in docs:
        data = read(f)
        md5 = hashlib.md5(data).hexdigest()
        label, directory = place(f.path)
        entry = find(listing, label, directory)
        if entry is not None and entry.md5 == md5:
            record = DocumentRecord(f.path, label, directory, entry.size, md5, entry.file_id,
                                    entry.storage_identifier, False, f.key, f.blob)
            if entry.restricted:
                client.restrict(entry.file_id, False)
                yield record, "ok", f"{f.path} was restricted on the server: made public"
            else:
                yield record, "notneeded", f"{f.path} unchanged since the last export, public"
            continue
        progress_id = f"rdr-export-document-{f.path}"
        log_progress(log.info, progress_id, f"Sending {f.path}", total=len(data),
                     unit=" Bytes", label=f.path)
        try:
            uploaded = uploader.upload(Bytes(data), progress=lambda n: log_progress(
                log.info, progress_id, "", update=n, increment=True))
        finally:
            log_progress(log.info, progress_id, f"Sent {f.path}")
        registered = register_bundle(
            client, pid, label, uploaded, False,
            "Documentation of the dataset, public (also inside its bundle)", directory,
            lock_timeout=lock_timeout, mime_type=mime_type(f.path))
        if registered.md5 != md5:
            raise content.ContentError(f"{f.path}: the server holds MD5 {registered.md5}, "
                                       f"{md5} was sent")
        record = DocumentRecord(f.path, label, directory, registered.size, registered.md5,
                                registered.file_id, registered.storage_identifier,
                                registered.restricted, f.key, f.blob)
        yield record, "ok", (f"{f.path} sent as a public file ({len(data)} bytes, file id "
                             f"{registered.file_id})")


def stray(previous: Manifest | None, current: list[DocumentRecord]) -> list[DocumentRecord]:
    """Documents of an earlier export that this one no longer sends."""
    if previous is None:
        return []
    kept = {(d.label, d.directory) for d in current}
    return [d for d in previous.documents if (d.label, d.directory) not in kept]


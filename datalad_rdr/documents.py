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
from dataclasses import dataclass
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
    data = Path(location).read_bytes()
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
        label, directory = place(f.path)
        sent = send_file(client, pid, uploader, listing, Bytes(data),
                         hashlib.md5(data).hexdigest(), f.path, label, directory, False,
                         "Documentation of the dataset, public (also inside its bundle)",
                         mime_type(f.path), lock_timeout)
        record = DocumentRecord(f.path, label, directory, sent.size, sent.md5, sent.file_id,
                                sent.storage_identifier, sent.restricted, f.key, f.blob)
        yield record, sent.status, sent.message


@dataclass(frozen=True)
class Sent:
    """A file of the draft as this export left it; ``status`` "notneeded" when the server
    had it already, as it is."""

    file_id: int
    size: int
    md5: str
    storage_identifier: str
    restricted: bool
    status: str
    message: str


def send_file(client: Dataverse, pid: str, uploader: Uploader, listing: list[FileEntry],
              source, md5: str, what: str, label: str, directory: str | None,
              restricted: bool, description: str, mime: str, lock_timeout: float = 300
              ) -> Sent:
    """``source`` (bytes whose MD5 is ``md5``) as the file ``label`` in ``directory`` of the
    draft, by direct upload, replacing a file of that name with other bytes; a file with
    these bytes there already is not sent again, only given the access asked for."""
    access = "restricted" if restricted else "public"
    entry = find(listing, label, directory)
    if entry is not None and entry.md5 == md5:
        if entry.restricted != restricted:
            client.restrict(entry.file_id, restricted)
            was = "public" if restricted else "restricted"
            return Sent(entry.file_id, entry.size, md5, entry.storage_identifier,
                        restricted, "ok", f"{what} was {was} on the server: made {access}")
        return Sent(entry.file_id, entry.size, md5, entry.storage_identifier, restricted,
                    "notneeded", f"{what} unchanged since the last export, {access}")
    progress_id = f"rdr-export-document-{what}"
    log_progress(log.info, progress_id, f"Sending {what}", total=source.size,
                 unit=" Bytes", label=what)
    try:
        uploaded = uploader.upload(source, progress=lambda n: log_progress(
            log.info, progress_id, "", update=n, increment=True))
    finally:
        log_progress(log.info, progress_id, f"Sent {what}")
    registered = register_bundle(client, pid, label, uploaded, restricted, description,
                                 directory, lock_timeout=lock_timeout, mime_type=mime)
    if registered.md5 != md5:
        raise content.ContentError(f"{what}: the server holds MD5 {registered.md5}, {md5} "
                                   f"was sent")
    return Sent(registered.file_id, registered.size, registered.md5,
                registered.storage_identifier, registered.restricted, "ok",
                f"{what} sent as a {access} file ({source.size} bytes, file id "
                f"{registered.file_id})")


def stray(previous: Manifest | None, current: list[DocumentRecord]) -> list[DocumentRecord]:
    """Documents of an earlier export that this one no longer sends."""
    if previous is None:
        return []
    kept = {(d.label, d.directory) for d in current}
    return [d for d in previous.documents if (d.label, d.directory) not in kept]


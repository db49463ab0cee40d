"""Read one member of a bundle on RDR: one HTTP Range request, inflated and verified.

The range asked for is the member's local header and its data (the location record says
where both are), so a 10 MB file costs 10 MB and a few dozen bytes however large the bundle.
The header is checked against the record (signature, method, name, offsets) before any data
is written; the data is inflated when DEFLATEd and checked against the record's size and
CRC-32 and the key's own checksum before the caller may report success. The member's name is
only ever compared with the record: nothing read from the ZIP becomes a path on disk.

Dataverse answers the access URL with a 303 to a presigned store GET (download-redirect) or
streams the bytes itself; the 303 is followed here with a session that has no API token.
The presigned URL is kept for later ranges of the same bundle while it is valid.

A bundle written as split volumes (the record's ``vols``) is read as the volumes joined, by
the reader of split archives (:class:`datalad_rdr.archives.Volumes`): one Range request per
volume the member touches, two when it crosses a cut.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import requests

from .. import zipformat as zf
from ..archives import ArchiveError, Volumes, from_bundle_reader
from ..dataverse import Dataverse, DataverseError
from ..http import Backoff, presigned_lifetime, with_retries
from ..zipstream import Checksum
# the errors are importable from here too, as they were defined here
from .errors import Corrupt, Denied, Embargoed, Gone, ReadError, request_access  # noqa: F401
from .locations import Location

CHUNK = 1024 * 1024
lgr = logging.getLogger("datalad.rdr.remote")
_METHOD_CODES = {"stored": zf.STORED, "deflated": zf.DEFLATED}


@dataclass
class BundleReader:
    """Byte ranges of a server's files; ``token`` (a callable, asked once, may return None)
    is sent to the Dataverse API only, and asked for only when the server refuses to serve
    a file without it (restricted, or in a draft): a public file is read anonymously, so
    reading it needs no credential lookup (nor DataLad in the special remote)."""

    server: str
    token: Callable[[], str | None] = lambda: None
    credential_hint: str = "set DATALAD_CREDENTIAL_RDR_SECRET"
    backoff: Backoff = field(default_factory=Backoff)
    _client: Dataverse | None = None
    _as_user: bool = False  # a file was refused anonymously: the token from then on
    _token_asked: bool = False
    _token_refused: bool = False
    _store: requests.Session = field(default_factory=requests.Session)  # never a token
    _redirects: dict = field(default_factory=dict)  # file id -> (presigned URL, valid until)
    _windows: list = field(default_factory=list)  # (file id, start, bytes), newest last

    @property
    def client(self) -> Dataverse:
        if self._client is None:
            self._client = Dataverse(self.server, None, backoff=self.backoff)
        return self._client

    def _has_token(self) -> bool:
        """Is there a token to try (asked for now if not yet)?"""
        if not self._token_asked:
            self._token_asked = True
            token = self.token()
            if token:
                self._client = Dataverse(self.server, token, backoff=self.backoff)
        return self.client.has_token and not self._token_refused

    def _access(self, file_id: int, first: int, last: int,
                need: bool = True) -> requests.Response:
        """The server's answer for bytes ``first..last``; ``need=False``: a refusal is
        answer enough, the token is not asked for."""
        try:
            as_user = self._as_user and self._has_token()
            r = self.client.access(file_id, first, last, anonymous=not as_user)
            if r.status_code == 403 and not as_user and need and self._has_token():
                r.close()
                self._as_user = as_user = True
                r = self.client.access(file_id, first, last)
            if r.status_code == 401 and as_user:
                # A token for another server or a revoked one: public files still open.
                self._token_refused = True
                r.close()
                r = self.client.access(file_id, first, last, anonymous=True)
        except DataverseError as exc:
            raise ReadError(f"cannot reach {self.server}: {exc}") from exc
        lgr.debug("file %s, bytes %s-%s, %s: HTTP %s", file_id, first, last,
                  "with the API token" if as_user and not self._token_refused
                  else "anonymously", r.status_code)
        if r.status_code == 404:
            r.close()
            raise Gone(f"file {file_id} is not on {self.server} (deleted from the draft?)")
        if r.status_code == 403:
            r.close()
            if self._token_refused:
                raise Denied(f"file {file_id} on {self.server} is restricted or in a draft, "
                             f"and the server refused the API token (Bad API key); "
                             f"{self.credential_hint}")
            if not as_user:
                raise Denied(f"file {file_id} on {self.server} is restricted or in an "
                             f"unpublished draft, and no API token is set: "
                             f"{self.credential_hint}")
            raise Denied(f"file {file_id} on {self.server}: the API token's user may not "
                         f"read it (ask the dataset's owner for access)")
        if r.status_code not in (200, 206, 303):
            r.close()
            raise ReadError(f"file {file_id} on {self.server}: HTTP {r.status_code}")
        return r

    def embargo(self, loc: Location) -> Embargoed | None:
        """Why a 403 for a published bundle, when it is an embargo: the download answer
        does not say, the listing of the released version does (``dataFile.embargo``)."""
        try:
            entries = Dataverse(self.server, None, backoff=self.backoff).files(
                loc.pid, ":latest-published")
        except DataverseError:
            return None  # not published, or not readable: the refusal as it is
        found = next((e.embargo for e in entries if e.file_id == loc.file_id), None)
        if found is None or found.date_available <= dt.date.today():
            return None
        return Embargoed(f"{loc.member}: its bundle {loc.bundle} on {self.server} is under "
                         f"embargo until {found.date_available.isoformat()}"
                         + (f" ({found.reason})" if found.reason else "")
                         + "; it can be got from that date on")

    def exists(self, file_id: int) -> bool:
        """True if the server has the file (also when this user may not read it)."""
        try:
            self._access(file_id, 0, 0, need=False).close()
        except Denied:
            return True  # Dataverse answers 404 for an unknown id before it checks rights
        except Gone:
            return False
        return True

    def open(self, file_id: int, first: int, last: int, window: int = 0,
             size: int | None = None):
        """A streaming body of exactly bytes ``first..last`` of the file.

        ``window``: read (and keep, a few at a time) at least that many bytes from ``first``
        (not past ``size``), so that the next small ranges nearby are served from memory:
        for the chunks of a chunked key, which lie close together in one bundle.
        """
        for wid, start, data in self._windows:
            if wid == file_id and start <= first and last < start + len(data):
                return _Memory(data[first - start:last - start + 1])
        if window > last - first + 1:
            end = max(last, min(first + window, size or first + window) - 1)
            body = self._open(file_id, first, end)
            try:
                data = b"".join(body.iter_content(CHUNK))
            finally:
                body.close()
            self._windows = [*self._windows[-3:], (file_id, first, data)]
            return _Memory(data[:last - first + 1])
        return self._open(file_id, first, last)

    def _open(self, file_id: int, first: int, last: int):
        cached = self._redirects.get(file_id)
        if cached and cached[1] > time.monotonic():
            r = self._store_get(cached[0], first, last)
            if r is not None:
                return r
            self._redirects.pop(file_id, None)
        r = self._access(file_id, first, last)
        if r.status_code == 303:
            location = r.headers.get("Location", "")
            r.close()
            self._redirects[file_id] = (location, _valid_until(location))
            r = self._store_get(location, first, last)
            if r is None:
                raise ReadError(f"file {file_id}: the store refused a fresh presigned URL")
        return _exact(r, first, last)

    def _store_get(self, url: str, first: int, last: int) -> requests.Response | None:
        """GET a presigned URL; None if it has expired (the caller asks for a new one)."""
        try:
            r = with_retries(lambda: self._store.get(
                url, headers={"Range": f"bytes={first}-{last}"}, stream=True, timeout=120),
                what="reading from the store", backoff=self.backoff)
        except requests.RequestException as exc:
            raise ReadError(f"no answer from the store ({type(exc).__name__})") from exc
        if r.status_code == 403:
            r.close()
            return None
        if r.status_code not in (200, 206):
            r.close()
            raise ReadError(f"the store answered HTTP {r.status_code}")
        return r


def _valid_until(url: str) -> float:
    """Monotonic time until which a presigned URL may be reused (80 % of its lifetime)."""
    signed, lifetime = presigned_lifetime(url)
    if signed is None or lifetime is None:
        return 0.0  # unknown: do not reuse
    left = (signed - dt.datetime.now(dt.UTC)).total_seconds() + lifetime * 0.8
    return time.monotonic() + left


class _Memory:
    """A body already read."""

    def __init__(self, data: bytes):
        self.data = data

    def iter_content(self, size: int = CHUNK):
        for i in range(0, len(self.data), size):
            yield self.data[i:i + size]

    def close(self):
        pass


class _Exact:
    """The body of a response, cut to bytes first..last (a server may ignore Range)."""

    def __init__(self, response: requests.Response, skip: int, length: int):
        self.response, self.skip, self.left = response, skip, length

    def iter_content(self, size: int = CHUNK):
        for chunk in self.response.iter_content(size):
            if self.skip:
                cut = min(self.skip, len(chunk))
                chunk, self.skip = chunk[cut:], self.skip - cut
            if not chunk:
                continue
            chunk = chunk[:self.left]
            self.left -= len(chunk)
            yield chunk
            if not self.left:
                break

    def close(self):
        self.response.close()


class _Joined:
    """The member's bytes out of a bundle's split volumes, a request per volume touched."""

    def __init__(self, reader: BundleReader, loc: Location):
        parts = [from_bundle_reader(reader, fid, size, f"{loc.bundle} (volume {n})")
                 for n, (fid, size) in enumerate(loc.volumes, 1)]
        self.chunks = Volumes(parts, loc.bundle).stream(loc.header_offset, loc.data_end)
        self.first = self._next()  # the first request now: a refusal is the caller's to tell

    def _next(self) -> bytes:
        try:
            return next(self.chunks, b"")
        except ArchiveError as exc:
            raise ReadError(str(exc)) from exc

    def iter_content(self, size: int = CHUNK):
        chunk = self.first
        while chunk:
            yield chunk
            chunk = self._next()

    def close(self):
        self.chunks.close()


def _exact(r: requests.Response, first: int, last: int):
    skip = 0
    if r.status_code == 200:
        skip = first  # the whole file came: skip to the range
    else:
        got = r.headers.get("Content-Range", "")
        if not got.startswith(f"bytes {first}-"):
            r.close()
            raise ReadError(f"asked for bytes {first}-{last}, got {got or 'no range'}")
    return _Exact(r, skip, last - first + 1)


def read_member(reader: BundleReader, loc: Location, out: BinaryIO,
                checksum: Checksum | None,
                progress: Callable[[int], None] = lambda n: None, window: int = 0) -> int:
    """Write the member's content to ``out``; returns the bytes read from the server.

    ``window``: see :meth:`BundleReader.open` (for chunks; 0 reads just the member).

    Raises :class:`Corrupt` if the header, size, CRC-32 or ``checksum`` do not match, having
    written possibly wrong bytes to ``out``: the caller discards them.
    """
    try:
        if loc.volumes:
            body = _Joined(reader, loc)
        else:
            body = reader.open(loc.file_id, loc.header_offset, loc.data_end - 1, window,
                               loc.bundle_size)
    except Denied as exc:
        raise reader.embargo(loc) or exc
    received = 0
    try:
        chunks = body.iter_content(CHUNK)
        head = b""
        name = loc.member.encode("utf-8")
        want = loc.data_offset - loc.header_offset
        for chunk in chunks:
            received += len(chunk)
            head += chunk
            if len(head) >= want:
                break
        _check_header(loc, head[:want], name)
        inflate = zlib.decompressobj(zf.RAW_DEFLATE) if loc.method == "deflated" else None
        hasher = checksum.new() if checksum else None
        crc = size = 0

        def emit(data: bytes):
            nonlocal crc, size
            if not data:
                return
            crc = zlib.crc32(data, crc)
            if hasher:
                hasher.update(data)
            size += len(data)
            if size > loc.size:
                raise Corrupt(f"{loc.member} in {loc.bundle}: more than the {loc.size} "
                              f"bytes recorded")
            out.write(data)
            progress(size)

        def feed(data: bytes):
            emit(inflate.decompress(data) if inflate else data)

        feed(head[want:])
        for chunk in chunks:
            received += len(chunk)
            feed(chunk)
        if inflate:
            emit(inflate.flush())
            if not inflate.eof or inflate.unused_data:
                raise Corrupt(f"{loc.member} in {loc.bundle}: the DEFLATE stream is broken")
    except zlib.error as exc:
        raise Corrupt(f"{loc.member} in {loc.bundle}: cannot inflate ({exc})") from exc
    finally:
        body.close()
    if received != loc.data_end - loc.header_offset:
        raise ReadError(f"{loc.member} in {loc.bundle}: the connection ended after "
                        f"{received} of {loc.data_end - loc.header_offset} bytes")
    if size != loc.size:
        raise Corrupt(f"{loc.member} in {loc.bundle}: {size} bytes, not the {loc.size} "
                      f"recorded")
    if f"{crc:08x}" != loc.crc32:
        raise Corrupt(f"{loc.member} in {loc.bundle}: CRC-32 {crc:08x}, not the "
                      f"{loc.crc32} recorded (corrupted on the server or in transit)")
    if hasher and hasher.hexdigest() != checksum.hexdigest.lower():
        raise Corrupt(f"{loc.member} in {loc.bundle}: content does not match its key's "
                      f"checksum (corrupted on the server or in transit)")
    return received


def _check_header(loc: Location, head: bytes, name: bytes) -> None:
    where = f"{loc.member} in {loc.bundle}"
    if len(head) < zf.LOCAL_HEADER_SIZE:
        raise Corrupt(f"{where}: the local header was cut short")
    try:
        header = zf.LocalHeader.parse(head)
    except ValueError:
        raise Corrupt(f"{where}: no ZIP local header at offset {loc.header_offset} (the "
                      f"record does not fit this bundle)") from None
    if header.method != _METHOD_CODES[loc.method]:
        raise Corrupt(f"{where}: compression method {header.method} differs from the "
                      f"record")
    if head[zf.LOCAL_HEADER_SIZE:zf.LOCAL_HEADER_SIZE + header.name_len] != name:
        raise Corrupt(f"{where}: the ZIP names another member at this offset")
    if loc.header_offset + header.length != loc.data_offset:
        raise Corrupt(f"{where}: the data offset differs from the record")
    if (not header.flags & zf.FLAG_DATA_DESCRIPTOR
            and f"{header.crc32:08x}" != loc.crc32):
        raise Corrupt(f"{where}: CRC-32 in the header differs from the record")


class RangeFile:
    """A read-only, seekable file over a server's file, read by ranges of ``block`` bytes.

    Enough for :mod:`zipfile` to read a bundle's central directory and one small member
    without downloading the bundle.
    """

    def __init__(self, reader: BundleReader, file_id: int, size: int, block: int = 65536):
        self.reader, self.file_id, self.size, self.block = reader, file_id, size, block
        self.pos = 0
        self._cache: dict[int, bytes] = {}

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def _block(self, n: int) -> bytes:
        if n not in self._cache:
            first = n * self.block
            last = min(first + self.block, self.size) - 1
            body = self.reader.open(self.file_id, first, last)
            try:
                self._cache[n] = b"".join(body.iter_content(CHUNK))
            finally:
                body.close()
        return self._cache[n]

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        out = []
        while self.pos < end:
            block, skip = divmod(self.pos, self.block)
            data = self._block(block)[skip:skip + end - self.pos]
            if not data:
                break
            out.append(data)
            self.pos += len(data)
        return b"".join(out)

    def close(self) -> None:
        self._cache.clear()

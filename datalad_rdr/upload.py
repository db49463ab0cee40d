"""Upload stage: send one bundle's bytes to the store through Dataverse's presigned URLs.

The bytes come from a *source* with a known ``size`` and ``iter_range(start, end)`` (the ZIP
stream of :mod:`datalad_rdr.zipstream`), so a part can be produced again for a retry without
keeping it in memory or on disk. The MD5 that Dataverse needs at registration is computed over
the stream as it is sent; a snapshot of the hash at each part start makes a retried part count
once.

Parts of one bundle go in order, one at a time: the MD5 is a single sequential hash and a part
sent out of order would have to be produced twice. Throughput comes from streaming (no
temporary ZIP) rather than from parallel parts.

Failures, as the RDR guide and Dataverse's code describe them:

- connection errors and 5xx from S3: the part is produced again and re-sent, with backoff that
  honours Retry-After;
- 403 "Request has expired": URLs live ``X-Amz-Expires`` seconds (RDR: ~60 min) and cannot be
  renewed one by one; the multipart upload is aborted and the bundle restarted with fresh URLs;
- a bundle that cannot be sent within the URL lifetime at the measured rate raises
  :class:`TooSlowForUrlLifetime` with the size that would fit, so the caller can split it.

The Dataverse API token is never sent to S3.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol
from urllib.parse import parse_qs, urlsplit

import requests

from .dataverse import Dataverse, DataverseError
from .http import Backoff, retry_after, transient

log = logging.getLogger(__name__)


# A PUT shorter than this says more about latency than about the link's rate: a 1 kB
# bundle taking 20 ms must not make the next 20 GB bundle look hopeless.
RATE_SAMPLE_MIN = 16 * 1024 * 1024


class Source(Protocol):
    size: int

    def iter_range(self, start: int, end: int) -> Iterator[bytes]: ...


class UploadError(Exception):
    pass


class TooSlowForUrlLifetime(UploadError):
    def __init__(self, size: int, fits: int, rate: float, lifetime: int):
        self.size, self.fits, self.rate, self.lifetime = size, fits, rate, lifetime
        super().__init__(
            f"at the measured {rate / 1e6:.1f} MB/s, {size / 1e9:.2f} GB cannot be sent "
            f"within the {lifetime} s lifetime of the upload URLs; bundles of at most "
            f"{fits / 1e9:.2f} GB fit")


class _Expired(Exception):
    pass


@dataclass
class Uploaded:
    storage_identifier: str
    size: int
    md5: str
    parts: int
    restarts: int


@dataclass
class Ticket:
    """One ``uploadurls`` reply: the URLs for one upload of one file."""

    reply: dict
    issued: float  # time.monotonic() when received

    @property
    def multipart(self) -> bool:
        return "urls" in self.reply

    @property
    def part_size(self) -> int:
        return int(self.reply["partSize"])

    @property
    def storage_identifier(self) -> str:
        return self.reply["storageIdentifier"]

    @property
    def urls(self) -> list[str]:
        if not self.multipart:
            return [self.reply["url"]]
        return [self.reply["urls"][k] for k in sorted(self.reply["urls"], key=int)]

    @property
    def lifetime(self) -> int:
        query = parse_qs(urlsplit(self.urls[0]).query)
        return int(query.get("X-Amz-Expires", ["3600"])[0])

    @property
    def signs_tagging(self) -> bool:
        query = parse_qs(urlsplit(self.urls[0]).query)
        return "x-amz-tagging" in query.get("X-Amz-SignedHeaders", [""])[0].split(";")

    def remaining(self) -> float:
        return self.lifetime - (time.monotonic() - self.issued)


class Uploader:
    """Send sources to a dataset's store; ``progress(nbytes)`` is called as bytes go out."""

    def __init__(self, dataverse: Dataverse, pid: str, backoff: Backoff | None = None,
                 max_restarts: int = 3, chunk_timeout: float = 300):
        self.dataverse = dataverse
        self.pid = pid
        self.backoff = backoff or Backoff()
        self.max_restarts = max_restarts
        self.timeout = chunk_timeout
        self.s3 = requests.Session()  # no Dataverse token on this session, ever
        self.rate: float | None = None  # bytes per second, measured

    def upload(self, source: Source, progress: Callable[[int], None] | None = None,
               on_ticket: Callable[[Ticket], None] | None = None) -> Uploaded:
        progress = progress or (lambda n: None)
        restarts = 0
        while True:
            ticket = Ticket(self.dataverse.upload_urls(self.pid, source.size),
                            time.monotonic())
            self._check_fits(source.size, ticket)
            if on_ticket:
                on_ticket(ticket)
            sent = [0]

            def counted(n):
                sent[0] += n
                progress(n)

            try:
                md5, parts = self._send(source, ticket, counted)
            except _Expired:
                progress(-sent[0])
                restarts += 1
                if restarts > self.max_restarts:
                    raise UploadError(f"upload URLs expired {restarts} times; giving up")
                log.warning("upload URLs expired after %d bytes; restarting the bundle "
                            "with fresh URLs", sent[0])
                continue
            return Uploaded(ticket.storage_identifier, source.size, md5, parts, restarts)

    def _check_fits(self, size: int, ticket: Ticket) -> None:
        if not self.rate:
            return
        # A single PUT must finish within the lifetime; so must each multipart part.
        unit = min(size, ticket.part_size) if ticket.multipart else size
        needed = unit / self.rate
        if needed > ticket.lifetime * 0.9:
            raise TooSlowForUrlLifetime(size, int(self.rate * ticket.lifetime * 0.8),
                                        self.rate, ticket.lifetime)

    def _send(self, source: Source, ticket: Ticket, progress) -> tuple[str, int]:
        stream = {"md5": hashlib.md5()}  # the hash of every byte sent so far, in order
        if not ticket.multipart:
            headers = {"x-amz-tagging": "dv-state=temp"} if ticket.signs_tagging else {}
            self._put(ticket.urls[0], source, 0, source.size, stream, headers, progress)
            return stream["md5"].hexdigest(), 1
        etags = {}
        size = ticket.part_size
        try:
            for n, url in enumerate(ticket.urls, start=1):
                start, end = (n - 1) * size, min(n * size, source.size)
                etags[n] = self._put(url, source, start, end, stream, {}, progress)
            self.dataverse.complete_multipart(ticket.reply["complete"], etags)
        except BaseException:
            try:
                self.dataverse.abort_multipart(ticket.reply["abort"])
            except DataverseError as exc:
                log.warning("could not abort the multipart upload: %s", exc)
            raise
        return stream["md5"].hexdigest(), len(etags)

    def _put(self, url: str, source: Source, start: int, end: int, stream: dict, headers,
             progress) -> str:
        """PUT bytes [start, end) of the source; returns the ETag. Retries rewind.

        ``stream["md5"]`` is replaced by the hash including this part once it is accepted.
        """
        delays = self.backoff.delays()
        while True:
            hashing = stream["md5"].copy()
            sent = [0]

            def body():
                for chunk in source.iter_range(start, end):
                    hashing.update(chunk)
                    sent[0] += len(chunk)
                    progress(len(chunk))
                    yield chunk

            began = time.monotonic()
            response, error = None, None
            try:
                response = self.s3.put(url, data=_Sized(body(), end - start),
                                       timeout=self.timeout, headers=headers)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = exc
            if response is not None and response.status_code == 200:
                if sent[0] != end - start:
                    raise UploadError(f"the bundle produced {sent[0]} bytes for a part of "
                                      f"{end - start}")
                if end - start >= RATE_SAMPLE_MIN:
                    self.rate = (end - start) / max(time.monotonic() - began, 1e-6)
                stream["md5"] = hashing
                return response.headers.get("ETag", "")
            progress(-sent[0])
            if response is not None and response.status_code == 403 \
                    and "Request has expired" in response.text:
                raise _Expired()
            if response is not None and not transient(response=response):
                raise UploadError(f"S3 refused the upload: HTTP {response.status_code} "
                                  f"{_s3_code(response.text)}")
            try:
                delay = next(delays)
            except StopIteration:
                what = error or f"HTTP {response.status_code}"
                raise UploadError(f"upload of bytes {start}-{end} failed: {what}") from error
            delay = max(delay, retry_after(response) or 0)
            log.info("part %d-%d: %s; sending it again in %.1f s", start, end,
                     error or response.status_code, delay)
            time.sleep(delay)


class _Sized:
    """An iterable body with a length, so requests sends Content-Length, not chunks."""

    def __init__(self, chunks, length: int):
        self.chunks, self.length = chunks, length

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self):
        return self.length


def _s3_code(text: str) -> str:
    m = re.search(r"<Code>([^<]+)</Code>(?:<Message>([^<]*)</Message>)?", text or "")
    return f"{m.group(1)}: {m.group(2) or ''}".strip(": ") if m else ""

"""Upload stage: send one bundle's bytes to the store through Dataverse's presigned URLs.

The bytes come from a *source* with a known ``size`` and ``iter_range(start, end)`` (the ZIP
stream of :mod:`datalad_rdr.zipstream`, which checks every member against its key as it reads)
and, optionally, ``iter_raw(start, end)``, the same bytes unchecked, safe to call from several
threads at once. Nothing is kept in memory or on disk: a part is produced again for a retry.

For one bundle, two kinds of sender share the parts:

- the *lead* walks the parts in order, reading each through ``iter_range``, which verifies
  every member (size, CRC32, annex key), and hashing it into the MD5 that Dataverse needs at
  registration; a part it gets a PUT for goes out as these very bytes, so it is read once
  for the check and the upload, and what is sent is what was checked;
- with ``jobs`` > 1, *helpers* send other parts at the same time, from the last one back,
  each read again through ``iter_raw``: parallel connections where a link or a server is
  slow on each. The last chunk of a helper's part is held back until the lead has passed
  the part's end, so a part that holds a corrupt or changed member never completes: S3
  drops a PUT whose body is cut short, and the multipart upload is aborted.

The lead never waits for a PUT (the helpers' parts wait for it): a part it finds none free
for, it only checks, and leaves to a helper. A bundle that goes in one PUT is one part, sent
by the lead; a part sent again after a failure is made, and checked, again from its start,
without disturbing the hash. Parts of an interrupted upload that were sent already are only
checked. So the MD5 costs one sequential pass whatever the route, and a bundle's bytes are
read twice only for the parts the helpers send.

One :class:`Uploader` may send several bundles at once (from several threads): ``jobs`` is
the number of PUTs in flight in total, over all its uploads, so memory (a few MiB of body per
PUT) and connections stay bounded however many bundles and parts there are. :meth:`stop`
cancels every upload under way (Ctrl-C).

Failures, as the RDR guide and Dataverse's code describe them:

- connection errors and 5xx from S3: the part is produced again and re-sent, with backoff that
  honours Retry-After;
- 403 "Request has expired": URLs live ``X-Amz-Expires`` seconds (RDR: ~60 min) and cannot be
  renewed one by one; the multipart upload is aborted and the bundle restarted with fresh URLs;
- all URLs of a bundle are issued at once, so the whole bundle must be sent within their
  lifetime: a bundle that cannot be at the measured rate raises
  :class:`TooSlowForUrlLifetime` with the size that would fit, so the caller can split it;
- an interruption (crash, kill): the caller keeps the upload's *state* (URLs, issue time, ETags
  of the parts sent; see ``on_state``) and passes it back as ``resume``; the parts sent are not
  sent again while the URLs are still valid, else the old upload is aborted and the bundle
  restarted.

The Dataverse API token is never sent to S3.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol
from urllib.parse import parse_qs, urlsplit

import requests

from .dataverse import Dataverse, DataverseError, UploadTarget
from .http import Backoff, presigned_lifetime, retry_after, transient

#: Bundles, and PUTs over all of them, sent at once (``-J``).
DEFAULT_JOBS = 4
#: Bytes sent that are reported to the progress callback at once (and at the end).
PROGRESS_STEP = 4 * 2**20

log = logging.getLogger("datalad.rdr.upload")


# A PUT shorter than this says more about latency than about the link's rate: a 1 kB
# bundle taking 20 ms must not make the next 20 GB bundle look hopeless.
RATE_SAMPLE_MIN = 16 * 1024 * 1024


class Source(Protocol):
    size: int

    def iter_range(self, start: int, end: int) -> Iterator[bytes]: ...

    # optional: def iter_raw(self, start: int, end: int) -> Iterator[bytes]


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


class _Cancelled(Exception):
    """Another part of the same bundle failed, or the uploader was stopped."""


@dataclass
class Uploaded:
    storage_identifier: str
    size: int
    md5: str
    parts: int
    restarts: int
    resumed_parts: int = 0  # parts of an interrupted upload that were not sent again


@dataclass
class Ticket:
    """The URLs for one upload of one file, and when the server handed them out."""

    target: UploadTarget
    issued: float  # time.time() when received: kept across processes for a resume

    @property
    def multipart(self) -> bool:
        return self.target.multipart

    @property
    def part_size(self) -> int:
        return self.target.part_size

    @property
    def storage_identifier(self) -> str:
        return self.target.storage_identifier

    @property
    def urls(self) -> list[str]:
        return list(self.target.urls)

    @property
    def lifetime(self) -> int:
        return presigned_lifetime(self.urls[0])[1] or 3600  # the server's 60 minutes

    @property
    def signs_tagging(self) -> bool:
        query = parse_qs(urlsplit(self.urls[0]).query)
        return "x-amz-tagging" in query.get("X-Amz-SignedHeaders", [""])[0].split(";")

    def remaining(self) -> float:
        return self.lifetime - (time.time() - self.issued)


class _Check:
    """The in-order pass of one attempt: the source read part after part through
    ``iter_range`` (which checks every member) and hashed into the bundle's MD5.

    The parts the lead sends go out as these bytes (:meth:`part`); a part sent by a helper
    is read raw beside it and completes only once this pass is past its end
    (:meth:`wait_past`).
    """

    def __init__(self, source: Source):
        self.source = source
        self.offset = 0  # every byte before it was read through iter_range
        self.error: BaseException | None = None
        self.md5: str | None = None
        self._digests = {0: hashlib.md5()}  # the MD5 so far where a part starts (a retry)
        self._cond = threading.Condition()
        # the nearest offset a helper waits for: the lead wakes them there, not every chunk
        self._wake_at = math.inf

    def part(self, start: int, end: int, cancel) -> Iterator[bytes]:
        """Bytes [start, end), checked and hashed as they go out; ``start`` is where an
        earlier part ended (a retry begins again there). A member that fails raises before
        its last byte is yielded."""
        digest, offset = self._digests[start].copy(), start
        chunks = iter(self.source.iter_range(start, end))
        while True:
            if cancel.is_set():
                raise _Cancelled()
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except BaseException as exc:  # what the check found: the helpers' parts stop too
                self._fail(exc)
                raise
            digest.update(chunk)
            offset += len(chunk)
            self._advance(offset)
            yield chunk
        if offset != end:
            self._fail(UploadError(f"the bundle produced {offset - start} bytes for a part "
                                   f"of {end - start}"))
            raise self.error
        self._digests = {start: self._digests[start], end: digest}
        if end == self.source.size:
            self.md5 = digest.hexdigest()

    def check_only(self, start: int, end: int, cancel) -> None:
        """Read a part that a helper sends, or that an interrupted run sent."""
        for _ in self.part(start, end, cancel):
            pass

    def _advance(self, offset: int) -> None:
        if offset > self.offset:
            with self._cond:
                self.offset = offset
                if offset >= self._wake_at:
                    self._wake_at = math.inf  # the waiters still short of theirs set it again
                    self._cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            self.error = exc
            self._cond.notify_all()

    def wait_past(self, offset: int, cancel) -> None:
        """Return once every byte before ``offset`` was checked; raise what the check found."""
        with self._cond:
            while self.offset < offset and self.error is None:
                self._wake_at = min(self._wake_at, offset)
                self._cond.wait(0.25)
                if cancel.is_set():
                    raise _Cancelled()
        if self.error is not None:
            raise self.error

    def result(self) -> str:
        if self.error is not None:
            raise self.error
        if self.md5 is None:
            raise UploadError("the check of the bundle did not finish")
        return self.md5


class Uploader:
    """Send sources to a dataset's store; ``progress(nbytes)`` is called as bytes go out."""

    def __init__(self, dataverse: Dataverse, pid: str, backoff: Backoff | None = None,
                 max_restarts: int = 3, chunk_timeout: float = 300, jobs: int = DEFAULT_JOBS):
        self.dataverse = dataverse
        self.pid = pid
        self.backoff = backoff or Backoff()
        self.max_restarts = max_restarts
        self.timeout = chunk_timeout
        self.jobs = max(1, jobs)
        self._slots = threading.BoundedSemaphore(self.jobs)  # PUTs in flight, all uploads
        self._cancels: set[threading.Event] = set()  # one per upload under way
        self._stopped = False
        self._lock = threading.Lock()
        self._sessions = threading.local()  # no Dataverse token on these sessions, ever
        self.rate: float | None = None  # bytes per second, measured over whole uploads

    @property
    def s3(self) -> requests.Session:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return session

    def upload(self, source: Source, progress: Callable[[int], None] | None = None,
               on_state: Callable[[dict | None], None] | None = None,
               resume: dict | None = None) -> Uploaded:
        """Send ``source``; return what was stored, with its MD5.

        ``on_state(state)`` is called with a JSON-able dict whenever the upload's resumable
        state changes (URLs received, a part sent, the upload complete), and with None when
        nothing of it can be resumed; pass the last one as ``resume`` to continue after an
        interruption.
        """
        report = progress or (lambda n: None)
        lock = threading.Lock()
        unreported = 0

        def progress(n):  # chunks are 128 KiB: a bar's update costs ~20 us, so gather them
            nonlocal unreported
            with lock:
                unreported += n
                if n < 0 or unreported >= PROGRESS_STEP:
                    report(unreported)
                    unreported = 0

        on_state = on_state or (lambda state: None)
        cancel = threading.Event()
        with self._lock:
            if self._stopped:
                raise UploadError("the upload was stopped")
            self._cancels.add(cancel)
        try:
            return self._upload(source, progress, on_state, resume, cancel)
        finally:
            with lock:
                if unreported:
                    report(unreported)
            with self._lock:
                self._cancels.discard(cancel)

    def stop(self) -> None:
        """Cancel every upload under way and refuse new ones: their PUTs end at the next
        chunk, and each upload fails (its multipart upload aborted)."""
        with self._lock:
            self._stopped = True
            for cancel in self._cancels:
                cancel.set()

    def _upload(self, source, progress, on_state, resume, cancel) -> Uploaded:
        restarts = 0
        ticket, done, completed = self._resumable(resume, source.size, on_state)
        resumed = len(done)
        while True:
            if ticket is None:
                ticket = Ticket(self.dataverse.upload_urls(self.pid, source.size), time.time())
                self._check_fits(source.size, ticket)
                done, completed = {}, False
                on_state(_state(ticket, done, completed))
            began, already = time.monotonic(), _bytes_in(ticket, done, source.size)
            progress(already)  # parts an interrupted run sent
            check = _Check(source)  # each attempt reads and hashes the whole source anew
            try:
                self._send(source, ticket, done, check, progress,
                           lambda: on_state(_state(ticket, done, False)), cancel, completed)
                if not completed:
                    completed = True
                    on_state(_state(ticket, done, completed))
            except _Expired:
                progress(-_bytes_in(ticket, done, source.size))
                self._abort(ticket)
                on_state(None)
                restarts += 1
                if restarts > self.max_restarts:
                    raise UploadError(f"upload URLs expired {restarts} times; giving up")
                log.warning("upload URLs expired; restarting the bundle with fresh URLs")
                ticket = None
                continue
            except BaseException:
                self._abort(ticket)
                on_state(None)
                raise
            sent = source.size - already
            if sent >= RATE_SAMPLE_MIN:
                self.rate = sent / max(time.monotonic() - began, 1e-6)
            md5 = check.result()
            return Uploaded(ticket.storage_identifier, source.size, md5,
                            len(ticket.urls), restarts, resumed)

    def _resumable(self, resume: dict | None, size: int, on_state):
        """The ticket, parts sent and completion of an interrupted upload worth continuing."""
        if not resume:
            return None, {}, False
        ticket = Ticket(UploadTarget.from_json(resume["reply"]), resume["issued"])
        done = {int(n): etag for n, etag in resume.get("etags", {}).items()}
        completed = bool(resume.get("completed"))
        if completed:
            return ticket, done, True
        if not ticket.multipart:
            return None, {}, False  # an interrupted single PUT left nothing to continue
        left = size - _bytes_in(ticket, done, size)
        needed = left / self.rate if self.rate else 0
        if ticket.remaining() > max(needed, 0.1 * ticket.lifetime):
            log.info("resuming the interrupted upload: %d of %d parts already sent",
                     len(done), len(ticket.urls))
            return ticket, done, False
        log.info("the interrupted upload's URLs have (nearly) expired; starting it again")
        self._abort(ticket)
        on_state(None)
        return None, {}, False

    def _abort(self, ticket: Ticket | None) -> None:
        if ticket is None or not ticket.multipart:
            return
        try:
            self.dataverse.abort_multipart(ticket.target.abort)
        except DataverseError as exc:
            log.warning("could not abort the multipart upload: %s", exc)

    def _check_fits(self, size: int, ticket: Ticket) -> None:
        if not self.rate:
            return
        # Every URL of the bundle is issued now: all its bytes must go out within the lifetime.
        if size / self.rate > ticket.lifetime * 0.9:
            self._abort(ticket)
            raise TooSlowForUrlLifetime(size, int(self.rate * ticket.lifetime * 0.8),
                                        self.rate, ticket.lifetime)

    def _send(self, source: Source, ticket: Ticket, done: dict[int, str], check: _Check,
              progress, part_sent: Callable[[], None], stopped: threading.Event,
              completed: bool = False) -> None:
        """Check every part in order and send it from the checked bytes (the lead); with
        ``jobs`` > 1, helpers send other parts beside it, read raw. ``done`` parts (all,
        once ``completed``) are only checked."""
        cancel = _Either(threading.Event(), stopped)  # this attempt's parts stop together
        count = len(ticket.urls)
        helpers = min(self.jobs, count) - 1
        left = set() if completed else {n for n in range(1, count + 1) if n not in done}
        lock, at = threading.Lock(), [1]  # at: the part the lead checks
        checked, raw = [], []  # the parts sent each way
        headers = ({"x-amz-tagging": "dv-state=temp"}
                   if not ticket.multipart and ticket.signs_tagging else {})

        def put(n, produce):
            try:
                etag = self._put(ticket.urls[n - 1], produce,
                                 *_part_range(ticket, n, source.size), headers, check,
                                 progress, cancel)
            finally:
                self._slots.release()
            with lock:
                done[n] = etag
                part_sent()

        def take(n=None):
            with lock:
                if n is None:  # a helper's choice: a part checked already, else the last
                    behind = [m for m in left if m < at[0]]
                    ahead = [m for m in left if m > at[0]]
                    n = min(behind) if behind else max(ahead) if ahead else None
                if n is None or n not in left:
                    return None
                left.discard(n)
                return n

        def help_out():
            # a PUT's slot first, then a part: a helper never sits on a part while its slot
            # could have gone to a lead
            while left:
                self._acquire(cancel)
                n = take()
                if n is None:
                    self._slots.release()
                    return
                raw.append(n)
                put(n, getattr(source, "iter_raw", None) or source.iter_range)

        def lead():
            for n in range(1, count + 1):
                start, end = _part_range(ticket, n, source.size)
                with lock:
                    at[0] = n
                # The check never waits for a slot (helpers' parts wait for the check); a
                # part it finds no slot for is left to the helpers. Without helpers the
                # lead is the only one who needs one.
                if n in left and self._slot(wait=not helpers, cancel=cancel):
                    if take(n) is not None:
                        checked.append(n)
                        put(n, lambda s, e: check.part(s, e, cancel))
                        continue
                    self._slots.release()
                check.check_only(start, end, cancel)
            with lock:
                at[0] = count + 1
            help_out()  # parts left for want of a slot

        with ThreadPoolExecutor(1 + helpers, thread_name_prefix="rdr-upload-part") as pool:
            pending = {pool.submit(lead)} | {pool.submit(help_out) for _ in range(helpers)}
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        future.result()
            except BaseException:
                cancel.set()  # the other parts of this attempt stop too
                raise
        log.debug("%d of %d parts sent as checked, %d read again raw", len(checked), count,
                  len(raw))
        if ticket.multipart and not completed:
            self.dataverse.complete_multipart(ticket.target.complete,
                                              dict(sorted(done.items())))

    def _acquire(self, cancel) -> None:
        while not self._slots.acquire(timeout=0.25):
            if cancel.is_set():
                raise _Cancelled()

    def _slot(self, wait: bool, cancel) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        if wait:
            self._acquire(cancel)
        return wait

    def _put(self, url: str, produce, start: int, end: int, headers, check: _Check,
             progress, cancel) -> str:
        """PUT bytes [start, end) of ``produce(start, end)`` (the caller holds a slot);
        returns the ETag. Retries make the bytes again."""
        delays = self.backoff.delays()
        while True:
            sent = [0]

            def body():
                held = None
                for chunk in produce(start, end):
                    if cancel.is_set():
                        raise _Cancelled()
                    if held is not None:
                        sent[0] += len(held)
                        progress(len(held))
                        yield held
                    held = chunk
                # the part completes only once the check has passed its last byte
                check.wait_past(end, cancel)
                if held is not None:
                    sent[0] += len(held)
                    progress(len(held))
                    yield held

            response, error = None, None
            try:
                response = self.s3.put(url, data=_Sized(body(), end - start),
                                       timeout=self.timeout, headers=headers)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = exc
            except BaseException:
                progress(-sent[0])
                raise
            if response is not None and response.status_code == 200:
                if sent[0] != end - start:
                    raise UploadError(f"the bundle produced {sent[0]} bytes for a part of "
                                      f"{end - start}")
                return response.headers.get("ETag", "")
            progress(-sent[0])
            if cancel.is_set():
                raise _Cancelled()
            if response is not None and response.status_code == 403 \
                    and "Request has expired" in response.text:
                raise _Expired()
            if response is not None and not transient(response=response):
                raise UploadError(f"S3 refused the upload: HTTP {response.status_code} "
                                  f"{_s3_code(response.text)}")
            if check.error is not None:
                raise check.error
            try:
                delay = next(delays)
            except StopIteration:
                what = error or f"HTTP {response.status_code}"
                raise UploadError(f"upload of bytes {start}-{end} failed: {what}") from error
            delay = max(delay, retry_after(response) or 0)
            log.info("part %d-%d: %s; sending it again in %.1f s", start, end,
                     error or response.status_code, delay)
            time.sleep(delay)


class _Either:
    """Set when either event is: a failed part, or the whole uploader stopped."""

    def __init__(self, own: threading.Event, other: threading.Event):
        self.own, self.other = own, other

    def set(self) -> None:
        self.own.set()

    def is_set(self) -> bool:
        return self.own.is_set() or self.other.is_set()


def _part_range(ticket: Ticket, n: int, size: int) -> tuple[int, int]:
    if not ticket.multipart:
        return 0, size
    return (n - 1) * ticket.part_size, min(n * ticket.part_size, size)


def _bytes_in(ticket: Ticket, parts, size: int) -> int:
    return sum(end - start for start, end in (_part_range(ticket, n, size) for n in parts))


def _state(ticket: Ticket, done: dict[int, str], completed: bool) -> dict:
    return {"reply": ticket.target.to_json(), "issued": ticket.issued,
            "etags": {str(n): etag for n, etag in sorted(done.items())},
            "completed": completed}


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

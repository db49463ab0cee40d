"""The sandbox's S3 server: moto's S3 application behind a gate that checks what moto does not.

moto in server mode stores objects and speaks the S3 protocol, but (measured here) it checks
neither the signature nor the expiry of presigned URLs. Real stores do, and a client that works
only because they are not checked would fail on RDR. The gate, a WSGI middleware in front of
moto's own Flask application, adds:

- presigned SigV4 URLs: expired -> 403 AccessDenied "Request has expired"; any change to the
  URL, the method or a signed header -> 403 SignatureDoesNotMatch;
- a PUT without Content-Length (chunked) -> 501 NotImplemented, as Dataverse's guide warns;
- tagging: with tagging disabled (RDR: OpenStack Swift s3api) any ``x-amz-tagging`` header ->
  501 NotImplemented; with tagging enabled the header is part of the signature, so leaving it
  out -> 403 SignatureDoesNotMatch;
- large objects stay on disk: moto joins multipart parts in one bytearray and reads a whole
  object to answer a Range request; :func:`_keep_large_objects_on_disk` and the gate's own
  GET path stream from moto's stored buffer instead, so a 20 GB bundle needs no 20 GB of RAM;
- counters (bytes served per object, PUTs per object, the most PUTs and objects in flight
  at once) and injectable faults (status codes, connection resets) for tests;
- an optional per-connection bandwidth limit (``S3Settings.bandwidth``, bytes/s) on presigned
  requests, so that sending several bundles at once pays off on loopback as it does over a
  WAN, where one connection rarely fills the link.

Requests signed in the Authorization header come only from the sandbox's own Dataverse and
Zenodo servers; the gate checks their access key, not their signature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from werkzeug.wrappers import Request, Response

from .faults import Faults

CHUNK = 1024 * 1024
ACCOUNT_ID = "123456789012"


@dataclass
class S3Settings:
    access_key: str = "SANDBOXACCESSKEY"
    secret_key: str = "sandbox-secret-key-not-for-production"
    region: str = "us-east-1"
    # moto's store is one per process: each sandbox gets a bucket of its own.
    bucket: str = field(default_factory=lambda: f"rdr-sandbox-{uuid.uuid4().hex[:8]}")
    # Presigned PUTs carry the signed header x-amz-tagging:dv-state=temp (Dataverse default).
    tagging: bool = True
    # Answer like OpenStack Swift's s3api (RDR): request ids as Swift sends them.
    swift: bool = False
    # Highest part number (AWS 10000; Swift s3api's max_upload_part_num defaults to 1000).
    max_parts: int = 10000
    # Bytes per second per connection (presigned requests only: the sandbox's own servers
    # are not slowed); None: as fast as loopback goes.
    bandwidth: float | None = None


@dataclass
class S3Stats:
    requests: Counter = field(default_factory=Counter)
    bytes_served: Counter = field(default_factory=Counter)  # object key -> body bytes sent
    bytes_received: int = 0
    puts: Counter = field(default_factory=Counter)  # "bucket/key" -> PUTs (parts count each)
    in_flight: Counter = field(default_factory=Counter)  # "bucket/key" -> PUTs under way
    max_puts_in_flight: int = 0  # the most PUTs under way at once
    max_objects_in_flight: int = 0  # the most objects (bundles) being PUT at once
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def put_started(self, key: str) -> None:
        with self._lock:
            self.puts[key] += 1
            self.in_flight[key] += 1
            self.max_puts_in_flight = max(self.max_puts_in_flight,
                                          sum(self.in_flight.values()))
            self.max_objects_in_flight = max(self.max_objects_in_flight,
                                             len(+self.in_flight))

    def put_ended(self, key: str) -> None:
        with self._lock:
            self.in_flight[key] -= 1
            if self.in_flight[key] <= 0:
                del self.in_flight[key]

    def puts_of(self, storage_identifier: str) -> int:
        """PUTs of the object a Dataverse storage identifier (``s3://bucket:id``) names."""
        ident = storage_identifier.rsplit(":", 1)[-1]
        with self._lock:
            return sum(n for key, n in self.puts.items() if key.endswith("/" + ident))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_served.clear()
            self.bytes_received = 0
            self.puts.clear()
            self.max_puts_in_flight = sum(self.in_flight.values())
            self.max_objects_in_flight = len(self.in_flight)


def _error(status: int, code: str, message: str, settings: S3Settings, **extra) -> Response:
    details = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{details}"
        f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>"
    )
    resp = Response(body, status=status, content_type="application/xml")
    _stamp(resp, settings)
    return resp


def _stamp(resp: Response, settings: S3Settings) -> None:
    if settings.swift:
        txid = f"tx{uuid.uuid4().hex[:21]}-{uuid.uuid4().hex[:10]}"
        resp.headers["X-Trans-Id"] = txid
        resp.headers["X-Openstack-Request-Id"] = txid


def _uri_encode(text: str, safe: str) -> str:
    return quote(text, safe=safe)


def _sigv4_signature(secret: str, date: str, region: str, service: str, to_sign: str) -> str:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def check_presigned(request: Request, raw_path: str, raw_query: str, settings: S3Settings,
                    now: dt.datetime | None = None) -> tuple[str, str] | None:
    """Return ``(code, message)`` if a presigned request must be refused, else None."""
    params = parse_qsl(raw_query, keep_blank_values=True)
    query = dict(params)
    try:
        credential = query["X-Amz-Credential"]
        amz_date = query["X-Amz-Date"]
        expires = int(query["X-Amz-Expires"])
        signed_headers = query["X-Amz-SignedHeaders"]
        signature = query["X-Amz-Signature"]
        access_key, date, region, service, terminator = credential.split("/")
    except (KeyError, ValueError):
        return "AuthorizationQueryParametersError", (
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        )
    if access_key != settings.access_key:
        return "InvalidAccessKeyId", (
            "The AWS Access Key Id you provided does not exist in our records."
        )
    signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=dt.timezone.utc
    )
    now = now or dt.datetime.now(dt.timezone.utc)
    if now > signed_at + dt.timedelta(seconds=expires):
        return "AccessDenied", "Request has expired"
    canonical_query = "&".join(
        f"{_uri_encode(k, '-_.~')}={_uri_encode(v, '-_.~')}"
        for k, v in sorted(params)
        if k != "X-Amz-Signature"
    )
    headers = []
    for name in signed_headers.split(";"):
        value = request.headers.get(name, "")
        headers.append(f"{name}:{' '.join(value.strip().split())}\n")
    canonical = "\n".join([
        request.method,
        _uri_encode(unquote(raw_path), "/~"),
        canonical_query,
        "".join(headers),
        signed_headers,
        "UNSIGNED-PAYLOAD",
    ])
    scope = f"{date}/{region}/{service}/{terminator}"
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope,
        hashlib.sha256(canonical.encode()).hexdigest(),
    ])
    expected = _sigv4_signature(settings.secret_key, date, region, service, to_sign)
    if not hmac.compare_digest(expected, signature):
        return "SignatureDoesNotMatch", (
            "The request signature we calculated does not match the signature you "
            "provided. Check your key and signing method."
        )
    return None


class S3Gate:
    """WSGI middleware: checks requests as a real S3 store would, then hands them to moto."""

    def __init__(self, settings: S3Settings):
        from moto.backends import get_backend
        from moto.server import create_backend_app

        _keep_large_objects_on_disk()
        self.settings = settings
        self.moto = create_backend_app("s3")
        self.backend = get_backend("s3")[ACCOUNT_ID]["aws"]
        self.stats = S3Stats()
        self.faults = Faults()
        self._completed: dict = {}  # (path, uploadId) -> (request body, reply)

    # -- WSGI -----------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request = Request(environ)
        raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path
        split = urlsplit(raw_uri)
        raw_path, raw_query = split.path, split.query
        method = request.method
        self.stats.requests[method] += 1

        fault = self.faults.take(method, raw_path)
        corrupt = fault.corrupt if fault is not None else None
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        elif fault is not None and corrupt is None:
            if fault.reset_after is not None:
                request.stream.read(fault.reset_after)
                sock = environ.get("werkzeug.socket")
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
                return []
            resp = _error(fault.status or 500, "InternalError",
                          "We encountered an internal error. Please try again.",
                          self.settings)
            if fault.retry_after is not None:
                resp.headers["Retry-After"] = str(fault.retry_after)
            return resp(environ, start_response)

        refusal = self._refuse(request, raw_path, raw_query)
        if refusal is not None:
            return refusal(environ, start_response)

        presigned = "X-Amz-Signature=" in raw_query
        if presigned and self.settings.bandwidth:
            environ["wsgi.input"] = _Throttled(environ["wsgi.input"], self.settings.bandwidth)
        if method == "PUT":
            self.stats.bytes_received += request.content_length or 0
            if presigned:
                key = unquote(raw_path).lstrip("/")
                self.stats.put_started(key)
                try:
                    return self.moto(environ, start_response)  # moto reads the body here
                finally:
                    self.stats.put_ended(key)
        if method in ("POST", "DELETE") and self._other_key(raw_path, raw_query):
            # moto finds an upload by its id alone; S3 and Swift need the key to match.
            return _error(404, "NoSuchUpload", "The specified upload does not exist. The "
                          "upload ID may be invalid, or the upload may have been aborted or "
                          "completed.", self.settings)(environ, start_response)
        if method == "POST" and "uploadId=" in raw_query:
            return self._complete(environ, start_response, request, raw_path, raw_query)
        if method == "GET" and self._is_object_path(raw_path) and not self._subresource(raw_query):
            served = self._serve_object(request, raw_path, raw_query, corrupt)
            if served is not None:
                return served(environ, start_response)
        return self.moto(environ, start_response)

    def _other_key(self, raw_path: str, raw_query: str) -> bool:
        """Whether the query's uploadId is a live upload of another key."""
        upload_id = dict(parse_qsl(raw_query)).get("uploadId")
        if upload_id is None:
            return False
        bucket, _, key_name = unquote(raw_path).lstrip("/").partition("/")
        try:
            live = self.backend.buckets[bucket].multiparts.get(upload_id)
        except KeyError:
            return False
        return live is not None and live.key_name != key_name

    def _complete(self, environ, start_response, request, raw_path, raw_query):
        """CompleteMultipartUpload: parts must ascend, and a repeat of a completed upload
        with the same parts answers as the first did (Swift's s3api, multi_upload.py)."""
        body = request.get_data()
        numbers = [int(n) for n in re.findall(rb"<PartNumber>\s*(\d+)\s*</PartNumber>", body)]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            return _error(400, "InvalidPartOrder", "The list of parts was not in ascending "
                          "order. The parts list must be specified in order by part "
                          "number.", self.settings)(environ, start_response)
        upload = (raw_path, dict(parse_qsl(raw_query)).get("uploadId"))
        done = self._completed.get(upload)
        if done is not None:
            if done[0] != body:
                return _error(400, "InvalidPart", "One or more of the specified parts could "
                              "not be found.", self.settings)(environ, start_response)
            return Response(done[1], content_type="application/xml")(environ,
                                                                     start_response)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return start_response(status, headers, exc_info)

        reply = b"".join(self.moto(environ, capture))
        if captured.get("status", "").startswith("200") and b"<Error>" not in reply:
            self._completed[upload] = (body, reply)
        return [reply]

    def _refuse(self, request: Request, raw_path: str, raw_query: str) -> Response | None:
        s = self.settings
        is_presigned = "X-Amz-Signature=" in raw_query
        if is_presigned:
            problem = check_presigned(request, raw_path, raw_query, s)
            if problem is not None:
                return _error(403, *problem, s)
        else:
            auth = request.headers.get("Authorization", "")
            m = re.search(r"Credential=([^/]+)/", auth)
            if not m:
                return _error(403, "AccessDenied", "Access Denied", s)
            if m.group(1) != s.access_key:
                return _error(403, "InvalidAccessKeyId",
                              "The AWS Access Key Id you provided does not exist in our "
                              "records.", s)
        if request.method == "PUT":
            if request.headers.get("Content-Length") is None:
                return _error(501, "NotImplemented", "A header you provided implies "
                              "functionality that is not implemented", s,
                              Header="Transfer-Encoding")
            part = dict(parse_qsl(raw_query)).get("partNumber")
            if part is not None and not (part.isdigit() and 1 <= int(part) <= s.max_parts):
                return _error(400, "InvalidArgument", f"Part number must be an integer "
                              f"between 1 and {s.max_parts}, inclusive", s,
                              ArgumentName="partNumber", ArgumentValue=part)
            if "x-amz-tagging" in request.headers and not s.tagging:
                # OpenStack Swift's s3api has no object tagging (IQSS/dataverse#10022).
                return _error(501, "NotImplemented", "The requested resource is not "
                              "implemented", s)
        return None

    @staticmethod
    def _is_object_path(raw_path: str) -> bool:
        parts = raw_path.lstrip("/").split("/", 1)
        return len(parts) == 2 and parts[1] != ""

    @staticmethod
    def _subresource(raw_query: str) -> bool:
        keys = {k for k, _ in parse_qsl(raw_query, keep_blank_values=True)}
        return bool(keys & {"uploadId", "tagging", "acl", "attributes", "legal-hold",
                            "retention", "torrent", "partNumber"})

    def _serve_object(self, request: Request, raw_path: str, raw_query: str,
                      corrupt: int | None = None):
        """Stream an object from moto's store, honouring one Range, without loading it."""
        bucket, key_name = unquote(raw_path).lstrip("/").split("/", 1)
        try:
            key = self.backend.get_object(bucket, key_name)
        except Exception:  # moto answers the error (NoSuchBucket, NoSuchKey) itself
            return None
        if key is None:
            return None
        size = key.contentsize
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        headers = {
            "ETag": key.etag,
            "Last-Modified": key.last_modified_RFC1123,
            "Accept-Ranges": "bytes",
            "Content-Type": query.get("response-content-type")
            or key.metadata.get("Content-Type", "binary/octet-stream"),
        }
        if "response-content-disposition" in query:
            headers["Content-Disposition"] = query["response-content-disposition"]
        start, end, status = 0, size - 1, 200
        rng = request.headers.get("Range")
        if rng:
            parsed = parse_range(rng, size)
            if parsed == "invalid":
                resp = _error(416, "InvalidRange", "The requested range is not "
                              "satisfiable", self.settings, RangeRequested=rng,
                              ActualObjectSize=size)
                return resp
            if parsed is not None:
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        stats, key_label = self.stats, f"{bucket}/{key_name}"
        pace = _Pace(self.settings.bandwidth if "X-Amz-Signature=" in raw_query else None)

        def body():
            remaining, pos = length, start
            while remaining > 0:
                with key.lock:
                    key._value_buffer.seek(pos)
                    chunk = key._value_buffer.read(min(CHUNK, remaining))
                if not chunk:
                    break
                if corrupt is not None and pos <= corrupt < pos + len(chunk):
                    i = corrupt - pos
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                pos += len(chunk)
                remaining -= len(chunk)
                stats.bytes_served[key_label] += len(chunk)
                pace.took(len(chunk))
                yield chunk

        resp = Response(body(), status=status, headers=headers, direct_passthrough=True)
        _stamp(resp, self.settings)
        return resp


class _Pace:
    """Holds one connection to ``rate`` bytes/s: sleeps once bytes run ahead of the clock."""

    def __init__(self, rate: float | None):
        self.rate, self.began, self.bytes = rate, time.monotonic(), 0

    def took(self, n: int) -> None:
        if not self.rate:
            return
        self.bytes += n
        ahead = self.bytes / self.rate - (time.monotonic() - self.began)
        if ahead > 0:
            time.sleep(ahead)


class _Throttled:
    """A request body read at most ``rate`` bytes/s: the client's sending slows down as
    the socket's buffers fill, as on a slow link."""

    STEP = 256 * 1024

    def __init__(self, stream, rate: float):
        self.stream, self.pace = stream, _Pace(rate)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(self.STEP), b""))
        data = self.stream.read(min(size, self.STEP))
        self.pace.took(len(data))
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.stream.readline(size)
        self.pace.took(len(data))
        return data

    def __iter__(self):
        return iter(lambda: self.read(self.STEP), b"")


def parse_range(header: str, size: int):
    """One byte range as S3 reads it: (start, end), None (ignore), or 'invalid' (416)."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if first:
        start = int(first)
        if start >= size:
            return "invalid"
        end = min(int(last), size - 1) if last else size - 1
        if end < start:
            return None
        return start, end
    suffix = int(last)
    if suffix == 0:
        return "invalid"
    return max(0, size - suffix), size - 1


# Where moto's stored objects spill to disk: the running sandbox's data directory.
SPOOL_DIR: str | None = None


class _TempfileInDataDir:
    """moto's view of the tempfile module, putting its spool files into SPOOL_DIR."""

    def __getattr__(self, name):
        return getattr(tempfile, name)

    @staticmethod
    def SpooledTemporaryFile(max_size=0, *args, **kwargs):  # noqa: N802
        if SPOOL_DIR and os.path.isdir(SPOOL_DIR):
            kwargs.setdefault("dir", SPOOL_DIR)
        return tempfile.SpooledTemporaryFile(max_size, *args, **kwargs)


class _OnDisk:
    """A completed multipart object's bytes, in a temporary file instead of a bytearray."""

    def __init__(self, fileobj, size: int):
        self.file, self.size = fileobj, size


_PATCHED = False


def _keep_large_objects_on_disk() -> None:
    """Teach moto to join multipart parts into a file, not into memory (see module doc)."""
    global _PATCHED
    if _PATCHED:
        return
    import codecs

    from moto.s3 import models
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML

    def complete(self, body):
        # Additional checksums (x-amz-checksum-*) are not asked for by Dataverse or by
        # us; moto would build them from the whole object in memory, so none is made.
        target = tempfile.TemporaryFile(
            dir=SPOOL_DIR if SPOOL_DIR and os.path.isdir(SPOOL_DIR) else None)
        md5s, last, count, size = bytearray(), None, 0, 0
        for pn, etag in body:
            part = self.parts.get(pn)
            if part is None or part.etag.replace('"', "") != etag.replace('"', ""):
                target.close()
                raise InvalidPart()
            if last is not None and last.contentsize < models.S3_UPLOAD_PART_MIN_SIZE:
                target.close()
                raise EntityTooSmall()
            md5s.extend(codecs.decode(part.etag.replace('"', ""), "hex"))
            with part.lock:
                part._value_buffer.seek(0)
                shutil.copyfileobj(part._value_buffer, target, CHUNK)
            size += part.contentsize
            last, count = part, count + 1
        if count == 0:
            target.close()
            raise MalformedXML
        full = hashlib.md5(bytes(md5s))
        return _OnDisk(target, size), f"{full.hexdigest()}-{count}", None

    original_setter = models.FakeKey.value.fset

    def value_setter(self, new_value):
        if isinstance(new_value, _OnDisk):
            self._value_buffer.close()
            self._value_buffer = new_value.file
            self.contentsize = new_value.size
            return
        original_setter(self, new_value)

    models.tempfile = _TempfileInDataDir()
    models.FakeMultipart.complete = complete
    models.FakeKey.value = models.FakeKey.value.setter(value_setter)
    _PATCHED = True

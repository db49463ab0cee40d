"""The upload stage against the sandbox: presigned PUTs, multipart, faults, expiry."""

import hashlib
import os
import time

import pytest
import requests

from conftest import DV
from datalad_rdr.dataverse import Dataverse, DataverseError
from datalad_rdr.http import Backoff
from datalad_rdr.sandbox.faults import Fault
from datalad_rdr.upload import TooSlowForUrlLifetime, Uploader, UploadError

MIB = 1024 * 1024
FAST = Backoff(attempts=4, first=0.05, cap=0.2)


class BytesSource:
    """A source that yields a bytes object's ranges in small chunks, and can slow down."""

    def __init__(self, data, chunk=256 * 1024, pause=0.0):
        self.data, self.size, self.chunk, self.pause = data, len(data), chunk, pause
        self.reads = 0

    def iter_range(self, start, end):
        for pos in range(start, end, self.chunk):
            self.reads += 1
            if self.pause:
                time.sleep(self.pause)
            yield self.data[pos:min(end, pos + self.chunk)]


def upload_and_register(sb, data, **kw):
    dv = DV(sb)
    pid = dv.create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    result = Uploader(client, pid, backoff=FAST, **kw).upload(BytesSource(data))
    assert result.md5 == hashlib.md5(data).hexdigest()
    files = client.add_files(pid, [{
        "storageIdentifier": result.storage_identifier, "fileName": "b.zip",
        "mimeType": "application/zip",
        "checksum": {"@type": "MD5", "@value": result.md5}}])
    assert "successMessage" in files[0], files
    fid = files[0]["fileDetails"]["dataFile"]["id"]
    got = requests.get(client.access_url(fid), headers={"X-Dataverse-key": sb.api_token})
    assert got.content == data
    return result


def test_single_put_without_tagging_on_rdr(sandbox):
    result = upload_and_register(sandbox, os.urandom(300_000))
    assert (result.parts, result.restarts) == (1, 0)


def test_single_put_sends_the_signed_tagging_header_where_required(make_sandbox):
    result = upload_and_register(make_sandbox("dataverse"), os.urandom(1000))
    assert result.parts == 1


def test_multipart_in_parts_of_the_servers_size(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    result = upload_and_register(sb, os.urandom(11 * MIB))
    assert result.parts == 3


def test_connection_reset_and_5xx_mid_bundle_are_ridden_out(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    reset = sb.gate.faults.inject(Fault("PUT", "/", reset_after=MIB))
    busy = sb.gate.faults.inject(Fault("PUT", "/", status=503, retry_after=0, count=2))
    result = upload_and_register(sb, os.urandom(11 * MIB))
    assert (reset.hits, busy.hits) == (1, 2)
    assert result.parts == 3 and result.restarts == 0


def test_expired_urls_restart_the_bundle_with_fresh_ones(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB, url_lifetime=2)
    # the second part is held until its URL has expired
    sb.gate.faults.inject(Fault("PUT", "/", count=1, delay=0))
    slow = sb.gate.faults.inject(Fault("PUT", "/", count=1, delay=2.5))
    result = upload_and_register(sb, os.urandom(11 * MIB))
    assert slow.hits == 1
    assert result.restarts == 1


def test_a_refusal_is_not_retried_and_says_why(make_sandbox):
    sb = make_sandbox("rdr")
    dv = DV(sb)
    pid = dv.create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    sb.gate.faults.inject(Fault("PUT", "/", status=400))
    with pytest.raises(UploadError, match="S3 refused the upload: HTTP 400"):
        Uploader(client, pid, backoff=FAST).upload(BytesSource(b"abc"))


def test_small_uploads_do_not_set_the_rate(sandbox):
    """A tiny bundle's latency must not make the next bundle look too slow to send."""
    dv = DV(sandbox)
    pid = dv.create_dataset()
    client = Dataverse(sandbox.dataverse_url, sandbox.api_token, backoff=FAST)
    up = Uploader(client, pid, backoff=FAST)
    up.upload(BytesSource(b"x" * 1400, pause=0.05))
    assert up.rate is None
    up.upload(BytesSource(os.urandom(17 * MIB), chunk=MIB))
    assert up.rate > 1_000_000


def test_too_slow_for_the_url_lifetime_says_what_fits(make_sandbox):
    sb = make_sandbox("rdr", url_lifetime=1)
    dv = DV(sb)
    pid = dv.create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    up = Uploader(client, pid, backoff=FAST)
    up.rate = 100_000  # bytes/s, as measured on an earlier bundle
    with pytest.raises(TooSlowForUrlLifetime) as exc:
        up.upload(BytesSource(os.urandom(500_000)))
    assert exc.value.fits == 80_000
    assert "bundles of at most" in str(exc.value)


def test_no_direct_upload_is_refused_with_the_servers_reason(make_sandbox):
    sb = make_sandbox("rdr", direct_upload=False)
    dv = DV(sb)
    pid = dv.create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    with pytest.raises(DataverseError) as exc:
        Uploader(client, pid).upload(BytesSource(b"abc"))
    assert exc.value.status == 404
    assert sb.gate.stats.bytes_received == 0


def test_the_api_token_never_reaches_s3(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    seen = []
    original = sb.gate.__call__

    def spy(environ, start_response):
        if environ["REQUEST_METHOD"] == "PUT":
            seen.append({k: v for k, v in environ.items() if k.startswith("HTTP_")})
        return original(environ, start_response)

    sb.s3_server.server.app = spy
    upload_and_register(sb, os.urandom(6 * MIB))
    assert seen
    assert not any(sb.api_token in str(headers) for headers in seen)

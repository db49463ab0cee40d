"""The upload stage against the sandbox: presigned PUTs, multipart, faults, expiry."""

import hashlib
import os
import time

import pytest
import requests

from conftest import DV
from datalad_rdr.dataverse import Dataverse, DataverseError, NewFile
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
    result = Uploader(client, pid, backoff=FAST, **kw).upload(BytesSource(data, chunk=MIB))
    assert result.md5 == hashlib.md5(data).hexdigest()
    registered = client.add_file(pid, NewFile(result.storage_identifier, "b.zip", result.md5,
                                              "application/zip"))
    assert registered.entry is not None, registered.problem
    fid = registered.entry.file_id
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


class SpyingGate:
    """Counts the PUTs the S3 gate serves at the same time (observation only)."""

    def __init__(self, sb):
        self.app, self.now, self.most = sb.gate.__call__, 0, 0
        self.lock = __import__("threading").Lock()
        sb.s3_server.server.app = self

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "PUT":
            return self.app(environ, start_response)
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return self.app(environ, start_response)
        finally:
            with self.lock:
                self.now -= 1


def test_parts_go_in_parallel_and_the_md5_is_of_the_whole(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    spy = SpyingGate(sb)
    # slow parts: they overlap only if sent at once
    sb.gate.faults.inject(Fault("PUT", "/", count=6, delay=0.3))
    result = upload_and_register(sb, os.urandom(26 * MIB))
    assert result.parts == 6
    assert spy.most == 4  # the default number of jobs


def test_one_job_sends_parts_one_at_a_time(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    spy = SpyingGate(sb)
    sb.gate.faults.inject(Fault("PUT", "/", count=3, delay=0.2))
    upload_and_register(sb, os.urandom(11 * MIB), jobs=1)
    assert spy.most == 1


def _counted_members(tmp_path, sizes, wrong=None):
    """ZIP members of random files whose opens are counted (name -> opens), one with the
    wrong checksum if ``wrong`` names it."""
    from datalad_rdr.zipstream import Checksum, Member

    opens, members = {}, []
    for i, size in enumerate(sizes):
        p = tmp_path / f"m{i}.tsv"
        p.write_bytes(os.urandom(size))
        opens[p.name] = 0

        def opener(p=p):
            opens[p.name] += 1
            return open(p, "rb")

        digest = hashlib.md5(p.read_bytes() if p.name != wrong else b"no").hexdigest()
        members.append(Member(p.name, size, opener, Checksum(hashlib.md5, digest)))
    return members, opens


def test_one_put_sends_the_checked_bytes_reading_each_member_once(make_sandbox, tmp_path):
    """A bundle that goes in one PUT is read once after its layout: the PUT's body is the
    checked stream (not a check pass and a raw pass, each opening every member)."""
    from datalad_rdr.zipstream import layout_zip

    sb = make_sandbox("rdr")
    members, opens = _counted_members(tmp_path, [3000, 50_000, 0, 700_000])
    # keep=0: members read again (kept ones are not opened after the layout at all)
    layout = layout_zip(members, mtime=0, md5=False, keep=0)
    laid_out = dict(opens)
    pid = DV(sb).create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    result = Uploader(client, pid, backoff=FAST).upload(layout)
    stream = b"".join(layout.iter_raw())
    assert result.md5 == hashlib.md5(stream).hexdigest() and result.parts == 1
    read = {name: opens[name] - laid_out[name] for name in opens}
    # each member once for the upload, then once for the iter_raw above (a check pass and
    # a raw pass would be 3); the empty one is opened by the check alone
    assert read == {"m0.tsv": 2, "m1.tsv": 2, "m2.tsv": 1, "m3.tsv": 2}, read


def _members_counting_bytes(tmp_path, sizes):
    """ZIP members of random files, with the bytes read from each counted (name -> bytes)."""
    import io

    from datalad_rdr.zipstream import Checksum, Member

    read, members = {}, []

    class Counted(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            read[os.path.basename(self.name)] += len(data)
            return data

        def readinto(self, buffer):
            n = super().readinto(buffer)
            read[os.path.basename(self.name)] += n or 0
            return n

    for i, size in enumerate(sizes):
        p = tmp_path / f"m{i}.bin"
        p.write_bytes(os.urandom(size))
        read[p.name] = 0
        members.append(Member(p.name, size, lambda p=p: Counted(p),
                              Checksum(hashlib.md5, hashlib.md5(p.read_bytes()).hexdigest())))
    return members, read


def test_parts_in_order_send_the_checked_bytes_reading_each_member_once(make_sandbox,
                                                                        tmp_path):
    """With one job every part goes out as the bytes the check read, members that straddle
    parts included: each member is read once after its layout, not by a check pass and
    again by the parts."""
    from datalad_rdr.zipstream import layout_zip

    sb = make_sandbox("rdr", part_size=5 * MIB)
    members, read = _members_counting_bytes(tmp_path, [3 * MIB, 4 * MIB, 2 * MIB, 3 * MIB])
    layout = layout_zip(members, mtime=0, md5=False)
    laid_out = dict(read)
    pid = DV(sb).create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    result = Uploader(client, pid, backoff=FAST, jobs=1).upload(layout)
    assert result.parts == 3
    assert {name: read[name] - laid_out[name] for name in read} == \
        {m.arcname: m.size for m in members}
    assert result.md5 == hashlib.md5(b"".join(layout.iter_raw())).hexdigest()


def test_uploads_that_share_few_puts_all_complete(make_sandbox):
    """Two multipart uploads through one uploader with two PUTs between them: a lead that
    finds no PUT free checks on and leaves its part to the helpers, so no part is lost and
    nothing waits for ever."""
    from concurrent.futures import ThreadPoolExecutor

    sb = make_sandbox("rdr", part_size=5 * MIB)
    sb.gate.faults.inject(Fault("PUT", "/", count=8, delay=0.2))
    pid = DV(sb).create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    uploader = Uploader(client, pid, backoff=FAST, jobs=2)
    data = [os.urandom(16 * MIB), os.urandom(13 * MIB)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda d: uploader.upload(BytesSource(d, chunk=MIB)), data))
    for d, result in zip(data, results):
        assert result.parts == (4 if len(d) > 15 * MIB else 3)
        assert result.md5 == hashlib.md5(d).hexdigest()
        registered = client.add_file(pid, NewFile(result.storage_identifier,
                                                  f"{len(d)}.zip", result.md5,
                                                  "application/zip"))
        got = requests.get(client.access_url(registered.entry.file_id),
                           headers={"X-Dataverse-key": sb.api_token})
        assert got.content == d


@pytest.mark.parametrize("part_size", [5 * MIB, None], ids=["multipart", "one-put"])
def test_a_corrupt_member_completes_nothing_and_aborts(make_sandbox, tmp_path, part_size):
    """A member that does not match its key, found by the check pass while parts are sent
    in parallel, or by the checked stream of one PUT: no part that holds it completes, the
    multipart upload is aborted, nothing is stored."""
    from datalad_rdr.zipstream import MemberError, layout_zip

    sb = make_sandbox("rdr", **({"part_size": part_size} if part_size else {}))
    members, _ = _counted_members(tmp_path, [4 * MIB] * 4, wrong="m2.tsv")
    layout = layout_zip(members, mtime=0, md5=False)
    pid = DV(sb).create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    states = []
    with pytest.raises(MemberError, match="m2.tsv"):
        Uploader(client, pid, backoff=FAST).upload(layout, on_state=states.append)
    assert states[-1] is None  # nothing left to resume
    assert ("urls" in states[0]["reply"]) == bool(part_size)  # the route it took
    bucket = sb.s3_settings.bucket
    assert sb.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert sb.s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


INTERRUPTED_UPLOAD = """
import json, sys, time
from datalad_rdr.dataverse import Dataverse
from datalad_rdr.upload import Uploader
url, token, pid, data_path, state_path = sys.argv[1:]
data = open(data_path, "rb").read()

class Slow:
    size = len(data)
    def iter_range(self, start, end):
        for pos in range(start, end, 1 << 20):
            time.sleep(0.05)
            yield data[pos:min(end, pos + (1 << 20))]

def keep(state):
    with open(state_path + ".tmp", "w") as f:
        json.dump(state, f)
    import os; os.replace(state_path + ".tmp", state_path)

Uploader(Dataverse(url, token), pid, jobs=1).upload(Slow(), on_state=keep)
"""


def run_until_killed(sb, pid, data, tmp_path, parts_before_kill):
    import json
    import signal
    import subprocess
    import sys

    data_path, state_path = tmp_path / "data", tmp_path / "state.json"
    data_path.write_bytes(data)
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_UPLOAD, sb.dataverse_url,
                             sb.api_token, pid, str(data_path), str(state_path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if state_path.exists():
                state = json.loads(state_path.read_text())
                if state and len(state["etags"]) >= parts_before_kill:
                    break
            assert proc.poll() is None, "the upload ended before it was killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    # the server may still be reading what the killed client had sent: let it finish, so
    # that bytes counted from here on are the resumed upload's alone
    stable, last, deadline = 0, -1, time.monotonic() + 10
    while stable < 5 and time.monotonic() < deadline:
        now = sb.gate.stats.bytes_received
        stable, last = (stable + 1, now) if now == last else (0, now)
        time.sleep(0.1)
    return json.loads(state_path.read_text())


def test_a_killed_multipart_upload_resumes_without_resending_its_parts(make_sandbox, tmp_path):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    pid = DV(sb).create_dataset()
    data = os.urandom(21 * MIB)
    state = run_until_killed(sb, pid, data, tmp_path, parts_before_kill=2)
    assert not state["completed"] and len(state["etags"]) >= 2
    received_before = sb.gate.stats.bytes_received

    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    result = Uploader(client, pid, backoff=FAST).upload(BytesSource(data), resume=state)
    assert result.resumed_parts == len(state["etags"])
    resent = sb.gate.stats.bytes_received - received_before
    assert resent <= len(data) - result.resumed_parts * 5 * MIB
    assert result.md5 == hashlib.md5(data).hexdigest()
    fid = client.add_file(pid, NewFile(result.storage_identifier, "b.zip", result.md5,
                                       "application/zip")).entry.file_id
    got = requests.get(client.access_url(fid), headers={"X-Dataverse-key": sb.api_token})
    assert got.content == data


def test_a_completed_upload_resumed_sends_nothing_and_still_checks_everything(
        make_sandbox, tmp_path):
    """A run killed after the upload completed but before registration: the next run
    sends no byte, yet reads every part through the check for the MD5, and a member
    changed since is still caught."""
    from datalad_rdr.zipstream import MemberError, layout_zip

    sb = make_sandbox("rdr", part_size=5 * MIB)
    pid = DV(sb).create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    members, _ = _members_counting_bytes(tmp_path, [4 * MIB, 4 * MIB, 3 * MIB])
    layout = layout_zip(members, mtime=0, md5=False)
    states = []
    first = Uploader(client, pid, backoff=FAST).upload(layout, on_state=states.append)
    assert states[-1]["completed"] and first.parts == 3
    received = sb.gate.stats.bytes_received
    again = Uploader(client, pid, backoff=FAST).upload(layout, resume=states[-1])
    assert (again.md5, again.resumed_parts) == (first.md5, 3)
    assert sb.gate.stats.bytes_received == received
    (tmp_path / "m1.bin").write_bytes(os.urandom(4 * MIB))
    with pytest.raises(MemberError, match="m1.bin"):
        Uploader(client, pid, backoff=FAST).upload(layout, resume=states[-1])


def test_a_killed_upload_whose_urls_expired_starts_again(make_sandbox, tmp_path):
    sb = make_sandbox("rdr", part_size=5 * MIB, url_lifetime=3)
    pid = DV(sb).create_dataset()
    data = os.urandom(16 * MIB)
    state = run_until_killed(sb, pid, data, tmp_path, parts_before_kill=1)
    time.sleep(max(0.0, state["issued"] + 3 - time.time()))  # the URLs are dead now

    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    result = Uploader(client, pid, backoff=FAST).upload(BytesSource(data), resume=state)
    assert result.resumed_parts == 0
    assert result.md5 == hashlib.md5(data).hexdigest()
    bucket = sb.s3_settings.bucket
    # the old upload was aborted, not left behind in the store
    assert sb.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_multipart_complete_lists_the_parts_in_ascending_order(make_sandbox):
    # Swift refuses a non-ascending part list (InvalidPartOrder) and Dataverse then aborts
    # the whole upload (fidelity row 8): parts that finished out of order are sorted
    sb = make_sandbox("rdr", part_size=5 * MIB)
    pid = DV(sb).create_dataset()
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    data = os.urandom(11 * MIB)
    ticket = client.upload_urls(pid, len(data))
    etags = {}
    for n in (3, 2, 1):  # as parallel parts may finish
        part = data[(n - 1) * 5 * MIB:n * 5 * MIB]
        etags[n] = requests.put(ticket.urls[n - 1], data=part).headers["ETag"]
    assert list(etags) == [3, 2, 1]
    client.complete_multipart(ticket.complete, etags)
    registered = client.add_file(pid, NewFile(ticket.storage_identifier, "b.zip",
                                              hashlib.md5(data).hexdigest(),
                                              "application/zip"))
    assert registered.entry is not None, registered.problem


def test_a_presigned_urls_lifetime_is_read_from_its_query():
    import datetime as dt

    from datalad_rdr.http import presigned_lifetime

    url = ("http://127.0.0.1:9/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261201T120000Z"
           "&X-Amz-Expires=3600&X-Amz-Signature=0")
    assert presigned_lifetime(url) == (dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC), 3600)
    assert presigned_lifetime("http://127.0.0.1:9/b/k?X-Amz-Expires=soon") == (None, None)


def test_progress_is_reported_in_steps_that_add_up_to_the_bundle(sandbox):
    """Chunks are 128 KiB and a progress bar's update costs ~20 us: the uploader gathers
    them into steps of `PROGRESS_STEP`, and reports the rest at the end."""
    from datalad_rdr.upload import PROGRESS_STEP

    data = os.urandom(10 * PROGRESS_STEP + 12345)
    pid = DV(sandbox).create_dataset()
    client = Dataverse(sandbox.dataverse_url, sandbox.api_token, backoff=FAST)
    steps = []
    result = Uploader(client, pid, backoff=FAST).upload(BytesSource(data, chunk=128 * 1024),
                                                        progress=steps.append)
    assert result.md5 == hashlib.md5(data).hexdigest()
    assert sum(steps) == len(data)
    assert len(steps) <= 11 + 1, steps  # not one a chunk (330 of them)

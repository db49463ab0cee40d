"""The ZIP stream stage: exact size first, readable by every unzipper, byte ranges."""

import hashlib
import io
import json
import os
import random
import struct
import subprocess
import zipfile
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from datalad_rdr.zipstream import (
    CHUNK_SIZE,
    KEEP_BYTES,
    KEEP_MEMBER_MAX,
    READ_SIZE,
    Checksum,
    Member,
    MemberError,
    choose_method,
    layout_zip,
)

COMMIT_DATE = 1700000000  # 2023-11-14 22:13:20 UTC
from tools import SEVEN_ZIP, UNZIP, needs_7zip, needs_unzip


def members_from(root: Path, files: dict[str, bytes], checksums=True) -> list[Member]:
    """Write ``files`` under ``root`` and describe them as members, as callers do."""
    members = []
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        members.append(member_for(path, name, checksums))
    return members


def member_for(path: Path, name: str, checksum=True) -> Member:
    data = path.read_bytes() if checksum else b""
    return Member(
        arcname=name,
        size=path.stat().st_size,
        open=lambda: open(path, "rb"),
        checksum=Checksum(hashlib.sha256, hashlib.sha256(data).hexdigest())
        if checksum else None,
    )


def stream(layout, start=0, end=None) -> bytes:
    chunks = list(layout.iter_range(start, end))
    assert all(type(c) is bytes for c in chunks)
    return b"".join(chunks)


def tsv(rows: int, seed=0) -> bytes:
    rng = random.Random(seed)
    lines = ["onset\tduration\ttrial_type\tresponse_time"]
    lines += [f"{i * 2.5:.1f}\t2.0\t{rng.choice(['go', 'stop'])}\t{rng.random():.4f}"
              for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def sidecar(seed=0) -> bytes:
    rng = random.Random(seed)
    return json.dumps({
        "RepetitionTime": 2.0, "TaskName": "stopsignal", "Manufacturer": "Siemens",
        "SliceTiming": [round(rng.random() * 2, 4) for _ in range(40)],
    }, indent=2).encode()


def bids_like(seed=0) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "dataset_description.json": b'{"Name": "test", "BIDSVersion": "1.9.0"}\n',
        "README": b"A dataset made for a test.\n" * 20,
        "participants.tsv": tsv(50, seed),
        "sub-01/anat/sub-01_T1w.nii.gz": rng.randbytes(3 * 2**20 + 17),
        "sub-01/anat/sub-01_T1w.json": sidecar(seed),
        "sub-01/func/sub-01_task-stop_bold.nii.gz": rng.randbytes(9 * 2**20 + 5),
        "sub-01/func/sub-01_task-stop_events.tsv": tsv(3000, seed + 1),
        "sub-01/func/sub-01_task-stop_bold.json": sidecar(seed + 1),
        "sub-02/ses-ü/naïve notes.txt": "déjà vu, 日本語\n".encode() * 50,
        "derivatives/noise.txt": rng.randbytes(5000),  # text name, incompressible
        "derivatives/empty.txt": b"",
        "derivatives/tiny.txt": b"hi",
    }


CONTENTS = {
    "no members": {},
    "empty members": {"a": b"", "b/c": b"", "b/d.json": b""},
    "small text": {"README": b"Hello\n", "sub-01/x.json": sidecar(), "p.tsv": tsv(20)},
    "mixed": bids_like(),
}


@pytest.mark.parametrize("content", CONTENTS, ids=list(CONTENTS))
def test_size_is_known_before_streaming_and_zipfile_reads_back(tmp_path, content):
    files = CONTENTS[content]
    layout = layout_zip(members_from(tmp_path, files), mtime=COMMIT_DATE)
    data = stream(layout)

    assert len(data) == layout.size
    assert layout.md5 == hashlib.md5(data).hexdigest()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        assert z.namelist() == sorted(files)
        for name, content_bytes in files.items():
            assert z.read(name) == content_bytes
        for info in z.infolist():
            assert info.flag_bits & 0x800  # UTF-8 names
            assert info.external_attr >> 16 == 0o100644


def test_policy_stores_compressed_formats_and_deflates_text(tmp_path):
    layout = layout_zip(members_from(tmp_path, bids_like()), mtime=COMMIT_DATE)
    method = {e.arcname: e.method for e in layout.entries}

    assert method["sub-01/anat/sub-01_T1w.nii.gz"] == zipfile.ZIP_STORED
    assert method["sub-01/func/sub-01_task-stop_events.tsv"] == zipfile.ZIP_DEFLATED
    assert method["sub-01/anat/sub-01_T1w.json"] == zipfile.ZIP_DEFLATED
    # DEFLATE was tried and did not help, or the file is too small to try.
    assert method["derivatives/noise.txt"] == zipfile.ZIP_STORED
    assert method["derivatives/tiny.txt"] == zipfile.ZIP_STORED
    assert method["derivatives/empty.txt"] == zipfile.ZIP_STORED


@pytest.mark.parametrize("name, size, expected", [
    ("sub-01/anat/sub-01_T1w.nii.gz", 10**9, zipfile.ZIP_STORED),
    ("photo.JPG", 10**6, zipfile.ZIP_STORED),
    ("cells.rtdc", 10**6, zipfile.ZIP_STORED),
    ("data.h5", 10**6, zipfile.ZIP_STORED),
    ("events.tsv", 10**5, zipfile.ZIP_DEFLATED),
    ("sidecar.json", 900, zipfile.ZIP_DEFLATED),
    ("scan.tif", 10**6, zipfile.ZIP_DEFLATED),   # TIFF is often uncompressed
    ("huge.tsv", 2 * 10**9, zipfile.ZIP_STORED),  # compressing it twice costs too much
    ("tiny.txt", 10, zipfile.ZIP_STORED),
    ("Makefile", 5000, zipfile.ZIP_DEFLATED),
])
def test_choose_method(name, size, expected):
    assert choose_method(name, size) == expected


@needs_7zip
@needs_unzip
def test_7zip_and_unzip_test_and_extract_identically(tmp_path):
    files = bids_like()
    layout = layout_zip(members_from(tmp_path / "ds", files), mtime=COMMIT_DATE)
    bundle = tmp_path / "bundle.zip"
    with open(bundle, "wb") as f:
        for chunk in layout.iter_range():
            f.write(chunk)
    assert bundle.stat().st_size == layout.size

    tested = subprocess.run([SEVEN_ZIP, "t", bundle], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Everything is Ok" in tested.stdout
    assert "Warning" not in tested.stdout + tested.stderr
    subprocess.run([SEVEN_ZIP, "x", f"-o{tmp_path / 'by7z'}", bundle],
                   check=True, capture_output=True)

    tested = subprocess.run([UNZIP, "-t", bundle], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout
    subprocess.run([UNZIP, "-q", bundle, "-d", tmp_path / "byunzip"], check=True)

    for name, content in files.items():
        assert (tmp_path / "by7z" / name).read_bytes() == content
        assert (tmp_path / "byunzip" / name).read_bytes() == content


def test_70000_members_use_zip64_end_records(tmp_path):
    # 700 files, each listed 100 times under other names: 70,000 members, quickly.
    files = {f"f{i:03d}.txt": b"%d" % i for i in range(700)}
    sources = members_from(tmp_path / "src", files, checksums=False)
    members = [Member(f"sub-{k:03d}/{m.arcname}", m.size, m.open)
               for k in range(100) for m in sources]
    layout = layout_zip(members, mtime=COMMIT_DATE)
    bundle = tmp_path / "bundle.zip"
    with open(bundle, "wb") as f:
        for chunk in layout.iter_range():
            f.write(chunk)

    assert bundle.stat().st_size == layout.size
    tail = bundle.read_bytes()[-98:]
    assert tail[:4] == b"PK\x06\x06"  # zip64 end of central directory record
    with zipfile.ZipFile(bundle) as z:
        assert len(z.infolist()) == 70_000
        assert z.testzip() is None
        assert z.read("sub-099/f699.txt") == b"699"
        assert z.read("sub-000/f000.txt") == b"0"
    if SEVEN_ZIP:
        tested = subprocess.run([SEVEN_ZIP, "t", bundle],
                                capture_output=True, text=True)
        assert tested.returncode == 0 and "Files: 70000" in tested.stdout, tested.stdout
    if UNZIP:
        tested = subprocess.run([UNZIP, "-t", bundle], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout[-2000:] + tested.stderr
        assert tested.stdout.count(" OK\n") == 70_000


def test_same_content_gives_byte_identical_zips(tmp_path):
    files = bids_like()
    first = members_from(tmp_path / "one", files)
    # Same content, written in another order at another time, listed in another order.
    second = members_from(tmp_path / "two", dict(reversed(files.items())))
    os.utime(tmp_path / "two" / "README", (0, 0))
    a = layout_zip(first, mtime=COMMIT_DATE)
    b = layout_zip(reversed(second), mtime=COMMIT_DATE)
    later = layout_zip(first, mtime=COMMIT_DATE + 3600)

    assert hashlib.md5(stream(a)).hexdigest() == hashlib.md5(stream(b)).hexdigest()
    assert a.md5 == b.md5
    assert a.md5 != hashlib.md5(stream(later)).hexdigest()


def test_mtime_is_the_commit_date_in_utc(tmp_path):
    members = members_from(tmp_path, {"a.txt": b"x"})
    plus_one = timezone(timedelta(hours=1))
    as_datetime = datetime(2023, 11, 14, 23, 13, 21, tzinfo=plus_one)
    one = stream(layout_zip(members, mtime=COMMIT_DATE + 1))
    two = stream(layout_zip(members, mtime=as_datetime))

    assert one == two
    info = zipfile.ZipFile(io.BytesIO(one)).getinfo("a.txt")
    assert info.date_time == (2023, 11, 14, 22, 13, 20)  # DOS time: 2-second steps
    old = stream(layout_zip(members, mtime=datetime(1970, 1, 1, tzinfo=UTC)))
    assert zipfile.ZipFile(io.BytesIO(old)).getinfo("a.txt").date_time[0] == 1980


def test_entry_offsets_locate_member_bytes_in_the_zip(tmp_path):
    files = bids_like()
    layout = layout_zip(members_from(tmp_path, files), mtime=COMMIT_DATE)
    data = stream(layout)

    for e in layout.entries:
        header = data[e.header_offset:e.data_offset]
        assert header[:4] == b"PK\x03\x04"
        crc, = struct.unpack("<I", header[14:18])
        assert crc == e.crc32 == zlib.crc32(files[e.arcname])
        assert header[30:30 + len(e.arcname.encode())] == e.arcname.encode()
        raw = data[e.data_offset:e.data_end]
        if e.method == zipfile.ZIP_STORED:
            assert raw == files[e.arcname]
        else:
            inflate = zlib.decompressobj(-15)
            assert inflate.decompress(raw) + inflate.flush() == files[e.arcname]
            assert inflate.eof and not inflate.unused_data


def boundaries(layout) -> list[int]:
    """Offsets where a record or member ends and the next begins, and neighbours."""
    points = {0, layout.size, layout.central_directory_offset}
    for e in layout.entries:
        for p in (e.header_offset, e.data_offset, e.data_end,
                  e.data_offset + CHUNK_SIZE, e.data_offset + READ_SIZE):
            points.update({p - 1, p, p + 1})
    return sorted(p for p in points if 0 <= p <= layout.size)


# Both routes of a member's bytes: kept from the layout (small ones, by default), read again.
ROUTES = pytest.mark.parametrize("keep", [KEEP_BYTES, 0], ids=["kept", "read-again"])


@ROUTES
def test_any_byte_range_equals_that_slice_of_the_stream(tmp_path, keep):
    members = members_from(tmp_path, bids_like())
    whole = stream(layout_zip(members, mtime=COMMIT_DATE))
    rng = random.Random(42)
    points = boundaries(layout_zip(members, mtime=COMMIT_DATE))
    ranges = [sorted(rng.sample(range(len(whole) + 1), 2)) for _ in range(25)]
    ranges += [sorted(rng.sample(points, 2)) for _ in range(25)]
    ranges += [(p, min(p + rng.randrange(1, 100), len(whole))) for p in points]

    for start, end in ranges:
        # A fresh layout: no earlier range ended at ``start``.
        layout = layout_zip(members, mtime=COMMIT_DATE, keep=keep)
        assert stream(layout, start, end) == whole[start:end], (start, end)
    with pytest.raises(ValueError):
        layout.iter_range(10, len(whole) + 1)


@ROUTES
def test_raw_ranges_in_threads_equal_the_checked_stream(tmp_path, keep):
    from concurrent.futures import ThreadPoolExecutor

    members = members_from(tmp_path, bids_like())
    layout = layout_zip(members, mtime=COMMIT_DATE, keep=keep)
    whole = stream(layout)
    rng = random.Random(7)
    points = boundaries(layout)
    ranges = [sorted(rng.sample(range(len(whole) + 1), 2)) for _ in range(25)]
    ranges += [sorted(rng.sample(points, 2)) for _ in range(25)]
    ranges += [(p, min(p + rng.randrange(1, 100), len(whole))) for p in points]

    def raw(r):
        return b"".join(layout.iter_raw(*r))

    with ThreadPoolExecutor(4) as pool:
        for (start, end), got in zip(ranges, pool.map(raw, ranges)):
            assert got == whole[start:end], (start, end)
    with pytest.raises(ValueError):
        layout.iter_raw(0, len(whole) + 1)


@ROUTES
def test_parts_in_order_and_retried_give_the_stream_and_its_md5(tmp_path, keep):
    members = members_from(tmp_path, bids_like())
    whole = stream(layout_zip(members, mtime=COMMIT_DATE))
    layout = layout_zip(members, mtime=COMMIT_DATE, keep=keep)
    part_size = 2**20 + 7  # parts end inside STORED and DEFLATE members
    parts = [(s, min(s + part_size, layout.size))
             for s in range(0, layout.size, part_size)]

    sent = []
    for number, (start, end) in enumerate(parts):
        if number % 3 == 1:
            # The first attempt fails after one chunk: the part is generated again.
            next(layout.iter_range(start, end))
        if number == 4:
            # Part 3 is found missing after part 4 began: both are sent again.
            sent[3] = stream(layout, *parts[3])
        sent.append(stream(layout, start, end))
    assert len(parts) > 5

    assert b"".join(sent) == whole
    assert layout.md5 == hashlib.md5(whole).hexdigest()


def test_md5_is_unknown_when_ranges_skip_bytes(tmp_path):
    layout = layout_zip(members_from(tmp_path, bids_like()), mtime=COMMIT_DATE)
    stream(layout, 0, 1000)
    stream(layout, 2000, layout.size)
    assert layout.md5 is None


def test_md5_can_be_left_to_the_consumer(tmp_path):
    members = members_from(tmp_path, bids_like())
    layout = layout_zip(members, mtime=COMMIT_DATE, md5=False)
    assert stream(layout) == stream(layout_zip(members, mtime=COMMIT_DATE))
    assert layout.md5 is None


def bad_checksum(member: Member) -> Member:
    return Member(member.arcname, member.size, member.open,
                  Checksum(hashlib.sha256, "0" * 64))


@pytest.mark.parametrize("name", [
    "sub-01/func/sub-01_task-stop_bold.nii.gz",  # STORED, 9 MiB
    "sub-01/func/sub-01_task-stop_events.tsv",  # DEFLATE
    "derivatives/tiny.txt",  # STORED, inside a chunk of small pieces
])
def test_failed_checksum_stops_the_stream_naming_the_member(tmp_path, name):
    members = [bad_checksum(m) if m.arcname == name else m
               for m in members_from(tmp_path, bids_like())]
    layout = layout_zip(members, mtime=COMMIT_DATE, keep=0)
    entry = next(e for e in layout.entries if e.arcname == name)

    produced = 0
    with pytest.raises(MemberError, match="sha256") as failure:
        for chunk in layout.iter_range():
            produced += len(chunk)
    assert failure.value.arcname == name
    assert repr(name) in str(failure.value)
    assert produced < entry.data_end  # its last byte never went out
    assert layout.md5 is None


@pytest.mark.parametrize("name", [
    "sub-01/func/sub-01_task-stop_events.tsv",  # DEFLATE
    "derivatives/tiny.txt",  # STORED
])
def test_failed_checksum_of_a_kept_member_stops_the_layout(tmp_path, name):
    """A kept member is checked while laid out (its bytes are not read again): the bundle
    fails before any byte of it is produced."""
    members = [bad_checksum(m) if m.arcname == name else m
               for m in members_from(tmp_path, bids_like())]
    with pytest.raises(MemberError, match="sha256") as failure:
        layout_zip(members, mtime=COMMIT_DATE)
    assert failure.value.arcname == name


def test_failed_checksum_is_caught_when_member_spans_parts(tmp_path):
    name = "sub-01/func/sub-01_task-stop_bold.nii.gz"
    members = [bad_checksum(m) if m.arcname == name else m
               for m in members_from(tmp_path, bids_like())]
    layout = layout_zip(members, mtime=COMMIT_DATE)
    entry = next(e for e in layout.entries if e.arcname == name)
    middle = entry.data_offset + entry.size // 2

    stream(layout, 0, middle)  # the first part holds only the beginning: no verdict yet
    with pytest.raises(MemberError, match=name):
        stream(layout, middle, layout.size)
    # Without the first part's carry, the member's first half is read again.
    with pytest.raises(MemberError, match=name):
        stream(layout_zip(members, mtime=COMMIT_DATE), middle, layout.size)


CHANGES = {
    "grow": lambda data: data + b"more",
    "shrink": lambda data: data[:-1],
    "same size": lambda data: data[:-1] + bytes([data[-1] ^ 1]),
}


@pytest.mark.parametrize("name, change", [
    *[("sub-01/anat/sub-01_T1w.nii.gz", change) for change in CHANGES],  # STORED
    *[("sub-01/func/sub-01_task-stop_events.tsv", change) for change in CHANGES],
    ("derivatives/empty.txt", "grow"),
])
def test_file_changed_after_layout_stops_the_stream(tmp_path, name, change):
    files = bids_like()
    members = members_from(tmp_path, files, checksums=False)
    layout = layout_zip(members, mtime=COMMIT_DATE, keep=0)
    (tmp_path / name).write_bytes(CHANGES[change](files[name]))

    with pytest.raises(MemberError) as failure:
        stream(layout)
    assert failure.value.arcname == name
    assert repr(name) in str(failure.value)


@pytest.mark.parametrize("change", CHANGES)
def test_a_kept_member_is_not_read_again_and_sends_the_bytes_checked(tmp_path, change):
    """A small member's bytes are read, checked and compressed once, while laid out: the
    stream and its parts send those, so a file changed after the layout changes nothing."""
    files = bids_like()
    opened = []

    def counted(m: Member) -> Member:
        def open_():
            opened.append(m.arcname)
            return m.open()
        return Member(m.arcname, m.size, open_, m.checksum)

    members = [counted(m) for m in members_from(tmp_path, files)]
    layout = layout_zip(members, mtime=COMMIT_DATE)
    name = "sub-01/func/sub-01_task-stop_events.tsv"
    (tmp_path / name).write_bytes(CHANGES[change](files[name]))
    opened.clear()

    data = stream(layout)
    assert b"".join(layout.iter_raw()) == data
    # read again: the two members over KEEP_MEMBER_MAX, and the empty one (checked at open)
    assert sorted(set(opened)) == sorted(n for n, d in files.items()
                                         if not 0 < len(d) <= KEEP_MEMBER_MAX)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        assert {n: z.read(n) for n in z.namelist()} == files


def test_kept_bytes_stay_within_the_budget_and_the_rest_is_read_again(tmp_path):
    files = {f"f{i:03d}.tsv": tsv(40, seed=i) for i in range(60)}
    members = members_from(tmp_path, files)
    whole = stream(layout_zip(members, mtime=COMMIT_DATE, keep=0))
    compressed = [e.compressed_size for e in layout_zip(members, mtime=COMMIT_DATE).entries]
    sizes = [m.size for m in sorted(members, key=lambda m: m.arcname)]
    # a member is kept if its size fits what is left: the first 20 do, the next does not
    budget = sum(compressed[:19]) + sizes[19]
    assert sizes[20] > budget - sum(compressed[:20])
    layout = layout_zip(members, mtime=COMMIT_DATE, keep=budget)
    kept = layout._kept
    assert len(kept.data) <= budget
    assert [s >= 0 for s in kept.starts[:21]] == [True] * 20 + [False]
    assert stream(layout) == whole and b"".join(layout.iter_raw()) == whole
    # the ZIP's bytes do not depend on the budget
    assert stream(layout_zip(members, mtime=COMMIT_DATE, keep=10**9)) == whole


def test_a_kept_member_with_a_wrong_known_crc32_stops_the_layout(tmp_path):
    members = members_from(tmp_path, {"a.json": sidecar(), "b.tsv": tsv(20)})
    crcs = {e.arcname: e.crc32 for e in layout_zip(members, mtime=COMMIT_DATE).entries}
    wrong = [Member(m.arcname, m.size, m.open, m.checksum, crcs[m.arcname] ^ 1)
             for m in members]
    with pytest.raises(MemberError, match="'a.json'.*CRC32"):
        layout_zip(wrong, mtime=COMMIT_DATE)


@pytest.mark.parametrize("size", [0, 1, 299, 300, 65_536, 700_000, READ_SIZE - 1])
def test_deflate_in_one_call_gives_the_bytes_of_a_compressor_fed_in_chunks(size):
    """The layout and the stream compress a member that fits one read in one call, an
    earlier layout (or another process) may have fed a compressor in chunks: same bytes."""
    from datalad_rdr.zipmembers import JOIN_SIZE, deflate, deflater

    rng = random.Random(size)
    for data in (tsv(size // 20 + 1, seed=size)[:size], rng.randbytes(size), bytes(size)):
        for chunk in (READ_SIZE, JOIN_SIZE, 4096):
            d = deflater()
            chunked = b"".join(d.compress(data[i:i + chunk])
                               for i in range(0, len(data), chunk)) + d.flush()
            assert deflate(data) == chunked, (size, chunk)


def test_empty_member_is_checked_whichever_part_holds_it(tmp_path):
    layout = layout_zip(members_from(tmp_path, bids_like(), checksums=False),
                        mtime=COMMIT_DATE)
    entry = next(e for e in layout.entries if e.arcname == "derivatives/empty.txt")
    (tmp_path / "derivatives/empty.txt").write_bytes(b"appeared")

    for split in (entry.header_offset, entry.data_offset - 1, entry.data_offset):
        with pytest.raises(MemberError, match="'derivatives/empty.txt'.*larger"):
            stream(layout, 0, split)
            stream(layout, split, layout.size)


def test_declared_size_is_checked_while_laying_out(tmp_path):
    (tmp_path / "a.tsv").write_bytes(tsv(100))
    for size in (10, 10**6):
        wrong = Member("a.tsv", size, lambda: open(tmp_path / "a.tsv", "rb"))
        with pytest.raises(MemberError, match="'a.tsv'"):
            layout_zip([wrong], mtime=COMMIT_DATE)


def test_known_crc32_spares_a_read_and_is_still_checked(tmp_path):
    members = members_from(tmp_path, bids_like())
    layout = layout_zip(members, mtime=COMMIT_DATE)
    crcs = {e.arcname: e.crc32 for e in layout.entries}
    opened = []

    def counted(m: Member, crc: int) -> Member:
        def open_():
            opened.append(m.arcname)
            return m.open()
        return Member(m.arcname, m.size, open_, m.checksum, crc)

    name = "sub-01/func/sub-01_task-stop_bold.nii.gz"
    known = [counted(m, crcs[m.arcname]) for m in members]
    again = layout_zip(known, mtime=COMMIT_DATE)
    assert name not in opened
    assert stream(again) == stream(layout)

    wrong = [counted(m, crcs[m.arcname] ^ (m.arcname == name)) for m in members]
    with pytest.raises(MemberError, match=f"{name}.*CRC32"):
        stream(layout_zip(wrong, mtime=COMMIT_DATE))


def test_a_large_members_reads_are_chunks_that_stay_in_the_cpus_cache(tmp_path):
    """Stored members, and compressed ones too large for one read, are read in reads of
    `CHUNK_SIZE` by the layout, the checked stream and raw ranges: reads of 4 MiB cost
    the kernel four times the copy (benchmarks/README.md, seventh pass)."""
    reads: list[int] = []

    class Counted(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            reads.append(len(data))
            return data

        def readinto(self, buffer):
            n = super().readinto(buffer)
            reads.append(n or 0)
            return n

    data = {"a.nii.gz": os.urandom(3 * 2**20 + 5),  # stored, under READ_SIZE
            "b.nii.gz": os.urandom(READ_SIZE + 2**20),  # stored, over it
            "c.tsv": b"onset\tduration\n" * (READ_SIZE // 8)}  # compressed, over it
    members = []
    for name, content in data.items():
        (tmp_path / name).write_bytes(content)
        members.append(Member(name, len(content), lambda p=tmp_path / name: Counted(p),
                              Checksum(hashlib.md5, hashlib.md5(content).hexdigest())))
    layout = layout_zip(members, mtime=COMMIT_DATE, keep=0)
    assert [e.method for e in layout.entries] == [zipfile.ZIP_STORED] * 2 + [
        zipfile.ZIP_DEFLATED]
    assert 0 < max(reads) <= CHUNK_SIZE
    for produce in (layout.iter_range, layout.iter_raw):
        reads.clear()
        with zipfile.ZipFile(io.BytesIO(b"".join(produce()))) as z:
            assert {n: z.read(n) for n in z.namelist()} == data
        assert 0 < max(reads) <= CHUNK_SIZE, produce


@pytest.mark.parametrize("name, problem", [
    ("/etc/passwd", "absolute"),
    ("sub-01/../../etc/passwd", "'..'"),
    ("..", "'..'"),
    ("sub-01\\anat\\T1w.nii.gz", "backslash"),
    ("sub-01//T1w.nii.gz", "empty component"),
    ("sub-01/", "empty component"),
    ("./README", "'.'"),
    ("", "non-empty"),
    ("bad\udcffname", "UTF-8"),
])
def test_unsafe_names_are_refused(tmp_path, name, problem):
    (tmp_path / "f").write_bytes(b"x")
    member = Member(name, 1, lambda: open(tmp_path / "f", "rb"))
    with pytest.raises(ValueError, match=problem) as failure:
        layout_zip([member], mtime=COMMIT_DATE)
    assert len(str(failure.value).splitlines()) == 1


def test_duplicate_names_are_refused(tmp_path):
    members = members_from(tmp_path, {"a.txt": b"1", "b.txt": b"2"})
    with pytest.raises(ValueError, match="duplicate bundle member name 'a.txt'"):
        layout_zip(members + members[:1], mtime=COMMIT_DATE)


class SparseSink:
    """Write a stream to a file, seeking over runs of zeros so nothing hits the disk."""

    def __init__(self, path):
        self.file = open(path, "wb")
        self.size = 0
        self.zeros = {}
        self.rss_before = self.peak_rss = rss()

    def write(self, chunk):
        zeros = self.zeros.setdefault(len(chunk), bytes(len(chunk)))
        if chunk == zeros:
            self.file.seek(len(chunk), os.SEEK_CUR)
        else:
            self.file.write(chunk)
        self.size += len(chunk)
        self.peak_rss = max(self.peak_rss, rss())

    def close(self):
        self.file.truncate()
        self.file.close()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_member_over_4gib_and_offsets_over_4gib_use_zip64(tmp_path):
    big_size = 2**32 + 2**20
    big = sparse_file(tmp_path / "bold.nii.gz", big_size)
    files = {"sub-01/anat/T1w.json": sidecar(), "sub-01/func/zz_events.tsv": tsv(500)}
    members = [
        Member("sub-01/func/bold.nii.gz", big_size, lambda: open(big, "rb")),
        *members_from(tmp_path / "ds", files),
    ]
    layout = layout_zip(members, mtime=COMMIT_DATE)
    assert layout.entries[1].arcname == "sub-01/func/bold.nii.gz"
    after = layout.entries[2]
    assert after.header_offset > 2**32

    sink = SparseSink(tmp_path / "bundle.zip")
    for chunk in layout.iter_range():
        sink.write(chunk)
    sink.close()
    assert sink.size == layout.size == (tmp_path / "bundle.zip").stat().st_size
    assert layout.md5 is not None
    # Memory stayed bounded while a 4 GiB member went through.
    assert sink.peak_rss - sink.rss_before < 32 * 2**20

    # The readers check the zip64 records and the members past 4 GiB; reading the
    # 4 GiB of zeros back too would double the test's time (the slow test does).
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle) as z:
        info = z.getinfo("sub-01/func/bold.nii.gz")
        assert info.file_size == info.compress_size == big_size
        assert info.CRC == layout.entries[1].crc32 == zero_crc32(big_size)
        assert z.getinfo(after.arcname).header_offset == after.header_offset
        for name, content in files.items():
            assert z.read(name) == content
    if SEVEN_ZIP:
        listed = subprocess.run([SEVEN_ZIP, "l", "-slt", bundle],
                                capture_output=True, text=True, check=True).stdout
        assert f"Size = {big_size}\n" in listed
        tested = subprocess.run([SEVEN_ZIP, "t", bundle, *files],
                                capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout
        assert "Everything is Ok" in tested.stdout
    if UNZIP:
        listed = subprocess.run([UNZIP, "-l", bundle],
                                capture_output=True, text=True, check=True).stdout
        assert f"{big_size}  " in listed
        for name, content in files.items():
            got = subprocess.run([UNZIP, "-p", bundle, name],
                                 capture_output=True, check=True)
            assert got.stdout == content


def zero_crc32(size: int) -> int:
    crc, zeros = 0, bytes(READ_SIZE)
    for _ in range(size // READ_SIZE):
        crc = zlib.crc32(zeros, crc)
    return zlib.crc32(bytes(size % READ_SIZE), crc)


@pytest.mark.slow
def test_deflated_member_over_4gib_uses_zip64(tmp_path):
    big_size = 2**32 + 2**20
    raw = sparse_file(tmp_path / "recording.raw", big_size)
    members = [
        Member("rec/recording.raw", big_size, lambda: open(raw, "rb")),
        *members_from(tmp_path / "ds", {"rec/zz.json": sidecar()}),
    ]

    def deflate_raw(name, size):
        if name.endswith(".raw"):
            return zipfile.ZIP_DEFLATED
        return choose_method(name, size)

    layout = layout_zip(members, mtime=COMMIT_DATE, method=deflate_raw)
    entry = layout.entries[0]
    assert entry.method == zipfile.ZIP_DEFLATED and entry.compressed_size < 2**32
    bundle = tmp_path / "bundle.zip"
    with open(bundle, "wb") as f:
        for chunk in layout.iter_range():
            f.write(chunk)
    assert bundle.stat().st_size == layout.size

    with zipfile.ZipFile(bundle) as z:
        assert z.getinfo("rec/recording.raw").file_size == big_size
        assert z.testzip() is None
    if SEVEN_ZIP:
        tested = subprocess.run([SEVEN_ZIP, "t", bundle],
                                capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout
        assert "Everything is Ok" in tested.stdout
    if UNZIP:
        tested = subprocess.run([UNZIP, "-t", bundle], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout + tested.stderr


# -- The bytes are pinned: the same members and mtime give the ZIP of earlier exports -------

def in_memory(name: str, data: bytes, crc32=None) -> Member:
    return Member(name, len(data), lambda: io.BytesIO(data),
                  Checksum(hashlib.sha256, hashlib.sha256(data).hexdigest()), crc32)


def test_bundle_bytes_are_those_of_earlier_exports():
    """MD5s computed with the writer before the ZIP records moved to zipformat: a change of
    any header byte would make re-exports differ from what is on the server."""
    files = {
        "README": b"A dataset made for a test.\n" * 20,
        "sub-01/func/sub-01_task-rest_events.tsv": b"onset\tduration\n" + b"".join(
            b"%d.5\t2.0\n" % i for i in range(300)),
        "sub-01/anat/T1w.nii.gz": bytes(range(256)) * 8,
        "sub-01/empty.txt": b"",
        "tiny.json": b'{"a": 1}\n',
        "caf\u00e9/na\u00efve \u00fc.txt": "caf\u00e9 ".encode() * 50,
    }
    for keep in (KEEP_BYTES, 0, 600):  # kept, read again, and some of each
        layout = layout_zip([in_memory(n, d) for n, d in files.items()], mtime=COMMIT_DATE,
                            keep=keep)
        data = stream(layout)
        assert (layout.size, layout.md5) == (3390, "ff974aec4cb1db2de299eac5edf65687")
        assert hashlib.md5(data).hexdigest() == layout.md5
        assert b"".join(layout.iter_raw()) == data
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            assert {i.filename: z.read(i) for i in z.infolist()} == files


def test_zip64_records_are_those_of_earlier_exports():
    """The zip64 extras (a member of 4 GiB, offsets past it) and end records, pinned the
    same way; the 4 GiB member is never read (its CRC is given, its data not produced)."""
    members = [Member("a/big.nii.gz", 2**32 + 5, lambda: None, None, 0x1234ABCD),
               in_memory("a/before.tsv", b"x\ty\n" * 40),
               in_memory("b/after.json", b'{"b": 2}\n' * 9)]
    layout = layout_zip(members, mtime=COMMIT_DATE)
    big = layout.entries[1]
    assert big.arcname == "a/big.nii.gz"
    around = b"".join([*layout.iter_raw(0, big.data_offset),
                       *layout.iter_raw(big.data_end, layout.size)])
    assert layout.size == 4294967774
    assert hashlib.md5(around).hexdigest() == "9bcb81001997b64c8d7beff722f3398f"

    many = layout_zip([Member(f"f{i:05d}", 0, lambda: None) for i in range(65536)],
                      mtime=COMMIT_DATE)
    data = b"".join(many.iter_raw())
    assert (many.size, hashlib.md5(data).hexdigest()) == (
        5767266, "cb3ed4567130d80ba3131767e88e02e4")


def test_member_and_end_overheads_bound_the_zip_exactly():
    """The plan and the remote's STORE count a member as its data, its name twice and
    zipformat.MEMBER_OVERHEAD, and a ZIP's end as END_OVERHEAD: a member with every zip64
    field (4 GiB, past 4 GiB) costs exactly that, so the bound is neither short nor loose."""
    from datalad_rdr.zipformat import END_OVERHEAD, MEMBER_OVERHEAD

    def cost(m):
        return m.size + MEMBER_OVERHEAD + 2 * len(m.arcname.encode())

    big = [Member(f"sub-0{i}/bold.nii.gz", 2**32 + i, lambda: None, None, i)
           for i in (1, 2)]
    layout = layout_zip(big, mtime=COMMIT_DATE)
    assert layout.size == sum(map(cost, big)) + END_OVERHEAD - 8  # first at offset 0
    small = [in_memory("a.json", b"{}"), in_memory("b/c.tsv", b"x\ty\n" * 100)]
    layout = layout_zip(small, mtime=COMMIT_DATE)
    assert layout.size < sum(map(cost, small)) + END_OVERHEAD


def test_remote_reader_checks_the_headers_the_writer_makes():
    """One ZIP format both ways: the remote's reader accepts each local header exactly as
    zipformat writes it for the record of that member, and says what is wrong otherwise."""
    from datalad_rdr.remote import locations
    from datalad_rdr.remote.reader import Corrupt, _check_header

    files = {"a.json": b'{"a": 1}\n' * 20, "b/c.nii.gz": bytes(range(256)) * 4,
             "caf\u00e9.tsv": b"x\ty\n" * 50}
    layout = layout_zip([in_memory(n, d) for n, d in files.items()], mtime=COMMIT_DATE)
    data = stream(layout)
    for e in layout.entries:
        loc = locations.from_entry("https://rdr.example", "doi:10.5072/X", 1, "b.zip",
                                   layout.size, e)
        name = e.arcname.encode()
        _check_header(loc, data[e.header_offset:e.data_offset], name)
        with pytest.raises(Corrupt, match="cut short"):
            _check_header(loc, data[e.header_offset:e.header_offset + 29], name)
        with pytest.raises(Corrupt, match="no ZIP local header at offset"):
            _check_header(loc, data[e.header_offset + 1:e.data_offset + 1], name)
        with pytest.raises(Corrupt, match="names another member"):
            _check_header(loc, data[e.header_offset:e.data_offset], name + b"x")
        moved = locations.Location(**{**loc.__dict__, "data_offset": loc.data_offset + 1})
        with pytest.raises(Corrupt, match="data offset differs"):
            _check_header(moved, data[e.header_offset:e.data_offset], name)
        other = "deflated" if loc.method == "stored" else "stored"
        with pytest.raises(Corrupt, match="compression method"):
            _check_header(locations.Location(**{**loc.__dict__, "method": other}),
                          data[e.header_offset:e.data_offset], name)
    assert {e.method for e in layout.entries} == {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}


@pytest.mark.parametrize("name", [
    "a/b.nii.gz", "README", "sub-01/.hidden", "x/y.", "dots.in.dir/file", "f.TSV", ".a.b",
    "a/b/c.tar.gz", "caf\u00e9/na\u00efve.json",
])
def test_the_policys_suffix_is_pathlibs(name):
    from pathlib import PurePosixPath

    from datalad_rdr.zipstream import _suffix

    assert _suffix(name) == PurePosixPath(name).suffix


def test_layouts_in_threads_take_turns_at_small_members_but_not_at_large_ones(tmp_path):
    """``turns``: one thread at a time lays out small members (each open here gives the
    interpreter away, as a file's read does); a large member is laid out meanwhile."""
    import threading
    import time

    from datalad_rdr.zipstream import TURN_MEMBER_MAX

    inside, most, lock = [0], [0], threading.Lock()
    small_started, large_seen_small = threading.Event(), threading.Event()
    waited = []

    def opener(data, large=False, wait_for_large=False):
        def open_():
            if large:  # laid out while the other layout holds the turn
                assert small_started.wait(10)
                large_seen_small.set()
                return io.BytesIO(data)
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            small_started.set()
            if wait_for_large:  # the turn is held here: the large member goes on
                waited.append(large_seen_small.wait(10))
            time.sleep(0.002)
            with lock:
                inside[0] -= 1
            return io.BytesIO(data)
        return open_

    small = [Member(f"s{i:02d}.txt", 4, opener(b"abcd", wait_for_large=i == 5))
             for i in range(20)]
    big = b"x" * (TURN_MEMBER_MAX + 1)
    other = [Member("a-large.bin", len(big), opener(big, large=True))] + [
        Member(f"t{i:02d}.txt", 4, opener(b"efgh")) for i in range(20)]
    turns = threading.Lock()
    layouts = {}

    def lay(name, members):
        layouts[name] = layout_zip(members, mtime=COMMIT_DATE, turns=turns)

    first = threading.Thread(target=lay, args=("small", small))
    first.start()
    assert small_started.wait(10)
    second = threading.Thread(target=lay, args=("other", other))
    second.start()
    first.join()
    second.join()
    assert waited == [True]  # the large member went while the first layout held the turn
    assert most[0] == 1
    assert not turns.locked()
    alone = layout_zip([Member(m.arcname, m.size, lambda: io.BytesIO(b"abcd"))
                        for m in small], mtime=COMMIT_DATE)
    assert stream(layouts["small"]) == stream(alone)

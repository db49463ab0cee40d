"""Archives uploaded by hand, read by byte ranges: ZIPs of 7-Zip, Info-ZIP and zipfile,
split volumes, .7z; every member's bytes checked, every request counted."""

import hashlib
import io
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import zipfile
from pathlib import Path

import py7zr
import pytest
import requests

from conftest import DV
from datalad_rdr import zipformat as zf
from datalad_rdr.archives import (
    LOCAL_SLACK,
    ArchiveError,
    CorruptMember,
    RangeFile,
    SevenZipMember,
    Unsupported,
    Volumes,
    from_bundle_reader,
    from_path,
    open_archive,
    volume_sets,
)
from tools import SEVEN_ZIP, needs_7zip

INFO_ZIP = shutil.which("zip")
needs_info_zip = pytest.mark.skipif(not INFO_ZIP, reason="Info-ZIP zip not installed")


def tree(root: Path) -> dict[str, bytes]:
    """A small dataset: an incompressible image, text, an empty file, a non-ASCII name."""
    rng = random.Random(14)
    files = {
        "sub-01/anat/T1w.nii.gz": rng.randbytes(150_000),
        "sub-01/anat/T1w.json": json.dumps({"EchoTime": 0.003} | {
            f"k{i}": i for i in range(2000)}).encode(),
        "participants.tsv": "".join(f"sub-{i:02d}\t{20 + i % 50}\n"
                                    for i in range(3000)).encode(),
        "README": b"",
        "derivatives/caf\u00e9/r\u00e9sum\u00e9.txt": "d\u00e9j\u00e0 vu\n".encode() * 500,
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


@pytest.fixture
def files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    return src, tree(src)


def seven_zip(*args, cwd):
    subprocess.run([SEVEN_ZIP, *args], cwd=cwd, check=True, capture_output=True)


def read(archive, member) -> bytes:
    out = io.BytesIO()
    archive.read(member, out)
    return out.getvalue()


def check_members(archive, files):
    """Every file comes back byte for byte, in one request per volume its bytes are in (a
    ZIP's empty member still has a local header to check; a 7z's has nothing to read),
    and about its packed size in bytes."""
    names = {m.name for m in archive if not m.is_dir}
    assert names == set(files)
    source = archive.source
    for m in archive:
        if m.is_dir:
            continue
        before, got = source.requests, source.bytes_read
        out = io.BytesIO()
        data_offset = archive.read(m, out)
        assert out.getvalue() == files[m.name], m.name
        if isinstance(m, SevenZipMember):
            start, end = m.packed or (0, 0)
            slack = 0
        else:
            start, end = m.header_offset, data_offset + m.compressed_size
            slack = zf.LOCAL_HEADER_SIZE + len(m.raw_name) + m.extra_len + LOCAL_SLACK
        assert source.requests - before == volumes_touched(source, start, end), m.name
        packed = end - start
        assert packed <= source.bytes_read - got <= packed + slack, m.name


def volumes_touched(source, start, end) -> int:
    if start == end:
        return 0
    if not isinstance(source, Volumes):
        return 1
    return source.locate(end - 1)[0] - source.locate(start)[0] + 1


def same_as_zipfile(archive, path):
    """Our reading of the central directory agrees with Python's zipfile's."""
    with zipfile.ZipFile(path) as z:
        theirs = [(i.filename, i.CRC, i.compress_size, i.file_size, i.header_offset,
                   i.compress_type) for i in z.infolist()]
    ours = [(m.name, m.crc32, m.compressed_size, m.size, m.header_offset, m.method)
            for m in archive]
    assert ours == theirs


# -- ZIPs by 7-Zip ----------------------------------------------------------------------


@needs_7zip
@pytest.mark.parametrize("level, method", [("-mx0", zf.STORED), ("-mx5", zf.DEFLATED)])
def test_7zip_zip_lists_from_its_end_and_reads_each_member_in_one_request(
        files, tmp_path, level, method):
    src, originals = files
    seven_zip("a", "-tzip", level, str(tmp_path / "data.zip"), ".", cwd=src)
    source = from_path(tmp_path / "data.zip")
    archive = open_archive(source)
    assert source.size > zf.TAIL_SIZE  # so that listing could have read more than the end
    assert source.requests == 1 and source.bytes_read == zf.TAIL_SIZE
    same_as_zipfile(archive, tmp_path / "data.zip")
    assert archive.get("participants.tsv").method == method
    assert {m.name for m in archive if m.is_dir} >= {"sub-01/", "derivatives/caf\u00e9/"}
    check_members(archive, originals)


@needs_7zip
def test_7zip_split_volumes_read_as_one_zip(files, tmp_path):
    """``7z a -v``: the volumes are one ZIP cut in pieces; a member across a cut is two
    requests, one per volume."""
    src, originals = files
    seven_zip("a", "-tzip", "-mx0", "-v120k", str(tmp_path / "data.zip"), ".", cwd=src)
    parts = sorted(p.name for p in tmp_path.glob("data.zip.*"))
    assert parts == ["data.zip.001", "data.zip.002"]
    [found] = volume_sets(parts + ["README.md"])
    assert (found.name, found.volumes, found.style, found.missing) == (
        "data.zip", tuple(parts), "7-zip", ())
    source = Volumes([from_path(tmp_path / p) for p in found.volumes])
    archive = open_archive(source)
    assert source.requests == 1 and source.bytes_read == zf.TAIL_SIZE
    image = archive.get("sub-01/anat/T1w.nii.gz")
    assert volumes_touched(source, image.header_offset,
                           image.header_offset + 100 + image.compressed_size) == 2
    before = [p.requests for p in source.parts]
    assert read(archive, image) == originals[image.name]
    assert [p.requests for p in source.parts] == [before[0] + 1, before[1] + 1]
    check_members(archive, originals)


@needs_7zip
def test_7zip_volumes_missing_or_out_of_order_fail_clearly(files, tmp_path):
    src, _ = files
    seven_zip("a", "-tzip", "-mx0", "-v100k", str(tmp_path / "data.zip"), ".", cwd=src)
    names = ["data.zip.001", "data.zip.003"]
    [found] = volume_sets(names)
    assert found.missing == (2,)
    with pytest.raises(ArchiveError, match="no ZIP end of central directory record"):
        open_archive(Volumes([from_path(tmp_path / "data.zip.001"),
                              from_path(tmp_path / "data.zip.002")]))
    swapped = Volumes([from_path(tmp_path / n) for n in
                       ("data.zip.002", "data.zip.001", "data.zip.003")])
    archive = open_archive(swapped)  # the directory is in the last volume: it lists
    with pytest.raises(CorruptMember, match=r"README in data.zip.002: no ZIP local header"):
        read(archive, archive.get("README"))


# -- ZIPs by Info-ZIP: split into disks ---------------------------------------------------


@needs_info_zip
def test_info_zip_split_archive_offsets_are_per_disk(files, tmp_path):
    """``zip -s``: data.z01, data.z02, data.zip; offsets count from each part's start."""
    src, originals = files
    subprocess.run([INFO_ZIP, "-q", "-r", "-0", "-s", "64k", str(tmp_path / "data.zip"),
                    "."], cwd=src, check=True)
    names = sorted(p.name for p in tmp_path.glob("data.z*"))
    [found] = volume_sets(names)
    assert found.style == "info-zip" and found.volumes[-1] == "data.zip"
    assert len(found.volumes) >= 3
    assert (tmp_path / "data.z01").read_bytes()[:4] == b"PK\x07\x08"  # the split marker
    source = Volumes([from_path(tmp_path / n) for n in found.volumes])
    archive = open_archive(source)
    check_members(archive, originals)
    with pytest.raises(ArchiveError, match=rf"split into {len(found.volumes)} parts"):
        open_archive(from_path(tmp_path / "data.zip"))
    assert volume_sets(["data.z01", "data.z02"])[0].missing == (3,)


@needs_info_zip
def test_info_zip_symlink_is_told_apart(tmp_path):
    (tmp_path / "data.txt").write_bytes(b"data")
    os.symlink("data.txt", tmp_path / "link")
    subprocess.run([INFO_ZIP, "-q", "-y", "links.zip", "data.txt", "link"], cwd=tmp_path,
                   check=True)
    archive = open_archive(from_path(tmp_path / "links.zip"))
    link, data = archive.get("link"), archive.get("data.txt")
    assert link.is_symlink and not data.is_symlink and stat.S_ISREG(data.mode)
    assert read(archive, link) == b"data.txt"  # the target, not the data


# -- ZIPs by Python's zipfile -------------------------------------------------------------


class Unseekable(io.RawIOBase):
    """A pipe: zipfile then writes each member's CRC and sizes in a data descriptor."""

    def __init__(self, f):
        self.f = f

    def writable(self):
        return True

    def write(self, b):
        return self.f.write(b)


def test_zipfile_data_descriptors_are_read_from_the_central_directory(files, tmp_path):
    _, originals = files
    path = tmp_path / "streamed.zip"
    with open(path, "wb") as f, zipfile.ZipFile(Unseekable(f), "w",
                                                zipfile.ZIP_DEFLATED) as z:
        for name, data in originals.items():
            with z.open(name, "w") as member:
                member.write(data)
    archive = open_archive(from_path(path))
    assert all(m.flags & zf.FLAG_DATA_DESCRIPTOR for m in archive)
    same_as_zipfile(archive, path)
    check_members(archive, originals)
    # the descriptor itself, after the data, says what the central directory does
    m = archive.get("participants.tsv")
    raw = path.read_bytes()
    local = zf.LocalHeader.parse(raw, m.header_offset)
    after = m.header_offset + local.length + m.compressed_size
    descriptor = zf.DataDescriptor.parse(raw, after)
    assert (descriptor.crc32, descriptor.compressed_size, descriptor.size, descriptor.length
            ) == (m.crc32, m.compressed_size, m.size, 16)


def many_members(path, count, size=40):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for i in range(count):
            z.writestr(f"d{i // 1000:03d}/f{i:06d}.txt", f"{i:0{size}d}")


def test_listing_10000_members_reads_the_central_directory_not_the_archive(tmp_path):
    path = tmp_path / "many.zip"
    many_members(path, 10_000)
    source = from_path(path)
    archive = open_archive(source)
    assert len(archive) == 10_000 and not archive.zip64
    # the tail request (end record + the directory's last 64 KiB), then the rest of it
    assert source.requests == 2
    assert source.bytes_read == source.size - archive.cd_offset == archive.cd_size + 22
    assert source.bytes_read < source.size / 2
    m = archive.get("d009/f009999.txt")
    before = source.bytes_read
    assert read(archive, m) == b"%040d" % 9999
    assert source.requests == 3
    assert source.bytes_read - before <= zf.LOCAL_HEADER_SIZE + len(m.raw_name) + (
        LOCAL_SLACK + m.size)


@pytest.fixture(scope="module")
def zip64_archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("zip64") / "zip64.zip"
    many_members(path, 65_600, size=1)
    return path


def test_zip64_more_than_65535_members(zip64_archive):
    source = from_path(zip64_archive)
    archive = open_archive(source)
    assert archive.zip64 and len(archive) == 65_600
    raw = zip64_archive.read_bytes()
    end = zf.End.parse(raw, zf.find_end(raw[-zf.TAIL_SIZE:]) + len(raw) - zf.TAIL_SIZE)
    assert end.total_entries == 0xFFFF and end.needs_zip64
    assert source.requests == 2
    assert source.bytes_read == archive.cd_size + zf.ZIP64_END_SIZE + (
        zf.ZIP64_LOCATOR_SIZE + zf.END_SIZE)
    assert read(archive, archive.members[-1]) == b"65599"


def test_zip64_with_bytes_before_it(zip64_archive, tmp_path):
    """The locator's offset is then off too: the record is found just before it."""
    prefixed = tmp_path / "sfx.zip"
    prefixed.write_bytes(b"#!/bin/sh\nexit 0\n" * 1000 + zip64_archive.read_bytes())
    archive = open_archive(from_path(prefixed))
    assert archive.zip64 and len(archive) == 65_600
    assert read(archive, archive.get("d065/f065535.txt")) == b"65535"


def test_local_extra_longer_than_the_central_costs_one_more_request(tmp_path):
    """zipfile's force_zip64 writes a zip64 extra in the local header only (20 bytes)."""
    path = tmp_path / "z.zip"
    data = os.urandom(5000)
    with zipfile.ZipFile(path, "w") as z, z.open("big.bin", "w", force_zip64=True) as f:
        f.write(data)
    source = from_path(path)
    archive = open_archive(source)
    m = archive.get("big.bin")
    assert m.extra_len == 0
    from datalad_rdr.archives.ziparchive import read_member
    out = io.BytesIO()
    offset = read_member(source, m, out, slack=0)
    assert out.getvalue() == data and source.requests == 3
    assert offset == m.header_offset + 30 + len("big.bin") + 20
    out = io.BytesIO()
    assert read_member(source, m, out) == offset and source.requests == 4
    # an empty member: the request (30 bytes + name) ends inside the local extra field
    with zipfile.ZipFile(path, "a") as z, z.open("empty", "w", force_zip64=True):
        pass
    source = from_path(path)
    m = open_archive(source).get("empty")
    out = io.BytesIO()
    assert read_member(source, m, out, slack=0) == m.header_offset + 30 + 5 + 20
    assert out.getvalue() == b"" and source.requests == 3


def test_archive_comment_and_bytes_before_the_zip(tmp_path):
    """A comment moves the end record; a prefix (self-extractor) shifts every offset."""
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("a.txt", b"alpha" * 100)
        z.comment = b"made by hand " + b"PK\x05\x06" + b"x" * 3000
    prefixed = tmp_path / "sfx.zip"
    prefixed.write_bytes(os.urandom(70_000) + plain.read_bytes())
    for path in (plain, prefixed):
        archive = open_archive(from_path(path))
        assert archive.comment.startswith(b"made by hand")
        assert read(archive, archive.get("a.txt")) == b"alpha" * 100


@needs_7zip
@pytest.mark.parametrize("method, code", [("Deflate64", 9), ("BZip2", 12), ("LZMA", 14)])
def test_7zip_zip_other_methods_are_read_too(files, tmp_path, method, code):
    """Deflate64 is what Windows Explorer writes for large files."""
    src, originals = files
    seven_zip("a", "-tzip", f"-mm={method}", str(tmp_path / "data.zip"), ".", cwd=src)
    archive = open_archive(from_path(tmp_path / "data.zip"))
    assert archive.get("participants.tsv").method == code
    check_members(archive, originals)


@needs_7zip
def test_unsupported_method_is_refused_naming_it(files, tmp_path):
    src, _ = files
    seven_zip("a", "-tzip", "-mm=PPMd", str(tmp_path / "ppmd.zip"), "participants.tsv",
              cwd=src)
    archive = open_archive(from_path(tmp_path / "ppmd.zip"))
    with pytest.raises(Unsupported, match=r"participants.tsv in ppmd.zip: compressed with "
                                          r"PPMd \(stored, deflated, Deflate64, bzip2"):
        read(archive, archive.get("participants.tsv"))


# -- Damage -----------------------------------------------------------------------------


def damaged(path: Path, offset: int) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    out = path.with_name("damaged-" + path.name)
    out.write_bytes(raw)
    return out


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                    zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_flipped_byte_fails_the_crc_check_naming_the_member(tmp_path, method):
    path = tmp_path / "ok.zip"
    text = b"".join(b"line %d\n" % i for i in range(5000))
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr("first.txt", b"fine")
        z.writestr("sub/table.tsv", text)
    m = open_archive(from_path(path)).get("sub/table.tsv")
    bad = damaged(path, m.header_offset + 30 + len(m.raw_name) + m.compressed_size // 2)
    archive = open_archive(from_path(bad))
    assert read(archive, archive.get("first.txt")) == b"fine"
    with pytest.raises(CorruptMember, match=r"sub/table.tsv in damaged-ok.zip: "):
        read(archive, archive.get("sub/table.tsv"))
    if method == zipfile.ZIP_STORED:
        with pytest.raises(CorruptMember, match=r"CRC-32 [0-9a-f]{8}, not the "
                                                f"{m.crc32:08x} the central directory"):
            read(archive, archive.get("sub/table.tsv"))


def test_a_directory_that_promises_more_deflated_bytes_than_the_stream_is_damage(tmp_path):
    path = tmp_path / "ok.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", b"abc" * 1000)
        z.writestr("b.txt", b"more")
    archive = open_archive(from_path(path))
    raw = bytearray(path.read_bytes())
    at = archive.cd_offset + 20  # the first central header's compressed size
    struct.pack_into("<I", raw, at, struct.unpack_from("<I", raw, at)[0] + 1)
    (tmp_path / "bad.zip").write_bytes(raw)
    archive = open_archive(from_path(tmp_path / "bad.zip"))
    with pytest.raises(CorruptMember, match="a.txt in bad.zip: the deflated stream does not "
                                            "end where the central directory says"):
        read(archive, archive.get("a.txt"))


def test_not_a_zip_cut_short_or_damaged_directory(tmp_path):
    garbage = tmp_path / "notes.zip"
    garbage.write_bytes(b"these are not the bytes of a ZIP archive\n" * 100)
    with pytest.raises(ArchiveError, match="notes.zip: no ZIP end of central directory"):
        open_archive(from_path(garbage))
    good = tmp_path / "good.zip"
    many_members(good, 50)
    raw = good.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(raw[:len(raw) - 10])
    with pytest.raises(ArchiveError, match="cut.zip: no ZIP end"):
        open_archive(from_path(cut))
    archive = open_archive(from_path(good))
    second = archive.cd_offset + 46 + len(archive.members[0].raw_name)
    broken = damaged(good, second)  # the second record's signature
    with pytest.raises(ArchiveError, match="damaged-good.zip: central directory entry"):
        open_archive(from_path(broken))


def test_a_server_that_sends_less_than_asked_is_an_error(tmp_path):
    from datalad_rdr.archives import Ranges
    path = tmp_path / "a.zip"
    many_members(path, 3)
    raw = path.read_bytes()
    short = Ranges(len(raw), lambda start, end: raw[start:end - 1], name="a.zip")
    with pytest.raises(ArchiveError, match="a.zip: asked for"):
        open_archive(short)


# -- The records themselves -----------------------------------------------------------


def test_records_refuse_garbage_with_a_clear_message():
    for parse, what in ((zf.LocalHeader.parse, "ZIP local header"),
                        (zf.CentralHeader.parse, "ZIP central directory header"),
                        (zf.End.parse, "ZIP end of central directory record"),
                        (zf.Zip64End.parse, "zip64 end of central directory"),
                        (zf.Zip64Locator.parse, "zip64 end locator")):
        with pytest.raises(ValueError, match=f"no {what} here"):
            parse(b"\0" * 100)
        with pytest.raises(ValueError, match=f"{what} cut short"):
            parse(b"PK")
    with pytest.raises(ValueError, match="saturated and no zip64 extra"):
        zf.zip64_values(b"", 0xFFFFFFFF, 10, 0, 0)
    with pytest.raises(ValueError, match="zip64 extra field cut short"):
        zf.zip64_values(struct.pack("<HHQ", 1, 8, 5), 0xFFFFFFFF, 0xFFFFFFFF, 0, 0)
    assert zf.zip64_values(struct.pack("<HHQQ", 1, 16, 5, 2**40), 7, 0xFFFFFFFF,
                           0xFFFFFFFF, 0) == (7, 5, 2**40, 0)


def test_names_utf8_flag_unicode_path_or_cp437():
    raw = "caf\u00e9".encode("cp437")
    assert zf.decode_name(raw, 0) == "caf\u00e9"
    utf8_name = "caf\u00e9".encode()
    assert zf.decode_name(utf8_name, 0, made_by=3 << 8) == "caf\u00e9"  # Info-ZIP, Linux
    assert zf.decode_name(utf8_name, 0, made_by=0) == "caf\u251c\u2310"  # MS-DOS: cp437
    assert zf.decode_name("caf\u00e9".encode(), zf.FLAG_UTF8) == "caf\u00e9"
    with pytest.raises(ValueError, match="flagged UTF-8"):
        zf.decode_name(b"\xff", zf.FLAG_UTF8)
    import zlib
    utf8 = "\u65e5\u672c.txt".encode()
    block = struct.pack("<BI", 1, zlib.crc32(b"??.txt")) + utf8
    extra = struct.pack("<HH", zf.UNICODE_PATH_EXTRA_ID, len(block)) + block
    assert zf.decode_name(b"??.txt", 0, extra) == "\u65e5\u672c.txt"
    assert zf.decode_name(b"renamed.txt", 0, extra) == "renamed.txt"  # stale block


def test_volume_names():
    sets = volume_sets(["a.ZIP.001", "a.ZIP.002", "b.7z.001", "scan.z01", "scan.z02",
                        "scan.zip", "lonely.zip", "run.001", "notes.txt"])
    assert [(s.name, s.style, s.volumes) for s in sets] == [
        ("a.ZIP", "7-zip", ("a.ZIP.001", "a.ZIP.002")),
        ("b.7z", "7-zip", ("b.7z.001",)),
        ("scan.zip", "info-zip", ("scan.z01", "scan.z02", "scan.zip")),
    ]


def test_range_file_serves_small_reads_from_few_requests(tmp_path):
    path = tmp_path / "x.bin"
    data = os.urandom(300_000)
    path.write_bytes(data)
    source = from_path(path)
    f = RangeFile(source, readahead=65536)
    got = [f.read(100) for _ in range(600)]  # 60,000 bytes in 100-byte reads
    assert b"".join(got) == data[:60_000] and source.requests == 1
    f.seek(-1000, 2)
    assert f.read() == data[-1000:] and source.requests == 2
    f.seek(-60_000, 2)  # read back to front, as 7z headers are: in the same window
    assert f.read(100) == data[-60_000:-59_900] and source.requests == 2
    f.seek(50)
    assert f.read(10) == data[50:60] and source.requests == 2


# -- .7z ----------------------------------------------------------------------------------


def test_py7zr_solid_archive_lists_and_says_members_need_the_whole_archive(files, tmp_path):
    src, originals = files
    path = tmp_path / "solid.7z"
    with py7zr.SevenZipFile(path, "w") as z:
        z.writeall(src, arcname="")
    source = from_path(path)
    archive = open_archive(source)
    assert archive.solid
    assert {m.name for m in archive if not m.is_dir} == set(originals)
    assert source.requests == 2  # the signature header, and the last 64 KiB
    image = archive.get("sub-01/anat/T1w.nii.gz")
    assert image.size == 150_000 and image.packed is None
    assert image.whole_archive.startswith("solid")
    with pytest.raises(Unsupported, match="T1w.nii.gz in solid.7z: solid.*whole archive"):
        read(archive, image)


@pytest.mark.parametrize("filters", [None, [{"id": py7zr.FILTER_LZMA2}],
                                     [{"id": py7zr.FILTER_COPY}]])
def test_py7zr_non_solid_members_are_read_from_their_packed_range(files, tmp_path, filters):
    """py7zr writes one folder per session: appending member by member makes it non-solid.
    Its default chain (x86 branch filter + LZMA2) decodes too."""
    src, originals = files
    path = tmp_path / "loose.7z"
    for i, name in enumerate(originals):
        with py7zr.SevenZipFile(path, "a" if i else "w", filters=filters) as z:
            z.write(src / name, name)
    source = from_path(path)
    archive = open_archive(source)
    assert not archive.solid and source.requests == 2
    assert all(m.whole_archive is None for m in archive)
    check_members(archive, originals)


@needs_7zip
@pytest.mark.parametrize("method", ["LZMA", "LZMA2", "Deflate", "Copy"])
def test_7zip_non_solid_7z(files, tmp_path, method):
    src, originals = files
    seven_zip("a", "-ms=off", f"-m0={method}", str(tmp_path / "data.7z"), ".", cwd=src)
    archive = open_archive(from_path(tmp_path / "data.7z"))
    assert not archive.solid
    assert {m.coder for m in archive if m.packed} == {method.lower()}
    check_members(archive, originals)


@needs_7zip
def test_7z_volumes_and_damage(files, tmp_path):
    src, originals = files
    seven_zip("a", "-ms=off", "-v100k", str(tmp_path / "data.7z"), ".", cwd=src)
    [found] = volume_sets(p.name for p in tmp_path.glob("data.7z.*"))
    source = Volumes([from_path(tmp_path / n) for n in found.volumes])
    archive = open_archive(source)
    assert source.requests <= 3  # the last 64 KiB may lie in two volumes
    check_members(archive, originals)
    seven_zip("a", "-ms=off", "-m0=Copy", str(tmp_path / "copy.7z"), ".", cwd=src)
    m = open_archive(from_path(tmp_path / "copy.7z")).get("participants.tsv")
    bad = damaged(tmp_path / "copy.7z", m.packed[0] + 10)
    archive = open_archive(from_path(bad))
    with pytest.raises(CorruptMember, match="participants.tsv in damaged-copy.7z: CRC-32"):
        read(archive, archive.get("participants.tsv"))
    notes = tmp_path / "notes.7z"
    notes.write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\0" * 100)
    with pytest.raises(ArchiveError, match="notes.7z: not a readable 7z archive"):
        open_archive(from_path(notes))


@needs_7zip
@pytest.mark.parametrize("kind", ["zip", "7z"])
def test_encrypted_members_are_refused_with_the_reason(files, tmp_path, kind):
    src, originals = files
    seven_zip("a", "-tzip" if kind == "zip" else "-ms=off", "-psecret",
              str(tmp_path / f"locked.{kind}"), "README", "participants.tsv", cwd=src)
    archive = open_archive(from_path(tmp_path / f"locked.{kind}"))
    member = archive.get("participants.tsv")
    assert member.size == len(originals["participants.tsv"])
    if kind == "zip":
        assert member.encrypted
    else:
        assert member.whole_archive == "encrypted"
    with pytest.raises(Unsupported, match=f"participants.tsv in locked.{kind}: encrypted"):
        read(archive, member)


@needs_7zip
def test_encrypted_7z_member_list_needs_the_password(files, tmp_path):
    src, _ = files
    seven_zip("a", "-psecret", "-mhe=on", str(tmp_path / "hidden.7z"), "README", cwd=src)
    with pytest.raises(ArchiveError, match="hidden.7z: its member list is encrypted"):
        open_archive(from_path(tmp_path / "hidden.7z"))


# -- On the server --------------------------------------------------------------------


def upload_by_hand(dv, pid, path: Path) -> int:
    """What dvuploader does: direct upload to the store, then register; the file id."""
    data = path.read_bytes()
    ticket = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                     params={"persistentId": pid, "size": len(data)}).json()["data"]
    assert requests.put(ticket["url"], data=data).status_code == 200
    spec = {"storageIdentifier": ticket["storageIdentifier"], "fileName": path.name,
            "mimeType": "application/octet-stream",
            "checksum": {"@type": "MD5", "@value": hashlib.md5(data).hexdigest()}}
    r = dv.add_files(pid, [spec])
    assert r.status_code == 200, r.text
    [f] = [f for f in dv.files(pid) if f["label"] == path.name]
    return f["dataFile"]["id"]


@needs_7zip
def test_split_volumes_on_the_server_read_by_range_requests(sandbox, files, tmp_path):
    """Volumes uploaded by hand to a draft: listed and read through the access API."""
    from datalad_rdr.remote.reader import BundleReader, Gone

    src, originals = files
    seven_zip("a", "-tzip", "-v100k", str(tmp_path / "data.zip"), ".", cwd=src)
    dv = DV(sandbox)
    pid = dv.create_dataset()
    volumes = sorted(tmp_path.glob("data.zip.*"))
    ids = [upload_by_hand(dv, pid, p) for p in volumes]
    reader = BundleReader(sandbox.dataverse_url, lambda: sandbox.api_token)
    source = Volumes([from_bundle_reader(reader, i, p.stat().st_size, p.name)
                      for i, p in zip(ids, volumes)])
    archive = open_archive(source)
    assert source.requests == (1 if source.parts[-1].size >= zf.TAIL_SIZE else 2)
    check_members(archive, originals)
    # a volume deleted from the draft: the transport's own error, naming the file
    gone = from_bundle_reader(reader, max(ids) + 1000, volumes[-1].stat().st_size,
                              volumes[-1].name)
    with pytest.raises(Gone, match=f"file {max(ids) + 1000} is not on"):
        open_archive(Volumes([*source.parts[:-1], gone]))

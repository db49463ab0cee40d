"""``datalad rdr-clone`` of records uploaded by hand, against the sandbox.

The record is made the way RDR's guide tells people to: ZIPs made with real 7-Zip
(deflated, stored, split into volumes with ``-v``), one by Python's zipfile (zip64), a
non-solid ``.7z`` by 7-Zip and a solid one by py7zr, a README and CSVs, uploaded with
upstream python-dvuploader (direct upload), one CSV restricted, then published. The clone
is made without a token, and every file is fetched with ``datalad get`` in a subprocess,
as a user would.
"""

import json
import os
import subprocess
import zipfile
from pathlib import Path

import datalad.api as dl
import py7zr
import pytest
from conftest import DV, run_as_user as run
from tools import SEVEN_ZIP, needs_7zip

from datalad_rdr.dataverse import Dataverse
from datalad_rdr.sandbox.faults import Fault

MiB = 2**20
VOLUME = 200_000  # bytes per volume of the split ZIP


@pytest.fixture
def sb(make_sandbox):
    # upstream dvuploader tags its uploads: the stock Dataverse profile accepts that
    return make_sandbox("dataverse", part_size=5 * MiB)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def seven_zip(*args, cwd):
    subprocess.run([SEVEN_ZIP, *args], cwd=cwd, check=True, capture_output=True)


def make_record_files(tmp: Path) -> dict[str, Path]:
    """The files a user would upload; name on the server -> local path."""
    src = tmp / "src"
    rnd = os.urandom
    write(src / "study/sub-01/anat.nii.gz", rnd(150_000))
    write(src / "study/sub-01/notes.txt", b"scanned on a Tuesday\n" * 500)
    write(src / "study/sub-02/anat.nii.gz", rnd(90_000))
    write(src / "study/participants.tsv", b"participant_id\tage\nsub-01\t30\n")
    write(src / "big/spans.bin", rnd(3 * VOLUME // 2))  # crosses the first boundary
    write(src / "big/small.txt", b"after the big one\n")
    up = tmp / "upload"
    up.mkdir()
    seven_zip("a", "-tzip", str(up / "deflated.zip"), "study", cwd=src)
    seven_zip("a", "-tzip", "-mx0", str(up / "stored.zip"), "study", cwd=src)
    seven_zip("a", "-tzip", "-mx0", f"-v{VOLUME}b", str(up / "split.zip"), "big", cwd=src)
    with zipfile.ZipFile(up / "python.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(src / "study/sub-01/notes.txt", "notes.txt")
        with zf.open("forced64.bin", "w", force_zip64=True) as member:
            member.write((src / "study/sub-02/anat.nii.gz").read_bytes())
    seven_zip("a", "-t7z", "-ms=off", str(up / "nonsolid.7z"), "study", cwd=src)
    with py7zr.SevenZipFile(up / "solid.7z", "w") as archive:
        archive.writeall(src / "study", "study")
    write(up / "README.md", b"# A dataset uploaded by hand\n")
    write(up / "tables/data.csv", b"a,b\n1,2\n")
    write(up / "private.csv", b"name,diagnosis\nx,y\n")
    return {str(p.relative_to(up)): p for p in sorted(up.rglob("*")) if p.is_file()}


def upload(sb, pid, files: dict[str, Path]):
    import dvuploader as dv_up

    up = [dv_up.File(filepath=str(path), directory_label=os.path.dirname(name))
          for name, path in files.items()]
    dv_up.DVUploader(files=up).upload(persistent_id=pid,
                                      dataverse_url=sb.dataverse_url + "/",
                                      api_token=sb.api_token, n_parallel_uploads=2)


def file_ids(dv, pid, version=":draft"):
    return {(f.get("directoryLabel", "") + "/" + f["label"]).lstrip("/"): f["dataFile"]["id"]
            for f in dv.files(pid, version)}


def publish(dv, pid, kind="major"):
    r = dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
                params={"persistentId": pid, "type": kind})
    assert r.status_code == 200, r.text
    Dataverse(dv.url, dv.token).wait_unlocked(pid)


@pytest.fixture
def record(sb, tmp_path):
    dv = DV(sb)
    pid = dv.create_dataset()
    files = make_record_files(tmp_path)
    upload(sb, pid, files)
    ids = file_ids(dv, pid)
    r = dv.call("PUT", f"/api/files/{ids['private.csv']}/restrict", data="true")
    assert r.status_code == 200, r.text
    publish(dv, pid)
    return dv, pid, files, tmp_path / "src"


def rdr_clone(source, path, **kw):
    return dl.rdr_clone(source=source, path=str(path), result_renderer="disabled",
                        return_type="list", on_failure="ignore", **kw)


def get(ds, path, token=None):
    r = run(["datalad", "get", path], ds, token)
    assert r.returncode == 0, r.stdout + r.stderr
    return (Path(ds) / path).read_bytes()


def drop(ds, *paths):
    r = run(["git", "annex", "drop", "--force", *paths], ds)
    assert r.returncode == 0, r.stdout + r.stderr


def served(sb) -> int:
    return sum(sb.gate.stats.bytes_served.values())


@needs_7zip
def test_clone_of_a_hand_made_record_gets_every_member(sb, record, tmp_path, monkeypatch):
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET", raising=False)
    dv, pid, files, src = record
    sb.gate.stats.reset()
    results = rdr_clone(pid, tmp_path / "clone", url=sb.dataverse_url)
    assert [r for r in results if r["status"] == "error"] == [], results
    # listing read the central directories (in the last 64 KiB), not the archives
    listed = {os.path.basename(r["path"]): r for r in results if "members" in r}
    assert sorted(listed) == ["deflated", "nonsolid", "python", "solid", "split", "stored"]
    for name in ("deflated", "stored", "python", "split"):
        assert listed[name]["requests"] <= 2, listed[name]
        assert listed[name]["bytes_read"] <= 64 * 1024 + 1024, listed[name]
    assert served(sb) == sum(r["bytes_read"] for r in listed.values())
    ds = tmp_path / "clone"
    tree = sorted(str(p.relative_to(ds)) for p in ds.rglob("*")
                  if ".git" not in p.parts and ".datalad" not in p.parts and not p.is_dir())
    assert "deflated/study/sub-01/anat.nii.gz" in tree
    assert "split/big/spans.bin" in tree and "python/forced64.bin" in tree
    assert not any(t.endswith((".zip", ".001", ".7z")) for t in tree)

    study = [p.relative_to(src) for p in (src / "study").rglob("*") if p.is_file()]
    for archive in ("deflated", "stored", "nonsolid"):
        for rel in study:
            assert get(ds, f"{archive}/{rel}") == (src / rel).read_bytes()
    assert get(ds, "python/forced64.bin") == (src / "study/sub-02/anat.nii.gz").read_bytes()
    assert get(ds, "python/notes.txt") == (src / "study/sub-01/notes.txt").read_bytes()
    assert get(ds, "README.md") == files["README.md"].read_bytes()
    assert get(ds, "tables/data.csv") == files["tables/data.csv"].read_bytes()

    # one member costs about its (compressed) size, whatever the archive's
    with zipfile.ZipFile(files["deflated.zip"]) as zf:
        info = zf.getinfo("study/sub-01/notes.txt")
    drop(ds, "deflated/study/sub-01/notes.txt", "stored/study/sub-01/anat.nii.gz")
    sb.gate.stats.reset()
    get(ds, "deflated/study/sub-01/notes.txt")
    assert info.compress_size <= served(sb) <= info.compress_size + 1024, served(sb)
    sb.gate.stats.reset()
    get(ds, "stored/study/sub-01/anat.nii.gz")
    assert 150_000 <= served(sb) <= 150_000 + 1024

    # the member across the volume boundary: two ranges, right bytes
    sb.gate.stats.reset()
    assert get(ds, "split/big/spans.bin") == (src / "big/spans.bin").read_bytes()
    assert sb.gate.stats.requests["GET"] == 2
    assert served(sb) <= 3 * VOLUME // 2 + 1024
    assert get(ds, "split/big/small.txt") == (src / "big/small.txt").read_bytes()

    # a solid 7z member says it needs the whole archive
    r = run(["datalad", "get", "solid/study/participants.tsv"], ds)
    assert r.returncode != 0
    assert "solid" in r.stdout + r.stderr and "whole archive" in r.stdout + r.stderr

    # a restricted file without a token: how to get access
    r = run(["datalad", "get", "private.csv"], ds)
    assert r.returncode != 0
    assert "Request Access" in r.stdout + r.stderr and pid in r.stdout + r.stderr
    assert get(ds, "private.csv", token=sb.api_token) == files["private.csv"].read_bytes()
    # nothing can be written to the record through the clone
    r = run(["git", "annex", "drop", "--from", "rdr", "--force", "README.md"], ds)
    assert r.returncode != 0 and "nothing is stored to or removed" in r.stdout + r.stderr


@needs_7zip
def test_corrupted_member_fails_its_crc_check(sb, record, tmp_path, monkeypatch):
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET", raising=False)
    dv, pid, files, src = record
    rdr_clone(pid, tmp_path / "clone", url=sb.dataverse_url)
    with zipfile.ZipFile(files["stored.zip"]) as zf:
        info = zf.getinfo("study/sub-01/anat.nii.gz")
    data_at = info.header_offset + 30 + len(info.filename) + len(info.extra)
    sb.gate.faults.inject(Fault("GET", ".", count=100, corrupt=data_at + 1000))
    r = run(["datalad", "get", "stored/study/sub-01/anat.nii.gz"], tmp_path / "clone")
    assert r.returncode != 0
    assert "CRC-32" in r.stdout + r.stderr
    sb.gate.faults.clear()
    assert get(tmp_path / "clone", "stored/study/sub-01/anat.nii.gz") == (
        src / "study/sub-01/anat.nii.gz").read_bytes()


@needs_7zip
def test_landing_page_hash_merge_and_rerun_after_a_new_version(sb, record, tmp_path,
                                                               monkeypatch):
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET", raising=False)
    dv, pid, files, src = record
    page = f"{sb.dataverse_url}/dataset.xhtml?persistentId={pid}"
    ds = tmp_path / "hashed"
    results = rdr_clone(page, ds, hash=True, merge=True)
    assert [r for r in results if r["status"] == "error"] == [], results
    key = run(["git", "annex", "lookupkey", "study/sub-01/notes.txt"], ds).stdout
    assert key.startswith("MD5E-")
    get(ds, "study/sub-01/notes.txt")
    assert run(["git", "annex", "fsck", "study/sub-01/notes.txt"], ds).returncode == 0
    assert rdr_clone(page, ds)[-1]["status"] == "notneeded"

    # version 2.0 adds a file: the rerun makes one new commit with it
    new = write(tmp_path / "v2/added.txt", b"added in 2.0\n")
    upload(sb, pid, {"added.txt": new})
    publish(dv, pid)
    commits = run(["git", "rev-list", "--count", "HEAD"], ds).stdout
    results = rdr_clone(page, ds, hash=True, merge=True)
    assert results[-1]["status"] == "ok" and results[-1]["version"] == "2.0", results
    assert int(run(["git", "rev-list", "--count", "HEAD"], ds).stdout) == int(commits) + 1
    assert get(ds, "added.txt") == b"added in 2.0\n"
    # an older version can still be had
    old = rdr_clone(pid, tmp_path / "v1", url=sb.dataverse_url, version="1.0")
    assert old[-1]["version"] == "1.0"
    assert not (tmp_path / "v1/added.txt").exists()


def test_bad_source_says_why_and_what_to_do(sb, tmp_path):
    (r,) = rdr_clone("not a doi", tmp_path / "x")
    assert r["status"] == "error" and "is not a DOI" in r["message"]
    assert "--url" in r["message"] and "\n" not in r["message"]
    (r,) = rdr_clone("https://example.org/some/page", tmp_path / "x")
    assert r["status"] == "error" and "landing" not in r["message"]
    assert "dataset.xhtml?persistentId" in r["message"]
    # sandbox DOIs do not resolve (and there is no network here): name the server
    (r,) = rdr_clone("doi:10.5072/FK2/NOPE", tmp_path / "x")
    assert r["status"] == "error" and "--url" in r["message"]
    (r,) = rdr_clone("doi:10.5072/FK2/NOPE", tmp_path / "x", url=sb.dataverse_url)
    assert r["status"] == "error" and "no published version" in r["message"]
    assert not (tmp_path / "x").exists()


def test_archive_records_round_trip_and_carry_their_version():
    from datalad_rdr.remote import locations

    loc = locations.ArchiveLocation(
        "https://rdr.example", "doi:10.1/X", "data zip.zip", ((7, 200_000), (8, 31)),
        "zip", "a b/ü.csv", 1000, "0a1b2c3d",
        (("method", "8"), ("flags", "0"), ("csize", "400"), ("header", "199990"),
         ("cextra", "24")))
    uri = loc.uri()
    assert uri.startswith("rdr-archive+https://rdr.example/api/access/datafile/7?")
    assert locations.parse_archive(uri) == loc
    assert locations.claims_archive(uri, "https://rdr.example", "doi:10.1/X")
    assert not locations.claims_archive(uri, "https://rdr.example", "doi:10.1/Y")
    # the bundle records' parser does not take them, nor they its records
    with pytest.raises(ValueError):
        locations.parse(uri)
    with pytest.raises(locations.NewerFormat, match="upgrade datalad-rdr"):
        locations.parse_archive(uri.replace("&v=1", "&v=2"))
    with pytest.raises(ValueError, match="unknown format"):
        locations.parse_archive(uri.replace("format=zip", "format=rar"))


def test_draft_needs_a_token_that_may_edit_it(sb, tmp_path, monkeypatch):
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET", raising=False)
    dv = DV(sb)
    pid = dv.create_dataset()
    (res,) = rdr_clone(pid, tmp_path / "d", url=sb.dataverse_url, version="draft")
    assert res["status"] == "error" and "no version draft" in res["message"]
    assert "token" in res["message"] and not (tmp_path / "d").exists()
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    results = rdr_clone(pid, tmp_path / "d", url=sb.dataverse_url, version="draft")
    assert results[-1]["status"] == "ok" and results[-1]["version"] == "draft", results
    assert json.loads((tmp_path / "d/.datalad/rdr/record.json").read_text())["pid"] == pid


def test_what_cannot_be_opened_says_why_and_the_rest_is_cloned(sb, tmp_path, monkeypatch):
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET", raising=False)
    dv = DV(sb)
    pid = dv.create_dataset()
    up = tmp_path / "up"
    with zipfile.ZipFile(write(up / "evil.zip", b""), "w") as zf:
        zf.writestr("../outside.txt", b"no")
        zf.writestr(".git/config", b"no")
        zf.writestr("fine.txt", b"fine\n")
    write(up / "damaged.zip", b"PK\x03\x04 not really a zip" * 10)
    with zipfile.ZipFile(write(up / "secret.zip", b""), "w") as zf:
        zf.writestr("a.txt", b"secret\n")
    write(up / "lonely.zip.002", os.urandom(100))  # its .001 was never uploaded
    upload(sb, pid, {p.name: p for p in up.iterdir()})
    ids = file_ids(dv, pid)
    assert dv.call("PUT", f"/api/files/{ids['secret.zip']}/restrict",
                   data="true").status_code == 200
    publish(dv, pid)
    ds = tmp_path / "clone"
    results = rdr_clone(pid, ds, url=sb.dataverse_url)
    by_status = {}
    for r in results:
        by_status.setdefault(r["status"], []).append(r["message"])
    assert any("is not a safe path" in m and "../outside.txt" in m
               for m in by_status["impossible"])
    assert any(".git/config" in m for m in by_status["impossible"])
    errors = " ".join(by_status["error"])
    assert "damaged.zip: cannot list its members" in errors
    assert "secret.zip" in errors and "Request Access" in errors
    assert "volumes 1 are not in the record" in errors
    assert results[-1]["status"] == "ok"
    assert get(ds, "evil/fine.txt") == b"fine\n"
    assert not (tmp_path / "outside.txt").exists() and not (ds / "evil/.git").exists()
    assert get(ds, "damaged.zip") == (up / "damaged.zip").read_bytes()
    assert (ds / "secret.zip").is_symlink() and (ds / "lonely.zip.002").is_symlink()
    # a PATH that holds something else is refused, and left alone
    (r,) = rdr_clone(pid, tmp_path / "up", url=sb.dataverse_url)
    assert r["status"] == "error" and "is not an rdr-clone" in r["message"]
    (r,) = rdr_clone(pid, tmp_path / "c2", url=sb.dataverse_url, credential="nosuch")
    assert r["status"] == "error" and "no credential 'nosuch'" in r["message"]

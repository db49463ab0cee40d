"""A file over the cap: its bundle goes up as 7-Zip split volumes, each a file on RDR.

A researcher exports a dataset with one image larger than the bundle cap: the bundle that
holds it is written as ``raw.zip.001``, ``raw.zip.002``, ... each at most the cap;
``7z x raw.zip.001`` restores every file of it; a clone gets any member through the ``rdr``
remote by one Range request per volume the member touches; a rerun sends nothing, and a run
killed between volumes is continued to the same end.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datalad.api as dl
import pytest
import requests

from conftest import DV
from datalad_rdr import manifest as mf
from datalad_rdr import volumes
from datalad_rdr.dataverse import Dataverse
from datalad_rdr.demo import make_bids_dataset
from datalad_rdr.plan import make_plan
from datalad_rdr.remote import locations
from datalad_rdr.sandbox.faults import Fault
from tools import SEVEN_ZIP, needs_7zip

DATALAD = os.path.join(os.path.dirname(sys.executable), "datalad")
CAP = 1_000_000
BIG = "sub-01/anat/sub-01_T1w.nii.gz"
BIG_SIZE = 2_500_000
SMALL = "sub-02/anat/sub-02_T1w.nii.gz"


@pytest.fixture
def ds(tmp_path):
    path = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=100_000)
    (path / BIG).unlink()
    (path / BIG).write_bytes(os.urandom(BIG_SIZE))
    dl.save(dataset=str(path), result_renderer="disabled")
    return path


def export(ds, sb, monkeypatch, **kw):
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    kw.setdefault("max_bundle_size", CAP)
    results = dl.rdr_export(dataset=str(ds), url=sb.dataverse_url, collection=sb.collection,
                            result_renderer="disabled", return_type="list",
                            on_failure="ignore", **kw)
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET")
    return results


def ok(results):
    errors = [r for r in results if r["status"] in ("error", "impossible")]
    assert errors == [], errors
    return results


def server_files(sb, pid) -> dict[str, dict]:
    return {f["label"]: f for f in DV(sb).files(pid)}


def download(sb, file_id) -> bytes:
    r = requests.get(f"{sb.dataverse_url}/api/access/datafile/{file_id}",
                     headers={"X-Dataverse-key": sb.api_token})
    r.raise_for_status()
    return r.content


def changing(sb, since):
    return [(m, p) for m, p in sb.dataverse.requests[since:] if m != "GET"]


def run(cmd, cwd, token=None):
    env = dict(os.environ)
    env.pop("DATALAD_CREDENTIAL_RDR_SECRET", None)
    if token:
        env["DATALAD_CREDENTIAL_RDR_SECRET"] = token
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_the_plan_writes_volumes_only_for_a_bundle_with_a_file_over_the_cap(ds):
    plan = make_plan(ds, cap=CAP)
    by_name = {b.name: b for b in plan.bundles}
    assert by_name["raw"].volume_size == CAP  # one bundle, not split between subjects
    assert {f.path for f in by_name["raw"].files} >= {BIG, SMALL}
    assert by_name["core"].volume_size is None  # everything else as it always was
    assert volumes.labels("raw.zip", 3) == ["raw.zip.001", "raw.zip.002", "raw.zip.003"]
    assert volumes.labels("raw.zip", 1000)[-1] == "raw.zip.1000"
    assert volumes.cuts(2_500_000, CAP) == [(0, CAP), (CAP, 2 * CAP), (2 * CAP, 2_500_000)]


@needs_7zip
def test_a_file_over_the_cap_goes_up_in_volumes_that_7zip_and_the_remote_read(
        make_sandbox, ds, tmp_path, monkeypatch):
    sb = make_sandbox("rdr")
    store = tmp_path / "store"
    results = ok(export(ds, sb, monkeypatch, ria_store=f"ria+file://{store}",
                        ria_alias="study"))
    sent = next(r for r in results if r.get("bundle") == "raw.zip")
    manifest = mf.load(ds)
    raw = manifest.bundle("raw")
    count = -(-raw.size // CAP)  # 2.5 MB and five images of 100 kB: 4 volumes
    assert count == 4 and "sent in 4 volumes (raw.zip.001 to raw.zip.004" in sent["message"]
    assert [v.label for v in raw.volumes] == volumes.labels("raw.zip", count)
    assert json.loads((ds / mf.MANIFEST).read_text())["format"] == mf.FORMAT_3

    # every volume a restricted file of its own on the server, at most the cap, its MD5
    on_server = server_files(sb, manifest.pid)
    assert "raw.zip" not in on_server
    joined = b""
    for v in raw.volumes:
        entry = on_server[v.label]
        assert entry["restricted"] and entry["dataFile"]["id"] == v.file_id
        data = download(sb, v.file_id)
        assert len(data) == v.size <= CAP
        assert hashlib.md5(data).hexdigest() == v.md5 == entry["dataFile"]["md5"]
        (tmp_path / v.label).write_bytes(data)
        joined += data
    assert len(joined) == raw.size

    # 7-Zip restores every member from the first volume, as the RDR guide tells recipients
    out = tmp_path / "7z"
    r = subprocess.run([SEVEN_ZIP, "x", "-y", f"-o{out}", str(tmp_path / "raw.zip.001")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for m in raw.members:
        assert (out / m.path).read_bytes() == (ds / m.path).read_bytes(), m.path

    # the same export again: nothing sent, nothing changed on the server, no commit
    before = len(sb.dataverse.requests)
    sb.gate.stats.reset()
    again = ok(export(ds, sb, monkeypatch))
    assert next(r for r in again if r.get("bundle") == "raw.zip")["status"] == "notneeded"
    assert changing(sb, before) == [] and sb.gate.stats.bytes_received == 0

    # a clone gets the member that spans the cuts and a small one, by ranges of the volumes
    big = next(m for m in raw.members if m.path == BIG)
    small = next(m for m in raw.members if m.path == SMALL)
    assert big.header_offset < CAP < big.data_offset + big.compressed_size
    clone = tmp_path / "clone"
    dl.clone(source=f"ria+file://{store}#~study", path=str(clone), result_renderer="disabled")
    whereis = run(["git", "annex", "whereis", BIG], clone).stdout
    assert "&vols=" in whereis and "&v=2" in whereis
    for m in (big, small):
        sb.gate.stats.reset()
        run(["datalad", "get", m.path], clone, token=sb.api_token)
        assert (clone / m.path).read_bytes() == (ds / m.path).read_bytes()
        served = sum(sb.gate.stats.bytes_served.values())
        assert m.size <= served <= m.size + 1024, (m.path, served)
        touched = [n for n, (lo, hi) in enumerate(volumes.cuts(raw.size, CAP))
                   if lo < m.data_offset + m.compressed_size and m.header_offset < hi]
        assert len(touched) >= 3 if m is big else len(touched) >= 1
        # one Range request per volume the member touches
        assert sb.gate.stats.requests["GET"] == len(sb.gate.stats.bytes_served) == \
            len(touched), (m.path, sb.gate.stats.requests)
    run(["git", "annex", "fsck", BIG, SMALL], clone)

    # verify checks each volume against the manifest
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    checked = dl.rdr_export(dataset=str(ds), verify_only=True, result_renderer="disabled",
                            return_type="list", on_failure="ignore")
    rows = {Path(r["path"]).name: r for r in checked if r.get("action") == "rdr-verify"}
    assert all(rows[v.label]["status"] == "ok" for v in raw.volumes), checked

    # a volume deleted on the server: the member is not there, and says which file is gone
    Dataverse(sb.dataverse_url, sb.api_token).delete_file(raw.volumes[1].file_id)
    run(["git", "annex", "drop", "--force", BIG], clone)
    env = dict(os.environ, DATALAD_CREDENTIAL_RDR_SECRET=sb.api_token)
    r = subprocess.run(["git", "annex", "get", BIG], cwd=clone, capture_output=True,
                       text=True, env=env)
    assert r.returncode != 0 and not (clone / BIG).exists()
    assert f"file {raw.volumes[1].file_id} is not on" in r.stdout + r.stderr


def test_a_run_killed_between_volumes_is_continued_to_the_same_end(make_sandbox, ds,
                                                                     monkeypatch):
    sb = make_sandbox("rdr")
    sb.gate.faults.inject(Fault("PUT", "/", count=1000, delay=0.3))  # time to kill it
    env = dict(os.environ, DATALAD_CREDENTIAL_RDR_SECRET=sb.api_token)
    journal = ds / ".git/datalad-rdr/export-journal.json"
    proc = subprocess.Popen([DATALAD, "rdr-export", "--url", sb.dataverse_url,
                             "--collection", sb.collection, "--max-bundle-size", str(CAP)],
                            cwd=str(ds), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, first = time.time() + 120, None
    while time.time() < deadline and proc.poll() is None:
        try:
            uploads = json.loads(journal.read_text()).get("uploads", {})
        except (OSError, ValueError):
            uploads = {}
        if "raw.zip.002" in uploads:  # the first volume is sent, the second under way
            first = uploads["raw.zip.001"]["state"]
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert first is not None and first["completed"], "the export ended before volume 2"
    sb.gate.faults.clear()
    pid = json.loads(journal.read_text())["pid"]

    ok(export(ds, sb, monkeypatch, pid=pid))
    raw = mf.load(ds).bundle("raw")
    on_server = server_files(sb, pid)
    assert sorted(label for label in on_server if label.startswith("raw.zip")) == \
        [v.label for v in raw.volumes]
    assert [on_server[v.label]["dataFile"]["id"] for v in raw.volumes] == \
        [v.file_id for v in raw.volumes]
    # the first volume was not sent again: its object got the first run's PUT only
    assert sb.gate.stats.puts_of(raw.volumes[0].storage_identifier) == 1
    joined = b"".join(download(sb, v.file_id) for v in raw.volumes)
    assert [hashlib.md5(download(sb, v.file_id)).hexdigest() for v in raw.volumes] == \
        [v.md5 for v in raw.volumes]
    assert len(joined) == raw.size
    # and then it is an export like any other: a rerun changes nothing
    before = len(sb.dataverse.requests)
    ok(export(ds, sb, monkeypatch))
    assert changing(sb, before) == []
    # a cap the large file fits under: one raw.zip again, the volumes removed
    results = ok(export(ds, sb, monkeypatch, max_bundle_size=10 * CAP))
    assert mf.load(ds).bundle("raw").volumes == []
    labels = set(server_files(sb, pid))
    assert "raw.zip" in labels and not {v.label for v in raw.volumes} & labels, results
    assert json.loads((ds / mf.MANIFEST).read_text())["format"] == mf.FORMAT


def test_a_volume_record_round_trip_and_old_records_still_read():
    loc = locations.Location("http://127.0.0.1:8080", "doi:10.48804/ABC", 11, "raw.zip",
                             2_500_731, "sub-01/a.nii.gz", 2_500_000, "stored", "0a1b2c3d",
                             2_500_000, 100, 100 + 30 + 15,
                             volumes=((11, 1_000_000), (12, 1_000_000), (13, 500_731)))
    uri = loc.uri()
    assert uri.endswith("&vols=11:1000000,12:1000000,13:500731&v=2")
    assert locations.parse(uri) == loc and loc.file_ids == [11, 12, 13]
    with pytest.raises(ValueError, match="the volumes do not make the bundle"):
        locations.parse(uri.replace("13:500731", "13:5"))
    plain = locations.Location("http://127.0.0.1:8080", "doi:10.48804/ABC", 11, "raw.zip",
                               2_500_731, "sub-01/a.nii.gz", 2_500_000, "stored",
                               "0a1b2c3d", 2_500_000, 100, 100 + 30 + 15)
    assert plain.uri().endswith("&v=1") and plain.file_ids == [11]


def test_a_manifest_without_volumes_is_written_as_before(tmp_path):
    record = mf.BundleRecord("core", "core", "core.zip", 10, "m", 1, "s3://b:1", True, "f")
    manifest = mf.Manifest("https://x", "doi:1", "abc", bundles=[record])
    text = manifest.to_json()
    assert json.loads(text)["format"] == mf.FORMAT and "volumes" not in text
    split = mf.BundleRecord("raw", "raw", "raw.zip", 15, "", 2, "s3://b:2", True, "g",
                            volumes=[mf.VolumeRecord("raw.zip.001", 10, "a", 2, "s3://b:2"),
                                     mf.VolumeRecord("raw.zip.002", 5, "b", 3, "s3://b:3")])
    manifest.bundles.append(split)
    again = mf.Manifest.from_json(manifest.to_json(), manifest.members_text())
    assert json.loads(manifest.to_json())["format"] == mf.FORMAT_3
    assert again.bundle("raw").volumes == split.volumes
    assert again.bundle("raw").files == [("raw.zip.001", 2), ("raw.zip.002", 3)]
    assert again.same_export(manifest)


def test_a_document_over_the_servers_largest_file_is_refused_bundles_go_in_volumes(
        make_sandbox, tmp_path, monkeypatch):
    sb = make_sandbox("rdr", max_file_size=200_000)
    path = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=300_000)
    (path / "README").write_text("A dataset.\n" + "x" * 250_000 + "\n")  # too long to go up
    dl.save(dataset=str(path), result_renderer="disabled")
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    pid = DV(sb).create_dataset()
    checked = dl.rdr_export(dataset=str(path), url=sb.dataverse_url, pid=pid,
                            check_server=True, result_renderer="disabled",
                            return_type="list", on_failure="ignore")
    assert all(r["status"] == "ok" for r in checked), checked
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET")
    sb.gate.stats.reset()

    # the README goes up as a file of its own: no volume can help, one line says so
    refused = export(path, sb, monkeypatch, pid=pid)
    errors = [r for r in refused if r["status"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "DOCUMENT_TOO_LARGE", refused
    assert errors[0]["message"].startswith("DOCUMENT_TOO_LARGE: README (250.0 kB): larger "
                                           "than the largest file the server accepts")
    assert "\n" not in errors[0]["message"] and "cannot be overridden" in errors[0]["message"]
    assert sb.gate.stats.bytes_received == 0 and server_files(sb, pid) == {}
    again = export(path, sb, monkeypatch, pid=pid, ignore_preflight=["DOCUMENT_TOO_LARGE"])
    assert any("cannot be overridden, as the server refuses a file that large"
               in r["message"] for r in again if r["status"] == "error"), again
    assert sb.gate.stats.bytes_received == 0

    # a short README: the images over the server's limit go up in volumes under it
    (path / "README").write_text("A dataset.\n")
    dl.save(dataset=str(path), result_renderer="disabled")
    ok(export(path, sb, monkeypatch, pid=pid))
    raw = mf.load(path).bundle("raw")
    assert raw.volumes and all(v.size < 200_000 for v in raw.volumes)
    assert set(server_files(sb, pid)) >= {v.label for v in raw.volumes}


def test_an_embargo_holds_every_volume(make_sandbox, ds, monkeypatch):
    from test_embargo import UNTIL, embargoed

    sb = make_sandbox("rdr")
    embargoed(ds)
    ok(export(ds, sb, monkeypatch))
    manifest = mf.load(ds)
    on_server = server_files(sb, manifest.pid)
    raw = manifest.bundle("raw")
    assert len(raw.volumes) == 4
    for v in raw.volumes:  # not only the first: each volume is a file of its own
        embargo = on_server[v.label]["dataFile"].get("embargo") or {}
        assert embargo.get("dateAvailable") == UNTIL.isoformat(), v.label


def test_a_dry_run_says_which_bundle_goes_up_in_volumes(ds):
    results = ok(dl.rdr_export(dataset=str(ds), url="https://rdr.example", collection="x",
                               max_bundle_size=CAP, dry_run=True, result_renderer="disabled",
                               return_type="list", on_failure="ignore"))
    by_bundle = {r["bundle"]: r for r in results if r.get("bundle")}
    raw = by_bundle["raw.zip"]
    planned = {b.filename: b for b in make_plan(ds, cap=CAP).bundles}["raw.zip"]
    assert raw["volumes"] == planned.server_files >= 3, raw
    assert (f"raw.zip in {planned.server_files} volumes of at most 1.00 MB"
            in raw["message"]), raw["message"]
    assert all(r.get("volumes") is None for name, r in by_bundle.items() if name != "raw.zip")

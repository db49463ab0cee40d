"""Several bundles at once: ``datalad rdr-export -J N`` over a sandbox whose S3 connections
are as slow as a WAN's, and a ``kill -9`` in the middle of it."""

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import requests

from conftest import DV, rdr_export
from datalad_rdr import manifest as mf
from datalad_rdr.demo import make_bids_dataset

DATALAD = os.path.join(os.path.dirname(sys.executable), "datalad")
MB = 1_000_000
# 4 subjects of 3 images each: with a cap of 7 MB, raw-01 .. raw-04 hold one subject each
IMAGE = 2 * MB
CAP = 7 * MB


def manifest_of(ds: Path) -> dict:
    return mf.load(ds).as_dict()


def check_server_matches_manifest(sb, ds: Path, manifest: dict) -> None:
    """Every bundle on the server is the manifest's bytes, and its members the dataset's."""
    dv = DV(sb)
    files = {f["label"]: f for f in dv.files(manifest["pid"])}
    assert sorted(files) == sorted([b["filename"] for b in manifest["bundles"]]
                                   + [d["label"] for d in manifest["documents"]]
                                   + ["dataset-history.git.bundle"])
    for bundle in manifest["bundles"]:
        entry = files[bundle["filename"]]
        assert entry["dataFile"]["id"] == bundle["file_id"]
        data = requests.get(f"{dv.url}/api/access/datafile/{bundle['file_id']}",
                            headers={"X-Dataverse-key": dv.token}).content
        assert len(data) == bundle["size"]
        assert hashlib.md5(data).hexdigest() == bundle["md5"]
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for m in bundle["members"]:
                assert zf.read(m["path"]) == (ds / m["path"]).resolve().read_bytes()


def slow_sandbox(make_sandbox, monkeypatch, bandwidth, **settings):
    sb = make_sandbox("rdr", **settings)
    sb.s3_settings.bandwidth = bandwidth  # per connection
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    return sb


def test_j3_sends_bundles_at_once_with_puts_bounded_in_total(make_sandbox, monkeypatch,
                                                             tmp_path):
    # parts of 5 MiB: every raw bundle is a multipart upload of two parts, so without a
    # bound over all bundles 3 bundles would have 6 PUTs in flight
    sb = slow_sandbox(make_sandbox, monkeypatch, 4 * MB, part_size=5 * 2**20)
    ds = make_bids_dataset(tmp_path / "bids", subjects=4, nifti_bytes=IMAGE)
    results = rdr_export(ds, sb, max_bundle_size=CAP, jobs=3)
    assert not [r for r in results if r["status"] == "error"], results
    stats = sb.gate.stats
    assert stats.max_objects_in_flight >= 2, "bundles were sent one after another"
    assert stats.max_puts_in_flight <= 3
    manifest = manifest_of(ds)
    # the manifest in the plan's order, whatever order the uploads finished in
    assert [b["filename"] for b in manifest["bundles"]] == [
        "core.zip", "raw-01.zip", "raw-02.zip", "raw-03.zip", "raw-04.zip"]
    sent = sorted(r["bundle"] for r in results if "bundle" in r)
    assert sent == sorted(b["filename"] for b in manifest["bundles"])
    assert all(r["status"] == "ok" for r in results if "bundle" in r)
    check_server_matches_manifest(sb, ds, manifest)
    # each bundle's object was sent once: two parts, no retry
    for bundle in manifest["bundles"]:
        assert stats.puts_of(bundle["storage_identifier"]) == (
            2 if bundle["size"] > 5 * 2**20 else 1), bundle["filename"]


def test_j1_sends_one_bundle_at_a_time(make_sandbox, monkeypatch, tmp_path):
    sb = slow_sandbox(make_sandbox, monkeypatch, 10 * MB)
    ds = make_bids_dataset(tmp_path / "bids", subjects=3, nifti_bytes=MB)
    results = rdr_export(ds, sb, max_bundle_size=3.5 * MB, jobs=1)
    assert not [r for r in results if r["status"] == "error"], results
    assert sb.gate.stats.max_objects_in_flight == 1
    assert len(manifest_of(ds)["bundles"]) == 4


def test_bandwidth_limit_holds_a_connection_to_its_rate(make_sandbox, monkeypatch,
                                                        tmp_path):
    sb = slow_sandbox(make_sandbox, monkeypatch, 2 * MB)
    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=2 * MB)
    began = time.monotonic()
    results = rdr_export(ds, sb, jobs=1)
    assert not [r for r in results if r["status"] == "error"], results
    sent = sum(b["size"] for b in manifest_of(ds)["bundles"])
    assert sent > 6 * MB and time.monotonic() - began >= sent / (2 * MB)


def test_kill_during_parallel_export_then_rerun_sends_only_the_rest(make_sandbox, tmp_path):
    sb = make_sandbox("rdr")
    sb.s3_settings.bandwidth = 3 * MB
    ds = make_bids_dataset(tmp_path / "bids", subjects=6, nifti_bytes=IMAGE)
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    journal = ds / ".git/datalad-rdr/export-journal.json"
    proc = subprocess.Popen([DATALAD, "rdr-export", "-J", "3", "--url", sb.dataverse_url,
                             "--collection", sb.collection, "--max-bundle-size", str(CAP)],
                            cwd=str(ds), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    stats, confirmed = sb.gate.stats, {}
    deadline = time.time() + 120
    # killed once a bundle is confirmed while others are on their way to the store
    while time.time() < deadline and proc.poll() is None:
        try:
            confirmed = json.loads(journal.read_text()).get("bundles", {})
        except (OSError, ValueError):
            confirmed = {}
        if len(confirmed) >= 2 and stats.in_flight:
            break
        time.sleep(0.02)
    in_flight_at_kill = len(stats.in_flight)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert confirmed and in_flight_at_kill >= 1, "not killed in the middle"
    assert stats.max_objects_in_flight >= 2
    killed = json.loads(journal.read_text())
    confirmed = {name: b for name, b in killed["bundles"].items()}
    assert len(confirmed) < 7  # core + raw-01..raw-06: not done
    puts_before = {name: stats.puts_of(b["storage_identifier"])
                   for name, b in confirmed.items()}
    assert all(n >= 1 for n in puts_before.values())
    total_puts = sum(stats.puts.values())

    r = subprocess.run([DATALAD, "rdr-export", "-J", "3"], cwd=str(ds), env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not journal.exists()
    manifest = manifest_of(ds)
    assert manifest["pid"] == killed["pid"]
    assert [b["name"] for b in manifest["bundles"]] == [
        "core"] + [f"raw-{i:02d}" for i in range(1, 7)]
    by_name = {b["name"]: b for b in manifest["bundles"]}
    for name, before in confirmed.items():  # confirmed bundles: kept, not sent again
        assert by_name[name]["storage_identifier"] == before["storage_identifier"]
        assert by_name[name]["file_id"] == before["file_id"]
        assert stats.puts_of(before["storage_identifier"]) == puts_before[name]
    # the rerun sent the other bundles (one PUT each at most: none for one whose upload
    # had completed before the kill), the README and the history bundle, nothing more
    rest = [b for b in manifest["bundles"] if b["name"] not in confirmed]
    adopted = [b for b in rest if stats.puts_of(b["storage_identifier"]) == 0]
    assert sum(stats.puts.values()) - total_puts <= len(rest) - len(adopted) + 2
    check_server_matches_manifest(sb, ds, manifest)

"""`datalad rdr-export` against the sandbox, as a researcher runs it."""

import hashlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import datalad.api as dl
import pytest
import requests

from conftest import DV, rdr_export
from tools import SEVEN_ZIP
from datalad_rdr import manifest as mf
from datalad_rdr.demo import demo_metadata, make_bids_dataset
from datalad_rdr.sandbox.faults import Fault

IMAGE = 60_000  # bytes per generated NIfTI
CAP = 7 * IMAGE  # raw of 3 subjects (3 images each) needs two parts


@pytest.fixture
def bids(tmp_path):
    return make_bids_dataset(tmp_path / "bids", subjects=3, nifti_bytes=IMAGE,
                             derivatives={"fmriprep": IMAGE})


def export(ds, sb, **kw):
    kw.setdefault("max_bundle_size", CAP)
    return rdr_export(ds, sb, **kw)


def statuses(results):
    """(bundle, status) of the bundle results (not pre-flight, documents, verify)."""
    return [(Path(r["path"]).name, r["status"]) for r in bundles(results)]


def bundles(results):
    return [r for r in results if "bundle" in r]


def server_bundles(sb, pid):
    dv = DV(sb)
    files = dv.files(pid)
    out = {}
    for f in files:
        r = requests.get(f"{dv.url}/api/access/datafile/{f['dataFile']['id']}",
                         headers={"X-Dataverse-key": dv.token})
        out[f["label"]] = r.content
    return files, out


def dataset_bytes(ds: Path, rel: str) -> bytes:
    return (ds / rel).resolve().read_bytes()


def test_export_round_trip(token_env, bids, tmp_path):
    sb = token_env
    results = export(bids, sb)
    assert all(r["status"] == "ok" for r in results), results
    manifest = mf.load(bids).as_dict()
    names = [b["filename"] for b in manifest["bundles"]]
    assert names == ["core.zip", "raw-01.zip", "raw-02.zip", "derivatives.zip"]
    files, blobs = server_bundles(sb, manifest["pid"])
    # nothing else on the server but the README, public (tests/test_publish.py), and the
    # dataset's history (tests/test_rdr_clone_history.py)
    assert sorted(f["label"] for f in files) == sorted(names + ["README", "dataset-history.git.bundle"])
    assert all(f["restricted"] for f in files if f["label"] in names)
    head = subprocess.run(["git", "-C", str(bids), "rev-parse", "HEAD~1"],
                          capture_output=True, text=True).stdout.strip()
    assert manifest["dataset_commit"] == head  # the exported commit, before the manifest's
    exported = set()
    for bundle in manifest["bundles"]:
        data = blobs[bundle["filename"]]
        assert len(data) == bundle["size"] <= CAP
        assert hashlib.md5(data).hexdigest() == bundle["md5"]
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.testzip() is None
            for m in bundle["members"]:
                assert zf.read(m["path"]) == dataset_bytes(bids, m["path"])
                exported.add(m["path"])
                # the manifest's offsets find the member's bytes in the ZIP
                raw = data[m["data_offset"]:m["data_offset"] + m["compressed_size"]]
                if m["method"] == "stored":
                    assert raw == dataset_bytes(bids, m["path"])
        # 7-Zip reads it too
        archive = tmp_path / bundle["filename"]
        archive.write_bytes(data)
        out = tmp_path / "7z" / bundle["name"]
        r = subprocess.run([SEVEN_ZIP, "x", "-y",
                            f"-o{out}", str(archive)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        for m in bundle["members"]:
            assert (out / m["path"]).read_bytes() == dataset_bytes(bids, m["path"])
    tracked = subprocess.run(["git", "-C", str(bids), "ls-files"], capture_output=True,
                             text=True).stdout.split()
    expected = {p for p in tracked if not p.startswith((".datalad", ".git"))}
    assert exported == expected
    # sub-01 and sub-02 share raw-01, sub-03 is in raw-02: split at subject boundaries
    raw2 = next(b for b in manifest["bundles"] if b["name"] == "raw-02")
    assert {m["path"].split("/")[0] for m in raw2["members"]} == {"sub-03"}


def test_rerun_sends_nothing_and_a_change_sends_one_bundle(token_env, bids):
    sb = token_env
    assert all(r["status"] == "ok" for r in export(bids, sb))
    sent = sb.gate.stats.bytes_received
    again = export(bids, sb)
    assert [s for _, s in statuses(again)] == ["notneeded"] * 4
    assert not [r for r in again if r["status"] == "error"], again
    assert sb.gate.stats.bytes_received == sent
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t21\n"
                                           "sub-02\t22\nsub-03\t33\n")
    dl.save(dataset=str(bids), result_renderer="disabled")
    third = export(bids, sb)
    assert statuses(third)[:4] == [("core.zip", "ok"), ("raw-01.zip", "notneeded"),
                                   ("raw-02.zip", "notneeded"),
                                   ("derivatives.zip", "notneeded")]
    manifest = json.loads((bids / ".datalad/rdr/manifest.json").read_text())
    files = DV(sb).files(manifest["pid"])
    assert sorted(f["label"] for f in files) == sorted(
        ["core.zip", "raw-01.zip", "raw-02.zip", "derivatives.zip", "README",
         "dataset-history.git.bundle"])  # no dupes


def test_dry_run_prints_the_plan_and_touches_no_server(sandbox, bids):
    before = len(sandbox.dataverse.requests)
    results = export(bids, sandbox, dry_run=True)
    assert [r["bundle"] for r in bundles(results)] == ["core.zip", "raw-01.zip",
                                                        "raw-02.zip", "derivatives.zip"]
    assert all(r["bytes"] > 0 and r["files"] for r in bundles(results))
    assert len(sandbox.dataverse.requests) == before
    assert sandbox.gate.stats.requests.total() == 1  # the sandbox's own create_bucket


def test_user_rules_file_overrides_the_defaults(token_env, bids):
    rules = bids / ".datalad/rdr/bundles"
    rules.parent.mkdir(exist_ok=True)
    rules.write_text("# glob   bundle\nstimuli/**  stimuli\nCHANGES  -\n")
    dl.save(dataset=str(bids), result_renderer="disabled")
    results = export(bids, token_env, dry_run=True)
    plan = {r["bundle"]: r["files"] for r in bundles(results)}
    assert plan["stimuli.zip"] == ["stimuli/nback/instructions.txt"]
    assert "CHANGES" not in plan["core.zip"]


def test_non_bids_dataset_bundles_by_top_level_folder(token_env, tmp_path):
    ds = dl.create(str(tmp_path / "plain"), result_renderer="disabled")
    for rel in ("images/a.png", "tables/t.csv", "notes.txt"):
        (Path(ds.path) / rel).parent.mkdir(exist_ok=True)
        (Path(ds.path) / rel).write_bytes(os.urandom(100))
    ds.save(result_renderer="disabled")
    results = export(ds.path, token_env, dry_run=True)
    assert {r["bundle"]: r["files"] for r in bundles(results)} == {
        "core.zip": ["notes.txt"], "images.zip": ["images/a.png"],
        "tables.zip": ["tables/t.csv"]}


@pytest.mark.parametrize("problem", ["bad-token", "no-direct-upload", "unsaved",
                                     "unavailable", "empty"])
def test_bad_input_gives_one_clear_error_and_uploads_nothing(
        make_sandbox, tmp_path, monkeypatch, caplog, problem):
    sb = make_sandbox("rdr", direct_upload=problem != "no-direct-upload")
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET",
                       "not-a-token" if problem == "bad-token" else sb.api_token)
    if problem == "empty":
        ds = Path(dl.create(str(tmp_path / "empty"), result_renderer="disabled").path)
    else:
        ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE)
    cap = CAP
    expected = {
        "bad-token": "API token was refused",
        "no-direct-upload": "Direct upload not supported",
        "unsaved": "unsaved changes",
        "unavailable": "available nowhere",
        "empty": "nothing to export",
    }[problem]
    if problem == "unsaved":
        (ds / "README").write_text("changed\n")
    elif problem == "unavailable":
        subprocess.run(["git", "-C", str(ds), "annex", "drop", "--force",
                        "sub-01/anat/sub-01_T1w.nii.gz"], check=True, capture_output=True)
    caplog.set_level(logging.DEBUG)
    results = export(ds, sb, max_bundle_size=cap)
    errors = [r for r in results if r["status"] == "error"]
    assert len(errors) >= 1 and expected in errors[0]["message"], results
    assert "\n" not in errors[0]["message"]
    assert sb.gate.stats.bytes_received == 0
    assert sb.api_token not in caplog.text


def test_faults_end_in_a_complete_export_or_a_clear_error(make_sandbox, bids, monkeypatch):
    sb = make_sandbox("rdr", part_size=5 * 2**20)
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    sb.gate.faults.inject(Fault("PUT", "/", reset_after=1000))
    sb.gate.faults.inject(Fault("PUT", "/", status=500, retry_after=0))
    refused = sb.dataverse.faults.inject(Fault("POST", "addFiles$", status=500, count=1))
    first = export(bids, sb)
    errors = [r for r in first if r["status"] == "error"]
    if errors:  # a registration that failed for good: said, and the rerun completes it
        assert any("core.zip" in r["message"] for r in errors), errors
        assert (bids / ".datalad/rdr/manifest.json").exists() is False
        second = plain(bids)
        assert all(r["status"] in ("ok", "notneeded") for r in second), second
    else:  # the client retried past the faults
        assert refused.hits == 1
    manifest = json.loads((bids / ".datalad/rdr/manifest.json").read_text())
    labels = sorted(f["label"] for f in DV(sb).files(manifest["pid"]))
    assert labels == sorted([b["filename"] for b in manifest["bundles"]]
                            + [d["label"] for d in manifest["documents"]]
                            + ["dataset-history.git.bundle"])  # no duplicates


def test_a_held_lock_is_waited_for(token_env, bids):
    sb = token_env
    dry = export(bids, sb, max_bundle_size=10**9, dry_run=True)
    pid = DV(sb).create_dataset()
    admin = DV(sb, token=sb.dataverse_settings.admin_token)
    admin.call("POST", "/api/datasets/:persistentId/lock/Ingest", params={"persistentId": pid})

    import threading

    def release():
        time.sleep(1.5)
        admin.call("DELETE", "/api/datasets/:persistentId/locks",
                   params={"persistentId": pid})

    threading.Thread(target=release).start()
    results = export(bids, sb, pid=pid, max_bundle_size=10**9)
    assert all(r["status"] == "ok" for r in results), results
    assert len(DV(sb).files(pid)) == len(dry) + 1  # and the history


def test_kill_during_export_then_rerun_completes(make_sandbox, tmp_path):
    sb = make_sandbox("rdr")
    ds = make_bids_dataset(tmp_path / "bids", subjects=4, nifti_bytes=300_000)
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    cmd = [os.path.join(os.path.dirname(sys.executable), "datalad"), "rdr-export",
           "-d", str(ds), "--url", sb.dataverse_url, "--collection", sb.collection,
           "--max-bundle-size", str(4 * 300_000)]
    journal = ds / ".git/datalad-rdr/export-journal.json"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not journal.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert journal.exists(), "the export never confirmed a bundle"
    confirmed = set(json.loads(journal.read_text())["bundles"])
    sent_before = sb.gate.stats.bytes_received
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((ds / ".datalad/rdr/manifest.json").read_text())
    assert confirmed <= {b["name"] for b in manifest["bundles"]}
    files = DV(sb).files(manifest["pid"])
    assert sorted(f["label"] for f in files) == sorted(
        [b["filename"] for b in manifest["bundles"]]
        + [d["label"] for d in manifest["documents"]] + ["dataset-history.git.bundle"])
    # confirmed bundles were not sent again
    resent = sb.gate.stats.bytes_received - sent_before
    total = sum(b["size"] for b in manifest["bundles"])
    confirmed_size = sum(b["size"] for b in manifest["bundles"] if b["name"] in confirmed)
    assert resent <= total - confirmed_size + max(b["size"] for b in manifest["bundles"])


def test_absent_content_is_fetched_and_dropped_again(token_env, bids, tmp_path):
    clone = dl.clone(source=str(bids), path=str(tmp_path / "clone"),
                     result_renderer="disabled")
    image = "sub-01/anat/sub-01_T1w.nii.gz"
    assert not (Path(clone.path) / image).exists()  # a fresh clone has no content
    results = export(clone.path, token_env, drop_after=True)
    assert all(r["status"] == "ok" for r in results), results
    manifest = json.loads((Path(clone.path) / ".datalad/rdr/manifest.json").read_text())
    _, blobs = server_bundles(token_env, manifest["pid"])
    with zipfile.ZipFile(io.BytesIO(blobs["raw-01.zip"])) as zf:
        assert zf.read(image) == dataset_bytes(bids, image)
    assert not (Path(clone.path) / image).exists()  # dropped once confirmed


def test_recursive_takes_subdatasets_at_their_paths(token_env, tmp_path):
    sup = dl.create(str(tmp_path / "super"), result_renderer="disabled")
    (Path(sup.path) / "README").write_text("super\n")
    (Path(sup.path) / ".datalad/rdr").mkdir(parents=True)
    (Path(sup.path) / ".datalad/rdr/metadata.yaml").write_text(demo_metadata())
    sub = sup.create("derivatives/fmriprep", result_renderer="disabled")
    (Path(sub.path) / "sub-01").mkdir()
    (Path(sub.path) / "sub-01" / "out.nii.gz").write_bytes(os.urandom(1000))
    sup.save(recursive=True, result_renderer="disabled")
    flat = export(sup.path, token_env, dry_run=True)
    assert [r["bundle"] for r in bundles(flat)] == ["core.zip"]  # without -r: not its content
    results = export(sup.path, token_env, recursive=True)
    assert all(r["status"] == "ok" for r in results), results
    manifest = mf.load(Path(sup.path)).as_dict()
    paths = [m["path"] for b in manifest["bundles"] for m in b["members"]]
    assert "derivatives/fmriprep/sub-01/out.nii.gz" in paths
    sub_commit = subprocess.run(["git", "-C", sub.path, "rev-parse", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    assert manifest["subdatasets"] == {"derivatives/fmriprep": sub_commit}


# -- one export state, remembered (D1, D5, D6) --------------------------------------------

DATALAD = os.path.join(os.path.dirname(sys.executable), "datalad")


def datalad(ds, *args, env=None, cwd=None, **kw):
    """``datalad ARGS`` run as a user runs it, in the dataset (or ``cwd``)."""
    return subprocess.run([DATALAD, *args], cwd=str(cwd or ds), env=env, capture_output=True,
                          text=True, **kw)


def as_from_a_terminal(cmd: list[str]) -> list[str]:
    """``cmd`` with SIGINT's default action, as a terminal starts it, also where the test
    run's parent ignores SIGINT (a background job of a script does) and so every child."""
    return [sys.executable, "-c", "import os, signal, sys; "
            "signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
            *cmd]


def plain(ds, **kw):
    """``datalad rdr-export`` with no server options: what was remembered."""
    return dl.rdr_export(dataset=str(ds), result_renderer="disabled", return_type="list",
                         on_failure="ignore", **kw)


def kill_after_first_bundle(cmd, ds, env):
    journal = ds / ".git/datalad-rdr/export-journal.json"
    proc = subprocess.Popen(cmd, cwd=str(ds), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    confirmed = {}
    while time.time() < deadline and proc.poll() is None:
        try:
            confirmed = json.loads(journal.read_text()).get("bundles", {})
        except (OSError, ValueError):
            confirmed = {}
        if confirmed:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert confirmed, "the export never confirmed a bundle"
    return json.loads(journal.read_text())


@pytest.mark.parametrize("rerun", ["plain", "retyped"])
def test_killed_first_export_continues_in_its_own_draft(make_sandbox, tmp_path, rerun):
    sb = make_sandbox("rdr")
    ds = make_bids_dataset(tmp_path / "bids", subjects=4, nifti_bytes=300_000)
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    server = ["--url", sb.dataverse_url, "--collection", sb.collection]
    journal = kill_after_first_bundle(
        [DATALAD, "rdr-export", *server, "--max-bundle-size", "1.2MB"], ds, env)
    assert len(sb.dataverse.datasets) == 1
    again = ["rdr-export"] + (server if rerun == "retyped" else [])
    r = datalad(ds, *again, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "waiting" not in r.stderr  # the killed run's lock died with it
    manifest = json.loads((ds / ".datalad/rdr/manifest.json").read_text())
    assert manifest["pid"] == journal["pid"]
    assert len(sb.dataverse.datasets) == 1  # no second, orphaned draft
    assert manifest["settings"]["cap"] == 1_200_000  # the cap of the first run, remembered
    assert len([b for b in manifest["bundles"] if b["logical"] == "raw"]) > 1
    labels = sorted(f["label"] for f in DV(sb).files(manifest["pid"]))
    assert labels == sorted([b["filename"] for b in manifest["bundles"]]
                            + [d["label"] for d in manifest["documents"]] + ["dataset-history.git.bundle"])


def test_plain_rerun_keeps_the_cap_and_a_new_cap_says_what_it_resends(token_env, bids):
    sb = token_env
    assert not [r for r in export(bids, sb) if r["status"] == "error"]
    again = plain(bids)
    assert not [r for r in again if r["status"] == "error"], again
    assert [s for _, s in statuses(again)] == ["notneeded"] * 4  # raw-01, raw-02 kept
    assert not [r for r in again if "removed" in r.get("message", "")]
    bigger = plain(bids, max_bundle_size="1GB")
    said = [r["message"] for r in bigger if "instead of" in r.get("message", "")]
    assert said and "sends raw.zip" in said[0] and "removes raw-01.zip, raw-02.zip" in \
        said[0], bigger
    manifest = json.loads((bids / ".datalad/rdr/manifest.json").read_text())
    assert [b["filename"] for b in manifest["bundles"]] == ["core.zip", "raw.zip",
                                                            "derivatives.zip"]
    assert manifest["settings"]["cap"] == 10**9


def test_plain_rerun_after_r_keeps_the_subdatasets(token_env, tmp_path):
    sup = dl.create(str(tmp_path / "super"), result_renderer="disabled")
    (Path(sup.path) / "README").write_text("super\n")
    (Path(sup.path) / ".datalad/rdr").mkdir(parents=True)
    (Path(sup.path) / ".datalad/rdr/metadata.yaml").write_text(demo_metadata())
    (Path(sup.path) / "table.csv").write_text("a,b\n1,2\n")
    sub = sup.create("subds", result_renderer="disabled")
    (Path(sub.path) / "data.bin").write_bytes(os.urandom(1000))
    sup.save(recursive=True, result_renderer="disabled")
    assert not [r for r in export(sup.path, token_env, recursive=True)
                if r["status"] == "error"]
    again = plain(sup.path)
    assert not [r for r in again if "removed" in r.get("message", "")], again
    assert ("subds.zip", "notneeded") in statuses(again)
    dropped = plain(sup.path, no_recursive=True)
    assert any("without -r" in r.get("message", "") and "removes subds.zip" in r["message"]
               for r in dropped), dropped
    assert any(r.get("message", "").startswith("subds.zip removed") for r in dropped)


def test_a_second_export_waits_then_stops_with_one_line(make_sandbox, bids):
    sb = make_sandbox("rdr")
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    sb.gate.faults.inject(Fault("PUT", "/", delay=1.5, count=6))  # a slow link for A
    a = subprocess.Popen([DATALAD, "rdr-export", "--url", sb.dataverse_url, "--collection",
                          sb.collection, "--max-bundle-size", str(CAP)], cwd=str(bids),
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = bids / ".git/datalad-rdr/export.lock"
    deadline = time.time() + 60
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.05)
    started = time.time()
    b = datalad(bids, "rdr-export", "--url", sb.dataverse_url, "--collection",
                sb.collection, env={**env, "DATALAD_RDR_EXPORT__WAIT": "1"})
    assert b.returncode == 1
    assert "waiting up to 1 s" in b.stderr
    errors = [line for line in (b.stdout + b.stderr).splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "another rdr-export of this dataset is still running" \
        in errors[0], b.stdout + b.stderr
    assert time.time() - started < 30
    out, err = a.communicate(timeout=300)
    assert a.returncode == 0, out + err
    assert len(sb.dataverse.datasets) == 1


# -- the dry run tells the truth (D8) -----------------------------------------------------

def test_dry_run_says_unchanged_send_replace_and_what_would_stop(token_env, bids):
    sb = token_env
    assert not [r for r in export(bids, sb) if r["status"] == "error"]
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t1\nsub-02\t2\n"
                                           "sub-03\t3\n")
    (bids / "derivatives/new").mkdir(parents=True)
    (bids / "derivatives/new/x.txt").write_text("new\n")
    dl.save(dataset=str(bids), result_renderer="disabled")
    before = len(sb.dataverse.requests)
    dry = plain(bids, dry_run=True)
    assert {r["bundle"]: r["change"] for r in bundles(dry)} == {
        "core.zip": "replace", "raw-01.zip": "unchanged", "raw-02.zip": "unchanged",
        "derivatives.zip": "replace"}
    assert not [r for r in dry if r["status"] == "error"]
    # what would stop the real run, with no server call either
    (bids / "sub-01/anat/sub-01_T2w.nii.gz").write_bytes(os.urandom(1000))
    dl.save(dataset=str(bids), result_renderer="disabled")
    subprocess.run(["git", "-C", str(bids), "annex", "drop", "--force",
                    "sub-01/anat/sub-01_T2w.nii.gz"], check=True, capture_output=True)
    (bids / ".datalad/rdr/metadata.yaml").unlink()
    (bids / "notes.txt").write_text("not saved\n")
    dry = plain(bids, dry_run=True)
    errors = [r["message"] for r in dry if r["status"] == "error"]
    assert any("metadata.yaml" in m for m in errors), errors
    assert any("unsaved changes" in m and "notes.txt" in m and ".datalad/rdr/metadata.yaml"
               in m for m in errors), errors
    assert any("available nowhere" in m and "sub-01_T2w" in m for m in errors), errors
    assert all(m.startswith("the export would stop") for m in errors)
    assert len(sb.dataverse.requests) == before


# -- no-op reruns are cheap and silent (D14, D12) -----------------------------------------

def git_out(ds, *args):
    return subprocess.run(["git", "-C", str(ds), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_rerun_with_nothing_changed_commits_and_records_nothing(token_env, bids):
    sb = token_env
    assert not [r for r in export(bids, sb) if r["status"] == "error"]
    head, annex_branch = git_out(bids, "rev-parse", "HEAD"), git_out(bids, "rev-parse",
                                                                     "git-annex")
    before = len(sb.dataverse.requests)
    started = time.time()
    again = plain(bids)
    took = time.time() - started
    assert not [r for r in again if r["status"] == "error"], again
    assert git_out(bids, "rev-parse", "HEAD") == head  # no new manifest commit
    assert git_out(bids, "rev-parse", "git-annex") == annex_branch  # no registerurl
    changing = [(m, p) for m, p in sb.dataverse.requests[before:] if m != "GET"]
    assert changing == []
    assert took < 15, took


def test_replaced_bundle_leaves_no_location_record_behind(token_env, bids):
    sb = token_env
    image = "sub-03/anat/sub-03_T1w.nii.gz"
    assert not [r for r in export(bids, sb) if r["status"] == "error"]
    old_key = git_out(bids, "annex", "lookupkey", image)
    (bids / image).unlink()
    (bids / image).write_bytes(os.urandom(IMAGE))
    dl.save(dataset=str(bids), result_renderer="disabled")
    assert not [r for r in plain(bids) if r["status"] == "error"]
    rdr = git_out(bids, "config", "remote.rdr.annex-uuid")
    where = json.loads(git_out(bids, "annex", "whereis", "--json", "--key", old_key))
    assert rdr not in [w["uuid"] for w in where["whereis"]], where  # whereis is true
    new = json.loads(git_out(bids, "annex", "whereis", "--json", image))
    assert any(u.startswith("rdr+") for w in new["whereis"] for u in w.get("urls", []))


# -- where and how it runs (D13, D4, 3.32) ------------------------------------------------

def test_export_runs_from_a_subdirectory(token_env, bids):
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": token_env.api_token}
    r = datalad(bids, "rdr-export", "--dry-run", cwd=bids / "sub-01" / "anat", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "would send raw-01.zip" in r.stdout or "raw.zip" in r.stdout, r.stdout


def test_a_ria_alias_of_another_dataset_is_refused_before_anything_is_sent(token_env, bids,
                                                                           tmp_path):
    sb = token_env
    store = f"ria+file://{tmp_path / 'store'}"
    assert not [r for r in export(bids, sb, ria_store=store, ria_alias="lab")
                if r["status"] == "error"]
    other = make_bids_dataset(tmp_path / "other", subjects=1, nifti_bytes=1000, seed=1)
    sent = sb.gate.stats.bytes_received
    results = export(other, sb, ria_store=store, ria_alias="lab")
    errors = [r for r in results if r["status"] == "error"]
    assert len(errors) == 1 and "--ria-alias lab is taken" in errors[0]["message"] \
        and "choose another" in errors[0]["message"], results
    assert sb.gate.stats.bytes_received == sent
    assert len(sb.dataverse.datasets) == 1
    # the same dataset again under its own alias is fine
    assert not [r for r in export(bids, sb, ria_store=store, ria_alias="lab")
                if r["status"] == "error"]


def test_a_dataset_without_annexed_files_gets_its_rdr_remote(token_env, tmp_path):
    ds = dl.create(str(tmp_path / "plain"), cfg_proc="text2git", result_renderer="disabled")
    (Path(ds.path) / "README").write_text("plain\n")
    (Path(ds.path) / "data.csv").write_text("a,b\n1,2\n")
    (Path(ds.path) / ".datalad/rdr").mkdir(parents=True)
    (Path(ds.path) / ".datalad/rdr/metadata.yaml").write_text(demo_metadata())
    ds.save(result_renderer="disabled")
    assert not [r for r in export(ds.path, token_env) if r["status"] == "error"]
    assert "rdr" in ds.repo.get_remotes()
    (Path(ds.path) / "big.bin").write_bytes(os.urandom(5000))
    ds.save(result_renderer="disabled", to_git=False)
    r = subprocess.run(["git", "-C", ds.path, "annex", "copy", "--to", "rdr", "big.bin"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# -- the command refuses bad input with one line (issue 12) -------------------------------

CONFLICTING = [
    (dict(publish="major", dry_run=True), "--publish and --dry-run"),
    (dict(publish="major", verify_only=True), "--publish and --verify-only"),
    (dict(dry_run=True, verify_only=True), "--dry-run and --verify-only"),
    (dict(metadata_template=True, dry_run=True), "--metadata-template and --dry-run"),
    (dict(metadata_template=True, verify_only=True), "--metadata-template and --verify-only"),
    (dict(metadata_template=True, publish="major"), "--metadata-template and --publish"),
    (dict(metadata_template=True, openminds="o.jsonld"),
     "--metadata-template and --openminds"),
    (dict(openminds="o.jsonld", publish="major"), "--openminds and --publish"),
    (dict(openminds="o.jsonld", dry_run=True), "--openminds and --dry-run"),
    (dict(openminds="o.jsonld", verify_only=True), "--openminds and --verify-only"),
    (dict(recursive=True, no_recursive=True), "-r and --no-recursive"),
]


@pytest.mark.parametrize("options,said", CONFLICTING, ids=[s for _, s in CONFLICTING])
def test_conflicting_options_are_refused_before_anything_runs(sandbox, bids, options, said):
    before = len(sandbox.dataverse.requests)
    with pytest.raises(ValueError, match=f"{said} cannot be used together"):
        dl.rdr_export(dataset=str(bids), url=sandbox.dataverse_url, result_renderer="disabled",
                      **options)
    assert len(sandbox.dataverse.requests) == before
    assert not (bids / "o.jsonld").exists()
    assert not (bids / ".datalad/rdr/manifest.json").exists()


@pytest.mark.parametrize("args,said", [
    (["--url", "127.0.0.1:8080"], "is not a server URL: write it with its scheme, e.g. "
                                  "https://127.0.0.1:8080"),
    (["--url", "https://rdr.kuleuven.be/api"], "give the installation's base URL, "
                                               "https://rdr.kuleuven.be"),
    (["--max-bundle-size", "lots"], "not a size: 'lots' (write e.g. 4GB"),
    (["--max-bundle-size", "100"], "must be at least 1024 bytes"),
    (["--publish", "major", "--dry-run"], "--publish and --dry-run cannot be used together"),
])
def test_bad_options_give_one_line_with_the_fix(bids, args, said):
    r = datalad(bids, "rdr-export", *args)
    assert r.returncode != 0
    assert said in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_sizes_with_units_are_accepted(sandbox, bids):
    results = export(bids, sandbox, dry_run=True, max_bundle_size="1MB")
    assert [r["bundle"] for r in bundles(results)] == ["core.zip", "raw.zip",
                                                        "derivatives.zip"]


def test_bad_commit_and_verify_of_nothing_say_what_to_do(token_env, bids):
    results = export(bids, token_env, commit="deadbeef")
    (error,) = [r for r in results if r["status"] == "error"]
    assert error["message"].startswith("--commit deadbeef: no such commit") \
        and "git log" in error["message"]
    results = plain(bids, verify_only=True)
    (error,) = [r for r in results if r["status"] == "error"]
    assert "nothing exported yet to verify" in error["message"]


def test_error_results_carry_the_exception_for_debugging(make_sandbox, bids, monkeypatch):
    sb = make_sandbox("rdr")
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", "not-a-token")
    results = export(bids, sb)
    (error,) = [r for r in results if r["status"] == "error"]
    assert "API token was refused" in error["message"]
    assert error.get("exception") is not None and error.get("exception_traceback")


# -- the rdr remote's own bundles in the same record (D18) --------------------------------

def test_bundles_of_the_rdr_remote_are_not_stray_and_do_not_block_publish(token_env, bids):
    sb = token_env
    assert not [r for r in export(bids, sb) if r["status"] == "error"]
    (bids / "sub-01/anat/extra.nii.gz").write_bytes(os.urandom(5000))
    dl.save(dataset=str(bids), result_renderer="disabled")
    r = subprocess.run(["git", "-C", str(bids), "annex", "copy", "--to", "rdr",
                        "sub-01/anat/extra.nii.gz"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    pid = json.loads((bids / ".datalad/rdr/manifest.json").read_text())["pid"]
    assert any(f["label"].startswith("annex-") for f in DV(sb).files(pid))
    results = plain(bids, publish="major")
    assert not [r for r in results if r["status"] == "error"], \
        [r["message"] for r in results if r["status"] == "error"]
    rows = [r["verify"] for r in results if r.get("verify")]
    assert [row["kind"] for row in rows if row["name"].startswith("annex-")] == ["remote"]
    assert any(r.get("doi") for r in results)


# -- progress (D19) ------------------------------------------------------------------------

def in_a_terminal(cmd, cwd, env, timeout=300) -> str:
    """What ``cmd`` shows in a terminal (a pseudo-terminal of 120 columns)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, cwd=str(cwd), env={**env, "TERM": "xterm"}, stdin=slave,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal closed
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(master)
    return out.decode(errors="replace")


def test_bundle_upload_shows_datalads_progress_bar(make_sandbox, tmp_path):
    sb = make_sandbox("rdr", part_size=5 * 2**20)
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=3_000_000)
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    shown = in_a_terminal([DATALAD, "rdr-export", "--url", sb.dataverse_url,
                           "--collection", sb.collection], ds, env)
    import re

    # DataLad's bar, labelled with the bundle, counting its bytes
    assert re.search(r"raw\.zip: +\d+%\|.*\| [\d.]+M?/18\.0M .*Bytes/s", shown), \
        shown[-3000:]
    assert re.search(r"README: +\d+%\|", shown)  # documents get a bar too


def test_debug_log_shows_the_exports_own_lines(make_sandbox, tmp_path):
    sb = make_sandbox("rdr")
    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=1000)
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    r = datalad(ds, "-l", "debug", "rdr-export", "--url", sb.dataverse_url, "--collection",
                sb.collection, env=env)
    assert r.returncode == 0, r.stderr
    assert "[DEBUG] export of " in r.stderr and ", continuing" not in r.stderr, r.stderr[-2000:]
    assert "[DEBUG] plan of " in r.stderr and "[DEBUG] raw.zip: new bundle" in r.stderr
    assert sb.api_token not in r.stdout + r.stderr


def test_interrupted_first_export_is_not_left_for_another_server(make_sandbox, bids):
    sb = make_sandbox("rdr")
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    sb.dataverse.faults.inject(Fault("POST", "addFiles$", status=400, count=100))
    first = datalad(bids, "rdr-export", "--url", sb.dataverse_url, "--collection",
                    sb.collection, env=env)
    assert first.returncode == 1 and not (bids / ".datalad/rdr/manifest.json").exists()
    sb.dataverse.faults.clear()
    before = len(sb.dataverse.requests)
    other = datalad(bids, "rdr-export", "--url", "https://elsewhere.example.org",
                    "--collection", "x", env=env)
    assert other.returncode == 1
    assert "has not finished: finish it with a plain 'datalad rdr-export'" in other.stderr \
        + other.stdout
    assert len(sb.dataverse.requests) == before
    r = datalad(bids, "rdr-export", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(sb.dataverse.datasets) == 1


def test_a_callers_thread_switch_interval_is_its_own_again_after_an_export(token_env, bids):
    """The export shortens Python's thread switch interval while it runs (its threads read
    many small files, see export.prompt_thread_switches); a script that calls it gets its
    own setting back, also when the export stops with an error."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.01)
    try:
        during = [sys.getswitchinterval() for _ in dl.rdr_export(
            dataset=str(bids), url=token_env.dataverse_url, collection=token_env.collection,
            max_bundle_size=CAP, result_renderer="disabled", return_type="generator",
            on_failure="ignore")]
        assert during and max(during) <= 0.001
        assert sys.getswitchinterval() == 0.01
        failed = export(bids, token_env, commit="deadbeef")
        assert [r for r in failed if r["status"] == "error"]
        assert sys.getswitchinterval() == 0.01
    finally:
        sys.setswitchinterval(before)


def test_the_exports_objects_are_frozen_while_it_runs_and_the_callers_are_not_after(
        token_env, bids):
    """The export keeps its per-file objects out of the cycle collector's full collections
    (``gc.freeze``, export.long_lived_objects_frozen) while it runs; a script that calls it
    has no frozen objects after, also when the export stops with an error, and keeps those
    it had frozen itself."""
    import gc

    gc.unfreeze()
    during = [gc.get_freeze_count() for _ in dl.rdr_export(
        dataset=str(bids), url=token_env.dataverse_url, collection=token_env.collection,
        max_bundle_size=CAP, result_renderer="disabled", return_type="generator",
        on_failure="ignore")]
    assert during and max(during) > 0
    assert gc.get_freeze_count() == 0
    failed = export(bids, token_env, commit="deadbeef")
    assert [r for r in failed if r["status"] == "error"]
    assert gc.get_freeze_count() == 0
    mine = [object()]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        export(bids, token_env)
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
        del mine


def test_a_first_export_sets_up_the_rdr_remote_while_it_sends(make_sandbox, tmp_path):
    """git-annex's initremote (about a second) runs beside the uploads, not after the
    manifest: the remote is in the dataset's config before the manifest is committed."""
    sb = make_sandbox("rdr")
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=100_000)
    head = subprocess.run(["git", "-C", str(ds), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    sb.gate.faults.inject(Fault("PUT", "/", delay=2, count=20))  # a slow link: seconds
    proc = subprocess.Popen([DATALAD, "rdr-export", "--url", sb.dataverse_url, "--collection",
                             sb.collection, "-J", "1"], cwd=str(ds), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen_at = None
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if '[remote "rdr"]' in (ds / ".git/config").read_text():
            seen_at = subprocess.run(["git", "-C", str(ds), "rev-parse", "HEAD"],
                                     capture_output=True, text=True, check=True).stdout
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    assert seen_at == head, "the rdr remote was set up only after the manifest's commit"
    remotes = subprocess.run(["git", "-C", str(ds), "annex", "info", "rdr", "--json"],
                             capture_output=True, text=True, env=env, check=False)
    assert json.loads(remotes.stdout)["type"] == "external", remotes.stderr


def test_ctrl_c_stops_with_one_line(make_sandbox, tmp_path):
    sb = make_sandbox("rdr")
    ds = make_bids_dataset(tmp_path / "bids", subjects=4, nifti_bytes=300_000)
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    sb.gate.faults.inject(Fault("PUT", "/", delay=1, count=20))
    proc = subprocess.Popen(as_from_a_terminal([
        DATALAD, "rdr-export", "--url", sb.dataverse_url, "--collection", sb.collection,
        "--max-bundle-size", "1.2MB"]), cwd=str(ds), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    journal = ds / ".git/datalad-rdr/export-journal.json"
    deadline = time.time() + 60
    while time.time() < deadline and not journal.exists():
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal sends it: to the whole group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in err
    errors = [line for line in (out + err).splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "rerun 'datalad rdr-export' to continue" in errors[0], \
        out + err
    r = datalad(ds, "rdr-export", env=env)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the git wrapper is a POSIX sh script")
def test_ctrl_c_while_the_remote_is_set_up_beside_the_export_stops_with_one_line(
        make_sandbox, tmp_path):
    """Ctrl-C once the bundles are sent and the manifest committed, while git-annex's
    initremote (started beside the sends) still runs: the terminal's SIGINT ends it too,
    and its failure is the interruption's, not a second error."""
    sb = make_sandbox("rdr")
    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=2000)
    real = shutil.which("git")
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    (wrapper / "git").write_text(
        f'#!/bin/sh\ncase " $* " in *" annex initremote "*)\n'
        f'  trap "" INT\n'  # as git-annex killed by the same Ctrl-C, once the manifest is in
        f'  while ! "{real}" log -1 --format=%s | grep -q "DATALAD RDR"; do sleep 0.1; done\n'
        f'  kill -INT 0; sleep 0.5\n'
        f'  echo "error: waitpid for git-annex failed: No child processes" >&2; exit 128;;\n'
        f'esac\nexec "{real}" "$@"\n')
    (wrapper / "git").chmod(0o755)
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token,
           "PATH": f"{wrapper}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(as_from_a_terminal([
        DATALAD, "rdr-export", "--url", sb.dataverse_url, "--collection", sb.collection]),
                            cwd=str(ds), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert "[DATALAD RDR]" in subprocess.run(  # interrupted after the manifest's commit
        ["git", "-C", str(ds), "log", "-1", "--format=%s"], capture_output=True,
        text=True).stdout
    assert "Traceback" not in err
    errors = [line for line in (out + err).splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "rerun 'datalad rdr-export' to continue" in errors[0], \
        out + err
    env["PATH"] = os.environ["PATH"]
    r = datalad(ds, "rdr-export", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rdr" in subprocess.run(["git", "-C", str(ds), "annex", "info", "--fast"],
                                   capture_output=True, text=True).stdout


def test_a_ctrl_c_swallowed_on_its_way_is_still_known():
    """Where the KeyboardInterrupt of Ctrl-C was swallowed (Python ignores it in a
    ``__del__``), the export stops at its next result, and an error that the interrupted
    children then cause is reported as the interruption (``pressed``)."""
    from datalad_rdr.commands.rdr_export import _interrupts

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in ``datalad``
    try:
        with _interrupts() as interrupted:
            assert not interrupted.pressed()
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # swallowed
            assert interrupted.pressed()
            with pytest.raises(KeyboardInterrupt):
                interrupted()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_plain_rerun_keeps_the_preflight_overrides(token_env, bids):
    (bids / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    dl.save(dataset=str(bids), result_renderer="disabled")
    assert [r for r in export(bids, token_env, dry_run=True) if r["status"] == "error"]
    first = export(bids, token_env, ignore_preflight=["SIDECAR_KEY_REQUIRED"])
    assert not [r for r in first if r["status"] == "error"], first
    again = plain(bids)
    assert not [r for r in again if r["status"] == "error"], again
    manifest = json.loads((bids / ".datalad/rdr/manifest.json").read_text())
    assert manifest["settings"]["ignore_preflight"] == ["SIDECAR_KEY_REQUIRED"]
    assert [o["code"] for o in manifest["preflight_overrides"]] == ["SIDECAR_KEY_REQUIRED"]


def test_a_re_export_that_would_exhaust_the_file_count_stops_before_sending(make_sandbox,
                                                                           bids,
                                                                           monkeypatch):
    """Dataverse counts every file a dataset ever had and /addFiles refuses at count + N >=
    limit (fidelity row 21): a re-export that replaces a bundle is stopped before any byte."""
    first = make_sandbox("rdr")
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", first.api_token)
    done = export(bids, first)
    assert all(r["status"] in ("ok", "notneeded") for r in done), done
    owned = len(DV(first).files(json.loads((bids / ".datalad/rdr/manifest.json")
                                           .read_text())["pid"]))
    first.dataverse_settings.dataset_file_limit = owned + 1  # room for no replacement
    (bids / "sub-01/anat/sub-01_T1w.json").write_text('{"EchoTime": 0.004}')
    dl.save(dataset=str(bids), message="one sidecar changed", result_renderer="disabled")
    received = first.gate.stats.bytes_received
    results = plain(bids)
    (error,) = [r for r in results if r["status"] == "error"]
    assert "would run out of files" in error["message"]
    assert "--max-bundle-size" in error["message"] and "nothing was uploaded" in \
        error["message"]
    assert first.gate.stats.bytes_received == received  # not a byte sent

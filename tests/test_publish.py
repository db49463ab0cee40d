"""README public, bundles restricted, verify, publish, DOI: the RDR guide's steps 2 and 6-8."""

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import datalad.api as dl
import pytest
import requests
import yaml

from conftest import DV, rdr_export
from datalad_rdr import manifest as mf, publish
from datalad_rdr.dataverse import Dataverse
from datalad_rdr.demo import make_bids_dataset
from datalad_rdr.publish import VALIDATION_RATE, WAIT_FLOOR, publication_wait

IMAGE = 60_000
CAP = 7 * IMAGE
DESCRIPTOR = "<html><body><h1>Data descriptor</h1><p>Flowcharts, file tree.</p></body></html>\n"


@pytest.fixture
def bids(tmp_path):
    """The demo's BIDS dataset and metadata file, with an HTML data descriptor listed."""
    ds = make_bids_dataset(tmp_path / "bids", subjects=3, nifti_bytes=IMAGE,
                           derivatives={"fmriprep": IMAGE})
    (ds / "docs").mkdir()
    (ds / "docs/index.html").write_text(DESCRIPTOR)
    meta = ds / ".datalad/rdr/metadata.yaml"
    meta.write_text(meta.read_text() + "documentation: [docs/index.html]\n"
                    "code_repository: https://github.com/example/analysis\n")
    dl.save(dataset=str(ds), message="descriptor", result_renderer="disabled")
    return ds


def export(ds, sb, **kw):
    kw.setdefault("max_bundle_size", CAP)
    return rdr_export(ds, sb, **kw)


def errors(results):
    return [r for r in results if r["status"] == "error"]


def manifest_of(ds):
    return json.loads((Path(ds) / ".datalad/rdr/manifest.json").read_text())


def by_name(entries):
    return {(f"{e['directoryLabel']}/" if e.get("directoryLabel") else "") + e["label"]: e
            for e in entries}


def verify_rows(results):
    return {Path(r["path"]).name if r["type"] == "file" else None: r
            for r in results if r["action"] == "rdr-verify"}


def download(sb, file_id, token=None):
    headers = {"X-Dataverse-key": token} if token else {}
    return requests.get(f"{sb.dataverse_url}/api/access/datafile/{file_id}", headers=headers)


def git(ds, *args):
    return subprocess.run(["git", "-C", str(ds), *args], capture_output=True, text=True,
                          check=True).stdout


def test_a_bids_dataset_goes_through_to_a_doi_in_its_history(make_sandbox, bids,
                                                             monkeypatch):
    sb = make_sandbox("rdr", publish_delay=1.0)
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    started = time.monotonic()
    results = export(bids, sb, publish="major")
    assert errors(results) == [], results
    manifest = manifest_of(bids)
    pid = manifest["pid"]

    # README and the descriptor: separate public files, readable without any token
    files = by_name(DV(sb).files(pid, ":latest-published"))
    assert set(files) == {"core.zip", "raw-01.zip", "raw-02.zip", "derivatives.zip",
                          "README", "docs/index.html", "dataset-history.git.bundle"}
    for name, path in (("README", "README"), ("docs/index.html", "docs/index.html")):
        assert files[name]["restricted"] is False
        anonymous = download(sb, files[name]["dataFile"]["id"])
        assert anonymous.status_code == 200
        assert anonymous.content == (bids / path).read_bytes()
    assert files["README"]["dataFile"]["contentType"].startswith("text/plain")
    assert files["docs/index.html"]["dataFile"]["contentType"].startswith("text/html")
    # bundles restricted: not for the anonymous, and the README is still inside core.zip
    for name in ("core.zip", "raw-01.zip", "raw-02.zip", "derivatives.zip"):
        assert files[name]["restricted"] is True
        assert download(sb, files[name]["dataFile"]["id"]).status_code in (401, 403)
    core = download(sb, files["core.zip"]["dataFile"]["id"], sb.api_token).content
    with zipfile.ZipFile(io.BytesIO(core)) as zf:
        assert zf.read("README") == (bids / "README").read_bytes()
        assert zf.read("docs/index.html") == DESCRIPTOR.encode()
    assert [(d["path"], d["directory"], d["restricted"]) for d in manifest["documents"]] == [
        ("README", None, False), ("docs/index.html", "docs", False)]

    # verify: one green row per file, and the table
    rows = verify_rows(results)
    assert all(r["status"] == "ok" for r in rows.values())
    assert {n for n in rows if n} == {"core.zip", "raw-01.zip", "raw-02.zip",
                                      "derivatives.zip", "README", "index.html",
                                      "dataset-history.git.bundle"}
    table = rows[None]["table"]
    assert table.splitlines()[0].split()[:2] == ["file", "kind"]
    assert "MISMATCH" not in table and table.count(" ok") == 7

    # published after the finalizePublication lock, the DOI read back and kept
    published = [r for r in results if r["action"] == "rdr-publish"]
    assert len(published) == 1 and published[0]["version"] == "1.0"
    doi = pid[len("doi:"):]
    assert published[0]["doi"] == doi
    assert time.monotonic() - started >= 1.0
    version = DV(sb).call("GET", "/api/datasets/:persistentId/versions/:latest-published",
                          params={"persistentId": pid}).json()["data"]
    assert version["versionState"] == "RELEASED" and version["versionNumber"] == 1
    assert (manifest["doi"], manifest["version"]) == (doi, "1.0")
    assert manifest["published"] == version["releaseTime"]

    # in the dataset's history: manifest and CITATION.cff, in one commit, nothing unsaved
    assert "published" in git(bids, "log", "-1", "--format=%s") and doi in git(
        bids, "log", "-1", "--format=%s")
    assert set(git(bids, "show", "--name-only", "--format=", "HEAD").split()) == {
        ".datalad/rdr/manifest.json", "CITATION.cff"}
    assert git(bids, "status", "--porcelain") == ""
    cff = yaml.safe_load(git(bids, "show", "HEAD:CITATION.cff"))
    assert cff["doi"] == doi and cff["version"] == "1.0" and cff["type"] == "dataset"
    assert cff["date-released"] == version["releaseTime"][:10]
    assert cff["title"] == "datalad-rdr demo dataset"
    assert cff["authors"][0] == {"family-names": "Doe", "given-names": "Jane",
                                 "affiliation": "KU Leuven",
                                 "orcid": "https://orcid.org/0000-0002-1825-0097"}
    assert cff["license"] == "CC-BY-4.0"
    assert cff["repository-code"] == "https://github.com/example/analysis"

    # a change: core.zip is replaced, so Dataverse allows only a major release; a minor one
    # is refused before the server is asked, saying why
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t31\nsub-02\t32\n"
                                           "sub-03\t33\n")
    dl.save(dataset=str(bids), result_renderer="disabled")
    sent = sb.gate.stats.bytes_received
    publishes = len([p for m, p in sb.dataverse.requests if p.endswith(":publish")])
    second = export(bids, sb, publish="minor")
    (refused,) = errors(second)
    assert refused["action"] == "rdr-publish"
    assert "files were added, replaced or removed since version 1.0" in refused["message"]
    assert "replaced: core.zip" in refused["message"]
    assert "use --publish major" in refused["message"]
    assert len([p for m, p in sb.dataverse.requests if p.endswith(":publish")]) == publishes
    docs = {r["document"]: r["status"] for r in second if "document" in r}
    assert docs == {"README": "notneeded", "docs/index.html": "notneeded"}
    assert [r["bundle"] for r in second if r.get("bundle") and r["status"] == "ok"] == [
        "core.zip"]
    history = next(r["size"] for r in second if r.get("path", "").endswith(
        "dataset-history.git.bundle") and r["action"] == "rdr-export")
    assert sb.gate.stats.bytes_received - sent < 10_000 + history  # core.zip, the history
    # published as 2.0: documents not sent again, the citation file updated
    third = export(bids, sb, publish="major")
    assert errors(third) == [], third
    assert manifest_of(bids)["version"] == "2.0"
    assert yaml.safe_load((bids / "CITATION.cff").read_text())["version"] == "2.0"


def replace_by_hand(sb, pid, entry, data):
    """What a person does with dvuploader: upload other bytes under the same name."""
    dv = DV(sb)
    ticket = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                     params={"persistentId": pid, "size": len(data)}).json()["data"]
    assert requests.put(ticket["url"], data=data).status_code == 200
    spec = {"storageIdentifier": ticket["storageIdentifier"], "fileName": entry["label"],
            "mimeType": "application/zip", "restrict": True, "forceReplace": True,
            "fileToReplaceId": entry["dataFile"]["id"],
            "checksum": {"@type": "MD5", "@value": hashlib.md5(data).hexdigest()}}
    r = dv.call("POST", "/api/datasets/:persistentId/replaceFiles",
                params={"persistentId": pid},
                files={"jsonData": (None, json.dumps([spec]), "application/json")})
    assert r.status_code == 200 and "errorMessage" not in r.text, r.text


def test_verify_catches_what_was_changed_by_hand_and_a_rerun_repairs_it(token_env, bids):
    sb = token_env
    assert errors(export(bids, sb)) == []
    pid = manifest_of(bids)["pid"]
    dv = DV(sb)
    files = by_name(dv.files(pid))
    # by hand, as in the web UI or with the API and the depositor's token:
    r = dv.call("PUT", f"/api/files/{files['raw-01.zip']['dataFile']['id']}/restrict",
                data="false")
    assert r.status_code == 200, r.text  # a bundle made public
    r = dv.call("PUT", f"/api/files/{files['README']['dataFile']['id']}/restrict",
                data="true")
    assert r.status_code == 200, r.text  # the README restricted
    r = dv.call("DELETE", f"/api/files/{files['raw-02.zip']['dataFile']['id']}")
    assert r.status_code == 200, r.text  # a bundle deleted from the draft
    replace_by_hand(sb, pid, files["core.zip"], b"PK\x05\x06" + b"\0" * 18)  # other size
    r = dv.call("POST", "/api/datasets/:persistentId/add", params={"persistentId": pid},
                files={"file": ("notes.txt", b"my notes\n"),
                       "jsonData": (None, "{}", "application/json")})
    assert r.status_code == 200, r.text  # a stray file

    sent = sb.gate.stats.bytes_received
    checked = export(bids, sb, verify_only=True)
    assert sb.gate.stats.bytes_received == sent  # verify sends nothing
    rows = verify_rows(checked)
    assert rows["derivatives.zip"]["status"] == "ok"
    assert rows["index.html"]["status"] == "ok"
    expected = {
        "raw-01.zip": "public on the server, should be restricted",
        "README": "restricted on the server, should be public",
        "raw-02.zip": "not on the server",
        "core.zip": f"the server holds 22 bytes, the manifest "
                    f"{manifest_of(bids)['bundles'][0]['size']}",
        "notes.txt": "on the server but not sent by datalad-rdr",
    }
    for name, phrase in expected.items():
        assert rows[name]["status"] == "error" and phrase in rows[name]["message"], rows[name]
        assert "\n" not in rows[name]["message"]
    assert rows[None]["status"] == "error"
    assert rows[None]["message"].startswith("verify: 5 of 8 files")  # + the history
    assert rows[None]["table"].count("MISMATCH") == 5

    # the command line prints the table after the results
    cmd = [os.path.join(os.path.dirname(sys.executable), "datalad"), "rdr-export", "-d",
           str(bids), "--verify-only"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode != 0
    assert re.search(r"raw-02\.zip +bundle +181017 / missing", out.stdout), out.stdout

    # a rerun puts back what the export owns; the stray file is the user's to remove
    again = export(bids, sb)
    status = {Path(r["path"]).name: r for r in again if r["action"] == "rdr-export"}
    assert "made restricted" in status["raw-01.zip"]["message"]
    assert "made public" in status["README"]["message"]
    assert status["raw-02.zip"]["status"] == "ok" and "sent" in status["raw-02.zip"]["message"]
    assert status["core.zip"]["status"] == "ok" and "sent" in status["core.zip"]["message"]
    rows = verify_rows(again)
    assert [n for n, r in rows.items() if r["status"] == "error"] == ["notes.txt", None]
    stray = by_name(dv.files(pid))["notes.txt"]["dataFile"]["id"]
    assert dv.call("DELETE", f"/api/files/{stray}").status_code == 200
    assert errors(export(bids, sb, verify_only=True)) == []

    # a document no longer listed leaves the draft (it stays inside core.zip)
    meta = bids / ".datalad/rdr/metadata.yaml"
    meta.write_text(meta.read_text().replace("documentation: [docs/index.html]\n", ""))
    dl.save(dataset=str(bids), result_renderer="disabled")
    last = export(bids, sb)
    assert errors(last) == [], last
    assert "docs/index.html" not in by_name(dv.files(pid))
    assert [d["path"] for d in manifest_of(bids)["documents"]] == ["README"]


def test_publishing_is_refused_while_verify_finds_a_mismatch(token_env, bids):
    sb = token_env
    assert errors(export(bids, sb)) == []
    pid = manifest_of(bids)["pid"]
    DV(sb).call("POST", "/api/datasets/:persistentId/add", params={"persistentId": pid},
                files={"file": ("stray.txt", b"x\n"),
                       "jsonData": (None, "{}", "application/json")})
    results = export(bids, sb, publish="major")
    assert "not published" in errors(results)[-1]["message"]
    assert not [r for r in results if r["action"] == "rdr-publish"]
    assert manifest_of(bids)["doi"] is None
    assert DV(sb).call("GET", "/api/datasets/:persistentId/versions/:latest-published",
                       params={"persistentId": pid}).status_code == 404


def test_a_first_minor_publication_is_refused_with_what_to_do(token_env, bids):
    results = export(bids, token_env, publish="minor")
    found = errors(results)
    assert len(found) == 1 and found[0]["action"] == "rdr-publish"
    assert "use --publish major" in found[0]["message"]
    assert manifest_of(bids)["doi"] is None
    assert not (bids / "CITATION.cff").exists()


def test_a_checksum_failure_at_publication_is_an_error_and_no_doi_is_recorded(token_env,
                                                                              bids):
    sb = token_env
    assert errors(export(bids, sb)) == []
    manifest = manifest_of(bids)
    raw = next(b for b in manifest["bundles"] if b["name"] == "raw-01")
    # the store's bytes change behind the server's back (bit rot, a broken copy)
    key = sb.dataverse.datafiles[raw["file_id"]].key
    sb.s3.put_object(Bucket=sb.dataverse.bucket, Key=key, Body=b"x" * raw["size"])
    results = export(bids, sb, publish="major")
    assert all(r["status"] == "ok" for r in results if r["action"] == "rdr-verify")
    found = errors(results)
    assert len(found) == 1 and found[0]["action"] == "rdr-publish"
    # the server's lock does not name the file (FinalizeDatasetPublicationCommand)
    assert "could not validate" in found[0]["message"]
    assert f"Ask RDR support to remove the FileValidationFailed lock of {manifest['pid']}" \
        in found[0]["message"]
    assert manifest_of(bids)["doi"] is None
    assert not (bids / "CITATION.cff").exists()
    # what the message says to do: the RDR team lifts the lock, the file goes, a rerun
    admin = DV(sb, token=sb.dataverse_settings.admin_token)
    pid = manifest["pid"]
    assert admin.call("DELETE", "/api/datasets/:persistentId/locks",
                      params={"persistentId": pid}).status_code == 200
    assert DV(sb).call("DELETE", f"/api/files/{raw['file_id']}").status_code == 200
    again = export(bids, sb, publish="major")
    assert errors(again) == [], again
    assert manifest_of(bids)["version"] == "1.0"


def test_an_open_dataset_has_public_bundles_and_no_restrict_may_not_contradict(token_env,
                                                                              bids):
    sb = token_env
    conflict = export(bids, sb, no_restrict=True)
    assert len(errors(conflict)) == 1
    assert "--no-restrict contradicts 'access: restricted'" in errors(conflict)[0]["message"]
    assert sb.gate.stats.bytes_received == 0
    meta = bids / ".datalad/rdr/metadata.yaml"
    meta.write_text(meta.read_text().replace("access: restricted\n", "access: open\n")
                    .replace("opt_out_reason: privacy\n", ""))
    dl.save(dataset=str(bids), result_renderer="disabled")
    results = export(bids, sb)
    assert errors(results) == [], results
    files = DV(sb).files(manifest_of(bids)["pid"])
    assert files and not any(f["restricted"] for f in files)
    assert all(r["status"] == "ok" for r in results if r["action"] == "rdr-verify")


def test_the_wait_for_a_publication_grows_with_the_bytes_of_a_major_release():
    assert publication_wait(0, "major") == WAIT_FLOOR
    assert publication_wait(10**9, "minor") == WAIT_FLOOR
    # 200 GB: the server reads every file of the dataset again, at a modest rate
    assert publication_wait(200 * 10**9, "major") >= 200e9 / VALIDATION_RATE
    assert publication_wait(200 * 10**9, "minor") == WAIT_FLOOR
    assert publication_wait(0, "major", floor=5) == 5


def test_nothing_to_publish_is_said_in_the_servers_words(token_env, bids):
    sb = token_env
    assert errors(export(bids, sb, publish="major")) == []
    pid = manifest_of(bids)["pid"]
    client = Dataverse(sb.dataverse_url, sb.api_token)
    results = list(publish.run(bids, client, pid, "major", mf.load(bids)))
    assert [r["status"] for r in results] == ["error"]
    assert "nothing to publish" in results[0]["message"]


def test_a_refused_commit_of_the_publication_is_one_error_that_keeps_the_doi(token_env,
                                                                            bids):
    hook = bids / ".git/hooks/commit-msg"  # refuses only the publication's commit
    hook.write_text("#!/bin/sh\nif grep -q 'published' \"$1\"; then\n"
                    "  echo 'policy: no release commits' >&2; exit 1\nfi\n")
    hook.chmod(0o755)
    found = errors(export(bids, token_env, publish="major"))
    assert len(found) == 1 and found[0]["action"] == "rdr-publish", found
    doi = found[0]["doi"]
    assert doi and f"DOI {doi}" in found[0]["message"]
    assert "policy: no release commits" in found[0]["message"]
    assert "datalad save" in found[0]["message"]
    # the export's own commit went in; the publication's record is written, for the user
    assert git(bids, "log", "-1", "--format=%s").startswith("[DATALAD RDR] export of")
    assert manifest_of(bids)["doi"] == doi and (bids / "CITATION.cff").exists()
    hook.unlink()
    dl.save(dataset=str(bids), message="the publication", result_renderer="disabled")
    assert doi in git(bids, "show", "HEAD:CITATION.cff")

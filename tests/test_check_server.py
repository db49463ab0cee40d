"""``datalad rdr-export --check-server``: each fact right, nothing left behind, acted on."""

import json
from pathlib import Path

import datalad.api as dl
import pytest

from conftest import DV, rdr_export
from datalad_rdr.dataverse import Dataverse
from datalad_rdr.demo import make_bids_dataset
from datalad_rdr.discovery import MAX_PARTS, adjust, discover
from datalad_rdr.register import register_bundle
from datalad_rdr.upload import Uploader
from datalad_rdr.documents import Bytes as Data  # bytes as an upload source

MIB = 1024 * 1024


@pytest.fixture
def plain(tmp_path):
    ds = dl.create(str(tmp_path / "ds"), result_renderer="disabled")
    return Path(ds.path)


def check(ds, sb, **kw):
    kw.setdefault("url", sb.dataverse_url)
    return dl.rdr_export(dataset=str(ds), check_server=True, result_renderer="disabled",
                         return_type="list", on_failure="ignore", **kw)


def facts_of(results):
    return {r["fact"]: r for r in results if "fact" in r}


def with_file(sb):
    """A dataset with one registered file, as after a first export."""
    client = Dataverse(sb.dataverse_url, sb.api_token)
    pid = DV(sb).create_dataset()
    uploaded = Uploader(client, pid).upload(Data(b"x" * 1000))
    register_bundle(client, pid, "core.zip", uploaded, True, "a bundle")
    return pid


def open_multipart_uploads(sb):
    return sb.s3.list_multipart_uploads(Bucket=sb.dataverse.bucket).get("Uploads", [])


def test_rdr_profile_facts_for_a_dataset(make_sandbox, plain, monkeypatch):
    sb = make_sandbox("rdr", part_size=5 * MIB, max_file_size=50_000_000, url_lifetime=1200,
                      download_redirect=False, dataset_file_limit=100)
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    pid = with_file(sb)
    results = check(plain, sb, pid=pid, collection=sb.collection)
    assert all(r["status"] == "ok" for r in results), results
    facts = facts_of(results)
    value = {name: r["value"] for name, r in facts.items()}
    assert value["version"] == "6.7.1"
    assert value["direct_upload"] is True
    assert value["tagging"] is False
    assert value["part_size"] == 5 * MIB
    assert value["url_lifetime"] == 1200
    # the server registers only files smaller than its limit
    assert value["largest_file"] == 50_000_000 - 1
    assert value["download_redirect"] is False
    assert "offset + size" in facts["download_redirect"]["message"]
    assert value["may_publish"] is True
    assert {"title", "departmentFaculty", "technicalFormat"} <= set(value["required_fields"])
    assert "departmentFaculty" in value["vocabularies"]
    assert value["licenses"]
    assert value["file_count_limit"] == 100
    assert "1 used by" in facts["file_count_limit"]["message"]
    # one table, and the facts kept per server
    table = [r for r in results if r.get("table")]
    assert len(table) == 1 and "largest accepted file" in table[0]["table"]
    kept = json.loads(next((plain / ".git/datalad-rdr").glob("server-*.json")).read_text())
    assert kept["server"] == sb.dataverse_url and kept["pid"] == pid
    assert kept["facts"]["largest_file"] == 50_000_000 - 1 and kept["checked"]
    # what an export to this server then does
    cap, notes = adjust(plain / ".git", sb.dataverse_url, 20 * 10**9)
    assert cap == 50_000_000 - 1
    assert any("bundles capped at" in n for n in notes)
    assert any("streams downloads" in n and "member's end" in n for n in notes)
    assert adjust(plain / ".git", "https://elsewhere.example", 10**9) == (10**9, [])
    # nothing that stays: no open multipart upload, no file, no draft change
    assert open_multipart_uploads(sb) == []
    assert [e["label"] for e in DV(sb).files(pid)] == ["core.zip"]


def test_dataverse_profile_facts(make_sandbox, plain, monkeypatch):
    sb = make_sandbox("dataverse", part_size=5 * MIB)
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    pid = with_file(sb)
    value = {n: r["value"] for n, r in facts_of(check(plain, sb, pid=pid)).items()}
    assert value["tagging"] is True
    assert value["download_redirect"] is True
    # no size limit: as large as a Swift store takes, the probe's multipart aborted
    assert value["largest_file"] == MAX_PARTS * 5 * MIB
    assert open_multipart_uploads(sb) == []
    assert value["file_count_limit"] is None
    assert "title" in value["required_fields"]


def test_without_a_dataset_what_needs_one_is_unknown_and_says_why(sandbox, plain,
                                                                 monkeypatch):
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sandbox.api_token)
    facts = facts_of(check(plain, sandbox, collection=sandbox.collection))
    for name in ("direct_upload", "largest_file", "download_redirect", "may_publish"):
        assert facts[name]["value"] is None
    assert "--pid" in facts["largest_file"]["message"]
    assert facts["version"]["value"] == "6.7.1"
    assert "departmentFaculty" in facts["required_fields"]["value"]


def test_a_dataset_without_files_has_no_download_to_ask_for(sandbox):
    client = Dataverse(sandbox.dataverse_url, sandbox.api_token)
    facts = discover(client, DV(sandbox).create_dataset(), sandbox.collection)
    assert facts["download_redirect"].value is None
    assert "no file yet" in facts["download_redirect"].shown


def test_a_server_without_direct_upload_says_so(make_sandbox):
    sb = make_sandbox("rdr", direct_upload=False)
    client = Dataverse(sb.dataverse_url, sb.api_token)
    facts = discover(client, DV(sb).create_dataset())
    assert facts["direct_upload"].value is False
    assert "Direct upload not supported" in facts["direct_upload"].shown
    assert facts["largest_file"].value is None


def test_check_server_needs_a_url(plain):
    results = dl.rdr_export(dataset=str(plain), check_server=True, result_renderer="disabled",
                            return_type="list", on_failure="ignore")
    assert [r["status"] for r in results] == ["error"]
    assert "--url" in results[0]["message"]


def test_a_refused_token_is_one_error(sandbox, plain, monkeypatch):
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", "not-a-token")
    results = check(plain, sandbox, pid=DV(sandbox).create_dataset())
    assert [r["status"] for r in results] == ["error"]
    assert "Bad API key" in results[0]["message"]


def test_an_export_after_the_check_caps_bundles_at_the_largest_file(make_sandbox, tmp_path,
                                                                   monkeypatch):
    sb = make_sandbox("rdr", max_file_size=200_000)
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    ds = make_bids_dataset(tmp_path / "bids", subjects=5, nifti_bytes=60_000)
    # without the facts, a cap above the server's limit fails at the upload
    first = rdr_export(ds, sb, max_bundle_size=10_000_000)
    assert any("too large" in r["message"] for r in first if r["status"] == "error")
    pid = next(r["pid"] for r in first if r.get("pid"))
    assert all(r["status"] == "ok" for r in check(ds, sb, pid=pid))
    # a cap above what the server takes: the export plans under the server's limit
    results = rdr_export(ds, sb, max_bundle_size=10_000_000)
    assert not [r for r in results if r["status"] == "error"], results
    assert any("bundles capped at" in r["message"] for r in results)
    bundles = json.loads((ds / ".datalad/rdr/manifest.json").read_text())["bundles"]
    assert bundles and all(b["size"] < 200_000 for b in bundles)


def test_where_only_curators_publish_the_export_submits_for_review(make_sandbox, tmp_path,
                                                                  monkeypatch):
    sb = make_sandbox("rdr", review=True)
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=20_000)
    first = rdr_export(ds, sb)
    assert not [r for r in first if r["status"] == "error"], first
    facts = facts_of(check(ds, sb))
    assert facts["may_publish"]["value"] is False
    assert "submits the draft for review" in facts["may_publish"]["message"]
    dl.save(dataset=str(ds), result_renderer="disabled")
    results = rdr_export(ds, sb, publish="major")
    assert not [r for r in results if r["status"] == "error"], results
    assert any("--publish submits the draft for review" in r["message"] for r in results)
    (submitted,) = [r for r in results if r["action"] == "rdr-publish"]
    assert submitted["status"] == "ok" and submitted["submitted_for_review"]
    assert "submitted for review instead" in submitted["message"]
    pid = json.loads((ds / ".datalad/rdr/manifest.json").read_text())["pid"]
    locks = DV(sb).call("GET", "/api/datasets/:persistentId/locks",
                        params={"persistentId": pid}).json()["data"]
    assert [lock["lockType"] for lock in locks] == ["InReview"]
    assert not [p for m, p in sb.dataverse.requests if p.endswith(":publish")]
    assert json.loads((ds / ".datalad/rdr/manifest.json").read_text())["doi"] is None

"""Embargo (issue 15): the record and its DOI public now, the bundles closed until a date.

Each test is a user's session against the sandbox, whose clock the tests move: a BIDS-like
dataset with ``access: embargoed`` is exported (and published), cloned from a RIA store, and
its members are got anonymously with ``datalad get`` through the ``rdr`` remote.
"""

import datetime as dt
from pathlib import Path

import datalad.api as dl
import pytest

from conftest import DV, rdr_export, run_as_user as run
from datalad_rdr import publish
from datalad_rdr.dataverse import Dataverse
from datalad_rdr.demo import make_bids_dataset
from datalad_rdr.discovery import discover

IMAGE = 60_000
CAP = 7 * IMAGE
T1W = "sub-01/anat/sub-01_T1w.nii.gz"
TODAY = dt.date.today()
UNTIL = TODAY + dt.timedelta(days=90)
REASON = "the paper is under review"


def embargoed(ds, until=UNTIL, after="open", reason=REASON):
    """The dataset's metadata file under an embargo, saved."""
    meta = Path(ds) / ".datalad/rdr/metadata.yaml"
    text = meta.read_text().replace("access: restricted\n", "")
    if after == "open":
        text = text.replace("opt_out_reason: privacy\n", "")
    meta.write_text(text + f"access: embargoed\nembargo_until: {until.isoformat()}\n"
                           f"embargo_reason: {reason}\nafter_embargo: {after}\n")
    dl.save(dataset=str(ds), message="embargo", result_renderer="disabled")
    return ds


def set_access(ds, block: str):
    meta = Path(ds) / ".datalad/rdr/metadata.yaml"
    lines = [line for line in meta.read_text().splitlines(keepends=True)
             if not line.startswith(("access:", "embargo_", "after_embargo:",
                                     "opt_out_reason:"))]
    meta.write_text("".join(lines) + block)
    dl.save(dataset=str(ds), message="access changed", result_renderer="disabled")


@pytest.fixture
def bids(tmp_path):
    return embargoed(make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE))


@pytest.fixture
def sb(make_sandbox, monkeypatch):
    sb = make_sandbox("rdr")
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    return sb


def export(ds, sb, **kw):
    kw.setdefault("max_bundle_size", CAP)
    return rdr_export(ds, sb, **kw)


def errors(results):
    return [r for r in results if r["status"] == "error"]


def pid_of(results):
    return next(r["pid"] for r in results if r.get("pid"))


def by_name(entries):
    return {(f"{e['directoryLabel']}/" if e.get("directoryLabel") else "") + e["label"]: e
            for e in entries}


def embargo_of(entry):
    return (entry["dataFile"].get("embargo") or {}).get("dateAvailable")


def access_field(sb, pid, version=":latest"):
    data = DV(sb).call("GET", f"/api/datasets/:persistentId/versions/{version}",
                       params={"persistentId": pid}).json()["data"]
    fields = {f["typeName"]: f for f in data["metadataBlocks"]["citation"]["fields"]}
    return {name: child["value"] for name, child in fields["access"]["value"].items()}


def uploads(sb, since=0):
    """The upload and registration requests the server had (since request ``since``)."""
    return [p for m, p in sb.dataverse.requests[since:]
            if p.endswith(("/uploadurls", "/addFiles", "/replaceFiles"))]


def test_published_under_embargo_the_doi_and_readme_are_public_the_bundles_open_on_the_date(
        sb, bids, tmp_path):
    store = tmp_path / "store"
    results = export(bids, sb, publish="major", ria_store=f"ria+file://{store}",
                     ria_alias="study")
    assert errors(results) == [], errors(results)
    pid = pid_of(results)
    embargo = [r for r in results if r["action"] == "rdr-embargo"]
    assert len(embargo) == 1 and f"under embargo until {UNTIL.isoformat()}" in \
        embargo[0]["message"]

    # the record: RDR's access rights and the end of the embargo; the DOI is released
    assert access_field(sb, pid, ":latest-published") == {
        "accessRights": "embargoed", "dateAvailable": UNTIL.isoformat()}
    published = [r for r in results if r["action"] == "rdr-publish"]
    assert published and published[0]["doi"] == pid[len("doi:"):]

    # the bundles under embargo (public from the date: after_embargo open), the README not
    files = by_name(DV(sb).files(pid, ":latest-published"))
    bundles = [n for n in files if n.endswith(".zip")]
    assert bundles
    for name in bundles:
        assert embargo_of(files[name]) == UNTIL.isoformat()
        assert files[name]["dataFile"]["embargo"]["reason"] == REASON
        assert files[name]["restricted"] is False
    assert embargo_of(files["README"]) is None
    readme = DV(sb, token="").call("GET", f"/api/access/datafile/"
                                          f"{files['README']['dataFile']['id']}")
    assert readme.status_code == 200 and readme.content == (bids / "README").read_bytes()

    # verify reports each bundle's embargo and its date
    rows = {Path(r["path"]).name: r for r in results
            if r["action"] == "rdr-verify" and r["type"] == "file"}
    for name in bundles:
        assert rows[name]["status"] == "ok"
        assert f"under embargo until {UNTIL.isoformat()}" in rows[name]["message"]
        assert rows[name]["verify"]["server_embargo"] == UNTIL.isoformat()
    table = next(r["table"] for r in results if r.get("table") and r["action"] == "rdr-verify")
    assert table.splitlines()[0].split()[5] == "embargo" and UNTIL.isoformat() in table
    again = dl.rdr_export(dataset=str(bids), verify_only=True, result_renderer="disabled",
                          return_type="list", on_failure="ignore")
    assert errors(again) == []
    assert any(f"under embargo until {UNTIL.isoformat()}" in r["message"] for r in again)

    # an anonymous get of a member: refused with the embargo, nothing got
    dl.clone(source=f"ria+file://{store}#~study", path=str(tmp_path / "clone"),
             result_renderer="disabled")
    clone = tmp_path / "clone"
    r = run(["datalad", "get", T1W], clone)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert f"under embargo until {UNTIL.isoformat()} ({REASON})" in out, out
    assert "no API token is set" not in out
    assert not (clone / T1W).exists()

    # on the date the server opens it: the same get works, anonymously
    sb.dataverse.clock.set(UNTIL)
    r = run(["datalad", "get", T1W], clone)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (clone / T1W).read_bytes() == (bids / T1W).read_bytes()


def test_an_embargo_beyond_the_servers_maximum_is_refused_before_any_upload(
        make_sandbox, tmp_path, monkeypatch):
    sb = make_sandbox("rdr", max_embargo_months=6)
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    until = TODAY + dt.timedelta(days=400)
    ds = embargoed(make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=IMAGE),
                   until=until)
    results = export(ds, sb)
    assert [r["status"] for r in results if r["status"] == "error"] == ["error"]
    message = errors(results)[0]["message"]
    assert f"'embargo_until' {until.isoformat()} is more than 6 months away, the server's " \
           f"maximum; end the embargo by" in message
    assert "nothing was uploaded" in message and "\n" not in message
    assert uploads(sb) == [] and sb.gate.stats.bytes_received == 0
    assert not [p for m, p in sb.dataverse.requests if m == "POST"]  # no draft either


def test_a_server_without_embargoes_refuses_before_any_upload(make_sandbox, tmp_path,
                                                              monkeypatch):
    sb = make_sandbox("rdr", max_embargo_months=0)
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    ds = embargoed(make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=IMAGE))
    message = errors(export(ds, sb))[0]["message"]
    assert "does not allow embargoes" in message and "'access: restricted'" in message
    assert uploads(sb) == [] and sb.gate.stats.bytes_received == 0


def test_changing_and_lifting_the_embargo_early_sends_no_byte(sb, bids):
    results = export(bids, sb)
    assert errors(results) == [], errors(results)
    pid = pid_of(results)
    bundles = [n for n in by_name(DV(sb).files(pid)) if n.endswith(".zip")]
    assert all(embargo_of(by_name(DV(sb).files(pid))[n]) == UNTIL.isoformat()
               for n in bundles)

    # an export of the same file keeps it: no embargo call at all
    before = len(sb.dataverse.requests)
    results = export(bids, sb)
    assert errors(results) == [] and not [r for r in results if r["action"] == "rdr-embargo"]
    assert not [p for m, p in sb.dataverse.requests[before:] if "embargo" in p]

    # a new date: changed on the server, nothing sent again
    sooner = TODAY + dt.timedelta(days=30)
    embargoed(bids, until=sooner)
    sb.gate.stats.reset()
    before = len(sb.dataverse.requests)
    results = export(bids, sb)
    assert errors(results) == [], errors(results)
    assert sb.gate.stats.bytes_received == 0 and uploads(sb, before) == []
    files = by_name(DV(sb).files(pid))
    assert {embargo_of(files[n]) for n in bundles} == {sooner.isoformat()}
    assert access_field(sb, pid)["dateAvailable"] == sooner.isoformat()

    # lifted early: the file says open, the re-export lifts it with 0 bytes re-sent
    set_access(bids, "access: open\n")
    before = len(sb.dataverse.requests)
    results = export(bids, sb)
    assert errors(results) == [], errors(results)
    assert any(r["action"] == "rdr-embargo" and "embargo lifted" in r["message"]
               for r in results)
    assert sb.gate.stats.bytes_received == 0 and uploads(sb, before) == []
    assert [p for m, p in sb.dataverse.requests[before:] if "embargo" in p] == [
        "/api/datasets/:persistentId/files/actions/:unset-embargo"]
    files = by_name(DV(sb).files(pid))
    assert {embargo_of(files[n]) for n in bundles} == {None}
    assert access_field(sb, pid) == {"accessRights": "open"}
    assert all(r["status"] == "ok" for r in results if r["action"] == "rdr-verify")


def test_lifting_the_embargo_of_published_bundles_says_who_can(sb, bids):
    results = export(bids, sb, publish="major")
    assert errors(results) == [], errors(results)
    pid = pid_of(results)
    set_access(bids, "access: open\n")
    sb.gate.stats.reset()
    results = export(bids, sb, publish="major")
    refused = [r for r in results if r["action"] == "rdr-embargo"]
    assert [r["status"] for r in refused] == ["error"]
    assert "only a superuser" in refused[0]["message"]
    assert "ask RDR support" in refused[0]["message"]
    # verify sees the embargo the file no longer has, so nothing is published
    assert any(r["action"] == "rdr-verify" and r["status"] == "error"
               and "to lift it" in r["message"] for r in results)
    assert any("not published" in r["message"] for r in errors(results))
    assert sb.gate.stats.bytes_received == 0
    files = by_name(DV(sb).files(pid, ":latest-published"))
    assert {embargo_of(e) for n, e in files.items() if n.endswith(".zip")} == {
        UNTIL.isoformat()}


def test_restricted_after_the_embargo_needs_the_opt_out_and_restricts_the_bundles(
        sb, tmp_path):
    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=IMAGE)
    set_access(ds, f"access: embargoed\nembargo_until: {UNTIL.isoformat()}\n"
                   f"embargo_reason: {REASON}\nafter_embargo: restricted\n")
    message = errors(export(ds, sb))[0]["message"]
    assert "'opt_out_reason' is missing; access is restricted after the embargo" in message
    assert uploads(sb) == []

    set_access(ds, f"access: embargoed\nembargo_until: {UNTIL.isoformat()}\n"
                   f"embargo_reason: {REASON}\nafter_embargo: restricted\n"
                   f"opt_out_reason: privacy\n")
    results = export(ds, sb)
    assert errors(results) == [], errors(results)
    pid = pid_of(results)
    for name, entry in by_name(DV(sb).files(pid)).items():
        if name.endswith(".zip"):
            assert entry["restricted"] is True and embargo_of(entry) == UNTIL.isoformat()
    assert access_field(sb, pid) == {"accessRights": "embargoed",
                                     "dateAvailable": UNTIL.isoformat(),
                                     "legitimateOptout": "privacy"}


@pytest.mark.parametrize("months, value, shown", [
    (36, 36, "36 months"), (0, 0, "embargoes are off"), (-1, -1, "no limit"),
    (None, 0, "embargoes are off")])
def test_check_server_reports_the_maximum_embargo(make_sandbox, months, value, shown):
    sb = make_sandbox("rdr", max_embargo_months=months)
    fact = discover(Dataverse(sb.dataverse_url, sb.api_token))["max_embargo_months"]
    assert fact.value == value and shown in fact.shown


def test_an_embargo_that_has_ended_is_left_alone(sb, bids):
    """After the date the metadata file says what the data are now (``access: open``);
    the ended embargo, still listed by the server, is neither lifted nor a mismatch."""
    set_access(bids, "access: open\n")
    results = export(bids, sb)
    assert errors(results) == [], errors(results)
    pid = pid_of(results)
    client = Dataverse(sb.dataverse_url, sb.api_token)
    bundles = {n: e["dataFile"]["id"] for n, e in by_name(DV(sb).files(pid)).items()
               if n.endswith(".zip")}
    yesterday = TODAY - dt.timedelta(days=1)
    sb.dataverse.clock.set(TODAY - dt.timedelta(days=100))  # when the embargo was set
    client.set_embargo(pid, list(bundles.values()), yesterday, REASON)
    publish.release(client, pid, "major")
    sb.dataverse.clock.set(None)

    before = len(sb.dataverse.requests)
    results = export(bids, sb)
    assert errors(results) == [], errors(results)
    assert not [p for m, p in sb.dataverse.requests[before:] if "embargo" in p]
    rows = {Path(r["path"]).name: r for r in results
            if r["action"] == "rdr-verify" and r["type"] == "file"}
    for name in bundles:
        assert rows[name]["status"] == "ok"
        assert f"embargo ended {yesterday.isoformat()}" in rows[name]["message"]
    some = next(iter(bundles.values()))
    assert DV(sb, token="").call("GET", f"/api/access/datafile/{some}").status_code == 200


def test_verify_finds_an_embargo_set_by_hand(sb, tmp_path):
    """An embargo on the README (set in the web UI) or lifted from a bundle: mismatches."""
    ds = embargoed(make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=IMAGE))
    pid = pid_of(export(ds, sb))
    files = by_name(DV(sb).files(pid))
    client = Dataverse(sb.dataverse_url, sb.api_token)
    client.set_embargo(pid, [files["README"]["dataFile"]["id"]], UNTIL, "by hand")
    client.unset_embargo(pid, [files["core.zip"]["dataFile"]["id"]])
    results = dl.rdr_export(dataset=str(ds), verify_only=True, result_renderer="disabled",
                            return_type="list", on_failure="ignore")
    rows = {Path(r["path"]).name: r for r in results
            if r["action"] == "rdr-verify" and r["type"] == "file"}
    assert rows["README"]["status"] == "error"
    assert "documents stay public" in rows["README"]["message"]
    assert rows["core.zip"]["status"] == "error"
    assert f"no embargo on the server, until {UNTIL.isoformat()} in the metadata file: " \
           f"rerun 'datalad rdr-export' to set it" in rows["core.zip"]["message"]
    # the rerun sets the bundle's embargo again, sending nothing
    sb.gate.stats.reset()
    export(ds, sb)
    assert embargo_of(by_name(DV(sb).files(pid))["core.zip"]) == UNTIL.isoformat()
    assert sb.gate.stats.bytes_received == 0

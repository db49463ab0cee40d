"""The sandbox's Zenodo (InvenioRDM) API, driven the way clients drive zenodo.org.

The proof of fidelity is StepUp RepRep's own ``srr-sync-zenodo`` running unchanged against the
sandbox (``test_stepup_*``); the direct API tests pin each status code and JSON shape of
../shared/reference/invenio-rdm-api.md.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from datalad_rdr.sandbox.invenio import ZenodoFault, InvenioSandbox, InvenioSettings
from datalad_rdr.sandbox.serve import ServedApp

TOKEN = "depositor-token"
OTHER_TOKEN = "someone-elses-token"
RDM = "application/vnd.inveniordm.v1+json"
METADATA = {
    "title": "Sandbox test dataset",
    "publication_date": "2026-01-15",
    "resource_type": {"id": "dataset"},
    "publisher": "Zenodo",
    "version": "1.0.0",
    "creators": [{"person_or_org": {"type": "personal", "family_name": "Doe",
                                    "given_name": "Jane",
                                    "identifiers": [{"scheme": "orcid",
                                                     "identifier": "0000-0002-1825-0097"}]},
                  "affiliations": [{"name": "KU Leuven"}]}],
    "subjects": [{"subject": "sandbox"}],
    "rights": [{"id": "cc-by-4.0"}],
}


@pytest.fixture(scope="module")
def s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}",
                          region_name="us-east-1", aws_access_key_id="sandbox",
                          aws_secret_access_key="sandbox")
    yield client
    server.stop()


class Zenodo:
    """A test client for the sandbox: the depositor's token, RDM JSON unless told."""

    def __init__(self, app: InvenioSandbox, url: str, s3, bucket: str):
        self.app, self.url, self.s3, self.bucket = app, url, s3, bucket
        self.api = f"{url}/api"

    def call(self, method, path, token=TOKEN, rdm=True, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if rdm:
            headers["Accept"] = RDM
        kw.setdefault("allow_redirects", False)
        return requests.request(method, self.api + path, headers=headers, **kw)

    def objects(self) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket)
        return [o["Key"] for o in listing.get("Contents", [])]

    def create(self, metadata=None, **body) -> dict:
        body.setdefault("files", {"enabled": True})
        r = self.call("POST", "/records", json={"metadata": metadata or METADATA, **body})
        assert r.status_code == 201, r.text
        return r.json()

    def upload(self, rid, key, content: bytes, commit=True) -> dict:
        r = self.call("POST", f"/records/{rid}/draft/files", json=[{"key": key}])
        assert r.status_code == 201, r.text
        r = self.call("PUT", f"/records/{rid}/draft/files/{key}/content", data=content)
        assert r.status_code == 200, r.text
        if commit:
            r = self.call("POST", f"/records/{rid}/draft/files/{key}/commit")
            assert r.status_code == 200, r.text
        return r.json()

    def publish(self, rid) -> dict:
        r = self.call("POST", f"/records/{rid}/draft/actions/publish")
        assert r.status_code == 202, r.text
        return r.json()

    def published_record(self) -> dict:
        rid = self.create()["id"]
        self.upload(rid, "data.csv", b"a,b\n1,2\n")
        return self.publish(rid)


def _start(s3, **settings):
    bucket = f"zenodo-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    settings.setdefault("tokens", {TOKEN: "1", OTHER_TOKEN: "2"})
    app = InvenioSandbox(InvenioSettings(**settings), s3, bucket)
    return app, ServedApp(app).start(), bucket


@pytest.fixture
def make_zenodo(s3):
    started = []

    def make(**settings) -> Zenodo:
        app, served, bucket = _start(s3, **settings)
        started.append(served)
        return Zenodo(app, served.url, s3, bucket)

    yield make
    for served in started:
        served.stop()


@pytest.fixture
def zenodo(make_zenodo):
    return make_zenodo()


# -- drafts, records and their two JSON shapes ---------------------------------------------
def test_create_draft_answers_rdm_json_with_partial_errors(zenodo):
    r = zenodo.call("POST", "/records", json={
        "metadata": {"title": "Only a title"}, "files": {"enabled": True}})
    assert r.status_code == 201
    assert r.headers["Content-Type"] == RDM
    draft = r.json()
    assert draft["id"].isdigit() and draft["parent"]["id"].isdigit()
    assert draft["is_published"] is False and draft["is_draft"] is True
    assert draft["files"]["enabled"] is True
    assert draft["pids"] == {}
    assert draft["versions"] == {"index": 1, "is_latest": False, "is_latest_draft": True}
    assert draft["links"]["self"].endswith(f"/api/records/{draft['id']}/draft")
    assert draft["links"]["publish"].endswith("/draft/actions/publish")
    assert r.headers["ETag"] == f'"{draft["revision_id"]}"'
    missing = {e["field"] for e in draft["errors"]}
    assert {"metadata.publication_date", "metadata.creators",
            "metadata.resource_type"} <= missing


def test_update_keeps_the_draft_and_reports_errors_in_a_200(zenodo):
    draft = zenodo.create()
    rid = draft["id"]
    bad = {**METADATA, "publication_date": "15 January 2026"}
    r = zenodo.call("PUT", f"/records/{rid}/draft",
                    json={"metadata": bad, "files": {"enabled": True}})
    assert r.status_code == 200
    errors = {e["field"]: e["messages"] for e in r.json()["errors"]}
    assert errors["metadata.publication_date"] == ["Please provide a valid date or interval."]
    assert errors["files.enabled"] == ["Missing uploaded files."]
    assert "publication_date" not in r.json()["metadata"]  # invalid fields are not saved
    assert r.json()["metadata"]["title"] == METADATA["title"]
    # optimistic concurrency
    r = zenodo.call("PUT", f"/records/{rid}/draft", json={"metadata": METADATA},
                    headers={"If-Match": '"1"'})
    assert r.status_code == 412


def test_embargo_is_checked_kept_and_shown(zenodo):
    """invenio-rdm-records' EmbargoSchema: an active embargo must end in the future."""
    import datetime as dt

    rid = zenodo.create()["id"]
    past = {"record": "public", "files": "restricted",
            "embargo": {"active": True, "until": "2020-01-01", "reason": "r"}}
    r = zenodo.call("PUT", f"/records/{rid}/draft",
                    json={"metadata": METADATA, "access": past})
    errors = {e["field"]: e["messages"] for e in r.json()["errors"]}
    assert errors["access.embargo.until"] == ["Embargo end date must be set to a future date."]
    assert r.json()["access"]["embargo"] == {"active": False, "reason": None}
    until = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    future = {**past, "embargo": {"active": True, "until": until, "reason": "r"}}
    r = zenodo.call("PUT", f"/records/{rid}/draft",
                    json={"metadata": METADATA, "access": future})
    assert "errors" not in r.json() or not any(
        e["field"].startswith("access") for e in r.json()["errors"])
    access = zenodo.call("GET", f"/records/{rid}/draft").json()["access"]
    assert access["embargo"] == future["embargo"] and access["status"] == "embargoed"


def test_without_the_rdm_accept_header_zenodo_answers_legacy_json(zenodo):
    rid = zenodo.create()["id"]
    zenodo.upload(rid, "data.csv", b"a,b\n")
    # Accept given as a query parameter (as StepUp <= 3.1 did) is not a header
    r = zenodo.call("GET", f"/records/{rid}/draft", rdm=False,
                    params={"Accept": RDM})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    legacy = r.json()
    assert legacy["id"] == int(rid) and legacy["recid"] == rid
    assert legacy["conceptrecid"] == zenodo.call("GET", f"/records/{rid}/draft").json()[
        "parent"]["id"]
    assert legacy["submitted"] is False and legacy["state"] == "unsubmitted"
    assert legacy["status"] == "draft"
    assert isinstance(legacy["files"], list)
    assert legacy["files"][0]["key"] == "data.csv"
    assert legacy["files"][0]["checksum"] == "md5:" + hashlib.md5(b"a,b\n").hexdigest()
    md = legacy["metadata"]
    assert md["creators"] == [{"name": "Doe, Jane", "affiliation": "KU Leuven",
                               "orcid": "0000-0002-1825-0097"}]
    assert md["resource_type"] == {"type": "dataset", "title": "Dataset"}
    assert md["keywords"] == ["sandbox"] and md["license"] == {"id": "cc-by-4.0"}
    assert md["access_right"] == "open" and md["version"] == "1.0.0"
    assert "is_published" not in legacy and "errors" not in legacy
    # the files resource is not overridden: always RDM file JSON
    r = zenodo.call("GET", f"/records/{rid}/draft/files", rdm=False)
    assert isinstance(r.json()["entries"], list)


def test_zenodo_refuses_metadata_only_and_restricted_records(zenodo):
    r = zenodo.call("POST", "/records", json={
        "metadata": METADATA, "files": {"enabled": False},
        "access": {"record": "restricted", "files": "public"}})
    assert r.status_code == 201
    draft = r.json()
    errors = {e["field"]: e["messages"] for e in draft["errors"]}
    assert errors["files.enabled"] == ["You don't have permissions to manage files options."]
    assert "access.record" in errors
    assert draft["files"]["enabled"] is True and draft["access"]["record"] == "public"


def test_bad_bodies(zenodo):
    r = zenodo.call("POST", "/records", data="{not json",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"status": 400,
                        "message": "Unable to decode JSON data in request body."}
    r = zenodo.call("POST", "/records", data='{"metadata": {}}',
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = zenodo.call("GET", "/records/999999999/draft")
    assert r.status_code == 404
    assert r.json()["message"] == "The persistent identifier does not exist."


# -- files ------------------------------------------------------------------------------------
def test_three_step_upload_list_download_and_delete(zenodo):
    rid = zenodo.create()["id"]
    content = b"x" * 1000 + b"\n"
    r = zenodo.call("POST", f"/records/{rid}/draft/files", json=[{"key": "big.bin"},
                                                                 {"key": "notes.txt"}])
    assert r.status_code == 201
    entries = r.json()["entries"]
    assert [(e["key"], e["status"]) for e in entries] == [("big.bin", "pending"),
                                                          ("notes.txt", "pending")]
    assert entries[0]["links"]["commit"].endswith("/draft/files/big.bin/commit")
    r = zenodo.call("PUT", f"/records/{rid}/draft/files/big.bin/content", data=content,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.json()["status"] == "pending" and "checksum" not in r.json()
    # a pending file shows in the draft, without checksum
    entry = zenodo.call("GET", f"/records/{rid}/draft").json()["files"]["entries"]["big.bin"]
    assert "checksum" not in entry
    r = zenodo.call("POST", f"/records/{rid}/draft/files/big.bin/commit")
    assert r.status_code == 200
    committed = r.json()
    assert committed["status"] == "completed"
    assert committed["checksum"] == "md5:" + hashlib.md5(content).hexdigest()
    assert committed["size"] == len(content)
    for name in ("file_id", "version_id", "bucket_id", "mimetype", "storage_class"):
        assert name in committed
    # listing: entries is a list here, a dict keyed by name in the record
    listing = zenodo.call("GET", f"/records/{rid}/draft/files").json()
    assert [e["key"] for e in listing["entries"]] == ["big.bin", "notes.txt"]
    files = zenodo.call("GET", f"/records/{rid}/draft").json()["files"]
    assert files["entries"]["big.bin"]["checksum"] == committed["checksum"]
    assert files["count"] == 2 and files["total_bytes"] == len(content)
    # download through the API, bytes from S3
    r = zenodo.call("GET", f"/records/{rid}/draft/files/big.bin/content")
    assert r.status_code == 200 and r.content == content
    assert r.headers["ETag"] == f'"{committed["checksum"]}"'
    assert len(zenodo.objects()) == 1
    r = zenodo.call("DELETE", f"/records/{rid}/draft/files/big.bin")
    assert r.status_code == 204
    assert zenodo.objects() == []
    r = zenodo.call("DELETE", f"/records/{rid}/draft/files")
    assert r.status_code == 204
    assert zenodo.call("GET", f"/records/{rid}/draft/files").json()["entries"] == []


def test_file_errors(zenodo):
    rid = zenodo.create()["id"]
    zenodo.upload(rid, "a.txt", b"a")
    r = zenodo.call("POST", f"/records/{rid}/draft/files", json=[{"key": "a.txt"}])
    assert r.status_code == 400
    assert r.json() == {"status": 400, "message": "File with key a.txt already exists."}
    r = zenodo.call("POST", f"/records/{rid}/draft/files", json={"key": "b.txt"})
    assert r.status_code == 400
    assert r.json()["errors"] == [{"field": "0._schema", "messages": ["Invalid input type."]}]
    r = zenodo.call("POST", f"/records/{rid}/draft/files", json=[])
    assert r.status_code == 400
    r = zenodo.call("PUT", f"/records/{rid}/draft/files/nope.txt/content", data=b"zz")
    assert r.status_code == 404
    assert r.json()["message"] == f"Record '{rid}' has no file 'nope.txt'."
    zenodo.call("POST", f"/records/{rid}/draft/files", json=[{"key": "b.txt"}])
    r = zenodo.call("POST", f"/records/{rid}/draft/files/b.txt/commit")
    assert r.status_code == 500  # committing before any content: a bare Exception upstream


def test_empty_and_multipart_sized_files(make_zenodo):
    zenodo = make_zenodo()
    rid = zenodo.create()["id"]
    assert zenodo.upload(rid, "empty", b"")["checksum"] == \
        "md5:d41d8cd98f00b204e9800998ecf8427e"
    content = os.urandom(12 * 1024 * 1024)  # above boto3's multipart threshold
    committed = zenodo.upload(rid, "random.bin", content)
    assert committed["checksum"] == "md5:" + hashlib.md5(content).hexdigest()
    r = zenodo.call("GET", f"/records/{rid}/draft/files/random.bin/content", stream=True)
    assert hashlib.md5(r.raw.read()).hexdigest() == hashlib.md5(content).hexdigest()


# -- publishing -------------------------------------------------------------------------------
def test_publish_validates_strictly(zenodo):
    rid = zenodo.create()["id"]
    r = zenodo.call("POST", f"/records/{rid}/draft/actions/publish")
    assert r.status_code == 400
    assert r.json()["message"] == "A validation error occurred."
    assert r.json()["errors"][0]["field"] == "files.enabled"
    zenodo.upload(rid, "data.csv", b"1,2\n", commit=False)
    r = zenodo.call("POST", f"/records/{rid}/draft/actions/publish")
    assert r.json()["errors"] == [{"field": "files", "messages": [
        "One or more files have not completed their transfer, please wait."]}]
    zenodo.call("POST", f"/records/{rid}/draft/files/data.csv/commit")
    no_date = {k: v for k, v in METADATA.items() if k not in ("publication_date",
                                                             "publisher")}
    zenodo.call("PUT", f"/records/{rid}/draft", json={"metadata": no_date})
    r = zenodo.call("POST", f"/records/{rid}/draft/actions/publish")
    assert r.status_code == 400
    assert r.json()["errors"] == [{"field": "metadata.publication_date",
                                   "messages": ["Missing data for required field."]}]
    zenodo.call("PUT", f"/records/{rid}/draft",
                json={"metadata": {**no_date, "publication_date": "2026"}})
    r = zenodo.call("POST", f"/records/{rid}/draft/actions/publish")
    assert r.json()["errors"][0]["field"] == "metadata.publisher"
    zenodo.call("PUT", f"/records/{rid}/draft", json={"metadata": METADATA})
    record = zenodo.publish(rid)
    parent = record["parent"]["id"]
    assert record["is_published"] is True and record["is_draft"] is False
    assert record["pids"]["doi"]["identifier"] == f"10.5281/zenodo.{rid}"
    assert record["parent"]["pids"]["doi"]["identifier"] == f"10.5281/zenodo.{parent}"
    assert record["versions"]["is_latest"] is True
    # the draft is gone, the record is readable by anyone, in both shapes
    assert zenodo.call("GET", f"/records/{rid}/draft").status_code == 404
    legacy = zenodo.call("GET", f"/records/{rid}", token=None, rdm=False).json()
    assert legacy["submitted"] is True and legacy["state"] == "done"
    assert legacy["doi"] == f"10.5281/zenodo.{rid}"
    assert legacy["conceptdoi"] == f"10.5281/zenodo.{parent}"
    assert legacy["doi_url"] == f"https://doi.org/10.5281/zenodo.{rid}"
    r = zenodo.call("GET", f"/records/{rid}/files/data.csv/content", token=None)
    assert r.content == b"1,2\n"


def test_a_reserved_doi_is_the_one_published(zenodo):
    rid = zenodo.create()["id"]
    r = zenodo.call("POST", f"/records/{rid}/draft/pids/doi")
    assert r.status_code == 201
    assert r.json()["pids"]["doi"]["identifier"] == f"10.5281/zenodo.{rid}"
    r = zenodo.call("POST", f"/records/{rid}/draft/pids/doi")
    assert r.status_code == 400
    assert r.json()["message"] == "A PID already exists for type doi"
    zenodo.upload(rid, "data.csv", b"1\n")
    assert zenodo.publish(rid)["pids"]["doi"]["identifier"] == f"10.5281/zenodo.{rid}"


def test_unpublished_records_are_not_registered(zenodo):
    rid = zenodo.create()["id"]
    r = zenodo.call("GET", f"/records/{rid}")
    assert r.status_code == 404
    assert r.json()["message"] == "The persistent identifier is not registered."


def test_files_of_a_published_record_are_locked(zenodo):
    record = zenodo.published_record()
    rid = record["id"]
    r = zenodo.call("POST", f"/records/{rid}/draft")
    assert r.status_code == 201
    draft = r.json()
    assert draft["is_published"] is True and draft["is_draft"] is True
    assert list(draft["files"]["entries"]) == ["data.csv"]
    assert zenodo.call("POST", f"/records/{rid}/draft").status_code == 201  # same draft
    r = zenodo.call("POST", f"/records/{rid}/draft/files", json=[{"key": "more.csv"}])
    assert r.status_code == 201  # the init passes; the bytes are refused
    r = zenodo.call("PUT", f"/records/{rid}/draft/files/more.csv/content", data=b"x")
    assert r.status_code == 403
    assert r.json() == {"status": 403, "message": "Bucket is locked for modifications."}
    r = zenodo.call("DELETE", f"/records/{rid}/draft/files/data.csv")
    assert r.status_code == 403
    # discarding the edit keeps the published record
    assert zenodo.call("DELETE", f"/records/{rid}/draft").status_code == 204
    assert zenodo.call("GET", f"/records/{rid}").status_code == 200
    # a metadata-only edit republishes with the same DOI and a newer revision
    zenodo.call("POST", f"/records/{rid}/draft")
    r = zenodo.call("PUT", f"/records/{rid}/draft",
                    json={"metadata": {**METADATA, "title": "A better title"},
                          "files": {"enabled": True}})
    assert r.status_code == 200 and "errors" not in r.json()
    again = zenodo.publish(rid)
    assert again["metadata"]["title"] == "A better title"
    assert again["pids"]["doi"] == record["pids"]["doi"]
    assert again["revision_id"] > record["revision_id"]
    assert list(again["files"]["entries"]) == ["data.csv"]
    assert len(zenodo.objects()) == 1


def test_new_version_is_idempotent_and_starts_without_files(zenodo):
    record = zenodo.published_record()
    rid = record["id"]
    r = zenodo.call("POST", f"/records/{rid}/versions")
    assert r.status_code == 201
    new = r.json()
    assert new["id"] != rid and new["parent"]["id"] == record["parent"]["id"]
    assert new["versions"]["index"] == 2 and new["is_published"] is False
    assert new["files"]["entries"] == {} and new["files"]["enabled"] is True
    assert "version" not in new["metadata"]
    assert "publication_date" not in new["metadata"]
    assert new["metadata"]["title"] == METADATA["title"]
    assert new["status"] == "new_version_draft"
    assert zenodo.call("POST", f"/records/{rid}/versions").json()["id"] == new["id"]
    # an unpublished draft has no versions to make
    first_draft = zenodo.create()["id"]
    assert zenodo.call("POST", f"/records/{first_draft}/versions").status_code == 404


def test_files_import_needs_an_empty_draft(zenodo):
    record = zenodo.published_record()
    new_id = zenodo.call("POST", f"/records/{record['id']}/versions").json()["id"]
    r = zenodo.call("POST", f"/records/{new_id}/draft/actions/files-import")
    assert r.status_code == 201
    entries = r.json()["entries"]
    assert [(e["key"], e["status"]) for e in entries] == [("data.csv", "completed")]
    assert entries[0]["checksum"] == record["files"]["entries"]["data.csv"]["checksum"]
    assert len(zenodo.objects()) == 1  # the import links the bytes, it copies nothing
    r = zenodo.call("POST", f"/records/{new_id}/draft/actions/files-import")
    assert r.status_code == 400
    assert r.json()["errors"] == [{"field": "files.enabled",
                                   "messages": ["Please remove all files first."]}]
    first_draft = zenodo.create()["id"]
    r = zenodo.call("POST", f"/records/{first_draft}/draft/actions/files-import")
    assert r.status_code == 404
    # replace a file in the new version; the old version keeps its bytes
    zenodo.call("DELETE", f"/records/{new_id}/draft/files/data.csv")
    zenodo.upload(new_id, "data.csv", b"a,b\n3,4\n")
    zenodo.call("PUT", f"/records/{new_id}/draft",
                json={"metadata": {**METADATA, "version": "2.0.0"}})
    v2 = zenodo.publish(new_id)
    assert v2["pids"]["doi"]["identifier"] == f"10.5281/zenodo.{new_id}"
    assert v2["parent"]["pids"] == record["parent"]["pids"]  # the concept DOI stays
    old = zenodo.call("GET", f"/records/{record['id']}/files/data.csv/content")
    assert old.content == b"a,b\n1,2\n"
    assert len(zenodo.objects()) == 2


def test_versions_latest_is_a_301(zenodo):
    v1 = zenodo.published_record()
    v2_id = zenodo.call("POST", f"/records/{v1['id']}/versions").json()["id"]
    # while v2 is a draft, the latest is v1
    r = zenodo.call("GET", f"/records/{v1['id']}/versions/latest")
    assert r.status_code == 301 and r.headers["Location"].endswith(f"/records/{v1['id']}")
    zenodo.upload(v2_id, "data.csv", b"new\n")
    zenodo.call("PUT", f"/records/{v2_id}/draft", json={"metadata": METADATA})
    zenodo.publish(v2_id)
    for start in (v1["id"], v1["parent"]["id"]):
        r = zenodo.call("GET", f"/records/{start}/versions/latest", token=None)
        assert r.status_code == 301
        assert r.json() == {"status": 301, "message": "Redirecting...",
                            "location": f"{zenodo.api}/records/{v2_id}"}
        assert r.headers["Location"] == f"{zenodo.api}/records/{v2_id}"
    followed = zenodo.call("GET", f"/records/{v1['id']}/versions/latest",
                           allow_redirects=True)
    assert followed.status_code == 200 and followed.json()["id"] == v2_id
    versions = zenodo.call("GET", f"/records/{v1['id']}/versions").json()
    assert versions["hits"]["total"] == 2
    assert [(h["id"], h["versions"]["is_latest"]) for h in versions["hits"]["hits"]] == \
        [(v2_id, True), (v1["id"], False)]
    old = zenodo.call("GET", f"/records/{v1['id']}", rdm=False).json()
    assert old["metadata"]["relations"]["version"][0]["is_last"] is False


def test_discarding_a_new_draft_removes_it_and_its_bytes(zenodo):
    rid = zenodo.create()["id"]
    zenodo.upload(rid, "a.txt", b"aaa")
    assert zenodo.call("DELETE", f"/records/{rid}/draft").status_code == 204
    assert zenodo.call("GET", f"/records/{rid}/draft").status_code == 404
    assert zenodo.objects() == []


def test_user_records_lists_drafts_and_records(zenodo):
    published = zenodo.published_record()
    draft = zenodo.create()
    zenodo.call("POST", "/records", token=OTHER_TOKEN, json={"metadata": METADATA})
    r = zenodo.call("GET", "/user/records", params={"size": 100})
    assert r.status_code == 200
    hits = r.json()["hits"]["hits"]
    assert {(h["id"], h["is_published"]) for h in hits} == {
        (published["id"], True), (draft["id"], False)}
    legacy = zenodo.call("GET", "/user/records", rdm=False).json()
    assert {h["submitted"] for h in legacy["hits"]["hits"]} == {True, False}
    assert zenodo.call("GET", "/user/records", params={"size": 101}).status_code == 400


# -- who may do what -----------------------------------------------------------------------
def test_tokens(zenodo):
    r = zenodo.call("POST", "/records", token=None, json={"metadata": METADATA})
    assert r.status_code == 403
    assert r.json() == {"status": 403, "message": "Permission denied."}
    assert zenodo.call("POST", "/records", token="wrong",
                       json={"metadata": METADATA}).status_code == 403
    # the access_token query parameter works as the header does
    r = requests.post(f"{zenodo.api}/records", params={"access_token": TOKEN},
                      json={"metadata": METADATA})
    assert r.status_code == 201
    rid = r.json()["id"]
    assert zenodo.call("GET", f"/records/{rid}/draft", token=OTHER_TOKEN).status_code == 403
    assert zenodo.call("GET", f"/records/{rid}/draft", token=None).status_code == 403
    published = zenodo.published_record()
    assert zenodo.call("GET", f"/records/{published['id']}", token=None).status_code == 200
    assert zenodo.call("POST", f"/records/{published['id']}/draft",
                       token=OTHER_TOKEN).status_code == 403


# -- limits -------------------------------------------------------------------------------------
def test_file_count_limit(make_zenodo):
    zenodo = make_zenodo(max_files=3)
    rid = zenodo.create()["id"]
    r = zenodo.call("POST", f"/records/{rid}/draft/files",
                    json=[{"key": f"{i}.txt"} for i in range(4)])
    assert r.status_code == 400
    assert r.json()["message"] == ("Uploading selected files will result in exceeding "
                                   "the max amount per record.")
    r = zenodo.call("POST", f"/records/{rid}/draft/files",
                    json=[{"key": f"{i}.txt"} for i in range(3)])
    assert r.status_code == 201
    r = zenodo.call("POST", f"/records/{rid}/draft/files", json=[{"key": "more.txt"}])
    assert r.status_code == 400


def test_record_size_limit(make_zenodo):
    zenodo = make_zenodo(max_record_bytes=1000, max_file_bytes=800)
    rid = zenodo.create()["id"]
    zenodo.upload(rid, "a.bin", b"a" * 600)
    zenodo.call("POST", f"/records/{rid}/draft/files",
                json=[{"key": "b.bin"}, {"key": "c.bin"}])
    # known in advance from Content-Length
    r = zenodo.call("PUT", f"/records/{rid}/draft/files/b.bin/content", data=b"b" * 500)
    assert r.status_code == 400
    assert r.json() == {"status": 400, "message": "Bucket quota exceeded."}
    # found while streaming a chunked upload without Content-Length
    r = zenodo.call("PUT", f"/records/{rid}/draft/files/b.bin/content",
                    data=iter([b"b" * 300, b"b" * 300]))
    assert r.status_code == 400 and r.json()["message"] == "Bucket quota exceeded."
    assert len(zenodo.objects()) == 1  # the partial object was removed
    zenodo.call("DELETE", f"/records/{rid}/draft/files/a.bin")
    r = zenodo.call("PUT", f"/records/{rid}/draft/files/c.bin/content", data=b"c" * 900)
    assert r.json()["message"] == "Maximum file size exceeded."
    r = zenodo.call("PUT", f"/records/{rid}/draft/files/c.bin/content",
                    data=iter([b"c" * 400] * 2))
    assert r.status_code == 200


# -- the sandbox's own interface: faults and counters ------------------------------------------
def test_injected_429_and_504(zenodo):
    r = requests.post(f"{zenodo.url}/_sandbox/faults", json={
        "method": "POST", "path": r"^/api/records$", "status": 429, "count": 2,
        "retry_after": 7})
    assert r.status_code == 201
    for _ in range(2):
        r = zenodo.call("POST", "/records", json={"metadata": METADATA})
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "7"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert r.json()["status"] == 429
    assert zenodo.call("POST", "/records", json={"metadata": METADATA}).status_code == 201
    assert requests.get(f"{zenodo.url}/_sandbox/faults").json() == []

    rid = zenodo.create()["id"]
    zenodo.call("POST", f"/records/{rid}/draft/files", json=[{"key": "x.bin"}])
    zenodo.app.inject(ZenodoFault("PUT", r"/content$", status=504))
    r = zenodo.call("PUT", f"/records/{rid}/draft/files/x.bin/content", data=b"x" * 5000)
    assert r.status_code == 504
    assert r.headers["Content-Type"].startswith("text/html")
    assert "504 Gateway Time-out" in r.text
    with pytest.raises(requests.JSONDecodeError):
        r.json()
    assert zenodo.objects() == []  # "before": the request never reached the app


def test_a_504_after_the_work_was_done(zenodo):
    rid = zenodo.create()["id"]
    zenodo.upload(rid, "data.csv", b"1\n")
    zenodo.app.inject(ZenodoFault("POST", r"/actions/publish$", status=504, when="after"))
    r = zenodo.call("POST", f"/records/{rid}/draft/actions/publish")
    assert r.status_code == 504
    assert zenodo.call("GET", f"/records/{rid}").json()["is_published"] is True


def test_stats_count_requests_and_uploaded_bytes(zenodo):
    requests.delete(f"{zenodo.url}/_sandbox/stats")
    rid = zenodo.create()["id"]
    zenodo.upload(rid, "a.bin", b"a" * 1234)
    zenodo.call("GET", f"/records/{rid}/draft")
    stats = requests.get(f"{zenodo.url}/_sandbox/stats").json()
    assert stats["by_method"] == {"POST": 3, "PUT": 1, "GET": 1}
    assert stats["requests"] == 5 and stats["changing"] == 4
    assert stats["upload_bytes"] == 1234
    assert stats["by_route"]["PUT upload_content"] == 1
    assert zenodo.app.stats.upload_bytes == 1234


# -- StepUp RepRep's own client against the sandbox -----------------------------------------
STEPUP_CONFIG = """\
path_record_id: .zenodo-record-id.txt
endpoint: {endpoint}
metadata:
  title: 'Sandbox test dataset'
  version: '{version}'
  resource_type: dataset
  publisher: Zenodo
  license: cc-by-4.0
  keywords: [sandbox, stepup]
  description: 'Data for testing the sandbox.'
  creators:
    - family_name: Doe
      given_name: Jane
      identifiers:
        orcid: '0000-0002-1825-0097'
      affiliations:
        - name: KU Leuven
access:
  record: public
  files: public
custom_fields:
  code_repository: https://github.com/example/datalad-rdr
"""


def _write(path, text: bytes | str):
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode) as fh:
        fh.write(text)


def _md5(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.md5(fh.read()).hexdigest()


def _srr_sync_zenodo(workdir, *args, env=None):
    """Run StepUp's ``srr-sync-zenodo`` (from this environment) in ``workdir``."""
    exe = os.path.join(os.path.dirname(sys.executable), "srr-sync-zenodo")
    return subprocess.run([exe, *args], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "REPREP_ZENODO_TOKEN": TOKEN, **(env or {})},
                          timeout=120)


def _online_files(zenodo, rid) -> dict:
    draft = zenodo.call("GET", f"/records/{rid}/draft")
    record = draft if draft.status_code == 200 else zenodo.call("GET", f"/records/{rid}")
    return {k: (e["size"], e["checksum"]) for k, e in
            record.json()["files"]["entries"].items()}


def _local_files(workdir, names) -> dict:
    return {n: (os.path.getsize(workdir / n), "md5:" + _md5(workdir / n)) for n in names}


def test_stepup_sync_zenodo_drafts_uploads_and_resyncs(zenodo, tmp_path):
    pytest.importorskip("stepup.reprep.sync_zenodo")
    config = tmp_path / "zenodo.yaml"
    _write(config, STEPUP_CONFIG.format(endpoint=zenodo.api, version="1.0.0"))
    _write(tmp_path / "data.csv", "x,y\n1,2\n3,4\n")
    _write(tmp_path / "notes.txt", "first notes\n")
    _write(tmp_path / "blob.bin", os.urandom(300_000))

    run = _srr_sync_zenodo(tmp_path, "zenodo.yaml", "data.csv", "notes.txt", "blob.bin")
    assert run.returncode == 0, run.stdout + run.stderr
    rid = (tmp_path / ".zenodo-record-id.txt").read_text().strip()
    assert _online_files(zenodo, rid) == _local_files(tmp_path, ["data.csv", "notes.txt",
                                                                 "blob.bin"])
    draft = zenodo.call("GET", f"/records/{rid}/draft").json()
    md = draft["metadata"]
    assert md["title"] == "Sandbox test dataset" and md["version"] == "1.0.0"
    assert md["creators"][0]["person_or_org"]["identifiers"] == [
        {"scheme": "orcid", "identifier": "0000-0002-1825-0097"}]
    assert md["rights"] == [{"id": "cc-by-4.0"}]
    assert [s["subject"] for s in md["subjects"]] == ["sandbox", "stepup"]
    assert draft["custom_fields"] == {"code:codeRepository":
                                      "https://github.com/example/datalad-rdr"}
    # StepUp sends the order and preview again once the files exist
    assert draft["files"]["order"] == ["data.csv", "notes.txt", "blob.bin"]
    assert draft["files"]["default_preview"] == "data.csv"
    assert "errors" not in zenodo.call("PUT", f"/records/{rid}/draft", json={
        "metadata": md, "files": draft["files"]}).json()

    # change a file, drop one, add one: only what changed moves
    _write(tmp_path / "notes.txt", "second notes, longer\n")
    _write(tmp_path / "extra.txt", "extra\n")
    requests.delete(f"{zenodo.url}/_sandbox/stats")
    run = _srr_sync_zenodo(tmp_path, "zenodo.yaml", "data.csv", "notes.txt", "extra.txt")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / ".zenodo-record-id.txt").read_text().strip() == rid
    assert _online_files(zenodo, rid) == _local_files(tmp_path, ["data.csv", "notes.txt",
                                                                 "extra.txt"])
    stats = zenodo.app.stats
    assert stats.upload_bytes == (tmp_path / "notes.txt").stat().st_size + \
        (tmp_path / "extra.txt").stat().st_size
    assert stats.routes["DELETE delete_file"] == 2  # blob.bin gone, notes.txt replaced
    assert len(zenodo.objects()) == 3


def test_stepup_republishes_and_makes_a_new_version(zenodo, tmp_path):
    pytest.importorskip("stepup.reprep.sync_zenodo")
    config = tmp_path / "zenodo.yaml"
    _write(config, STEPUP_CONFIG.format(endpoint=zenodo.api, version="1.0.0"))
    _write(tmp_path / "data.csv", "x,y\n1,2\n")
    run = _srr_sync_zenodo(tmp_path, "zenodo.yaml", "data.csv")
    assert run.returncode == 0, run.stdout + run.stderr
    v1 = (tmp_path / ".zenodo-record-id.txt").read_text().strip()
    published = zenodo.publish(v1)  # StepUp leaves publishing to the user

    # same version: StepUp checks the md5s, then edits and republishes the metadata
    run = _srr_sync_zenodo(tmp_path, "zenodo.yaml", "data.csv")
    assert run.returncode == 0, run.stdout + run.stderr
    again = zenodo.call("GET", f"/records/{v1}").json()
    assert again["revision_id"] > published["revision_id"]
    assert again["pids"] == published["pids"]
    assert again["metadata"]["publication_date"] == published["metadata"][
        "publication_date"]
    assert zenodo.call("GET", f"/records/{v1}/draft").status_code == 404

    # same version but a changed file: refused by the client, nothing changes online
    _write(tmp_path / "data.csv", "x,y\n1,2\n5,6\n")
    run = _srr_sync_zenodo(tmp_path, "zenodo.yaml", "data.csv")
    assert run.returncode == 1 and "MD5 checksum mismatch" in run.stderr

    # a new version: a new draft with the local files, the concept stays
    _write(config, STEPUP_CONFIG.format(endpoint=zenodo.api, version="1.1.0"))
    run = _srr_sync_zenodo(tmp_path, "zenodo.yaml", "data.csv")
    assert run.returncode == 0, run.stdout + run.stderr
    v2 = (tmp_path / ".zenodo-record-id.txt").read_text().strip()
    assert v2 != v1
    draft = zenodo.call("GET", f"/records/{v2}/draft").json()
    assert draft["parent"]["id"] == published["parent"]["id"]
    assert draft["metadata"]["version"] == "1.1.0"
    assert _online_files(zenodo, v2) == _local_files(tmp_path, ["data.csv"])
    v2_record = zenodo.publish(v2)
    assert v2_record["parent"]["pids"] == published["parent"]["pids"]
    latest = zenodo.call("GET", f"/records/{v1}/versions/latest")
    assert latest.headers["Location"].endswith(f"/records/{v2}")

    # a stale checkout (record id file pointing at v1) is caught by StepUp's version check
    _write(tmp_path / ".zenodo-record-id.txt", f"{v1}\n")
    run = _srr_sync_zenodo(tmp_path, "zenodo.yaml", "data.csv")
    assert run.returncode == 1 and "not the latest published version" in run.stderr


def test_stepup_clean_removes_only_drafts(zenodo, tmp_path):
    pytest.importorskip("stepup.reprep.sync_zenodo")
    published = zenodo.published_record()
    _write(tmp_path / "zenodo.yaml", STEPUP_CONFIG.format(endpoint=zenodo.api,
                                                          version="1.0.0"))
    _write(tmp_path / "data.csv", "1\n")
    assert _srr_sync_zenodo(tmp_path, "zenodo.yaml", "data.csv").returncode == 0
    first = (tmp_path / ".zenodo-record-id.txt").read_text().strip()
    run = _srr_sync_zenodo(tmp_path, "zenodo.yaml", "data.csv", "--clean")
    assert run.returncode == 0, run.stdout + run.stderr
    second = (tmp_path / ".zenodo-record-id.txt").read_text().strip()
    assert second != first
    assert zenodo.call("GET", f"/records/{first}/draft").status_code == 404
    assert zenodo.call("GET", f"/records/{published['id']}").status_code == 200


LEGACY_STEPUP = os.environ.get("DATALAD_RDR_STEPUP_LEGACY")


@pytest.mark.skipif(not LEGACY_STEPUP, reason="set DATALAD_RDR_STEPUP_LEGACY to a "
                    "directory holding stepup-reprep 3.1.x (pip install --target)")
def test_stepup_3_1_relies_on_the_legacy_json(zenodo, tmp_path):
    """StepUp <= 3.1 sends Accept as a query parameter, so it reads Zenodo's legacy JSON."""
    config = STEPUP_CONFIG.format(endpoint=zenodo.api, version="1.0.0").replace(
        "custom_fields:\n  code_repository:", "code_repository:")
    config += "path_token: token.txt\npaths: [data.csv, notes.txt]\n"
    _write(tmp_path / "zenodo.yaml", config)
    _write(tmp_path / "token.txt", TOKEN + "\n")
    _write(tmp_path / "data.csv", "x,y\n1,2\n")
    _write(tmp_path / "notes.txt", "notes\n")

    def run():
        result = subprocess.run(
            [sys.executable, "-m", "stepup.reprep.sync_zenodo", "zenodo.yaml"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": LEGACY_STEPUP})
        assert result.returncode == 0, result.stdout + result.stderr

    run()
    rid = (tmp_path / ".zenodo-record-id.txt").read_text().strip()
    assert _online_files(zenodo, rid) == _local_files(tmp_path, ["data.csv", "notes.txt"])
    _write(tmp_path / "notes.txt", "changed notes\n")
    run()
    assert _online_files(zenodo, rid) == _local_files(tmp_path, ["data.csv", "notes.txt"])
    zenodo.publish(rid)
    run()  # same version: md5 check, edit, republish
    _write(tmp_path / "zenodo.yaml", config.replace("'1.0.0'", "'1.1.0'"))
    run()  # new version
    v2 = (tmp_path / ".zenodo-record-id.txt").read_text().strip()
    assert v2 != rid
    assert _online_files(zenodo, v2) == _local_files(tmp_path, ["data.csv", "notes.txt"])

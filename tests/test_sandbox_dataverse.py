"""The Dataverse sandbox answers as Dataverse 6.7.1 does (../shared/reference/dataverse-api.md)."""

import hashlib
import io
import json
import os
import re
import time
import zipfile
from urllib.parse import urljoin

import pytest
import requests

from conftest import DV, citation_json

MIB = 1024 * 1024


def direct_upload(dv, pid, data: bytes, tagging=None):
    """Upload bytes by direct upload, as a careful client does; returns the storageIdentifier."""
    r = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                params={"persistentId": pid, "size": len(data)})
    assert r.status_code == 200, r.text
    ticket = r.json()["data"]
    if "url" in ticket:
        headers = {"x-amz-tagging": "dv-state=temp"} if tagging else {}
        put = requests.put(ticket["url"], data=data, headers=headers)
        assert put.status_code == 200, put.text
        assert put.headers["ETag"]
    else:
        size = ticket["partSize"]
        etags = {}
        for n, url in ticket["urls"].items():
            chunk = data[(int(n) - 1) * size:int(n) * size]
            put = requests.put(url, data=chunk)
            assert put.status_code == 200, put.text
            etags[n] = put.headers["ETag"]
        done = dv.call("PUT", ticket["complete"], data=json.dumps(etags))
        assert done.status_code == 200, done.text
        assert done.json() == {"status": "OK",
                               "data": {"message": "Multipart Upload completed"}}
    return ticket["storageIdentifier"]


def spec(sid, name, data, **extra):
    return {"storageIdentifier": sid, "fileName": name, "mimeType": "application/zip",
            "checksum": {"@type": "MD5", "@value": hashlib.md5(data).hexdigest()}, **extra}


def download(dv, file_id, token=True, **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["X-Dataverse-key"] = dv.token
    return requests.get(f"{dv.url}/api/access/datafile/{file_id}", headers=headers, **kw)


def make_zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def wait_unlocked(dv, pid, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = dv.call("GET", "/api/datasets/:persistentId/locks", params={"persistentId": pid})
        if not r.json()["data"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"dataset still locked: {r.json()['data']}")


def test_create_dataset_gives_201_and_a_draft_doi(dv):
    r = dv.call("POST", f"/api/dataverses/{dv.sandbox.collection}/datasets",
                json=citation_json())
    assert r.status_code == 201
    data = r.json()["data"]
    assert re.fullmatch(r"doi:10\.5072/FK2/[A-Z0-9]{6}", data["persistentId"])
    view = dv.call("GET", f"/api/datasets/{data['id']}").json()["data"]
    assert view["latestVersion"]["versionState"] == "DRAFT"
    assert view["latestVersion"]["license"] == {
        "name": "CC-BY-4.0", "uri": "https://creativecommons.org/licenses/by/4.0/"}


@pytest.mark.parametrize("profile, field, title", [
    ("dataverse", "subject", "Subject"), ("rdr", "technicalFormat", "Technical format")])
def test_create_without_required_field_is_400_naming_it(make_sandbox, profile, field, title):
    sb = make_sandbox(profile)
    body = citation_json(profile=profile)
    fields = body["datasetVersion"]["metadataBlocks"]["citation"]["fields"]
    fields[:] = [f for f in fields if f["typeName"] != field]
    r = DV(sb).call("POST", f"/api/dataverses/{sb.collection}/datasets", json=body)
    assert r.status_code == 400
    assert r.json()["status"] == "ERROR" and f"{title} is required" in r.json()["message"]


def test_bad_token_is_401_bad_api_key(sandbox):
    r = DV(sandbox, token="not-a-token").call("GET", "/api/users/:me")
    assert r.status_code == 401
    assert r.json() == {"status": "ERROR", "message": "Bad API key"}


def test_user_without_rights_gets_403(sandbox, dv):
    pid = dv.create_dataset()
    stranger = DV(sandbox, token=sandbox.dataverse_settings.other_token)
    r = stranger.call("GET", "/api/datasets/:persistentId/uploadurls",
                      params={"persistentId": pid, "size": 10})
    assert r.status_code == 403
    assert r.json()["message"] == "You are not permitted to upload files to this dataset."


def test_unknown_dataset_is_404(dv):
    r = dv.call("GET", "/api/datasets/:persistentId/",
                params={"persistentId": "doi:10.5072/FK2/NOPE00"})
    assert r.status_code == 404
    assert "not found" in r.json()["message"]


def test_direct_upload_keeps_a_zip_whole_and_serves_it_byte_identical(dv):
    pid = dv.create_dataset()
    bundle = make_zip({f"sub-0{i}/anat/T1w.nii.gz": os.urandom(5000) for i in range(3)})
    sid = direct_upload(dv, pid, bundle)
    r = dv.add_files(pid, [spec(sid, "raw.zip", bundle, directoryLabel="bundles")])
    assert r.status_code == 200
    result = r.json()["data"]
    assert result["Result"] == {"Total number of files": 1,
                                "Number of files successfully added": 1}
    files = dv.files(pid)
    assert [(f["label"], f["directoryLabel"]) for f in files] == [("raw.zip", "bundles")]
    df = files[0]["dataFile"]
    assert df["filesize"] == len(bundle)
    assert df["md5"] == hashlib.md5(bundle).hexdigest()
    r = download(dv, df["id"], allow_redirects=False)
    assert r.status_code == 303
    assert "X-Amz-Signature=" in r.headers["Location"]
    assert download(dv, df["id"]).content == bundle
    part = download(dv, df["id"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == bundle[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(bundle)}"
    tail = download(dv, df["id"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == bundle[-10:]
    bad = download(dv, df["id"], headers={"Range": f"bytes={len(bundle) + 5}-"})
    assert bad.status_code == 416


def test_range_without_redirect_is_served_by_the_api(make_sandbox):
    sb = make_sandbox("rdr", download_redirect=False)
    dv = DV(sb)
    pid = dv.create_dataset()
    data = os.urandom(10000)
    sid = direct_upload(dv, pid, data)
    assert dv.add_files(pid, [spec(sid, "x.bin", data)]).status_code == 200
    fid = dv.files(pid)[0]["dataFile"]["id"]
    r = download(dv, fid, allow_redirects=False)
    assert r.status_code == 200 and r.content == data
    part = download(dv, fid, headers={"Range": "bytes=9990-"})
    assert part.status_code == 206 and part.content == data[9990:]
    assert download(dv, fid, headers={"Range": "bytes=20000-"}).status_code == 416


def test_ordinary_add_unpacks_a_zip_into_its_members(dv):
    pid = dv.create_dataset()
    bundle = make_zip({"sub-01/anat/T1w.json": b"{}", "README": b"hello",
                       "derivatives/x y#z/out.tsv": b"a\tb\n"})
    r = dv.call("POST", "/api/datasets/:persistentId/add", params={"persistentId": pid},
                files={"file": ("bundle.zip", bundle, "application/octet-stream"),
                       "jsonData": (None, json.dumps({"description": "d"}))})
    assert r.status_code == 200, r.text
    paths = sorted((f.get("directoryLabel", ""), f["label"]) for f in dv.files(pid))
    # The ZIP is gone: three DataFiles, folders sanitised as Dataverse does.
    assert paths == [("", "README"), ("derivatives/x y.z", "out.tsv"),
                     ("sub-01/anat", "T1w.json")]


def test_ordinary_add_refuses_a_zip_over_the_unpack_limit(make_sandbox):
    sb = make_sandbox("rdr", zip_unpack_limit=3)
    dv = DV(sb)
    pid = dv.create_dataset()
    bundle = make_zip({f"f{i}.txt": b"x" for i in range(4)})
    r = dv.call("POST", "/api/datasets/:persistentId/add", params={"persistentId": pid},
                files={"file": ("bundle.zip", bundle)})
    assert r.status_code == 400
    assert r.json()["message"].startswith(
        "The number of files in the zip archive is over the limit (3)")
    assert dv.files(pid) == []


def test_expired_presigned_url_is_refused(make_sandbox):
    sb = make_sandbox("rdr", url_lifetime=1)
    dv = DV(sb)
    pid = dv.create_dataset()
    ticket = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                     params={"persistentId": pid, "size": 3}).json()["data"]
    assert "X-Amz-Expires=1&" in ticket["url"]
    time.sleep(2.1)
    r = requests.put(ticket["url"], data=b"abc")
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text
    assert "<Message>Request has expired</Message>" in r.text


@pytest.mark.parametrize("tamper", ["signature", "key", "method"])
def test_tampered_presigned_url_is_refused(dv, tamper):
    pid = dv.create_dataset()
    url = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                  params={"persistentId": pid, "size": 3}).json()["data"]["url"]
    if tamper == "signature":
        flipped = re.sub(r"X-Amz-Signature=(.)",
                         lambda m: "X-Amz-Signature=" + ("1" if m.group(1) == "0" else "0"),
                         url)
        r = requests.put(flipped, data=b"abc")
    elif tamper == "key":
        r = requests.put(url.replace("/10.5072/", "/10.5073/", 1), data=b"abc")
    else:
        r = requests.get(url)
    assert r.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text


def test_put_without_content_length_is_501(dv):
    pid = dv.create_dataset()
    url = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                  params={"persistentId": pid, "size": 3}).json()["data"]["url"]
    r = requests.put(url, data=iter([b"a", b"bc"]))  # chunked transfer encoding
    assert r.status_code == 501


def test_rdr_profile_refuses_tagging_like_swift(dv):
    pid = dv.create_dataset()
    url = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                  params={"persistentId": pid, "size": 3}).json()["data"]["url"]
    assert "x-amz-tagging" not in url
    r = requests.put(url, data=b"abc", headers={"x-amz-tagging": "dv-state=temp"})
    assert r.status_code == 501
    assert "NotImplemented" in r.text
    assert requests.put(url, data=b"abc").status_code == 200


def test_tagging_profile_requires_the_signed_tagging_header(make_sandbox):
    dv = DV(make_sandbox("dataverse"))
    pid = dv.create_dataset()
    url = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                  params={"persistentId": pid, "size": 3}).json()["data"]["url"]
    assert "X-Amz-SignedHeaders=host%3Bx-amz-tagging" in url
    assert requests.put(url, data=b"abc").status_code == 403
    r = requests.put(url, data=b"abc", headers={"x-amz-tagging": "dv-state=temp"})
    assert r.status_code == 200


def test_multipart_upload_reply_shape_and_round_trip(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    dv = DV(sb)
    pid = dv.create_dataset()
    data = os.urandom(12 * MIB + 7)
    ticket = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                     params={"persistentId": pid, "size": len(data)}).json()["data"]
    assert list(ticket) == ["urls", "abort", "complete", "partSize", "storageIdentifier"]
    assert sorted(ticket["urls"]) == ["1", "2", "3"]
    assert ticket["partSize"] == 5 * MIB
    # relative and not URL-encoded, as the real server sends them
    assert ticket["complete"].startswith(f"/api/datasets/mpupload?globalid={pid}&uploadid=")
    assert "storageidentifier=s3://" in ticket["complete"]
    assert re.fullmatch(r"s3://rdr-sandbox-[0-9a-f]+:[0-9a-f]+-[0-9a-f]{12}",
                        ticket["storageIdentifier"])
    sid = direct_upload(dv, pid, data)
    assert dv.add_files(pid, [spec(sid, "big.bin", data)]).status_code == 200
    fid = dv.files(pid)[0]["dataFile"]["id"]
    got = download(dv, fid)
    assert hashlib.md5(got.content).hexdigest() == hashlib.md5(data).hexdigest()
    part = download(dv, fid, headers={"Range": f"bytes={5 * MIB - 3}-{5 * MIB + 2}"})
    assert part.content == data[5 * MIB - 3:5 * MIB + 3]


def test_multipart_object_is_kept_on_disk_not_in_memory(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    dv = DV(sb)
    pid = dv.create_dataset()
    data = os.urandom(11 * MIB)
    sid = direct_upload(dv, pid, data)
    key = sb.dataverse._key_of(sid, next(iter(sb.dataverse.datasets.values())))
    stored = sb.gate.backend.get_object(sb.s3_settings.bucket, key)
    assert stored.contentsize == len(data)
    buffer = stored._value_buffer
    assert os.fstat(buffer.fileno()).st_size == len(data)  # a real file, not RAM


def test_multipart_abort_is_204_and_wrong_etag_is_500(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    dv = DV(sb)
    pid = dv.create_dataset()
    ticket = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                     params={"persistentId": pid, "size": 6 * MIB}).json()["data"]
    r = dv.call("PUT", ticket["complete"], data=json.dumps({"1": '"00"', "2": '"11"'}))
    assert r.status_code == 500
    assert r.json()["message"] == "Could not complete multipart upload"
    ticket = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                     params={"persistentId": pid, "size": 6 * MIB}).json()["data"]
    assert dv.call("DELETE", urljoin("/", ticket["abort"])).status_code == 204


def test_no_direct_upload_is_404_on_uploadurls(make_sandbox):
    sb = make_sandbox("rdr", direct_upload=False)
    dv = DV(sb)
    pid = dv.create_dataset()
    r = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                params={"persistentId": pid, "size": 1024})
    assert r.status_code == 404
    assert r.json()["message"].startswith("Direct upload not supported")


def test_add_files_reports_per_file_errors_inside_a_200(dv):
    pid = dv.create_dataset()
    data = b"hello"
    sid = direct_upload(dv, pid, data)
    missing = sid[:-12] + "000000000000"
    r = dv.add_files(pid, [spec(sid, "a.txt", data), spec(missing, "b.txt", data),
                           {"fileName": "c.txt"}])
    assert r.status_code == 200
    files = r.json()["data"]["Files"]
    assert "successMessage" in files[0]
    assert files[1]["errorMessage"].startswith("Bad Request:")
    assert files[2]["errorMessage"].startswith("Bad Request:You must provide")
    assert r.json()["data"]["Result"]["Number of files successfully added"] == 1


def test_size_is_read_from_the_store_not_the_client(dv):
    pid = dv.create_dataset()
    data = b"x" * 1234
    sid = direct_upload(dv, pid, data)
    dv.add_files(pid, [spec(sid, "a.bin", data, fileSize=1)])
    assert dv.files(pid)[0]["dataFile"]["filesize"] == 1234


def test_file_count_limit_and_max_file_size(make_sandbox):
    sb = make_sandbox("rdr", dataset_file_limit=2, max_file_size=100)
    dv = DV(sb)
    pid = dv.create_dataset()
    r = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                params={"persistentId": pid, "size": 101})
    assert r.status_code == 400 and "maximum allowed file size is 100" in r.text
    sid = direct_upload(dv, pid, b"a")
    sid2 = direct_upload(dv, pid, b"b")
    # /addFiles refuses at count + N >= limit, for the whole call.
    r = dv.add_files(pid, [spec(sid, "a", b"a"), spec(sid2, "b", b"b")])
    assert r.status_code == 400
    assert r.json()["message"] == ("Number of files can not exceed the maximum number of "
                                   "files allowed for this Dataset (2).")
    assert dv.add_files(pid, [spec(sid, "a", b"a")]).status_code == 200
    assert dv.add_files(pid, [spec(sid2, "b", b"b")]).status_code == 400
    # The direct /add and uploadurls refuse at count >= limit.
    r = dv.call("POST", "/api/datasets/:persistentId/add", params={"persistentId": pid},
                files={"jsonData": (None, json.dumps(spec(sid2, "b", b"b")))})
    assert r.status_code == 200, r.text
    r = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                params={"persistentId": pid, "size": 1})
    assert r.status_code == 400


def test_restrict_twice_is_400_and_metadata_reply_is_text(dv):
    pid = dv.create_dataset()
    sid = direct_upload(dv, pid, b"abc")
    dv.add_files(pid, [spec(sid, "a.zip", b"abc")])
    fid = dv.files(pid)[0]["dataFile"]["id"]
    r = dv.call("PUT", f"/api/files/{fid}/restrict", data="true")
    assert r.json() == {"status": "OK", "data": {"message": "File a.zip restricted."}}
    r = dv.call("PUT", f"/api/files/{fid}/restrict", data="true")
    assert r.status_code == 400 and "is already restricted" in r.json()["message"]
    r = dv.call("POST", f"/api/files/{fid}/metadata",
                files={"jsonData": (None, json.dumps({"description": "the raw data"}))})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text.startswith("File Metadata update has been completed: {")
    assert dv.files(pid)[0]["description"] == "the raw data"


def test_publish_needs_a_license_and_is_asynchronous(sandbox, dv):
    pid = dv.create_dataset(license_name=None)
    r = dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
                params={"persistentId": pid, "type": "major"})
    assert r.status_code == 409
    assert "valid license or Custom Terms Of Use" in r.json()["message"]
    r = dv.call("PUT", "/api/datasets/:persistentId/metadata", params={
        "persistentId": pid, "replace": "true"},
        headers={"Content-Type": "application/ld+json"},
        data=json.dumps({"http://schema.org/license": "CC0-1.0"}))
    assert r.status_code == 200, r.text
    assert dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
                   params={"persistentId": pid, "type": "minor"}).status_code == 403
    r = dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
                params={"persistentId": pid, "type": "major"})
    assert r.status_code == 200
    locks = dv.call("GET", "/api/datasets/:persistentId/locks",
                    params={"persistentId": pid}).json()["data"]
    assert [lock["lockType"] for lock in locks] == ["finalizePublication"]
    wait_unlocked(dv, pid)
    latest = dv.call("GET", "/api/datasets/:persistentId/",
                     params={"persistentId": pid}).json()["data"]["latestVersion"]
    assert (latest["versionState"], latest["versionNumber"],
            latest["versionMinorNumber"]) == ("RELEASED", 1, 0)


def test_publish_revalidates_checksums(dv):
    pid = dv.create_dataset()
    sid = direct_upload(dv, pid, b"abc")
    dv.add_files(pid, [{**spec(sid, "a.zip", b"abc"),
                        "checksum": {"@type": "MD5", "@value": "0" * 32}}])
    dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
            params={"persistentId": pid, "type": "major"})
    time.sleep(1.5)
    locks = dv.call("GET", "/api/datasets/:persistentId/locks",
                    params={"persistentId": pid}).json()["data"]
    assert [lock["lockType"] for lock in locks] == ["FileValidationFailed"]
    versions = dv.call("GET", "/api/datasets/:persistentId/versions",
                       params={"persistentId": pid}).json()["data"]
    assert [v["versionState"] for v in versions] == ["DRAFT"]


def test_access_rules_for_draft_restricted_and_published_files(sandbox, dv):
    pid = dv.create_dataset()
    public_sid = direct_upload(dv, pid, b"readme")
    secret_sid = direct_upload(dv, pid, b"secret")
    dv.add_files(pid, [spec(public_sid, "README.md", b"readme"),
                       spec(secret_sid, "raw.zip", b"secret", restrict=True)])
    ids = {f["label"]: f["dataFile"]["id"] for f in dv.files(pid)}
    assert download(dv, ids["README.md"], token=False).status_code == 403  # draft
    dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
            params={"persistentId": pid, "type": "major"})
    wait_unlocked(dv, pid)
    assert download(dv, ids["README.md"], token=False).content == b"readme"
    assert download(dv, ids["raw.zip"], token=False).status_code == 403
    stranger = DV(sandbox, token=sandbox.dataverse_settings.other_token)
    assert download(stranger, ids["raw.zip"]).status_code == 403
    assert download(dv, ids["raw.zip"]).content == b"secret"
    # published files leave the draft, but are not deleted
    r = dv.call("DELETE", f"/api/files/{ids['README.md']}")
    assert r.json() == {"status": "OK", "data": False}
    assert download(dv, ids["README.md"], token=False).content == b"readme"


def test_delete_in_draft_removes_the_bytes(dv):
    pid = dv.create_dataset()
    sid = direct_upload(dv, pid, b"abc")
    dv.add_files(pid, [spec(sid, "a.zip", b"abc")])
    fid = dv.files(pid)[0]["dataFile"]["id"]
    assert dv.call("DELETE", f"/api/files/{fid}").json() == {"status": "OK", "data": True}
    assert dv.files(pid) == []
    assert download(dv, fid).status_code == 404


def test_replace_files_and_duplicate_content(dv):
    pid = dv.create_dataset()
    sid = direct_upload(dv, pid, b"v1")
    dv.add_files(pid, [spec(sid, "core.zip", b"v1", directoryLabel="bundles")])
    old = dv.files(pid)[0]["dataFile"]["id"]
    sid2 = direct_upload(dv, pid, b"v2")
    r = dv.call("POST", "/api/datasets/:persistentId/replaceFiles",
                params={"persistentId": pid},
                files={"jsonData": (None, json.dumps([{**spec(sid2, "core.zip", b"v2"),
                                                        "fileToReplaceId": old}]))})
    assert r.json()["data"]["Result"]["Number of files successfully replaced"] == 1
    (new,) = dv.files(pid)
    assert new["directoryLabel"] == "bundles" and new["dataFile"]["id"] != old
    sid3 = direct_upload(dv, pid, b"v2")
    r = dv.call("POST", f"/api/files/{new['dataFile']['id']}/replace",
                files={"jsonData": (None, json.dumps(spec(sid3, "core.zip", b"v2")))})
    assert r.status_code == 400 and "duplicate content" in r.json()["message"]


def test_edit_metadata_and_locks(sandbox, dv):
    pid = dv.create_dataset()
    r = dv.call("PUT", "/api/datasets/:persistentId/editMetadata",
                params={"persistentId": pid, "replace": "true"},
                json={"fields": [{"typeName": "title", "value": "New title"}]})
    assert r.status_code == 200
    title = r.json()["data"]["metadataBlocks"]["citation"]["fields"]
    assert any(f["typeName"] == "title" and f["value"] == "New title" for f in title)
    admin = DV(sandbox, token=sandbox.dataverse_settings.admin_token)
    assert dv.call("POST", "/api/datasets/:persistentId/lock/Ingest",
                   params={"persistentId": pid}).status_code == 403
    assert admin.call("POST", "/api/datasets/:persistentId/lock/Ingest",
                      params={"persistentId": pid}).status_code == 200
    # An Ingest lock alone allows edits (PermissionServiceBean); any other lock does not.
    r = dv.call("PUT", "/api/datasets/:persistentId/editMetadata",
                params={"persistentId": pid, "replace": "true"},
                json={"fields": [{"typeName": "title", "value": "Ingesting"}]})
    assert r.status_code == 200, r.text
    assert admin.call("POST", "/api/datasets/:persistentId/lock/Workflow",
                      params={"persistentId": pid}).status_code == 200
    r = dv.call("PUT", "/api/datasets/:persistentId/editMetadata",
                params={"persistentId": pid, "replace": "true"},
                json={"fields": [{"typeName": "title", "value": "Locked"}]})
    assert r.status_code == 403
    assert r.json()["message"] == "Dataset cannot be edited due to dataset lock."
    admin.call("DELETE", "/api/datasets/:persistentId/locks", params={"persistentId": pid})
    wait_unlocked(dv, pid)


def test_license_endpoint_of_6_9_does_not_exist_on_6_7(dv):
    pid = dv.create_dataset()
    r = dv.call("PUT", "/api/datasets/:persistentId/license", params={"persistentId": pid},
                json={"name": "CC0 1.0"})
    assert r.status_code == 404
    assert "API endpoint does not exist" in r.json()["message"]


def test_clean_storage_deletes_unregistered_objects(dv):
    pid = dv.create_dataset()
    kept = direct_upload(dv, pid, b"kept")
    orphan = direct_upload(dv, pid, b"orphan")
    dv.add_files(pid, [spec(kept, "k.zip", b"kept")])
    r = dv.call("GET", "/api/datasets/:persistentId/cleanStorage",
                params={"persistentId": pid, "dryrun": "false"})
    name = {sid: sid.rsplit(":", 1)[1] for sid in (kept, orphan)}
    assert r.json() == {"status": "OK", "data": {
        "message": f"Found: {name[kept]}\nDeleted: {name[orphan]}"}}

"""The sandbox behaves as Dataverse 6.7.1's source says where a client could trip on it.

Each test names the row of ../shared/reference/dataverse-fidelity.md it pins.
"""

import hashlib
import json
import os
import time

import pytest
import requests

from conftest import DV, citation_json
from test_sandbox_dataverse import direct_upload, download, spec, wait_unlocked

from datalad_rdr.sandbox.dataverse import new_file_name


def labels(dv, pid):
    return sorted((f.get("directoryLabel", ""), f["label"]) for f in dv.files(pid))


@pytest.mark.parametrize("name, renamed", [
    ("raw.zip", "raw-1.zip"), ("raw-1.zip", "raw-2.zip"), ("raw-02.zip", "raw-3.zip"),
    ("README", "README-1"), ("a.tar.gz", "a.tar-1.gz"), (".hidden", "-1.hidden")])
def test_new_file_name_follows_ingestutil(name, renamed):
    assert new_file_name(name) == renamed


def test_row12_duplicate_path_is_renamed_not_refused(dv):
    pid = dv.create_dataset()
    data = [os.urandom(100) for _ in range(4)]
    sids = [direct_upload(dv, pid, d) for d in data]
    r = dv.add_files(pid, [spec(sids[0], "raw-02.zip", data[0], directoryLabel="b")])
    assert r.json()["data"]["Result"]["Number of files successfully added"] == 1
    # Two more with the same path in one batch: both renamed, both succeed.
    r = dv.add_files(pid, [spec(sids[1], "raw-02.zip", data[1], directoryLabel="b"),
                           spec(sids[2], "raw-02.zip", data[2], directoryLabel="b")])
    assert r.status_code == 200, r.text
    files = r.json()["data"]["Files"]
    assert [f["fileDetails"]["label"] for f in files] == ["raw-3.zip", "raw-4.zip"]
    assert all("successMessage" in f for f in files)
    # The direct /add renames too.
    r = dv.call("POST", "/api/datasets/:persistentId/add", params={"persistentId": pid},
                files={"jsonData": (None, json.dumps(spec(sids[3], "raw-02.zip", data[3],
                                                          directoryLabel="b")))})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["files"][0]["label"] == "raw-5.zip"
    assert labels(dv, pid) == [("b", f"raw-{n}.zip") for n in ("02", 3, 4, 5)]


def test_row12_same_name_in_another_folder_is_kept(dv):
    pid = dv.create_dataset()
    a, b = os.urandom(10), os.urandom(10)
    r = dv.add_files(pid, [spec(direct_upload(dv, pid, a), "x.zip", a, directoryLabel="a"),
                           spec(direct_upload(dv, pid, b), "x.zip", b)])
    assert [f["fileDetails"]["label"] for f in r.json()["data"]["Files"]] == ["x.zip"] * 2


def test_row12_replace_keeps_its_name_but_renames_onto_another_file(dv):
    pid = dv.create_dataset()
    one, two, three, four = (os.urandom(50) for _ in range(4))
    dv.add_files(pid, [spec(direct_upload(dv, pid, one), "one.zip", one),
                       spec(direct_upload(dv, pid, two), "two.zip", two)])
    ids = {f["label"]: f["dataFile"]["id"] for f in dv.files(pid)}
    replace = [spec(direct_upload(dv, pid, three), "one.zip", three,
                    fileToReplaceId=ids["one.zip"]),
               spec(direct_upload(dv, pid, four), "one.zip", four,
                    fileToReplaceId=ids["two.zip"])]
    r = dv.call("POST", "/api/datasets/:persistentId/replaceFiles",
                params={"persistentId": pid},
                files={"jsonData": (None, json.dumps(replace), "application/json")})
    assert r.status_code == 200, r.text
    assert [f["fileDetails"]["label"] for f in r.json()["data"]["Files"]] == \
        ["one.zip", "one-1.zip"]
    assert labels(dv, pid) == [("", "one-1.zip"), ("", "one.zip")]


def publish(dv, pid, kind="major"):
    return dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
                   params={"persistentId": pid, "type": kind})


def published(dv, pid, data=b"first"):
    """A dataset released as 1.0 with one file; returns (pid, file id)."""
    dv.add_files(pid, [spec(direct_upload(dv, pid, data), "one.zip", data)])
    assert publish(dv, pid).status_code == 200
    wait_unlocked(dv, pid)
    return dv.files(pid, ":latest-published")[0]["dataFile"]["id"]


def versions(dv, pid):
    r = dv.call("GET", "/api/datasets/:persistentId/versions", params={"persistentId": pid})
    return [(v["versionState"], v.get("versionNumber"), v.get("versionMinorNumber"))
            for v in r.json()["data"]]


def test_row24_first_release_cannot_be_minor(dv):
    pid = dv.create_dataset()
    r = publish(dv, pid, "minor")
    assert (r.status_code, r.json()["message"]) == (
        403, "Cannot publish as minor version. Re-try as major release.")


@pytest.mark.parametrize("change", ["add", "delete", "replace"])
def test_row24_minor_release_refused_when_the_file_list_changed(dv, change):
    pid = dv.create_dataset()
    fid = published(dv, pid)
    new = os.urandom(30)
    sid = direct_upload(dv, pid, new)
    if change == "add":
        dv.add_files(pid, [spec(sid, "two.zip", new)])
    elif change == "delete":
        assert dv.call("DELETE", f"/api/files/{fid}").status_code == 200
    else:
        r = dv.call("POST", f"/api/files/{fid}/replace",
                    files={"jsonData": (None, json.dumps(spec(sid, "one.zip", new)))})
        assert r.status_code == 200, r.text
    r = publish(dv, pid, "minor")
    assert (r.status_code, r.json()["message"]) == (
        403, "Cannot release as minor version. Re-try as major release.")
    assert publish(dv, pid, "MAJOR").status_code == 200  # the type is lower-cased
    wait_unlocked(dv, pid)
    assert versions(dv, pid) == [("RELEASED", 2, 0), ("RELEASED", 1, 0)]


def test_row24_minor_release_of_a_metadata_change_is_allowed(dv):
    pid = dv.create_dataset()
    published(dv, pid)
    r = dv.call("PUT", "/api/datasets/:persistentId/editMetadata",
                params={"persistentId": pid, "replace": "true"},
                json={"fields": [{"typeName": "title", "value": "Renamed"}]})
    assert r.status_code == 200, r.text
    assert publish(dv, pid, "minor").status_code == 200
    wait_unlocked(dv, pid)
    assert versions(dv, pid)[0] == ("RELEASED", 1, 1)


def test_row27_publish_texts(sandbox, dv):
    pid = dv.create_dataset()
    r = publish(dv, pid, "patch")
    assert (r.status_code, r.json()["message"]) == (
        400, "Illegal 'type' parameter value 'patch'. It needs to be either 'major', "
             "'minor', or 'updatecurrent'.")
    admin = DV(sandbox, token=sandbox.dataverse_settings.admin_token)
    admin.call("POST", "/api/datasets/:persistentId/lock/Workflow",
               params={"persistentId": pid})
    r = publish(dv, pid)
    assert (r.status_code, r.json()["message"]) == (
        403, "This dataset is locked. Reason: Workflow. Please try publishing later.")
    admin.call("DELETE", "/api/datasets/:persistentId/locks", params={"persistentId": pid})
    published(dv, pid)
    identifier = pid.split("/", 1)[1]
    r = publish(dv, pid)
    assert (r.status_code, r.json()["message"]) == (
        403, f"Latest version of dataset {identifier} is already released. Only draft "
             f"versions can be released.")


TOUA = ("Terms of Use and Access are invalid. You must enable request access or add terms "
        "of access in datasets with restricted files.")


def draft_version(dv, pid):
    r = dv.call("GET", "/api/datasets/:persistentId/versions/:draft",
                params={"persistentId": pid})
    return r.json()["data"]


def put_draft(dv, pid, **terms):
    body = {k: v for k, v in draft_version(dv, pid).items()
            if k in ("metadataBlocks", "license")}
    return dv.call("PUT", "/api/datasets/:persistentId/versions/:draft",
                   params={"persistentId": pid}, json={**body, **terms})


def test_row32_replacing_the_version_drops_access_requests_and_restrict_is_409(dv):
    pid = dv.create_dataset()
    assert draft_version(dv, pid)["fileAccessRequest"] is True  # created by the API
    data = b"secret"
    dv.add_files(pid, [spec(direct_upload(dv, pid, data), "raw.zip", data)])
    fid = dv.files(pid)[0]["dataFile"]["id"]
    r = put_draft(dv, pid)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["fileAccessRequest"] is False
    r = dv.call("PUT", f"/api/files/{fid}/restrict", data="true")
    assert (r.status_code, r.json()["message"]) == (409, TOUA)
    assert dv.files(pid)[0]["restricted"] is False  # nothing was changed
    # Terms of access make the restriction valid, and the version shows them.
    r = put_draft(dv, pid, termsOfAccess="Ask the PI.")
    assert r.json()["data"]["termsOfAccess"] == "Ask the PI."
    assert dv.call("PUT", f"/api/files/{fid}/restrict", data="true").status_code == 200
    # A version without them, now that a file is restricted, is refused as a whole.
    r = put_draft(dv, pid)
    assert (r.status_code, r.json()["message"]) == (409, TOUA)
    assert put_draft(dv, pid, fileAccessRequest=True).status_code == 200


def test_row32_publishing_restricted_files_without_terms_is_409(dv):
    pid = dv.create_dataset()
    assert put_draft(dv, pid).json()["data"]["fileAccessRequest"] is False
    data = b"secret"
    dv.add_files(pid, [spec(direct_upload(dv, pid, data), "raw.zip", data, restrict=True)])
    r = publish(dv, pid)
    assert (r.status_code, r.json()["message"]) == (409, TOUA)
    assert put_draft(dv, pid, fileAccessRequest=True).status_code == 200
    assert publish(dv, pid).status_code == 200


def locks(dv, pid):
    r = dv.call("GET", "/api/datasets/:persistentId/locks", params={"persistentId": pid})
    return [lock["lockType"] for lock in r.json()["data"]]


def corrupt(sandbox, file_id):
    key = sandbox.dataverse.datafiles[file_id].key
    sandbox.s3.put_object(Bucket=sandbox.dataverse.bucket, Key=key, Body=b"rotten")


def test_row25_only_a_major_release_validates_and_it_reads_every_file(sandbox, dv):
    pid = dv.create_dataset()
    fid = published(dv, pid, b"x" * 1000)
    assert sandbox.dataverse.s3_bytes_read["validation"] == 1000
    corrupt(sandbox, fid)  # bit rot in a file released in 1.0
    r = dv.call("PUT", "/api/datasets/:persistentId/editMetadata",
                params={"persistentId": pid, "replace": "true"},
                json={"fields": [{"typeName": "title", "value": "Renamed"}]})
    assert r.status_code == 200
    assert publish(dv, pid, "minor").status_code == 200  # not validated: released as 1.1
    wait_unlocked(dv, pid)
    assert versions(dv, pid)[0] == ("RELEASED", 1, 1)
    data = b"new"
    dv.add_files(pid, [spec(direct_upload(dv, pid, data), "two.zip", data)])
    assert publish(dv, pid).status_code == 200  # 2.0 re-reads the old file too
    time.sleep(1.0)
    assert locks(dv, pid) == ["FileValidationFailed"]
    r = publish(dv, pid)
    assert (r.status_code, r.json()["message"]) == (
        403, "This dataset cannot be published because some files have been found missing "
             "or corrupted. . Please contact support to address this.")
    # Only a superuser (RDR support) can clear it.
    r = dv.call("DELETE", "/api/datasets/:persistentId/locks", params={"persistentId": pid})
    assert r.status_code == 403
    admin = DV(sandbox, token=sandbox.dataverse_settings.admin_token)
    assert admin.call("DELETE", "/api/datasets/:persistentId/locks",
                      params={"persistentId": pid}).status_code == 200
    assert locks(dv, pid) == []


def test_row25_the_lock_lasts_as_long_as_reading_the_dataset(make_sandbox):
    sb = make_sandbox("rdr", publish_delay=0, validation_rate=1_000_000)
    dv = DV(sb)
    pid = dv.create_dataset()
    data = os.urandom(1_500_000)
    dv.add_files(pid, [spec(direct_upload(dv, pid, data), "big.zip", data)])
    started = time.monotonic()
    assert publish(dv, pid).status_code == 200
    wait_unlocked(dv, pid)
    assert time.monotonic() - started >= 1.5


def test_row20_overlapping_registrations_on_one_dataset_give_optimistic_lock_500s(sandbox,
                                                                                  dv):
    import threading

    pid = dv.create_dataset()
    data = [os.urandom(20) for _ in range(2)]
    specs = [spec(direct_upload(dv, pid, d), f"{n}.zip", d) for n, d in enumerate(data)]
    replies = []
    with sandbox.dataverse.lock:  # both requests arrive while the server is busy
        threads = [threading.Thread(target=lambda s=s: replies.append(dv.add_files(pid, [s])))
                   for s in specs]
        for t in threads:
            t.start()
        time.sleep(0.5)
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in replies) == [200, 500]
    failed = next(r for r in replies if r.status_code == 500).json()
    assert failed["message"] == ("Internal server error. More details available at the "
                                 "server logs.")
    assert len(dv.files(pid)) == 1  # the loser saved nothing; a retry succeeds
    lost = next(s for s in specs if s["fileName"] not in {f["label"] for f in dv.files(pid)})
    assert dv.add_files(pid, [lost]).status_code == 200
    assert len(dv.files(pid)) == 2


def test_row20_injected_optimistic_lock_saves_nothing(sandbox, dv):
    pid = dv.create_dataset()
    data = b"abc"
    s = spec(direct_upload(dv, pid, data), "a.zip", data)
    fault = sandbox.dataverse.faults.inject(method="POST", path="/addFiles$",
                                            optimistic_lock=True)
    r = dv.add_files(pid, [s])
    assert r.status_code == 500 and r.json()["code"] == 500 and fault.hits == 1
    assert dv.files(pid) == []
    assert dv.add_files(pid, [s]).status_code == 200


def test_row21_released_files_count_after_replace_and_delete(make_sandbox):
    sb = make_sandbox("rdr", dataset_file_limit=3)
    dv = DV(sb)
    pid = dv.create_dataset()
    fid = published(dv, pid, b"v1")  # 1 DataFile
    data = b"v2"
    r = dv.call("POST", f"/api/files/{fid}/replace",
                files={"jsonData": (None, json.dumps(spec(direct_upload(dv, pid, data),
                                                          "one.zip", data)))})
    assert r.status_code == 200, r.text
    assert len(dv.files(pid)) == 1  # the draft holds one file, the dataset owns two
    extra = b"extra"
    r = dv.add_files(pid, [spec(direct_upload(dv, pid, extra), "x.zip", extra)])
    assert r.status_code == 400  # 2 + 1 >= 3
    # A file added to the draft and deleted before any release is gone for good.
    r = dv.call("POST", "/api/datasets/:persistentId/add", params={"persistentId": pid},
                files={"jsonData": (None, json.dumps(spec(direct_upload(dv, pid, extra),
                                                          "x.zip", extra)))})
    assert r.status_code == 200, r.text
    new_id = next(f["dataFile"]["id"] for f in dv.files(pid) if f["label"] == "x.zip")
    r = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                params={"persistentId": pid, "size": 1})
    assert r.status_code == 400  # 3 >= 3
    assert dv.call("DELETE", f"/api/files/{new_id}").json()["data"] is True
    r = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                params={"persistentId": pid, "size": 1})
    assert r.status_code == 200, r.text


MIB = 1024 * 1024


def multipart_parts(dv, pid, data):
    ticket = dv.call("GET", "/api/datasets/:persistentId/uploadurls",
                     params={"persistentId": pid, "size": len(data)}).json()["data"]
    size, etags = ticket["partSize"], {}
    for n, url in ticket["urls"].items():
        put = requests.put(url, data=data[(int(n) - 1) * size:int(n) * size])
        assert put.status_code == 200, put.text
        etags[n] = put.headers["ETag"]
    return ticket, etags


def multipart_upload(make_sandbox, size):
    """A sandbox with 5 MiB parts and one multipart upload with every part sent."""
    sb = make_sandbox("rdr", part_size=5 * MIB)
    dv = DV(sb)
    pid = dv.create_dataset()
    data = os.urandom(size)
    return sb, dv, pid, data, *multipart_parts(dv, pid, data)


def test_row8_complete_passes_parts_in_json_order_and_unordered_loses_the_upload(
        make_sandbox):
    sb, dv, pid, data, ticket, etags = multipart_upload(make_sandbox, 10 * MIB + 1)
    shuffled = {n: etags[n] for n in ("2", "1", "3")}  # as parallel completions arrive
    r = dv.call("PUT", ticket["complete"], data=json.dumps(shuffled))
    assert (r.status_code, r.json()["message"]) == (500, "Could not complete multipart "
                                                         "upload")
    # Dataverse aborted the upload: its parts are gone.
    assert "Uploads" not in sb.s3.list_multipart_uploads(Bucket=sb.dataverse.bucket)


def test_row9_a_repeated_complete_is_idempotent(make_sandbox):
    sb, dv, pid, data, ticket, etags = multipart_upload(make_sandbox, 5 * MIB + 1)
    for _ in range(2):  # the retry after a lost reply
        r = dv.call("PUT", ticket["complete"], data=json.dumps(etags))
        assert r.status_code == 200, r.text
    r = dv.add_files(pid, [spec(ticket["storageIdentifier"], "big.zip", data)])
    assert r.json()["data"]["Files"][0]["fileDetails"]["dataFile"]["filesize"] == len(data)


def test_s3_refuses_unordered_parts_itself(sandbox):
    s3, bucket = sandbox.s3, sandbox.dataverse.bucket
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    tags = [s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=n,
                           Body=os.urandom(5 * MIB))["ETag"] for n in (1, 2)]
    with pytest.raises(s3.exceptions.ClientError, match="InvalidPartOrder"):
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                     MultipartUpload={"Parts": [
                                         {"PartNumber": 2, "ETag": tags[1]},
                                         {"PartNumber": 1, "ETag": tags[0]}]})


@pytest.mark.parametrize("profile, limit", [("rdr", 1000), ("dataverse", 10000)])
def test_row7_part_number_limit_of_the_store(make_sandbox, profile, limit):
    sb = make_sandbox(profile)
    s3, bucket = sb.s3, sb.dataverse.bucket
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    for n, status in ((limit, 200), (limit + 1, 400)):
        url = s3.generate_presigned_url("upload_part", Params={
            "Bucket": bucket, "Key": "k", "UploadId": upload, "PartNumber": n})
        r = requests.put(url, data=b"x")
        assert r.status_code == status, r.text
    assert "<Code>InvalidArgument</Code>" in r.text
    assert f"between 1 and {limit}, inclusive" in r.text


def clean_storage(dv, pid, dryrun):
    return dv.call("GET", "/api/datasets/:persistentId/cleanStorage",
                   params={"persistentId": pid, "dryrun": str(dryrun).lower()})


def test_row49_clean_storage_dry_run_lists_and_only_storage_names_are_candidates(sandbox,
                                                                                  dv):
    pid = dv.create_dataset()
    kept, orphan = direct_upload(dv, pid, b"kept"), direct_upload(dv, pid, b"orphan")
    dv.add_files(pid, [spec(kept, "k.zip", b"kept")])
    name = {sid: sid.rsplit(":", 1)[1] for sid in (kept, orphan)}
    prefix = f"{sandbox.dataverse_settings.authority}/{pid.split('/', 1)[1]}/"
    bucket = sandbox.dataverse.bucket
    for other in ("notes.txt", name[kept] + ".orig"):  # not a storage name; an aux file
        sandbox.s3.put_object(Bucket=bucket, Key=prefix + other, Body=b"x")
    expected = f"Found: {name[kept]}\nDeleted: {name[orphan]}"
    r = clean_storage(dv, pid, True)
    assert r.json()["data"]["message"] == expected
    stored = {o["Key"][len(prefix):] for o in sandbox.s3.list_objects_v2(
        Bucket=bucket, Prefix=prefix)["Contents"]}
    assert name[orphan] in stored  # a dry run deletes nothing
    assert clean_storage(dv, pid, False).json()["data"]["message"] == expected
    stored = {o["Key"][len(prefix):] for o in sandbox.s3.list_objects_v2(
        Bucket=bucket, Prefix=prefix)["Contents"]}
    assert stored == {name[kept], name[kept] + ".orig", "notes.txt"}
    assert clean_storage(dv, pid, True).json()["data"]["message"] == \
        f"Found: {name[kept]}\nDeleted: "


def test_row49_clean_storage_without_edit_rights_is_500_access_denied(sandbox, dv):
    pid = dv.create_dataset()
    for token in (sandbox.dataverse_settings.other_token, ""):
        r = clean_storage(DV(sandbox, token=token), pid, True)
        assert (r.status_code, r.json()["message"]) == (500, "Access denied!")


def test_row39_a_streamed_range_reads_the_object_from_byte_zero(make_sandbox):
    sb = make_sandbox("rdr", download_redirect=False)
    dv = DV(sb)
    pid = dv.create_dataset()
    data = os.urandom(3 * MIB + 5)
    dv.add_files(pid, [spec(direct_upload(dv, pid, data), "bundle.zip", data)])
    fid = dv.files(pid)[0]["dataFile"]["id"]
    before = sb.dataverse.s3_bytes_read["download"]
    part = download(dv, fid, headers={"Range": f"bytes={len(data) - 10}-"})
    assert part.status_code == 206 and part.content == data[-10:]
    assert sb.dataverse.download_reads[-1] == [len(data)]  # 10 bytes cost the whole object
    assert sb.dataverse.s3_bytes_read["download"] - before == len(data)
    head = download(dv, fid, headers={"Range": "bytes=0-9"})
    assert head.content == data[:10] and sb.dataverse.download_reads[-1] == [10]


def test_row15_checksum_is_lower_cased_and_an_unknown_type_fails_the_whole_call(sandbox,
                                                                               dv):
    pid = dv.create_dataset()
    a, b = b"upper", b"other"
    upper = {**spec(direct_upload(dv, pid, a), "a.zip", a)}
    upper["checksum"] = {"@type": "MD5", "@value": hashlib.md5(a).hexdigest().upper()}
    odd = {**spec(direct_upload(dv, pid, b), "b.zip", b),
           "checksum": {"@type": "md5", "@value": hashlib.md5(b).hexdigest()}}
    r = dv.add_files(pid, [upper, odd])
    assert (r.status_code, r.json()["message"]) == (
        400, "ChecksumType must be one of these values: [MD5, SHA-1, SHA-256, SHA-512].")
    assert dv.files(pid) == []
    r = dv.add_files(pid, [upper])
    stored = r.json()["data"]["Files"][0]["fileDetails"]["dataFile"]["checksum"]["value"]
    assert stored == hashlib.md5(a).hexdigest()
    assert publish(dv, pid).status_code == 200  # and validation passes
    wait_unlocked(dv, pid)
    assert versions(dv, pid)[0][0] == "RELEASED"


def test_row14_a_file_of_exactly_the_limit_is_not_saved(make_sandbox):
    sb = make_sandbox("rdr", max_file_size=100)
    dv = DV(sb)
    pid = dv.create_dataset()
    data = os.urandom(100)
    sid = direct_upload(dv, pid, data)  # uploadurls refuses only size > limit
    r = dv.add_files(pid, [spec(sid, "edge.zip", data),
                           spec(f"s3://{sb.dataverse.bucket}:19a0ca1f155-1b2d65b42727",
                                "missing.zip", data)])
    files = r.json()["data"]["Files"]
    assert [f["errorMessage"] for f in files] == [
        "Bad Request:Failed to save the content of the uploaded file."] * 2


def test_row53_uploadurls_without_a_token_is_the_guest_403(sandbox, dv):
    pid = dv.create_dataset()
    r = DV(sandbox, token="").call("GET", "/api/datasets/:persistentId/uploadurls",
                                   params={"persistentId": pid, "size": 1})
    assert (r.status_code, r.json()["message"]) == (
        403, "You are not permitted to upload files to this dataset.")


def test_row10_mpupload_needs_edit_rights_and_allows_an_unknown_globalid(make_sandbox):
    sb, dv, pid, data, ticket, etags = multipart_upload(make_sandbox, 5 * MIB + 1)
    stranger = DV(sb, token=sb.dataverse_settings.other_token)
    r = stranger.call("PUT", ticket["complete"], data=json.dumps(etags))
    assert (r.status_code, r.json()["message"]) == (
        403, "You are not permitted to complete file uploads with the supplied parameters.")
    r = stranger.call("DELETE", ticket["abort"])
    assert (r.status_code, r.json()["message"]) == (
        403, "You are not permitted to abort file uploads with the supplied parameters.")
    # An unknown globalid passes the permission check; S3 then finds no such upload.
    unknown = ticket["complete"].replace(pid, "doi:10.5072/FK2/NOPE00")
    r = stranger.call("PUT", unknown, data=json.dumps(etags))
    assert (r.status_code, r.json()["message"]) == (500, "Could not complete multipart "
                                                         "upload")
    assert dv.call("PUT", ticket["complete"], data=json.dumps(etags)).status_code == 200


def test_row41_downloads_of_released_files_write_guestbook_entries_unless_gbrecs(sandbox,
                                                                                dv):
    pid = dv.create_dataset()
    fid = published(dv, pid, b"public")
    assert download(dv, fid, token=False).content == b"public"
    assert download(dv, fid, token=False, params={"gbrecs": "true"}).content == b"public"
    assert sandbox.dataverse.guestbook_entries[fid] == 1


def test_row40_a_file_removed_in_a_later_release_stays_public(dv):
    pid = dv.create_dataset()
    fid = published(dv, pid, b"old")
    assert dv.call("DELETE", f"/api/files/{fid}").status_code == 200
    data = b"new"
    dv.add_files(pid, [spec(direct_upload(dv, pid, data), "two.zip", data)])
    assert publish(dv, pid).status_code == 200
    wait_unlocked(dv, pid)
    assert download(dv, fid, token=False).content == b"old"


def test_row46_a_required_child_of_an_optional_compound_is_required_conditionally(sandbox,
                                                                                 dv):
    pid = dv.create_dataset()

    def contributor(**children):
        value = {name: {"typeName": name, "typeClass": "primitive", "multiple": False,
                        "value": v} for name, v in children.items()}
        return dv.call("PUT", "/api/datasets/:persistentId/editMetadata",
                       params={"persistentId": pid, "replace": "true"},
                       json={"fields": [{"typeName": "contributor", "value": [value]}]})

    r = contributor(contributorName="Doe, John")
    assert (r.status_code, r.json()["message"]) == (
        400, "Validation Failed: Contributor Type is required if you choose to enter a "
             "value in any of the optional Contributor fields.")
    r = contributor(contributorName="Doe, John", contributorType="Data Curator")
    assert r.status_code == 200, r.text


def test_review_the_depositor_submits_and_the_curator_publishes(make_sandbox):
    sb = make_sandbox("rdr", review=True)
    dv = DV(sb)
    curator = DV(sb, token=sb.dataverse_settings.admin_token)
    pid = dv.create_dataset()
    data = b"bundle"
    dv.add_files(pid, [spec(direct_upload(dv, pid, data), "a.zip", data)])
    r = publish(dv, pid)
    assert (r.status_code, r.json()["message"]) == (
        401, "User @depositor is not permitted to perform requested action.")
    r = dv.call("POST", "/api/datasets/:persistentId/submitForReview",
                params={"persistentId": pid})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["inReview"] is True
    assert locks(dv, pid) == ["InReview"]
    r = dv.call("POST", "/api/datasets/:persistentId/submitForReview",
                params={"persistentId": pid})
    assert r.status_code == 403 and "already in review" in r.json()["message"]
    edit = {"fields": [{"typeName": "title", "value": "Changed"}]}
    r = dv.call("PUT", "/api/datasets/:persistentId/editMetadata",
                params={"persistentId": pid, "replace": "true"}, json=edit)
    assert (r.status_code, r.json()["message"]) == (
        403, "Dataset cannot be edited due to In Review dataset lock.")
    more = b"more"
    r = dv.add_files(pid, [spec(direct_upload(dv, pid, more), "b.zip", more)])
    assert r.status_code == 403
    # The curator may still edit, and publishes; the lock goes with the release.
    assert curator.call("PUT", "/api/datasets/:persistentId/editMetadata",
                        params={"persistentId": pid, "replace": "true"},
                        json=edit).status_code == 200
    assert publish(curator, pid).status_code == 200
    wait_unlocked(dv, pid)
    assert versions(dv, pid) == [("RELEASED", 1, 0)]


def test_rdr_profile_licenses_subject_and_geospatial(sandbox, dv):
    r = dv.call("GET", "/api/licenses")
    assert [(lic["name"], lic["uri"]) for lic in r.json()["data"]] == [
        ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/"),
        ("CC0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/")]
    blocks = {b["name"]: b for b in dv.call(
        "GET", "/api/metadatablocks", params={"returnDatasetFieldTypes": "true"}).json()["data"]}
    assert blocks["citation"]["fields"]["subject"]["isRequired"] is False
    assert not any(f["isRequired"] for f in blocks["geospatial"]["fields"].values())
    body = citation_json()
    fields = body["datasetVersion"]["metadataBlocks"]["citation"]["fields"]
    fields[:] = [f for f in fields if f["typeName"] != "subject"]
    r = dv.call("POST", f"/api/dataverses/{sandbox.collection}/datasets", json=body)
    assert r.status_code == 201, r.text  # a published RDR dataset has no subject


@pytest.mark.parametrize("license_json, expected", [
    ({"uri": "https://creativecommons.org/publicdomain/zero/1.0/"}, "CC0-1.0"),
    ({"name": "CC-BY-4.0", "uri": "https://creativecommons.org/publicdomain/zero/1.0/"},
     "CC0-1.0"),  # the URI wins
    ({"name": "CC-BY-4.0", "uri": "http://example.org/unknown"}, "CC-BY-4.0"),
    ({"name": "CC BY 4.0"}, None)])  # the stock name is not RDR's
def test_row33_license_looked_up_by_uri_then_name(dv, license_json, expected):
    body = citation_json(license_name=None)
    body["datasetVersion"]["license"] = license_json
    r = dv.call("POST", f"/api/dataverses/{dv.sandbox.collection}/datasets", json=body)
    if expected is None:
        assert (r.status_code, r.json()["message"]) == (400, "Invalid license: CC BY 4.0")
        return
    pid = r.json()["data"]["persistentId"]
    assert draft_version(dv, pid)["license"]["name"] == expected


def test_row48_collection_input_levels_make_fields_required_there(make_sandbox):
    sb = make_sandbox("rdr", input_levels={"rdr-sandbox": ["notesText", "country"]})
    dv = DV(sb)

    def required(alias):
        blocks = dv.call("GET", f"/api/dataverses/{alias}/metadatablocks",
                         params={"returnDatasetFieldTypes": "true"}).json()["data"]
        by_name = {b["name"]: b["fields"] for b in blocks}
        return (by_name["citation"]["notesText"]["isRequired"],
                by_name["citation"]["title"]["isRequired"],
                by_name["geospatial"]["geographicCoverage"]["childFields"]["country"][
                    "isRequired"])

    assert required("rdr-sandbox") == (True, True, True)
    assert required("root") == (False, True, False)
    r = dv.call("POST", "/api/dataverses/rdr-sandbox/datasets",
                json=citation_json())
    assert r.status_code == 400 and "Notes is required." in r.json()["message"]
    assert dv.call("POST", "/api/dataverses/root/datasets",
                   json=citation_json()).status_code == 201


def test_row25_a_missing_object_fails_validation(sandbox, dv):
    pid = dv.create_dataset()
    data = b"soon gone"
    dv.add_files(pid, [spec(direct_upload(dv, pid, data), "gone.zip", data)])
    fid = dv.files(pid)[0]["dataFile"]["id"]
    sandbox.s3.delete_object(Bucket=sandbox.dataverse.bucket,
                             Key=sandbox.dataverse.datafiles[fid].key)
    assert publish(dv, pid).status_code == 200
    deadline = time.time() + 10
    while locks(dv, pid) == ["finalizePublication"] and time.time() < deadline:
        time.sleep(0.1)
    assert locks(dv, pid) == ["FileValidationFailed"]

"""The Dataverse client's records, parsed from what the sandbox's API answers.

Each test asks the server twice: once through the client (the records), once as raw JSON
(the test client ``DV``), and checks that the record says what the answer says."""

import datetime as dt
import hashlib
import os

import pytest

from conftest import CC_BY, DV
from datalad_rdr.dataverse import (DatasetVersion, Dataverse, FileEntry, Lock, Locked,
                                   NewFile, NotFound, Permissions, UploadTarget)
from datalad_rdr.dataverse_records import Embargo, FieldValue, find
from datalad_rdr.documents import Bytes
from datalad_rdr.http import Backoff
from datalad_rdr.register import register_bundle
from datalad_rdr.upload import Uploader

FAST = Backoff(attempts=3, first=0.05, cap=0.1)
MIB = 1024 * 1024


@pytest.fixture
def ds(sandbox):
    return Dataverse(sandbox.dataverse_url, sandbox.api_token, backoff=FAST), \
        DV(sandbox).create_dataset()


def add(client, pid, data, label="core.zip", directory=None, restrict=True):
    uploaded = Uploader(client, pid, backoff=FAST).upload(Bytes(data))
    return uploaded, register_bundle(client, pid, label, uploaded, restrict, "a bundle",
                                     directory)


def publish(client, pid):
    client.publish(pid, "major")
    client.wait_unlocked(pid, timeout=30, poll=0.1)


def raw(sandbox, path, pid, **params):
    r = DV(sandbox).call("GET", path, params={"persistentId": pid, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_a_file_entry_says_what_the_listing_says(ds, sandbox):
    client, pid = ds
    data = os.urandom(3000)
    uploaded, registered = add(client, pid, data, directory="bundles")
    answer = DV(sandbox).files(pid)
    (entry,) = client.files(pid, ":draft")
    assert entry == FileEntry.from_json(answer[0])
    assert (entry.file_id, entry.label, entry.directory, entry.path, entry.size, entry.md5,
            entry.restricted, entry.storage_identifier, entry.content_type,
            entry.description, entry.embargo) == (
        registered.file_id, "core.zip", "bundles", "bundles/core.zip", len(data),
        hashlib.md5(data).hexdigest(), True, uploaded.storage_identifier, "application/zip",
        "a bundle", None)
    assert dt.date.fromisoformat(entry.creation_date[:10])
    assert find(client.draft_files(pid), "core.zip", "bundles") == entry
    assert find(client.draft_files(pid), "core.zip") is None  # another folder
    assert client.file_in_draft(pid, "core.zip", "bundles") == entry
    assert entry.moved("other.zip").path == "other.zip"


def test_an_embargo_is_read_from_the_data_file(ds, sandbox):
    # The sandbox has no embargoes; 6.7.1 adds them to the DataFile as
    # {"dateAvailable": "YYYY-MM-DD", "reason": ...} (JsonPrinter.json(Embargo)).
    client, pid = ds
    add(client, pid, b"embargoed" * 100)
    (answer,) = DV(sandbox).files(pid)
    answer["dataFile"]["embargo"] = {"dateAvailable": "2027-06-30", "reason": "the paper"}
    assert FileEntry.from_json(answer).embargo == Embargo(dt.date(2027, 6, 30), "the paper")
    answer["dataFile"]["embargo"] = {"dateAvailable": "2027-06-30", "reason": None}
    assert FileEntry.from_json(answer).embargo == Embargo(dt.date(2027, 6, 30))


def test_versions_give_state_number_license_metadata_and_files(ds, sandbox):
    client, pid = ds
    assert client.last_release(pid) is None
    draft = client.latest_version(pid)
    assert (draft.state, draft.released, draft.number) == ("DRAFT", False, (0, 0))
    _, first = add(client, pid, b"one" * 1000)
    publish(client, pid)
    _, second = add(client, pid, b"two" * 1000, label="raw.zip")

    versions = client.versions(pid)
    answer = raw(sandbox, "/api/datasets/:persistentId/versions", pid)
    assert versions == [DatasetVersion.from_json(v) for v in answer]
    now, released = versions
    assert (now.state, released.state) == ("DRAFT", "RELEASED")
    assert (released.number, released.name, released.persistent_id) == ((1, 0), "1.0", pid)
    assert released.release_time == answer[1]["releaseTime"]
    assert released.has_file(first.file_id) and not released.has_file(second.file_id)
    assert now.has_file(first.file_id) and now.has_file(second.file_id)
    assert now.file("raw.zip").file_id == second.file_id
    assert client.released_and_draft_file_ids(pid) == (
        {first.file_id}, {first.file_id, second.file_id})
    assert client.files_ever_owned(pid) == 2

    last = client.last_release(pid)
    assert (last.name, [e.file_id for e in last.files]) == ("1.0", [first.file_id])
    latest = client.latest_version(pid)
    assert latest.state == "DRAFT"
    assert (latest.license.name, latest.license.uri) == CC_BY["rdr"]
    assert latest.fields["citation"]["title"].plain() == "A test dataset"
    assert latest.file_access_request is True


def test_without_a_draft_the_published_files_are_the_latest(ds):
    client, pid = ds
    _, registered = add(client, pid, b"published" * 100)
    publish(client, pid)
    assert client.draft_files(pid) == []
    with pytest.raises(NotFound):
        client.files(pid, ":draft")
    where, files = client.latest_files(pid)
    assert where == "published" and [e.file_id for e in files] == [registered.file_id]
    assert client.current_files(pid) == files


def test_an_unknown_dataset_is_not_found(ds):
    client, _ = ds
    with pytest.raises(NotFound):
        client.files("doi:10.5072/FK2/NOPE00")
    with pytest.raises(NotFound):
        client.versions("doi:10.5072/FK2/NOPE00")


def test_locks_give_their_kind_reason_user_and_date(ds, sandbox):
    client, pid = ds
    assert client.locks(pid) == [] and not client.is_locked(pid)
    admin = DV(sandbox, token=sandbox.dataverse_settings.admin_token)
    assert admin.call("POST", "/api/datasets/:persistentId/lock/Ingest",
                      params={"persistentId": pid}).status_code == 200
    answer = raw(sandbox, "/api/datasets/:persistentId/locks", pid)
    (lock,) = client.locks(pid)
    assert lock == Lock.from_json(answer[0])
    assert (lock.kind, lock.reason, lock.user) == (
        "Ingest", "Lock added through the API", "dataverseAdmin")
    assert lock.date == answer[0]["date"]
    assert client.is_locked(pid) and client.is_locked(pid, "Ingest")
    assert not client.is_locked(pid, "InReview")
    seen = []
    with pytest.raises(Locked, match=r"still locked \(Ingest\)"):
        client.wait_unlocked(pid, timeout=0.2, poll=0.05, on_wait=seen.append)
    assert seen and seen[0] == [lock]
    admin.call("DELETE", "/api/datasets/:persistentId/locks", params={"persistentId": pid})
    assert not client.is_locked(pid)


def test_upload_targets_single_and_multipart(make_sandbox):
    sb = make_sandbox("rdr", part_size=5 * MIB)
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    pid = DV(sb).create_dataset()

    answer = raw(sb, "/api/datasets/:persistentId/uploadurls", pid, size=1000)
    single = UploadTarget.from_json(answer)
    assert (single.multipart, single.urls, single.part_size, single.storage_identifier) == (
        False, (answer["url"],), 5 * MIB, answer["storageIdentifier"])
    assert single.to_json() == answer

    answer = raw(sb, "/api/datasets/:persistentId/uploadurls", pid, size=11 * MIB)
    parts = UploadTarget.from_json(answer)
    assert parts.multipart and parts.part_size == 5 * MIB
    assert parts.urls == tuple(answer["urls"][str(n)] for n in (1, 2, 3))
    assert (parts.complete, parts.abort) == (answer["complete"], answer["abort"])
    assert parts.to_json() == answer  # what an interrupted upload's state keeps
    assert UploadTarget.from_json(parts.to_json()) == parts
    client.abort_multipart(parts.abort)

    mine = client.upload_urls(pid, 11 * MIB)
    assert mine.multipart and len(mine.urls) == 3
    client.abort_multipart(mine.abort)
    assert not client.upload_urls(pid, 10).multipart


def test_permissions_say_whether_this_token_may_publish(ds, make_sandbox):
    client, pid = ds
    assert client.user_permissions(pid) == Permissions(True, True, True, True, True)
    curated = make_sandbox("rdr", review=True)
    depositor = Dataverse(curated.dataverse_url, curated.api_token)
    mine = depositor.user_permissions(DV(curated).create_dataset())
    assert mine.can_edit and mine.can_publish is False


def test_a_registration_the_server_refuses_says_why(ds):
    client, pid = ds
    target = client.upload_urls(pid, 10)  # nothing is sent to it: no such object
    result = client.add_file(pid, NewFile(target.storage_identifier, "a.zip",
                                          hashlib.md5(b"never sent").hexdigest(),
                                          "application/zip"))
    assert result.entry is None and result.problem.startswith("Bad Request:")
    assert client.draft_files(pid) == []


def test_field_types_of_a_collection_and_of_the_installation(sandbox):
    client = Dataverse(sandbox.dataverse_url, sandbox.api_token)
    names, types = client.field_types(sandbox.collection)
    by_name = {t.name: t for t in types}
    assert "citation" in names
    assert by_name["title"].required and not by_name["title"].vocabulary
    assert "authorName" in by_name  # a child of the compound author field
    assert any(t.vocabulary for t in types)
    names, _ = client.field_types()
    assert names == ["citation"]
    assert CC_BY["rdr"][0] in client.license_names()


def test_a_field_value_goes_back_to_the_server_as_it_came(ds):
    """Merging the draft sends the fields the file does not manage as the server showed
    them: FieldValue.to_json gives back what from_json read, compounds included."""
    client, pid = ds
    answer = client.call("GET", "/api/datasets/:persistentId/versions/:draft",
                         params={"persistentId": pid}, what="reading the draft")
    fields = answer["metadataBlocks"]["citation"]["fields"]
    assert any(f["typeClass"] == "compound" and f["multiple"] for f in fields)
    values = [FieldValue.from_json(f) for f in fields]
    assert [v.to_json() for v in values] == fields
    author = next(v for v in values if v.name == "author")
    assert author.entries() and all(isinstance(c, FieldValue)
                                    for e in author.entries() for c in e.values())
    title = next(v for v in values if v.name == "title")
    assert title.entries() == () and title.plain() == "A test dataset"

"""The register stage against the sandbox: no duplicate, no renamed copy, one at a time."""

import os
import threading
import time

import pytest

from conftest import DV
from datalad_rdr.dataverse import Dataverse, VersionMetadata
from datalad_rdr.http import Backoff
from datalad_rdr.register import (RegisterError, file_budget, register_bundle,
                                  registration_lock, renamed_copy)
from datalad_rdr.sandbox.faults import Fault
from datalad_rdr.upload import Uploader
from datalad_rdr.documents import Bytes as Data  # bytes as an upload source

FAST = Backoff(attempts=3, first=0.05, cap=0.1)


@pytest.fixture
def ds(sandbox):
    client = Dataverse(sandbox.dataverse_url, sandbox.api_token, backoff=FAST)
    return client, DV(sandbox).create_dataset()


def upload(client, pid, data):
    return Uploader(client, pid, backoff=FAST).upload(Data(data))


def register(client, pid, uploaded, label="core.zip", **kw):
    return register_bundle(client, pid, label, uploaded, True, "a bundle", **kw)


def publish(client, pid):
    client.publish(pid, "major")
    client.wait_unlocked(pid, timeout=30, poll=0.1)


def labels(client, pid, version=":latest"):
    return sorted(e.label for e in client.files(pid, version))


def test_renamed_copies_are_told_apart_from_other_bundles():
    assert renamed_copy("core-1.zip", "core.zip") and renamed_copy("core-12.zip", "core.zip")
    assert renamed_copy("raw-3.zip", "raw-02.zip") and renamed_copy("README-1", "README")
    assert not renamed_copy("raw-03.zip", "raw-02.zip")  # a part of the plan, not a copy
    assert not renamed_copy("raw-01.zip", "raw-02.zip")
    assert not renamed_copy("core.zip", "core.zip") and not renamed_copy("core-1.txt",
                                                                        "core.zip")


def test_the_first_registration_after_a_publication_replaces_the_released_file(ds):
    # defect D3: no draft, so the draft the server makes already holds core.zip
    client, pid = ds
    register(client, pid, upload(client, pid, b"version one" * 1000))
    publish(client, pid)
    second = register(client, pid, upload(client, pid, b"version two" * 1000))
    assert not second.adopted and second.notes == []
    draft = client.files(pid, ":draft")
    assert [(e.label, e.md5) for e in draft] == [("core.zip", second.md5)]


def test_the_same_bytes_after_a_publication_are_adopted(ds):
    client, pid = ds
    first = register(client, pid, upload(client, pid, b"same" * 1000))
    publish(client, pid)
    again = register(client, pid, upload(client, pid, b"same" * 1000))
    assert again.adopted and again.file_id == first.file_id
    assert labels(client, pid) == ["core.zip"]


def test_an_upload_registered_by_a_lost_reply_is_taken_not_added_twice(ds, sandbox):
    client, pid = ds
    uploaded = upload(client, pid, os.urandom(5000))
    # the earlier try was saved by the server, but its reply never came back
    saved = DV(sandbox).add_files(pid, [{
        "storageIdentifier": uploaded.storage_identifier, "fileName": "core.zip",
        "mimeType": "application/zip",
        "checksum": {"@type": "MD5", "@value": uploaded.md5}}]).json()
    registered = register(client, pid, uploaded)
    assert registered.file_id == saved["data"]["Files"][0]["fileDetails"]["dataFile"]["id"]
    assert labels(client, pid) == ["core.zip"]
    adds = [p for m, p in sandbox.dataverse.requests if p.endswith("/addFiles")]
    assert len(adds) == 1


@pytest.mark.parametrize("fault", [dict(status=500), dict(optimistic_lock=True)])
def test_a_500_on_registration_is_retried_after_looking_in_the_draft(ds, sandbox, fault):
    client, pid = ds
    fault = sandbox.dataverse.faults.inject(Fault("POST", "/addFiles$", **fault))
    registered = register(client, pid, upload(client, pid, os.urandom(5000)))
    assert fault.hits == 1
    assert labels(client, pid) == ["core.zip"] and registered.label == "core.zip"
    looks = [p for m, p in sandbox.dataverse.requests if m == "GET" and "/versions/" in p]
    assert len(looks) >= 2  # before the first try and before the retry


def test_a_renamed_copy_of_the_same_bytes_is_deleted_and_reported(ds, sandbox):
    client, pid = ds
    data = os.urandom(5000)
    register(client, pid, upload(client, pid, data))
    # what a lost reply and a retry leave on Dataverse 6.7.1: the same bytes renamed
    copy = upload(client, pid, data)
    DV(sandbox).add_files(pid, [{"storageIdentifier": copy.storage_identifier,
                                 "fileName": "core-1.zip", "mimeType": "application/zip",
                                 "checksum": {"@type": "MD5", "@value": copy.md5}}])
    assert labels(client, pid) == ["core-1.zip", "core.zip"]
    again = register(client, pid, upload(client, pid, data))
    assert again.adopted
    assert labels(client, pid) == ["core.zip"]
    assert any("deleted core-1.zip" in note for note in again.notes)


def test_an_unrelated_file_with_a_copy_like_name_is_kept(ds):
    client, pid = ds
    register(client, pid, upload(client, pid, b"part two" * 100), label="raw-02.zip")
    register(client, pid, upload(client, pid, b"another" * 100), label="raw-3.zip")
    register(client, pid, upload(client, pid, b"part two" * 100), label="raw-02.zip")
    assert labels(client, pid) == ["raw-02.zip", "raw-3.zip"]


def test_registrations_of_one_dataset_wait_for_each_other(ds):
    client, pid = ds
    uploaded = upload(client, pid, os.urandom(3000))
    done = []
    with registration_lock(client.url, pid):
        worker = threading.Thread(target=lambda: done.append(register(client, pid,
                                                                      uploaded)))
        worker.start()
        time.sleep(0.5)
        assert done == [] and client.files(pid, ":draft") == []
    worker.join(10)
    assert done and labels(client, pid) == ["core.zip"]


def test_a_registration_lock_held_too_long_is_an_error_that_says_so(ds):
    client, pid = ds
    uploaded = upload(client, pid, os.urandom(3000))
    with registration_lock(client.url, pid):
        with pytest.raises(RegisterError, match="another process"):
            register(client, pid, uploaded, lock_timeout=0.3)
    assert client.files(pid, ":draft") == []


def test_the_file_budget_counts_every_file_ever_owned(make_sandbox):
    sb = make_sandbox("rdr", dataset_file_limit=4)
    client = Dataverse(sb.dataverse_url, sb.api_token, backoff=FAST)
    pid = DV(sb).create_dataset()
    register(client, pid, upload(client, pid, b"a" * 100), label="a.zip")
    register(client, pid, upload(client, pid, b"b" * 100), label="b.zip")
    publish(client, pid)
    register(client, pid, upload(client, pid, b"a2" * 100), label="a.zip")  # replaced
    assert len(client.files(pid, ":draft")) == 2
    budget = file_budget(client, pid, 1, collection=sb.collection)
    assert (budget.limit, budget.owned) == (4, 3)
    assert not budget.fits
    assert "would run out of files" in budget.message(pid)
    assert "3 are used, 1 more are needed, 0 left" in budget.message(pid)
    assert file_budget(client, pid, 0, collection=sb.collection).fits


def test_no_file_count_limit_is_no_budget(ds, sandbox):
    client, pid = ds
    budget = file_budget(client, pid, 100, collection=sandbox.collection)
    assert budget.limit is None and budget.fits


def _add(sandbox, pid, uploaded, label="core.zip"):
    return DV(sandbox).add_files(pid, [{
        "storageIdentifier": uploaded.storage_identifier, "fileName": label,
        "mimeType": "application/zip",
        "checksum": {"@type": "MD5", "@value": uploaded.md5}}]).json()


@pytest.mark.parametrize("same_bytes", [True, False])
def test_a_name_taken_meanwhile_leaves_one_file_of_that_name(ds, sandbox, same_bytes):
    client, pid = ds
    mine_data = os.urandom(4000)
    other = upload(client, pid, mine_data if same_bytes else os.urandom(4000))
    ours = upload(client, pid, mine_data)
    fault = sandbox.dataverse.faults.inject(Fault("POST", "/addFiles$", delay=1.0))
    done = []
    worker = threading.Thread(target=lambda: done.append(register(client, pid, ours)))
    worker.start()
    while not fault.hits:
        time.sleep(0.02)
    _add(sandbox, pid, other)  # the server then renames ours: core-1.zip
    worker.join(20)
    (registered,) = done
    draft = client.files(pid, ":draft")
    assert [e.label for e in draft] == ["core.zip"]
    assert registered.label == "core.zip" and registered.md5 == ours.md5
    assert draft[0].file_id == registered.file_id
    assert any("core-1.zip" in note for note in registered.notes), registered.notes


def test_replacing_the_draft_metadata_keeps_restricted_files_publishable(ds, sandbox):
    # PUT versions/:draft resets fileAccessRequest to false unless given (fidelity row 32):
    # with restricted files and no terms of access, restrict and publish would give 409
    client, pid = ds
    registered = register(client, pid, upload(client, pid, os.urandom(2000)))
    assert registered.restricted
    version = client.latest_version(pid)
    client.update_draft(pid, VersionMetadata({name: tuple(fields.values()) for name, fields
                                              in version.fields.items()}, version.license))
    assert client.latest_version(pid).file_access_request is True
    client.restrict(registered.file_id, False)
    client.restrict(registered.file_id, True)
    publish(client, pid)
    assert client.dataset_version(pid).major == 1

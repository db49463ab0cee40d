"""The sandbox behaves as Dataverse 6.7.1's source says where a client could trip on it.

Each test names the row of ../shared/reference/dataverse-fidelity.md it pins.
"""

import hashlib
import json
import os
import time

import pytest
import requests

from conftest import DV
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

"""Clients nobody here wrote, run against the sandbox: the proof that it is honest.

If one of these fails, the sandbox is wrong until proven otherwise.
"""

import hashlib
import json
import os

import pytest
import requests

from conftest import DV, citation_json

MIB = 1024 * 1024


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def check_on_server(dv, pid, expected):
    """Names, sizes and MD5 via the API, and the bytes downloaded back."""
    files = {(f.get("directoryLabel"), f["label"]): f["dataFile"] for f in dv.files(pid)}
    assert sorted(files, key=str) == sorted(expected, key=str)
    for key, data in expected.items():
        df = files[key]
        assert df["filesize"] == len(data)
        assert df["md5"] == hashlib.md5(data).hexdigest()
        got = requests.get(f"{dv.url}/api/access/datafile/{df['id']}",
                           headers={"X-Dataverse-key": dv.token})
        assert got.status_code == 200
        assert hashlib.md5(got.content).hexdigest() == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("multipart", [False, True], ids=["single-part", "multipart"])
def test_dvuploader_direct_upload(make_sandbox, tmp_path, multipart):
    import dvuploader as dv_up

    # Upstream dvuploader sends x-amz-tagging, as Dataverse's default store expects.
    sb = make_sandbox("dataverse", part_size=5 * MIB)
    dv = DV(sb)
    pid = dv.create_dataset()
    size = 11 * MIB + 5 if multipart else 300_000
    contents = {
        (None, "README.md"): b"# A dataset\n",
        ("bundles", "raw.zip"): os.urandom(size),
        ("bundles", "core.zip"): os.urandom(size // 3),
    }
    files = [
        dv_up.File(filepath=str(write(tmp_path / (folder or ".") / name, data)),
                   directory_label=folder or "")
        for (folder, name), data in contents.items()
    ]
    uploader = dv_up.DVUploader(files=files)
    uploader.upload(persistent_id=pid, dataverse_url=sb.dataverse_url + "/",
                    api_token=sb.api_token, n_parallel_uploads=2)
    check_on_server(dv, pid, contents)
    # Direct upload really was used: nothing went through the server's /add path.
    assert sb.gate.stats.bytes_received >= sum(len(d) for d in contents.values())


def test_upstream_dvuploader_fails_on_rdr_as_it_does_on_swift(sandbox, tmp_path):
    """RDR's Swift has no tagging; upstream dvuploader sends it and gets 501.

    That is why KU Leuven keeps a fork without the header (ref §3.2). A sandbox on which
    upstream dvuploader succeeded in the rdr profile would be lying.
    """
    import dvuploader as dv_up

    dv = DV(sandbox)
    pid = dv.create_dataset()
    path = write(tmp_path / "a.bin", os.urandom(1000))
    uploader = dv_up.DVUploader(files=[dv_up.File(filepath=str(path))])
    with pytest.raises(Exception) as exc:
        uploader.upload(persistent_id=pid, dataverse_url=sandbox.dataverse_url + "/",
                        api_token=sandbox.api_token, n_parallel_uploads=1)
    assert "501" in str(exc.value)
    assert dv.files(pid) == []


def test_pydataverse_creates_a_dataset_and_lists_its_files(sandbox, tmp_path):
    from pyDataverse.api import NativeApi

    api = NativeApi(sandbox.dataverse_url, sandbox.api_token)
    r = api.create_dataset(sandbox.collection, json.dumps(citation_json("Finches")))
    assert r.status_code == 201
    pid = r.json()["data"]["persistentId"]
    # pyDataverse uploads through the ordinary /add path (it has no direct upload)
    path = write(tmp_path / "notes.txt", b"some notes\n")
    r = api.upload_datafile(pid, str(path),
                            json.dumps({"description": "notes", "directoryLabel": "doc"}))
    assert r.status_code == 200, r.text
    r = api.get_datafiles_metadata(pid, version=":draft")
    assert r.status_code == 200
    (entry,) = r.json()["data"]
    assert (entry["label"], entry["directoryLabel"], entry["dataFile"]["filesize"]) == (
        "notes.txt", "doc", 11)
    ds = api.get_dataset(pid).json()["data"]
    assert ds["latestVersion"]["versionState"] == "DRAFT"
    title = {f["typeName"]: f["value"]
             for f in ds["latestVersion"]["metadataBlocks"]["citation"]["fields"]}["title"]
    assert title == "Finches"


def test_pydataverse_upload_of_a_zip_falls_into_the_unpacking_trap(sandbox, tmp_path):
    """The ordinary /add path unpacks ZIPs: why RDR asks for direct upload of bundles."""
    import io
    import zipfile

    from pyDataverse.api import NativeApi

    api = NativeApi(sandbox.dataverse_url, sandbox.api_token)
    pid = api.create_dataset(sandbox.collection,
                             json.dumps(citation_json())).json()["data"]["persistentId"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("sub-01/anat/sub-01_T1w.json", "{}")
        zf.writestr("participants.tsv", "participant_id\nsub-01\n")
    path = write(tmp_path / "core.zip", buf.getvalue())
    assert api.upload_datafile(pid, str(path)).status_code == 200
    labels = sorted(f["label"] for f in
                    api.get_datafiles_metadata(pid, version=":draft").json()["data"])
    assert labels == ["participants.tsv", "sub-01_T1w.json"]

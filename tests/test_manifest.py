"""The manifest's two files: members.tsv read back as written, and format 1 converted once."""

import json
import subprocess
from dataclasses import asdict

import pytest
from conftest import DV
from test_export import IMAGE, export

from datalad_rdr import manifest as mf
from datalad_rdr.demo import make_bids_dataset

BLOB = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def member(path, size, key=None, method="stored", csize=None, header=0, extra=0):
    name = len(path.encode())
    return mf.MemberRecord(path, size, key, None if key else BLOB, method, "0a1b2c3d",
                           size if csize is None else csize, header,
                           header + mf.LOCAL_HEADER_SIZE + name + extra)


def test_members_read_back_as_written_with_odd_names_and_layouts():
    first = member("a/b.txt", 300, "MD5E-s300--0123456789abcdef0123456789abcdef.txt")
    odd = member("a/tab\there%20\nnew.txt", 10, method="deflated", csize=8,
                 header=first.data_offset + 300)
    hashed = member("#x/[y]/z", 5, header=999, extra=20)  # a gap and an extra field
    top = member("top", 7, "WORM-s7-m1700000000--top", header=hashed.data_offset + 5)
    bundle = mf.BundleRecord("raw-01", "raw", "raw-01.zip", 2000, "md5", 5, "s3://x", True,
                             "fp", [first, odd, hashed, top])
    manifest = mf.Manifest("http://x", "doi:1", "abc", {}, [bundle])
    text = manifest.members_text()
    assert len(text.splitlines()) == 1 + 1 + 4 + 3  # header, bundle, members, folders
    assert "\tMD5E-s300--0123456789abcdef0123456789abcdef.txt\t0a1b2c3d\n" in text
    back = mf.Manifest.from_json(manifest.to_json(), text)
    assert back.bundles[0].members == [first, odd, hashed, top]
    assert back.same_export(manifest)
    assert "members" not in json.loads(manifest.to_json())["bundles"][0]


def test_a_broken_members_line_names_its_line():
    with pytest.raises(ValueError, match="line 3: a size or offset"):
        mf.parse_members("[raw-01]\n./\nx\tMD5E-s1--ab\t0a1b2c3d\tnot-a-number\n")
    with pytest.raises(ValueError, match="line 2: not a bundle"):
        mf.parse_members("[raw-01]\nstray\n")


def commits(ds):
    return int(subprocess.run(["git", "-C", str(ds), "rev-list", "--count", "HEAD"],
                              capture_output=True, text=True, check=True).stdout)


def test_a_format_1_manifest_is_converted_once_by_the_next_export(token_env, tmp_path):
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE)
    results = export(ds, token_env)
    assert all(r["status"] in ("ok", "notneeded") for r in results), results
    exported = mf.load(ds)
    # the dataset as an older datalad-rdr left it: one JSON file, members inline
    old = {**asdict(exported), "format": mf.FORMAT_1}
    manifest_path, members_path = mf.files(ds)
    manifest_path.unlink()
    manifest_path.write_text(json.dumps(old, indent=1) + "\n")
    subprocess.run(["git", "-C", str(ds), "rm", "-q", str(members_path)], check=True)
    subprocess.run(["git", "-C", str(ds), "commit", "-q", "-am", "as format 1"], check=True)
    assert mf.load(ds).bundles == exported.bundles  # format 1 loads
    before, requests = commits(ds), len(token_env.dataverse.requests)

    results = export(ds, token_env)

    assert all(r["status"] in ("ok", "notneeded") for r in results), results
    assert commits(ds) == before + 1  # the conversion, in the export's one commit
    assert json.loads(manifest_path.read_text())["format"] == mf.FORMAT
    assert members_path.exists()
    assert mf.load(ds).bundles == exported.bundles
    changing = [m for m, _ in token_env.dataverse.requests[requests:] if m != "GET"]
    # no bundle sent: they are the same; only the history, for its new commit, replaced
    assert changing == ["POST"]
    assert [r["status"] for r in results if r.get("bundle")] == ["notneeded"] * len(
        exported.bundles)
    files = [f["label"] for f in DV(token_env).files(exported.pid)]
    assert sorted(files) == sorted([b.filename for b in exported.bundles]
                                   + ["README", "dataset-history.git.bundle"])
    # and once only
    results = export(ds, token_env)
    assert commits(ds) == before + 1

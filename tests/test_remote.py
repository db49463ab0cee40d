"""The ``rdr`` special remote, read side: export, clone through a RIA alias, get one file.

Each test is a user's session against the sandbox: a BIDS-like dataset is exported with
``datalad rdr-export --ria-store``, cloned from the RIA store in another directory, and files
are fetched with ``datalad get`` through the remote that the clone enabled by itself.
"""

import json
import os
import subprocess
from pathlib import Path

import datalad.api as dl
import pytest
from conftest import DV

from datalad_rdr import manifest as mf
from datalad_rdr.demo import make_bids_dataset
from datalad_rdr.remote import locations
from datalad_rdr.sandbox.faults import Fault

MiB = 2**20
IMAGE = 3_000_000  # bytes per NIfTI: raw of 2 subjects = 18 MB, 4 parts of 5 MiB
T1W = "sub-01/anat/sub-01_T1w.nii.gz"


@pytest.fixture
def sb(make_sandbox):
    return make_sandbox("rdr", part_size=5 * MiB)


@pytest.fixture
def bids(tmp_path):
    return make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE,
                             derivatives={"fmriprep": 100_000})


@pytest.fixture
def no_token(monkeypatch):
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET", raising=False)


def export(ds, sb, store, monkeypatch, **kw):
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    results = dl.rdr_export(dataset=str(ds), url=sb.dataverse_url, collection=sb.collection,
                            ria_store=f"ria+file://{store}", ria_alias="study",
                            result_renderer="disabled", return_type="list",
                            on_failure="ignore", **kw)
    assert [r for r in results if r["status"] in ("error", "impossible")] == [], results
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET")
    return results


def clone(store, path):
    dl.clone(source=f"ria+file://{store}#~study", path=str(path),
             result_renderer="disabled")
    return path


def run(cmd, cwd, token=None, check=False):
    env = dict(os.environ)
    env.pop("DATALAD_CREDENTIAL_RDR_SECRET", None)
    if token:
        env["DATALAD_CREDENTIAL_RDR_SECRET"] = token
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def manifest(ds):
    return mf.load(Path(ds)).as_dict()


def member(ds, path):
    for b in manifest(ds)["bundles"]:
        for m in b["members"]:
            if m["path"] == path:
                return b, m
    raise KeyError(path)


def annex_key(repo, path):
    return run(["git", "annex", "lookupkey", path], repo, check=True).stdout.strip()


def whereis_remotes(repo, path):
    r = run(["git", "annex", "whereis", "--json", path], repo)
    record = json.loads(r.stdout.splitlines()[0])
    return [w["description"].strip("[]") for w in record["whereis"]]


def has_content(repo, path):
    return run(["git", "annex", "find", "--in", "here", path], repo).stdout.strip() != ""


def test_clone_through_ria_alias_gets_one_file_by_range(sb, bids, tmp_path, monkeypatch,
                                                       no_token):
    store = tmp_path / "store"
    results = export(bids, sb, store, monkeypatch)
    assert any("recorded as in the special remote 'rdr'" in r["message"] for r in results)
    assert any(r.get("ria") == f"ria+file://{store}#~study" for r in results)
    bundle, m = member(bids, T1W)
    assert bundle["size"] > 3 * 5 * MiB  # a multi-part upload
    # the RIA store holds the dataset's git history and git-annex branch, not the content
    objects = list(store.glob("*/*/annex/objects/**/*.nii.gz"))
    assert objects == []

    cl = clone(store, tmp_path / "clone")
    assert run(["git", "config", "remote.rdr.annex-externaltype"], cl).stdout.strip() == "rdr"
    whereis = run(["git", "annex", "whereis", T1W], cl, check=True).stdout
    assert f"datafile/{bundle['file_id']}?pid=" in whereis
    assert f"&bundle={bundle['filename']}&" in whereis

    # the bundle is restricted, in a draft: without a token a clear refusal, nothing got
    r = run(["datalad", "get", T1W], cl)
    assert r.returncode != 0
    assert "restricted or in an unpublished draft, and no API token is set" in \
        r.stdout + r.stderr
    assert not has_content(cl, T1W)
    r = run(["datalad", "get", T1W], cl, token="not-a-token")
    assert r.returncode != 0
    assert "refused the API token (Bad API key)" in r.stdout + r.stderr

    sb.gate.stats.reset()
    run(["datalad", "get", T1W], cl, token=sb.api_token, check=True)
    assert (cl / T1W).read_bytes() == (bids / T1W).read_bytes()
    served = sum(sb.gate.stats.bytes_served.values())
    assert m["size"] <= served <= m["size"] + 64 * 1024, served
    assert served < bundle["size"] / 5
    run(["git", "annex", "fsck", T1W], cl, check=True)
    # the PennLINC route for non-DataLad users: a plain copy following the annex link
    plain = tmp_path / "plain.nii.gz"
    subprocess.run(["cp", "-L", str(cl / T1W), str(plain)], check=True)
    assert plain.read_bytes() == (bids / T1W).read_bytes()


def test_public_file_needs_no_token(sb, bids, tmp_path, monkeypatch, no_token):
    meta = bids / ".datalad/rdr/metadata.yaml"
    meta.write_text(meta.read_text().replace("access: restricted", "access: open")
                    .replace("opt_out_reason: privacy\n", ""))
    dl.save(dataset=str(bids), result_renderer="disabled")
    store = tmp_path / "store"
    export(bids, sb, store, monkeypatch, publish="major")
    _, m = member(bids, T1W)
    cl = clone(store, tmp_path / "clone")
    sb.gate.stats.reset()
    run(["datalad", "get", T1W, "derivatives"], cl, check=True)
    assert (cl / T1W).read_bytes() == (bids / T1W).read_bytes()
    assert sum(sb.gate.stats.bytes_served.values()) <= m["size"] + 64 * 1024 + 250_000
    # a token the server refuses (another server's, revoked) does not stop public reads
    run(["datalad", "drop", T1W], cl, check=True)
    run(["datalad", "get", T1W], cl, token="not-a-token", check=True)


def test_corrupted_bytes_fail_the_get_and_nothing_lands(sb, bids, tmp_path, monkeypatch,
                                                        no_token):
    store = tmp_path / "store"
    export(bids, sb, store, monkeypatch)
    _, m = member(bids, T1W)
    cl = clone(store, tmp_path / "clone")
    sb.gate.faults.inject(Fault("GET", ".", count=100,
                                corrupt=m["data_offset"] + m["size"] // 2))
    r = run(["datalad", "get", T1W], cl, token=sb.api_token)
    assert r.returncode != 0
    assert "CRC-32" in r.stdout + r.stderr and "corrupted" in r.stdout + r.stderr
    assert not has_content(cl, T1W)
    key = annex_key(cl, T1W)
    # neither an object nor a partial download with wrong bytes (transfer logs are fine)
    leftovers = [p for d in ("objects", "tmp") for p in (cl / ".git/annex" / d).rglob("*")
                 if key in p.name and p.is_file()]
    assert leftovers == []
    # the store heals: the same get works
    sb.gate.faults.clear()
    run(["datalad", "get", T1W], cl, token=sb.api_token, check=True)


def test_checkpresent_is_the_servers_word(sb, bids, tmp_path, monkeypatch, no_token):
    store = tmp_path / "store"
    export(bids, sb, store, monkeypatch)
    bundle, _ = member(bids, T1W)
    cl = clone(store, tmp_path / "clone")
    key = annex_key(cl, T1W)
    r = run(["git", "annex", "checkpresentkey", key, "rdr"], cl)
    assert r.returncode == 0, r.stdout + r.stderr  # restricted, no token: still there
    # the bundle deleted on the server (by hand in the web UI): not present any more
    r = DV(sb).call("DELETE", f"/api/files/{bundle['file_id']}")
    assert r.status_code == 200, r.text
    r = run(["git", "annex", "checkpresentkey", key, "rdr"], cl, token=sb.api_token)
    assert r.returncode == 1, r.stdout + r.stderr
    r = run(["git", "annex", "fsck", "--fast", "--from", "rdr", T1W], cl,
            token=sb.api_token)
    assert r.returncode != 0
    assert "rdr" not in whereis_remotes(cl, T1W)  # fsck corrected the location log


def test_member_names_never_become_paths(sb, bids, tmp_path, monkeypatch, no_token):
    """A forged record naming ``../../escape`` at a real member's offsets: refused, and
    nothing is written anywhere but git-annex's own temporary file."""
    store = tmp_path / "store"
    export(bids, sb, store, monkeypatch)
    bundle, m = member(bids, T1W)
    cl = clone(store, tmp_path / "clone")
    key = annex_key(cl, T1W)
    real = locations.Location(sb.dataverse_url, manifest(bids)["pid"], bundle["file_id"],
                              bundle["filename"],
                              bundle["size"], T1W, m["size"], m["method"], m["crc32"],
                              m["compressed_size"], m["header_offset"], m["data_offset"])
    forged = real.__class__(**{**real.__dict__, "member": "../../escape",
                               "data_offset": m["data_offset"]})
    run(["git", "annex", "unregisterurl", "--remote=rdr", key, real.uri()], cl, check=True)
    run(["git", "annex", "registerurl", "--remote=rdr", key, forged.uri()], cl, check=True)
    r = run(["datalad", "get", T1W], cl, token=sb.api_token)
    assert r.returncode != 0
    assert "names another member" in r.stdout + r.stderr
    assert not (tmp_path / "escape").exists() and not (cl.parent / "escape").exists()
    assert not has_content(cl, T1W)


def test_location_record_round_trip():
    loc = locations.Location("https://rdr.kuleuven.be", "doi:10.48804/ABC", 1234,
                             "raw-01.zip", 2_000_000_000,
                             "sub-01/anat/a b&c=%+.nii.gz", 1536000, "stored", "0a1b2c3d",
                             1536000, 1048576, 1048576 + 30 + 27)
    uri = loc.uri()
    assert " " not in uri and "\n" not in uri
    assert uri.startswith("rdr+https://rdr.kuleuven.be/api/access/datafile/1234?")
    assert locations.parse(uri) == loc
    assert locations.claims(uri, "https://rdr.kuleuven.be/", "doi:10.48804/ABC")
    assert not locations.claims(uri, "https://rdr.kuleuven.be", "doi:10.48804/OTHER")
    assert not locations.claims(uri, "https://demo.dataverse.org", "doi:10.48804/ABC")
    for bad in (uri.replace("crc32=0a1b2c3d", "crc32=xyz"),
                uri.replace("method=stored", "method=bzip2"),
                uri.replace("data=1048633", "data=10"),
                uri.replace("bsize=2000000000", "bsize=10"),
                "rdr+https://rdr.kuleuven.be/api/access/datafile/x?bundle=a"):
        with pytest.raises(ValueError):
            locations.parse(bad)


def test_location_records_carry_their_format_version():
    loc = locations.Location("https://rdr.kuleuven.be", "doi:10.48804/ABC", 1234,
                             "raw-01.zip", 2_000_000_000, "sub-01/a.nii.gz", 1536000,
                             "stored", "0a1b2c3d", 1536000, 1048576, 1048576 + 30 + 15)
    uri = loc.uri()
    assert uri.endswith("&v=1")
    older = uri.replace("&v=1", "")  # written before records had a version: version 1
    assert locations.parse(older) == loc
    assert locations.parse(older).record == older and locations.parse(uri).record == uri
    with pytest.raises(locations.NewerFormat,  # 2 is a bundle's split volumes (vols=)
                       match=r"format version 3 .*: upgrade datalad-rdr"):
        locations.parse(uri.replace("&v=1", "&v=3"))
    with pytest.raises(ValueError, match="unknown version"):
        locations.parse(uri.replace("&v=1", "&v=one"))


def test_server_access_needs_no_token_for_the_store(sb, bids, tmp_path, monkeypatch,
                                                   no_token):
    """The 303 is followed without the API token (requests would keep it)."""
    store = tmp_path / "store"
    export(bids, sb, store, monkeypatch)
    bundle, m = member(bids, T1W)
    from datalad_rdr.remote.reader import BundleReader

    seen = []
    reader = BundleReader(sb.dataverse_url, lambda: sb.api_token)
    original = reader._store.get

    def spy(url, headers=None, **kw):
        seen.append(dict(headers or {}))
        return original(url, headers=headers, **kw)

    reader._store.get = spy  # a witness, not a replacement: the real request still goes
    body = reader.open(bundle["file_id"], m["data_offset"], m["data_offset"] + 99)
    data = b"".join(body.iter_content())
    assert data == (bids / T1W).read_bytes()[:100]
    assert seen and all("X-Dataverse-key" not in h for h in seen)
    assert "X-Dataverse-key" not in reader._store.headers


def test_reexport_moves_the_records_to_the_new_bundle(sb, bids, tmp_path, monkeypatch,
                                                     no_token):
    store = tmp_path / "store"
    export(bids, sb, store, monkeypatch)
    old, _ = member(bids, T1W)
    # a changed image: the raw bundle is sent again (a new file id), the old one leaves
    changed = "sub-02/anat/sub-02_T1w.nii.gz"
    (bids / changed).unlink()
    (bids / changed).write_bytes(os.urandom(IMAGE))
    dl.save(dataset=str(bids), result_renderer="disabled")
    results = export(bids, sb, store, monkeypatch)
    assert any("records of bundles no longer on the server removed" in r["message"]
               for r in results), [r["message"] for r in results]
    new, _ = member(bids, T1W)
    assert new["file_id"] != old["file_id"]
    whereis = run(["git", "annex", "whereis", T1W], bids, check=True).stdout
    assert f"datafile/{new['file_id']}?" in whereis
    assert f"datafile/{old['file_id']}?" not in whereis
    cl = clone(store, tmp_path / "clone")
    run(["datalad", "get", T1W, changed], cl, token=sb.api_token, check=True)
    assert (cl / changed).read_bytes() == (bids / changed).read_bytes()


def test_subdatasets_exported_with_r_are_got_from_their_bundles(sb, tmp_path, monkeypatch,
                                                                no_token):
    from datalad_rdr.demo import demo_metadata

    # the token is in the environment before DataLad reads the datasets' configuration
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    sup = dl.create(str(tmp_path / "super"), result_renderer="disabled")
    (Path(sup.path) / "README").write_text("super\n")
    (Path(sup.path) / ".datalad/rdr").mkdir(parents=True)
    (Path(sup.path) / ".datalad/rdr/metadata.yaml").write_text(demo_metadata())
    sub = sup.create("derivatives/fmriprep", result_renderer="disabled")
    (Path(sub.path) / "sub-01").mkdir()
    image = "derivatives/fmriprep/sub-01/out.nii.gz"
    (Path(sup.path) / image).write_bytes(os.urandom(100_000))
    sup.save(recursive=True, result_renderer="disabled")
    store = tmp_path / "store"
    export(sup.path, sb, store, monkeypatch, recursive=True)
    cl = clone(store, tmp_path / "clone")
    r = run(["datalad", "get", "-r", image], cl, token=sb.api_token, check=True)
    assert (cl / image).read_bytes() == (Path(sup.path) / image).read_bytes(), r.stdout
    whereis = run(["git", "annex", "whereis", "sub-01/out.nii.gz"],
                  cl / "derivatives/fmriprep", check=True).stdout
    assert "rdr+" in whereis and "member=derivatives/fmriprep/sub-01/out.nii.gz" in whereis

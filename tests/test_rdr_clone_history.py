"""``datalad rdr-clone`` of a dataset exported with datalad-rdr: its history from the record.

A user's session against the sandbox: a BIDS-like dataset (README and documentation
annexed, bundles restricted) is exported and published; a reader who has only the DOI --
no token, no RIA store -- clones it with ``datalad rdr-clone`` and gets the exporter's
commits, the public documents without a token, a restricted file with one. Then a second
version, and a deposit that the metadata file restricts.
"""

import hashlib
import zlib
import subprocess
from pathlib import Path

import datalad.api as dl
import pytest
import requests
from conftest import rdr_export, run_as_user as run

from datalad_rdr import history, manifest as mf, metadata
from datalad_rdr.demo import demo_metadata, make_bids_dataset
from datalad_rdr.sandbox.faults import Fault

IMAGE = 60_000
T1W = "sub-01/anat/sub-01_T1w.nii.gz"
DESCRIPTOR = "<html><body><h1>Data descriptor</h1></body></html>\n"


@pytest.fixture
def sb(make_sandbox, monkeypatch):
    sb = make_sandbox("rdr")
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)  # the exporter's
    return sb


@pytest.fixture
def bids(tmp_path):
    """README and the descriptor annexed: a reader gets them from their public files."""
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE,
                           annex_text=True)
    (ds / "docs").mkdir()
    (ds / "docs/index.html").write_text(DESCRIPTOR)
    meta = ds / ".datalad/rdr/metadata.yaml"
    meta.write_text(meta.read_text() + "documentation: [docs/index.html]\n")
    dl.save(dataset=str(ds), message="descriptor", result_renderer="disabled")
    return ds


def export(ds, sb, **kw):
    results = rdr_export(ds, sb, **kw)
    assert [r["message"] for r in results if r["status"] == "error"] == []
    return results


def deposited(results):
    (res,) = [r for r in results if r["path"].endswith(history.NAME)
              and r["action"] == "rdr-export"]
    return res


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def rdr_clone(sb, doi, path, *extra, token=None):
    return run(["datalad", "rdr-clone", f"doi:{doi}", str(path), "--url", sb.dataverse_url,
                *extra], path.parent, token=token)


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_a_reader_clones_the_published_dataset_from_its_doi(sb, bids, tmp_path):
    results = export(bids, sb, publish="major")
    deposit = deposited(results)
    assert deposit["status"] == "ok" and "public file" in deposit["message"]
    # the commit publishing adds (the DOI) comes after the deposit: the clone is at its parent
    assert git(bids, "log", "-1", "--format=%s").startswith("[DATALAD RDR] published")
    assert deposit["commit"] == git(bids, "rev-parse", "HEAD^")
    doi = mf.load(bids).doi

    clone = tmp_path / "reader"
    r = rdr_clone(sb, doi, clone)
    assert r.returncode == 0, r.stdout + r.stderr
    assert git(clone, "rev-list", "HEAD") == git(bids, "rev-list", "HEAD^")
    assert git(clone, "remote").split() == ["rdr"]  # no origin: it was the downloaded file
    assert git(clone, "config", "remote.rdr.annex-externaltype") == "rdr"
    assert not (clone / ".datalad/rdr/record.json").exists()  # not built from a listing

    # public documents: from their own files, without a token
    r = run(["datalad", "get", "README", "docs/index.html"], clone)
    assert r.returncode == 0, r.stdout + r.stderr
    assert md5(clone / "README") == md5(bids / "README")
    assert (clone / "docs/index.html").read_text() == DESCRIPTOR

    # a member of a restricted bundle: refused without a token, saying how to get it
    r = run(["datalad", "get", T1W], clone)
    assert r.returncode != 0
    assert "restricted or in an unpublished draft, and no API token is set" in \
        r.stdout + r.stderr
    assert f"use 'Request Access' on {sb.dataverse_url}/dataset.xhtml?persistentId=" \
           f"doi:{doi}" in r.stdout + r.stderr
    r = run(["datalad", "get", T1W], clone, token=sb.api_token)
    assert r.returncode == 0, r.stdout + r.stderr
    assert md5(clone / T1W) == md5(bids / T1W)
    r = run(["git", "annex", "fsck", "README", "docs/index.html", T1W], clone)
    assert r.returncode == 0, r.stdout + r.stderr

    # a rerun with nothing changed: the deposit is not sent again, nothing changes
    before = len(sb.dataverse.requests)
    again = export(bids, sb)
    assert deposited(again)["status"] == "notneeded"
    # also from a clone of the dataset that did not make the deposit (no marker in .git),
    # whose branch is past the deposited commit
    (bids / ".git/datalad-rdr/history.json").unlink()
    assert deposited(export(bids, sb))["status"] == "notneeded"
    assert [(m, p) for m, p in sb.dataverse.requests[before:] if m != "GET"] == []

    # version 2.0: a changed file; the new clone has the new commit, 1.0 the old one
    first = deposit["commit"]
    (bids / "CHANGES").unlink()
    (bids / "CHANGES").write_text("2.0.0 2026-12-01\n  - CHANGES changed\n")
    dl.save(dataset=str(bids), message="a change", result_renderer="disabled")
    second = deposited(export(bids, sb, publish="major"))
    assert second["status"] == "ok" and second["commit"] != first
    latest = tmp_path / "latest"
    r = rdr_clone(sb, doi, latest)
    assert r.returncode == 0, r.stdout + r.stderr
    assert git(latest, "rev-parse", "HEAD") == second["commit"] == git(bids, "rev-parse",
                                                                       "HEAD^")
    old = tmp_path / "old"
    r = rdr_clone(sb, doi, old, "--record-version", "1.0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert git(old, "rev-parse", "HEAD") == first
    # a clone with commits of its own is not moved, and says so
    (old / "mine.txt").write_text("my analysis\n")
    git(old, "add", "mine.txt")
    git(old, "commit", "-q", "-m", "mine")
    mine = git(old, "rev-parse", "HEAD")
    r = rdr_clone(sb, doi, old)
    assert r.returncode != 0 and "has commits that version 2.0" in r.stdout, r.stdout
    branch = git(bids, "symbolic-ref", "--short", "HEAD")
    assert f"merge rdr-history/{branch} (fetched) by hand" in r.stdout
    assert git(old, "rev-parse", "HEAD") == mine
    # a rerun into the first clone brings it to version 2.0; once
    r = rdr_clone(sb, doi, clone)
    assert r.returncode == 0 and "updated" in r.stdout, r.stdout + r.stderr
    assert git(clone, "rev-parse", "HEAD") == second["commit"]
    assert git(clone, "status", "--porcelain") == ""
    r = run(["datalad", "-f", "json", "rdr-clone", f"doi:{doi}", str(clone), "--url",
             sb.dataverse_url], tmp_path)
    assert r.returncode == 0 and '"status": "notneeded"' in r.stdout, r.stdout + r.stderr
    assert "already holds version 2.0" in r.stdout
    r = run(["datalad", "get", "CHANGES"], clone, token=sb.api_token)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (clone / "CHANGES").read_text() == (bids / "CHANGES").read_text()


def test_a_restricted_history_needs_a_token(sb, bids, tmp_path):
    meta = bids / ".datalad/rdr/metadata.yaml"
    meta.write_text(meta.read_text() + "history: restricted\n")
    dl.save(dataset=str(bids), message="history restricted", result_renderer="disabled")
    deposit = deposited(export(bids, sb, publish="major"))
    assert "restricted file" in deposit["message"]
    doi = mf.load(bids).doi

    clone = tmp_path / "reader"
    r = rdr_clone(sb, doi, clone)
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if history.NAME in line]
    assert len(lines) == 1 and "is restricted" in lines[0] and "Request Access" in lines[0]
    assert not clone.exists()
    r = rdr_clone(sb, doi, clone, token=sb.api_token)
    assert r.returncode == 0, r.stdout + r.stderr
    assert git(clone, "rev-parse", "HEAD") == deposit["commit"]


def test_the_history_key_takes_public_or_restricted():
    text = demo_metadata() + "description: A test.\n"
    assert metadata.parse(text).history == "public"
    assert metadata.parse(text + "history: Restricted\n").history == "restricted"
    with pytest.raises(metadata.MetadataError) as exc:
        metadata.parse(text + "history: secret\n")
    assert "'history' 'secret' is not one of public, restricted; write 'history: public' " \
           "or 'history: restricted'" in str(exc.value)


def test_the_deposit_is_git_s_own_bundle(sb, bids, tmp_path):
    """Without DataLad: ``git clone`` of the file as the landing page offers it."""
    deposit = deposited(export(bids, sb))
    r = requests.get(f"{sb.dataverse_url}/api/access/datafile/{deposit['file_id']}",
                     headers={"X-Dataverse-key": sb.api_token})
    assert r.status_code == 200
    bundle = tmp_path / history.NAME
    bundle.write_bytes(r.content)
    subprocess.run(["git", "clone", "-q", str(bundle), str(tmp_path / "plain")], check=True)
    assert git(tmp_path / "plain", "rev-parse", "HEAD") == deposit["commit"] == \
        git(bids, "rev-parse", "HEAD")
    assert git(tmp_path / "plain", "rev-parse", "origin/git-annex") == \
        git(bids, "rev-parse", "git-annex")


def test_a_history_damaged_on_the_way_is_not_cloned(sb, bids, tmp_path):
    export(bids, sb, publish="major")
    doi = mf.load(bids).doi
    sb.gate.faults.inject(Fault("GET", "/", corrupt=100, count=10))
    clone = tmp_path / "reader"
    r = rdr_clone(sb, doi, clone)
    assert r.returncode != 0
    assert f"{history.NAME} of doi:{doi}: MD5" in r.stdout and "the server lists" in \
        r.stdout, r.stdout + r.stderr
    assert not clone.exists()


def test_the_deposit_searches_no_deltas_and_is_the_same_bytes_again(tmp_path):
    """The bundle keeps the deltas git has and searches none of its own (most of its time
    at 100,000 annexed files, for 0.1 % of its size); made twice, it is the same bytes."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".git" / "datalad-rdr").mkdir()
    block = bytes(range(256)) * 256  # 64 KiB, deflates poorly as a whole
    for i in range(2):  # two loose blobs that differ in one byte: a delta would halve it
        (repo / f"f{i}").write_bytes(block[:1000] + bytes([i]) + block[1001:])
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q",
                    "-m", "two"], cwd=repo, check=True)
    held = history.state(repo)
    history.make_bundle(repo, held, tmp_path / "a.bundle")
    history.make_bundle(repo, held, tmp_path / "b.bundle")
    assert (tmp_path / "a.bundle").read_bytes() == (tmp_path / "b.bundle").read_bytes()
    single = len(zlib.compress(block))
    assert (tmp_path / "a.bundle").stat().st_size > 1.8 * single

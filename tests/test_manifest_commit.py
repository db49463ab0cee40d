"""The manifest's commit: its two files only, annexed or in git as ``datalad save`` would
put them, without a status of the whole work tree; a commit git refuses is one clear error
and a rerun finishes the export."""

import os
import subprocess
from pathlib import Path

import datalad.api as dl
import pytest
from conftest import rdr_export
from test_content_lookup import small_files_repo
from test_many_files import counting_git
from test_records_commit import UUID

from datalad_rdr import after_export, gitannex
from datalad_rdr import manifest as mf
from datalad_rdr.demo import demo_metadata, make_bids_dataset


def head_files(ds) -> list[str]:
    return sorted(subprocess.run(["git", "-C", str(ds), "diff-tree", "--no-commit-id",
                                  "--name-only", "-r", "HEAD"], capture_output=True,
                                 text=True, check=True).stdout.split())


def tracked_as(ds, rel: str) -> str:
    """'annexed' or 'git', from the committed tree entry."""
    out = subprocess.run(["git", "-C", str(ds), "ls-tree", "HEAD", rel], capture_output=True,
                         text=True, check=True).stdout.split()
    return "annexed" if out[0] == "120000" else "git"


@pytest.mark.skipif(os.name != "posix", reason="the git wrapper is a POSIX sh script")
def test_the_manifest_commit_holds_its_files_and_does_not_list_the_work_tree(
        token_env, tmp_path, monkeypatch):
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=2000, annex_text=True)
    monkeypatch.setenv("PATH", f"{counting_git(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    results = rdr_export(ds, token_env)
    assert not [r for r in results if r["status"] == "error"], results
    assert head_files(ds) == [mf.MANIFEST, mf.MEMBERS]
    # a dataset made by 'datalad create' annexes them, as 'datalad save' did
    assert tracked_as(ds, mf.MANIFEST) == tracked_as(ds, mf.MEMBERS) == "annexed"
    assert mf.load(ds).pid
    calls = (tmp_path / "calls").read_text().splitlines()
    # DataLad's save lists the work tree (ls-files) and asks for its status again
    assert not [c for c in calls if c.startswith("ls-files")], calls
    assert len([c for c in calls if c.split()[:1] == ["status"]
                or "status" in c.split()[2:3]]) <= 1, calls


def test_the_manifest_stays_in_git_where_the_dataset_keeps_text_in_git(token_env, tmp_path):
    ds = dl.create(str(tmp_path / "plain"), cfg_proc="text2git", result_renderer="disabled")
    root = Path(ds.path)
    (root / "README").write_text("plain\n")
    (root / "big.bin").write_bytes(os.urandom(3000))
    (root / ".datalad/rdr").mkdir(parents=True)
    (root / ".datalad/rdr/metadata.yaml").write_text(demo_metadata())
    ds.save(result_renderer="disabled")
    assert not [r for r in rdr_export(root, token_env) if r["status"] == "error"]
    assert head_files(root) == [mf.MANIFEST, mf.MEMBERS]
    assert tracked_as(root, mf.MANIFEST) == tracked_as(root, mf.MEMBERS) == "git"
    assert subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                          capture_output=True, text=True).stdout == ""


def test_a_refused_manifest_commit_is_one_error_and_a_rerun_finishes(token_env, tmp_path):
    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=2000)
    hook = ds / ".git" / "hooks" / "pre-commit"
    kept = hook.read_text() if hook.exists() else None
    hook.write_text("#!/bin/sh\necho 'policy: no commits on Fridays' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = head_files(ds)
    results = rdr_export(ds, token_env)
    errors = [r for r in results if r["status"] == "error"]
    assert errors and "policy: no commits on Fridays" in errors[0]["message"]
    assert "rerun" in errors[0]["message"]
    assert head_files(ds) == before  # no commit
    uploads = token_env.gate.stats.bytes_received

    if kept is None:
        hook.unlink()
    else:
        hook.write_text(kept)
    results = rdr_export(ds, token_env)
    assert not [r for r in results if r["status"] == "error"], results
    assert head_files(ds) == [mf.MANIFEST, mf.MEMBERS]
    # nothing sent again but the history, deposited once the manifest is committed
    history = [r["size"] for r in results if r.get("path", "").endswith(
        "dataset-history.git.bundle") and r["action"] == "rdr-export"]
    assert history and token_env.gate.stats.bytes_received == uploads + history[0]


def test_the_caller_hears_when_the_files_are_added_and_not_yet_committed(tmp_path):
    """``added``, where the export starts reading the git-annex branch: once ``git annex
    add`` is done (its git processes hold the index of every file) and before the
    commit."""
    repo = small_files_repo(tmp_path / "repo", 3)
    head = gitannex.git(repo, "rev-parse", "HEAD").strip()
    for name in ("a.json", "b.tsv"):
        (repo / name).write_text(f"{name}\n")
    seen = []

    def added():
        seen.append((gitannex.git(repo, "diff", "--cached", "--name-only").split(),
                     gitannex.git(repo, "rev-parse", "HEAD").strip()))

    assert gitannex.commit_files(repo, [repo / "a.json", repo / "b.tsv"], "two files",
                                 added=added)
    assert seen == [(["a.json", "b.tsv"], head)]
    assert head_files(repo) == ["a.json", "b.tsv"]


def test_the_branch_logs_are_read_from_when_begun_at_the_branch_as_it_was(token_env,
                                                                            tmp_path):
    """LogsAhead takes the git-annex branch as it is when made and reads it only from
    :meth:`begin` on: before, :func:`record` is told to read the logs itself."""
    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=2000)
    assert not [r for r in rdr_export(ds, token_env) if r["status"] == "error"]
    manifest = mf.load(ds)
    branch = gitannex.git(ds, "rev-parse", gitannex.ANNEX_BRANCH).strip()
    ahead = after_export.LogsAhead(ds, manifest, None)
    try:
        assert ahead.take(manifest) is None  # not begun: nothing read
        subprocess.run(["git", "annex", "setpresentkey", "MD5E-s1--0123.dat", UUID, "1"],
                       cwd=ds, check=True)  # in git-annex's journal: the branch moves later
        ahead.begin()
        ahead.begin()  # once
        by_repo, old, logs = ahead.take(manifest)
        assert old == {} and logs[ds].branch == branch
        keys = {m.key for _, m in by_repo[ds]}
        assert keys and keys <= set(logs[ds].logs)
        assert ahead.take(mf.load(ds)) is None  # another manifest
    finally:
        ahead.close()

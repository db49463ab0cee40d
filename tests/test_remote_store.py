"""The ``rdr`` special remote, write side: ``git annex copy --to rdr`` into bundles, its
flushes and their failures, REMOVE, repack, and ``git annex testremote``."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DV

from datalad_rdr.sandbox.faults import Fault


def run(cmd, cwd, token=None, check=False, env_extra=None):
    env = dict(os.environ)
    env.pop("DATALAD_CREDENTIAL_RDR_SECRET", None)
    if token:
        env["DATALAD_CREDENTIAL_RDR_SECRET"] = token
    env.update(env_extra or {})
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture
def draft(sandbox):
    return DV(sandbox).create_dataset()


def make_repo(path, n=4, size=100_000, seed=1, sizes=None):
    import random

    rng = random.Random(seed)
    path.mkdir()
    run(["git", "init", "-q"], path, check=True)
    run(["git", "annex", "init", "-q"], path, check=True)
    for i, nbytes in enumerate(sizes or [size] * n):
        (path / f"f{i:02d}.bin").write_bytes(rng.randbytes(nbytes))
    (path / "notes.txt").write_text("text is deflated in the bundle\n" * 100)
    run(["git", "annex", "add", "-q", "."], path, check=True)
    run(["git", "commit", "-qm", "data"], path, check=True)
    return path


def initremote(repo, sb, pid, *extra, name="rdr", encryption="none", url=None):
    run(["git", "annex", "initremote", name, "type=external", "externaltype=rdr",
         f"encryption={encryption}", f"url={url or sb.dataverse_url}", f"pid={pid}",
         *extra], repo, check=True)


def whereis(repo):
    """path -> names of the places git-annex records it in."""
    out = run(["git", "annex", "whereis", "--json", "."], repo).stdout
    result = {}
    for line in out.splitlines():
        record = json.loads(line)
        if "info" in record:
            continue  # a message of the remote
        result[record["file"]] = sorted("here" if w.get("here") else
                                        w["description"].strip("[]")
                                        for w in record["whereis"])
    return result


def bundles(sb, pid):
    return [f for f in DV(sb).files(pid) if f["label"].startswith("annex-")]


def journals(repo):
    return list((repo / ".git/datalad-rdr/remote").glob("*/annex-*.jsonl"))


def test_copy_packs_keys_into_one_bundle_and_get_reads_them_back(sandbox, draft, tmp_path):
    repo = make_repo(tmp_path / "repo")
    initremote(repo, sandbox, draft)
    r = run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=sandbox.api_token,
            check=True)
    assert r.stdout.count("ok") == 5
    assert all("rdr" in places for places in whereis(repo).values())
    (bundle,) = bundles(sandbox, draft)  # five keys, one ZIP on the server
    assert bundle["restricted"]
    assert journals(repo) == []
    run(["git", "annex", "drop", "."], repo, token=sandbox.api_token, check=True)
    run(["git", "annex", "get", "."], repo, token=sandbox.api_token, check=True)
    run(["git", "annex", "fsck", "."], repo, check=True)
    # members are named by their path in the work tree
    whereis_text = run(["git", "annex", "whereis", "notes.txt"], repo).stdout
    assert "member=notes.txt" in whereis_text and "method=deflated" in whereis_text


def test_datalad_push_to_rdr(sandbox, draft, tmp_path):
    import datalad.api as dl

    ds = dl.create(path=str(tmp_path / "ds"), result_renderer="disabled")
    for name in ("a.bin", "b.bin"):
        (tmp_path / "ds" / name).write_bytes(os.urandom(30_000))
    ds.save(result_renderer="disabled")
    initremote(Path(ds.path), sandbox, draft)
    run(["datalad", "push", "--to", "rdr"], ds.path, token=sandbox.api_token, check=True)
    assert all("rdr" in places for places in whereis(Path(ds.path)).values())
    assert len(bundles(sandbox, draft)) == 1


def test_a_failed_flush_leaves_no_lie(sandbox, draft, tmp_path):
    repo = make_repo(tmp_path / "repo")
    initremote(repo, sandbox, draft)
    sandbox.dataverse.faults.inject(Fault("POST", "/addFiles$", count=100, status=500))
    r = run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=sandbox.api_token)
    assert r.returncode == 0  # git-annex ignores what happens after it stops listening
    assert "could not be stored" in r.stderr and "recorded as not in this remote" in r.stderr
    assert all("rdr" not in places for places in whereis(repo).values())
    r = run(["git", "annex", "drop", "f00.bin"], repo, token=sandbox.api_token)
    assert r.returncode != 0 and "necessary cop" in r.stdout + r.stderr
    assert journals(repo) == []
    sandbox.dataverse.faults.clear()
    run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=sandbox.api_token,
        check=True)
    assert all("rdr" in places for places in whereis(repo).values())
    run(["git", "annex", "drop", "f00.bin"], repo, token=sandbox.api_token, check=True)


def test_a_store_that_cannot_succeed_fails_copy_and_push(sandbox, tmp_path):
    """A wrong pid, or a token the server refuses: the keys fail while git-annex listens,
    so the exit code says so (the bundle itself is uploaded later, see test above)."""
    import datalad.api as dl

    repo = make_repo(tmp_path / "repo", n=2)
    initremote(repo, sandbox, "doi:10.5072/FK2/NOPE00")
    r = run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=sandbox.api_token)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert out.count("cannot store into doi:10.5072/FK2/NOPE00 on ") == 3, out
    assert "ok" not in r.stdout.split()
    assert all(places == ["here"] for places in whereis(repo).values())
    assert journals(repo) == []
    r = run(["git", "annex", "copy", "--to", "rdr", "f00.bin"], repo, token="not-a-token")
    assert r.returncode != 0 and "cannot store into" in r.stdout + r.stderr

    ds = dl.create(path=str(tmp_path / "ds"), result_renderer="disabled")
    (tmp_path / "ds" / "a.bin").write_bytes(os.urandom(30_000))
    ds.save(result_renderer="disabled")
    initremote(Path(ds.path), sandbox, "doi:10.5072/FK2/NOPE00")
    r = run(["datalad", "push", "--to", "rdr"], ds.path, token=sandbox.api_token)
    assert r.returncode != 0
    assert "cannot store into doi:10.5072/FK2/NOPE00" in r.stdout + r.stderr
    assert whereis(Path(ds.path))["a.bin"] == ["here"]


def test_a_failed_flush_after_move_puts_the_content_back(sandbox, draft, tmp_path):
    repo = make_repo(tmp_path / "repo")
    initremote(repo, sandbox, draft)
    sandbox.gate.faults.inject(Fault("PUT", ".", count=100, status=403))
    r = run(["git", "annex", "move", "--to", "rdr", "f00.bin", "f01.bin"], repo,
            token=sandbox.api_token)
    assert "could not be stored" in r.stderr
    where = whereis(repo)
    assert where["f00.bin"] == where["f01.bin"] == ["here"]
    run(["git", "annex", "fsck", "f00.bin", "f01.bin"], repo, check=True)


def test_a_full_bundle_is_flushed_and_a_failure_there_is_corrected(sandbox, draft,
                                                                   tmp_path):
    repo = make_repo(tmp_path / "repo", n=6)
    initremote(repo, sandbox, draft, "bundlesize=250000")  # two keys per bundle
    run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=sandbox.api_token,
        check=True)
    sizes = [b["dataFile"]["filesize"] for b in bundles(sandbox, draft)]
    assert len(sizes) == 3 and max(sizes) <= 250_000, sizes  # 2 + 2 + 2 and the text
    # a flush at the cap fails: the keys it held are corrected, the key that triggered it
    # is reported failed, the session goes on
    repo2 = make_repo(tmp_path / "repo2", n=6, seed=2)
    initremote(repo2, sandbox, draft, "bundlesize=250000")
    # registration retries a 500 after looking in the draft: fail every try
    sandbox.dataverse.faults.inject(Fault("POST", "/addFiles$", count=3, status=500))
    r = run(["git", "annex", "copy", "--to", "rdr", "."], repo2, token=sandbox.api_token)
    assert r.returncode != 0 and "could not be stored" in r.stdout + r.stderr
    where = whereis(repo2)
    assert [f for f in where if "rdr" not in where[f]] == ["f00.bin", "f01.bin", "f02.bin"]
    run(["git", "annex", "copy", "--to", "rdr", "."], repo2, token=sandbox.api_token,
        check=True)
    assert all("rdr" in places for places in whereis(repo2).values())


def test_no_bundle_exceeds_bundlesize_and_a_key_too_big_alone_is_refused(sandbox, draft,
                                                                         tmp_path):
    repo = make_repo(tmp_path / "repo", sizes=[300_000, 600_000, 900_000, 1_200_000,
                                                1_500_000])
    initremote(repo, sandbox, draft, "bundlesize=1MB")
    r = run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=sandbox.api_token)
    assert r.returncode != 0
    assert (r.stdout + r.stderr).count("does not fit in a bundle of bundlesize=1000000") == 2
    made = [b["dataFile"]["filesize"] for b in bundles(sandbox, draft)]
    assert made and max(made) <= 1_000_000, made
    where = whereis(repo)
    assert [f for f in sorted(where) if "rdr" in where[f]] == [
        "f00.bin", "f01.bin", "f02.bin", "notes.txt"]


@pytest.mark.parametrize("variant", [{"extra": ["chunk=100kB"]},
                                     {"encryption": "shared"}], ids=["chunk", "shared"])
def test_dropping_the_last_key_deletes_its_bundle_also_when_chunked_or_encrypted(
        sandbox, draft, tmp_path, variant):
    repo = make_repo(tmp_path / "repo", n=2, size=350_000)
    initremote(repo, sandbox, draft, *variant.get("extra", []),
               encryption=variant.get("encryption", "none"))
    token = sandbox.api_token
    run(["git", "annex", "copy", "--to", "rdr", "f00.bin", "f01.bin"], repo, token=token,
        check=True)
    assert len(bundles(sandbox, draft)) == 1
    run(["git", "annex", "drop", "--from", "rdr", "f00.bin"], repo, token=token,
        check=True)
    assert len(bundles(sandbox, draft)) == 1  # f01.bin is still in it
    run(["git", "annex", "drop", "--from", "rdr", "f01.bin"], repo, token=token,
        check=True)
    assert bundles(sandbox, draft) == []
    assert all("rdr" not in places for places in whereis(repo).values())


def test_testremote_fast_leaves_no_empty_bundle(sandbox, draft, tmp_path):
    """One session stores, removes, stores again and removes again (key sizes base and
    base-1, plain and encrypted): every bundle it emptied leaves the draft."""
    repo = make_repo(tmp_path / "repo", n=1)
    initremote(repo, sandbox, draft)
    r = run(["git", "annex", "testremote", "--fast", "rdr"], repo, token=sandbox.api_token)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [b["label"] for b in bundles(sandbox, draft)] == []


def test_kill_during_a_flush_is_repaired_by_the_next_session(sandbox, draft, tmp_path):
    repo = make_repo(tmp_path / "repo")
    initremote(repo, sandbox, draft)
    sandbox.gate.faults.inject(Fault("PUT", ".", count=1, delay=8))  # a slow upload
    env = dict(os.environ, DATALAD_CREDENTIAL_RDR_SECRET=sandbox.api_token)
    copy = subprocess.Popen(["git", "annex", "copy", "--to", "rdr", "."], cwd=repo,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = journals(repo)
        if found and '"flushing"' in found[0].read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail("no flush started")
    (journal,) = found
    remote_pid = json.loads(journal.read_text().splitlines()[0])["pid"]
    os.kill(remote_pid, signal.SIGKILL)  # the remote process the copy started
    copy.communicate(timeout=60)
    assert journal.exists()  # the dead session's promise is still open
    assert bundles(sandbox, draft) == []
    # any git-annex command that starts the remote repairs it, even whereis
    r = run(["git", "annex", "whereis", "f00.bin"], repo, token=sandbox.api_token,
            check=True)
    assert "repairing annex-" in r.stdout + r.stderr
    assert not journal.exists()
    assert len(bundles(sandbox, draft)) == 1
    assert all("rdr" in places for places in whereis(repo).values())
    run(["git", "annex", "fsck", "--fast", "--from", "rdr", "."], repo,
        token=sandbox.api_token, check=True)
    run(["git", "annex", "drop", "."], repo, token=sandbox.api_token, check=True)
    run(["git", "annex", "get", "."], repo, token=sandbox.api_token, check=True)
    run(["git", "annex", "fsck", "."], repo, check=True)


def test_parallel_copy_makes_bundles_within_the_cap(sandbox, draft, tmp_path):
    repo = make_repo(tmp_path / "repo", n=16, size=150_000)
    cap = 500_000
    initremote(repo, sandbox, draft, f"bundlesize={cap}")
    run(["git", "annex", "copy", "--to", "rdr", "-J4", "."], repo, token=sandbox.api_token,
        check=True)
    made = bundles(sandbox, draft)
    assert all(b["dataFile"]["filesize"] <= cap for b in made)
    assert len(made) >= 6  # 16 keys of 150 kB, at most 3 per bundle
    assert all("rdr" in places for places in whereis(repo).values())
    assert journals(repo) == []
    run(["git", "annex", "drop", "."], repo, token=sandbox.api_token, check=True)
    run(["git", "annex", "get", "-J4", "."], repo, token=sandbox.api_token, check=True)
    run(["git", "annex", "fsck", "."], repo, check=True)


def test_remove_from_a_draft_bundle_and_repack(sandbox, draft, tmp_path):
    repo = make_repo(tmp_path / "repo")
    initremote(repo, sandbox, draft)
    token = sandbox.api_token
    run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=token, check=True)
    (first,) = bundles(sandbox, draft)
    run(["git", "annex", "drop", "--from", "rdr", "f00.bin", "f01.bin"], repo, token=token,
        check=True)
    assert bundles(sandbox, draft) == [first]  # three keys left in it
    r = run(["git-annex-remote-rdr", "repack", "--dry-run"], repo, token=token, check=True)
    assert "2 of 5 members removed" in r.stdout
    r = run(["git-annex-remote-rdr", "repack"], repo, token=token, check=True)
    assert "deleted from the draft" in r.stdout
    (second,) = bundles(sandbox, draft)
    assert second["dataFile"]["id"] != first["dataFile"]["id"]
    assert second["dataFile"]["filesize"] < first["dataFile"]["filesize"]
    run(["git", "annex", "drop", "f02.bin", "notes.txt"], repo, token=token, check=True)
    run(["git", "annex", "get", "f02.bin", "notes.txt"], repo, token=token, check=True)
    run(["git", "annex", "fsck", "f02.bin", "notes.txt"], repo, check=True)
    # the last keys removed: the bundle holds nothing and leaves the draft
    run(["git", "annex", "drop", "--from", "rdr", "."], repo, token=token, check=True)
    assert bundles(sandbox, draft) == []
    assert all("rdr" not in places for places in whereis(repo).values())


def test_keys_in_a_published_bundle_cannot_be_removed(sandbox, draft, tmp_path):
    repo = make_repo(tmp_path / "repo")
    initremote(repo, sandbox, draft)
    run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=sandbox.api_token,
        check=True)
    dv = DV(sandbox)
    r = dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
                params={"persistentId": draft, "type": "major"})
    assert r.status_code == 200, r.text
    while dv.call("GET", "/api/datasets/:persistentId/locks",
                  params={"persistentId": draft}).json()["data"]:
        time.sleep(0.1)
    r = run(["git", "annex", "drop", "--from", "rdr", "f00.bin"], repo,
            token=sandbox.api_token)
    assert r.returncode != 0
    assert "publications are immutable" in r.stdout + r.stderr
    assert "rdr" in whereis(repo)["f00.bin"]


def test_an_unexpected_failure_fails_one_request_and_the_session_goes_on(sandbox, draft,
                                                                        tmp_path):
    """The server serves a bundle's key index damaged: REMOVE cannot inflate it, a
    failure nobody foresaw (zlib's). Each key fails with one line, the same remote process
    answers the next request, and nothing is lost."""
    import zipfile

    from datalad_rdr.remote.reader import BundleReader, RangeFile
    from datalad_rdr.remote.store import INDEX

    repo = make_repo(tmp_path / "repo")
    initremote(repo, sandbox, draft)
    token = sandbox.api_token
    run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=token, check=True)
    (bundle,) = bundles(sandbox, draft)
    zipped = RangeFile(BundleReader(sandbox.dataverse_url, lambda: token),
                       bundle["dataFile"]["id"], bundle["dataFile"]["filesize"])
    info = zipfile.ZipFile(zipped).getinfo(INDEX)
    assert info.compress_type == zipfile.ZIP_DEFLATED
    zipped.seek(info.header_offset + 26)
    name_len, extra_len = (int.from_bytes(zipped.read(2), "little") for _ in range(2))
    sandbox.gate.faults.inject(Fault("GET", ".", count=1000, corrupt=info.header_offset
                                     + 30 + name_len + extra_len))
    r = run(["git", "annex", "--debug", "drop", "--from", "rdr", "f00.bin", "f01.bin"], repo,
            token=token)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    shown = [line for line in out.splitlines()
             if line.startswith("  unexpected zlib.error in remove: Error -3 while")]
    assert len(shown) == 2, out[-3000:]
    assert "DEBUG Traceback" in out  # where it happened: in the debug log
    started = [line for line in out.splitlines() if "git-annex-remote-rdr [" in line]
    assert len(started) == 1, started
    assert all("rdr" in places for places in whereis(repo).values())
    sandbox.gate.faults.clear()
    run(["git", "annex", "drop", "--from", "rdr", "f00.bin", "f01.bin"], repo, token=token,
        check=True)
    assert "rdr" not in whereis(repo)["f00.bin"]


def test_records_of_a_moved_server_are_read_where_git_config_points(sandbox, draft,
                                                                    tmp_path):
    """The records name the server of ``url=`` (here one that is gone); ``git config
    remote.rdr.rdr-url`` sends every request to where it moved, records unchanged."""
    repo = make_repo(tmp_path / "repo", n=2)
    initremote(repo, sandbox, draft, url="http://rdr.old.invalid")
    token = sandbox.api_token
    run(["git", "config", "remote.rdr.rdr-url", sandbox.dataverse_url + "/"], repo,
        check=True)
    run(["git", "annex", "copy", "--to", "rdr", "."], repo, token=token, check=True)
    text = run(["git", "annex", "whereis", "f00.bin"], repo, check=True).stdout
    assert "rdr+http://rdr.old.invalid/api/access/datafile/" in text
    assert sandbox.dataverse_url not in text
    run(["git", "annex", "drop", "."], repo, token=token, check=True)
    run(["git", "annex", "get", "."], repo, token=token, check=True)
    run(["git", "annex", "fsck", "."], repo, check=True)
    r = run(["git-annex-remote-rdr", "repack", "--dry-run"], repo, token=token, check=True)
    assert r.stdout == ""  # it reached the server: nothing to repack
    run(["git", "annex", "drop", "--from", "rdr", "f00.bin"], repo, token=token,
        check=True)
    run(["git", "config", "remote.rdr.rdr-url", "rdr.kuleuven.be"], repo, check=True)
    key = run(["git", "annex", "lookupkey", "f01.bin"], repo, check=True).stdout.strip()
    r = run(["git", "annex", "checkpresentkey", key, "rdr"], repo, token=token)
    assert r.returncode != 0
    assert "remote.rdr.rdr-url='rdr.kuleuven.be' is not an http(s) URL" in \
        r.stdout + r.stderr


def test_records_without_a_version_are_read_and_newer_ones_ask_for_an_upgrade(
        sandbox, draft, tmp_path):
    repo = make_repo(tmp_path / "repo", n=2)
    initremote(repo, sandbox, draft)
    token = sandbox.api_token
    run(["git", "annex", "copy", "--to", "rdr", "f00.bin", "f01.bin"], repo, token=token,
        check=True)

    def swap(path, old, new):
        key = run(["git", "annex", "lookupkey", path], repo, check=True).stdout.strip()
        (uri,) = [u for u in run(["git", "annex", "whereis", "--json", path], repo)
                  .stdout.split('"') if u.startswith("rdr+")]
        assert uri.endswith("&v=1")
        run(["git", "annex", "unregisterurl", "--remote=rdr", key, uri], repo, check=True)
        run(["git", "annex", "registerurl", "--remote=rdr", key, uri.replace(old, new)],
            repo, check=True)

    run(["git", "annex", "drop", "f00.bin", "f01.bin"], repo, token=token, check=True)
    swap("f00.bin", "&v=1", "")  # as datalad-rdr wrote them before records had versions
    swap("f01.bin", "&v=1", "&v=3")  # as a later datalad-rdr may write them (2: volumes)
    run(["git", "annex", "get", "f00.bin"], repo, token=token, check=True)
    r = run(["git", "annex", "get", "f01.bin"], repo, token=token)
    assert r.returncode != 0
    assert "a location record of format version 3 (this datalad-rdr reads version 2): " \
           "upgrade datalad-rdr" in r.stdout + r.stderr
    # a record without a version is removed as it is written
    run(["git", "annex", "drop", "--from", "rdr", "f00.bin"], repo, token=token,
        check=True)
    assert "rdr+" not in run(["git", "annex", "whereis", "f00.bin"], repo).stdout


def test_store_and_remove_need_a_token_and_say_so(sandbox, draft, tmp_path):
    repo = make_repo(tmp_path / "repo", n=1)
    initremote(repo, sandbox, draft)
    r = run(["git", "annex", "copy", "--to", "rdr", "f00.bin"], repo)
    assert r.returncode != 0
    assert "storing into RDR needs an API token: no API token for" in r.stdout + r.stderr
    assert whereis(repo)["f00.bin"] == ["here"]
    run(["git", "annex", "copy", "--to", "rdr", "f00.bin"], repo, token=sandbox.api_token,
        check=True)
    r = run(["git", "annex", "drop", "--from", "rdr", "f00.bin"], repo)
    assert r.returncode != 0
    assert "removing from RDR needs an API token" in r.stdout + r.stderr
    assert "rdr" in whereis(repo)["f00.bin"]


def test_initremote_explains_what_is_missing(tmp_path):
    repo = make_repo(tmp_path / "repo", n=1)
    r = run(["git", "annex", "initremote", "rdr", "type=external", "externaltype=rdr",
             "encryption=none", "pid=doi:10.5072/FK2/X"], repo)
    assert r.returncode != 0 and "url= is required" in r.stdout + r.stderr
    r = run(["git", "annex", "initremote", "rdr", "type=external", "externaltype=rdr",
             "encryption=none", "url=https://rdr.kuleuven.be"], repo)
    assert r.returncode != 0 and "pid= is required" in r.stdout + r.stderr
    r = run(["git", "annex", "initremote", "rdr", "type=external", "externaltype=rdr",
             "encryption=none", "url=https://rdr.kuleuven.be", "pid=doi:10.5072/FK2/X",
             "bundlesize=lots"], repo)
    assert r.returncode != 0 and "bundlesize=: not a size" in r.stdout + r.stderr


def test_help_names_repack_and_version_is_datalad_rdrs(tmp_path):
    import datalad_rdr

    r = run(["git-annex-remote-rdr", "--help"], tmp_path, check=True)
    assert "git-annex-remote-rdr repack [--remote NAME] [--dry-run]" in r.stdout
    assert "very special remote" not in r.stdout and "--dbg" not in r.stdout
    r = run(["git-annex-remote-rdr", "--version"], tmp_path, check=True)
    assert r.stdout == f"git-annex-remote-rdr (datalad-rdr) {datalad_rdr.__version__}\n"
    r = run(["git-annex-remote-rdr", "repack", "--help"], tmp_path, check=True)
    assert "--dry-run" in r.stdout


def test_close_without_prepare(tmp_path):
    """git-annex may start the remote and close it before any request (testremote does)."""
    r = subprocess.run(["git-annex-remote-rdr"], input="", capture_output=True, text=True,
                       cwd=tmp_path, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "VERSION 1\n" and r.stderr == ""


@pytest.mark.slow  # ~2 minutes: 573 tests, 1000-chunk variants among them
def test_testremote_passes_every_test(sandbox, draft, tmp_path):
    """``git annex testremote`` without --fast: chunked, encrypted, resumed, removed."""
    repo = make_repo(tmp_path / "repo", n=1)
    initremote(repo, sandbox, draft)
    r = run(["git", "annex", "testremote", "rdr"], repo, token=sandbox.api_token)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"All \d+ tests passed", r.stdout + r.stderr), r.stdout[-3000:]
    assert [b["label"] for b in bundles(sandbox, draft)] == []  # each emptied, deleted

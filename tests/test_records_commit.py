"""The location records of many keys in one ``git fast-import``, at a cost per key that is
git's own: its heap is not handed back to the kernel and taken again for every object."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from test_content_lookup import small_files_repo

from datalad_rdr import gitannex

KEYS = 2000
UUID = "0d1b7a58-2c2f-4c55-9a52-6f5b2f0c1e10"


def annex_repo(path: Path) -> list[str]:
    """A git-annex repository of ``KEYS`` small files; their keys."""
    small_files_repo(path, KEYS)
    out = subprocess.run(["git", "annex", "find", "--format=${key}\\n"], cwd=path,
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def tracing_git(tmp: Path) -> Path:
    """A ``git`` on PATH that runs ``fast-import`` under ``strace -c -e brk``."""
    real = shutil.which("git")
    wrapper = tmp / "bin"
    wrapper.mkdir()
    script = wrapper / "git"
    script.write_text(f'#!/bin/sh\ncase " $* " in *" fast-import "*) exec strace -f -c -e '
                      f'trace=brk -o "{tmp}/brk" "{real}" "$@";; esac\nexec "{real}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return wrapper


def brk_calls(report: Path) -> int:
    for line in report.read_text().splitlines():
        if line.split()[-1:] == ["brk"]:
            return int(line.split()[3])
    return 0


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_records_of_many_keys_cost_git_no_heap_round_trip_per_object(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    keys = annex_repo(repo)
    assert len(keys) == KEYS
    probe = subprocess.run(["strace", "-c", "-o", os.devnull, "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"strace cannot trace here: {probe.stderr.decode().strip()}")
    monkeypatch.setenv("PATH", f"{tracing_git(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    before = gitannex.git(repo, "rev-parse", gitannex.ANNEX_BRANCH).strip()

    gitannex.Annex(repo).record_urls([(k, f"rdr+https://example.org/{i}")
                                      for i, k in enumerate(keys)], "rdr", UUID)

    assert gitannex.git(repo, "rev-parse", gitannex.ANNEX_BRANCH).strip() != before
    web = gitannex.git(repo, "show", f"{gitannex.ANNEX_BRANCH}:"
                                     f"{gitannex._branch_file(keys[0])}.log.web")
    assert web.endswith(":rdr+https://example.org/0\n")
    # two objects a key (its location log and URL log): with glibc's default trimming that
    # is two brk calls an object (~8,000 here); without, a few dozen in all
    assert brk_calls(tmp_path / "brk") < KEYS / 4


def test_records_commit_changes_only_the_keys_logs_in_old_and_new_folders(tmp_path):
    """Folder by folder (a commit per top folder, then the branch's): the commit changes
    exactly the logs of the recorded keys, keeps their old lines, and leaves no ref."""
    repo = tmp_path / "repo"
    keys = annex_repo(repo)[:300]  # their folders exist (their location logs are there)
    unknown = [f"MD5E-s1--{i:032x}" for i in range(300)]  # mostly in folders not there yet
    branch = gitannex.ANNEX_BRANCH
    before = gitannex.git(repo, "rev-parse", branch).strip()
    pairs = [(k, f"rdr+http://127.0.0.1:8080/{i}") for i, k in enumerate(keys + unknown)]

    gitannex.Annex(repo).record_urls(pairs + pairs[:5], "rdr", UUID)  # repeats: once

    after = gitannex.git(repo, "rev-parse", branch).strip()
    assert gitannex.git(repo, "rev-parse", f"{after}^").strip() == before
    changed = set(gitannex.git(repo, "diff", "--name-only", before, after).split())
    names = {k: gitannex._branch_file(k) for k in keys + unknown}
    assert changed == {f"{names[k]}{suffix}" for k in keys + unknown
                       for suffix in (".log", ".log.web")}
    for key in (keys[0], unknown[0]):
        log = gitannex.git(repo, "show", f"{branch}:{names[key]}.log")
        assert log.splitlines()[-1].endswith(f" 1 {UUID}")
    old = gitannex.git(repo, "show", f"{before}:{names[keys[0]]}.log")
    assert gitannex.git(repo, "show", f"{branch}:{names[keys[0]]}.log").startswith(old)
    web = gitannex.git(repo, "show", f"{branch}:{names[keys[1]]}.log.web")
    assert web.splitlines() == [web.splitlines()[0]]
    assert web.endswith(" 1 :rdr+http://127.0.0.1:8080/1\n")
    # the rest of the branch is as it was: uuid.log, the other keys' logs
    assert gitannex.git(repo, "diff", "--name-only", before, after, "--", "uuid.log") == ""
    assert gitannex.git(repo, "for-each-ref", "refs/datalad-rdr") == ""

    # again: nothing new to record, no commit
    gitannex.Annex(repo).record_urls(pairs, "rdr", UUID)
    assert gitannex.git(repo, "rev-parse", branch).strip() == after


@pytest.mark.parametrize("volumes", [(), ((42, 1000), (43, 500))], ids=["one", "volumes"])
def test_a_manifest_bundles_records_are_its_members_locations(volumes):
    """The records of a bundle's members, made with the bundle's part once, are what each
    member's :class:`~datalad_rdr.remote.locations.Location` writes and reads back."""
    from datalad_rdr import manifest as mf
    from datalad_rdr.remote import locations

    bundle = mf.BundleRecord("raw", "raw", "raw.zip", 1500, "", 42, "s3://b/x", True, "fp",
                             [], [mf.VolumeRecord(f"raw.zip.00{n}", size, "", fid, "s3://")
                                  for n, (fid, size) in enumerate(volumes, 1)])
    names = ["sub-01/a b.tsv", "sub-01/ü%&?#.tsv"]
    members = [mf.MemberRecord(name, 10, f"MD5E-s10--{i:032x}.tsv", None, "deflated",
                               "0a0b0c0d", 7, 100 * i, 100 * i + 30 + len(name.encode()))
               for i, name in enumerate(names)]
    records = locations.manifest_records("http://127.0.0.1:8080/", "doi:10.1/X Y", bundle,
                                         members)
    for m, record in zip(members, records):
        expected = locations.Location(
            "http://127.0.0.1:8080", "doi:10.1/X Y", 42, "raw.zip", 1500, m.path, m.size,
            m.method, m.crc32, m.compressed_size, m.header_offset, m.data_offset,
            tuple(volumes))
        assert record == expected.uri()
        assert locations.parse(record) == expected


def test_records_still_land_when_fast_import_fails(tmp_path, monkeypatch):
    """A fast-import that dies (a full disk, say) costs speed, not records: they go in
    through ``git annex registerurl`` instead, and no ref of ours is left behind."""
    from datalad_rdr.remote import locations

    repo = tmp_path / "repo"
    keys = annex_repo(repo)[:200]
    server, pid = "http://127.0.0.1:9", "doi:10.5072/FK2/RECORDS"
    subprocess.run(["git", "annex", "initremote", "-q", "rdr", "type=external",
                    "externaltype=rdr", "encryption=none", f"url={server}", f"pid={pid}"],
                   cwd=repo, check=True)
    uuid = gitannex.git(repo, "config", "remote.rdr.annex-uuid").strip()
    real = shutil.which("git")
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    (wrapper / "git").write_text(f'#!/bin/sh\ncase " $* " in *" fast-import "*) '
                                 f'head -c 5000 >/dev/null; exit 1;; esac\n'
                                 f'exec "{real}" "$@"\n')
    (wrapper / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper}{os.pathsep}{os.environ['PATH']}")
    pairs = [(k, locations.Location(server, pid, 7, "raw.zip", 10**6, f"f{i:05d}.dat", 10,
                                    "stored", "0a0b0c0d", 10, 100 * i, 100 * i + 40).uri())
             for i, k in enumerate(keys)]

    gitannex.Annex(repo).record_urls(pairs, "rdr", uuid)

    monkeypatch.undo()
    urls = gitannex.Annex(repo).urls(keys)
    assert all(urls[k] == [u] for k, u in pairs)
    assert gitannex.git(repo, "for-each-ref", "refs/datalad-rdr") == ""


@pytest.mark.parametrize("key", ["MD5E-s1--0123456789abcdef0123456789abcdef.txt",
                                 "URL--https&c//example.org/a%b&c",
                                 "SHA256E-s3--x&a&s&c.tsv", "WORM-s1-m1--a:b/c%d&e"])
def test_a_keys_branch_file_names_it(key):
    for suffix in (".log", ".log.web"):
        assert gitannex._key_of_branch_file(gitannex._branch_file(key) + suffix) == key
    assert gitannex._key_of_branch_file(gitannex._branch_file(key) + ".log.met") is None


def test_logs_read_ahead_are_kept_unless_one_of_their_keys_changed(tmp_path):
    """The logs read while the manifest is committed: the branch moved by another key's
    log (the manifest's own ``git annex add``) keeps them; a change of one of theirs is
    read again."""
    repo = small_files_repo(tmp_path / "repo", 5)
    annex = gitannex.Annex(repo)
    keys = subprocess.run(["git", "annex", "find", "--format=${key}\\n"], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.split()
    ahead = annex.branch_logs(keys)
    assert annex.logs_now(ahead) is ahead  # nothing moved

    (repo / "manifest.json").write_text("{}\n")
    subprocess.run(["git", "annex", "add", "--quiet", "manifest.json"], cwd=repo, check=True)
    moved = annex.logs_now(ahead)
    assert moved.branch != ahead.branch
    assert moved.branch == gitannex.git(repo, "rev-parse", gitannex.ANNEX_BRANCH).strip()
    assert moved.logs is ahead.logs  # not read again

    subprocess.run(["git", "annex", "setpresentkey", keys[2], UUID, "1"], cwd=repo, check=True)
    subprocess.run(["git", "annex", "merge", "--quiet"], cwd=repo, check=True)  # into the branch
    changed = annex.logs_now(moved)
    assert changed.logs is not moved.logs
    assert UUID.encode() in changed.logs[keys[2]][0]
    assert changed.logs == annex.branch_logs(keys).logs

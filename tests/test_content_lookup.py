"""Where an annexed file's content is: found by its key's place in ``.git/annex/objects``
(a stat, no git-annex round trip per key), git-annex asked only for what is not there."""

import os
import shutil
import sys
import subprocess
from pathlib import Path

import pytest
from conftest import rdr_export
from test_many_files import counting_git

from datalad_rdr import content
from datalad_rdr.demo import make_bids_dataset


def annex_repo(path: Path, *init_config: str) -> dict[str, bytes]:
    """A git-annex repository of a few files; key -> content."""
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", *init_config, "annex", "init", "-q"], cwd=path, check=True)
    data = {f"d/f{i}.bin": os.urandom(100 + i) for i in range(5)}
    data["odd name: 100% & more.bin"] = b"odd\n"
    for rel, blob in data.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(blob)
    subprocess.run(["git", "annex", "add", "--quiet", "."], cwd=path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "files"], cwd=path, check=True)
    keys = {}
    for rel, blob in data.items():
        key = subprocess.run(["git", "annex", "lookupkey", rel], cwd=path, check=True,
                             capture_output=True, text=True).stdout.strip()
        keys[key] = blob
    return keys


@pytest.mark.parametrize("layout", [(), ("-c", "annex.tune.objecthashlower=true")],
                         ids=["mixed", "lower"])
def test_content_locations_of_present_and_dropped_keys(tmp_path, layout):
    repo = tmp_path / "repo"
    keys = annex_repo(repo, *layout)
    dropped = sorted(keys)[0]
    subprocess.run(["git", "annex", "drop", "--force", "--key", dropped], cwd=repo,
                   check=True, capture_output=True)
    missing = "MD5E-s3--00000000000000000000000000000000.bin"
    where = content.content_locations(str(repo), [*keys, missing])
    assert where[dropped] is None and where[missing] is None
    for key, blob in keys.items():
        if key != dropped:
            assert Path(where[key]).read_bytes() == blob, key


def test_an_export_of_present_content_asks_git_annex_for_no_location(
        token_env, tmp_path, monkeypatch):
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=2000)
    monkeypatch.setenv("PATH", f"{counting_git(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    results = rdr_export(ds, token_env)
    assert not [r for r in results if r["status"] == "error"], results
    calls = (tmp_path / "calls").read_text().splitlines()
    assert not [c for c in calls if "contentlocation" in c], calls


def small_files_repo(path: Path, n: int) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "annex", "init", "-q"], cwd=path, check=True)
    for i in range(n):
        (path / f"f{i:03d}.dat").write_text(f"content {i}\n")
    subprocess.run(["git", "annex", "add", "--quiet", "."], cwd=path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "files"], cwd=path, check=True)
    return path


def stats_of(tmp_path: Path, repo: Path, steps: str) -> list[str]:
    """The stat calls (strace lines) of a process that lists ``repo``'s files as ``files``
    and runs ``steps``; skips where strace cannot trace."""
    script = tmp_path / "steps.py"
    script.write_text(
        "import os, sys\n"
        "from datalad_rdr import content, plan\n"
        "repo = sys.argv[1]\n"
        "files = list(plan.list_commit(plan.Path(repo), 'HEAD').files.values())\n"
        "print('GO', flush=True)\n" + steps)
    report = tmp_path / "trace"
    run = subprocess.run(["strace", "-f", "-e", "trace=stat,lstat,newfstatat,statx", "-o",
                          str(report), sys.executable, str(script), str(repo)],
                         capture_output=True, text=True)
    if "GO" not in run.stdout:
        pytest.skip(f"strace cannot trace here: {run.stderr.strip()[-200:]}")
    assert run.returncode == 0, run.stderr
    return report.read_text().splitlines()


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_members_use_the_look_up_of_their_fetch(tmp_path):
    """A bundle's objects are looked up once (by fetch), not again to make the members:
    counted as the stat calls of a process that fetches and lays out 300 files."""
    repo = small_files_repo(tmp_path / "repo", 300)
    lines = stats_of(tmp_path, repo,
                     "located = content.fetch(files)\n"
                     "ms = content.members(files, {}, None, located)\n"
                     "assert len(ms) == 300 and not located.fetched\n")
    objects = [line for line in lines if "/annex/objects/" in line]
    assert 300 <= len(objects) < 330  # one a file (it was two before)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_fetch_takes_the_pre_flights_look_up(tmp_path):
    """The pre-flight looks the objects up (content.look_up); the send stage's fetch and
    members stat none of them again: no stat of an object after the look-up."""
    repo = small_files_repo(tmp_path / "repo", 200)
    lines = stats_of(tmp_path, repo,
                     "found = content.look_up(files)\n"
                     "os.path.exists('/LOOKED-UP')\n"
                     "located = content.fetch(files, found)\n"
                     "ms = content.members(files, {}, None, located)\n"
                     "assert len(ms) == 200 and not located.fetched\n")
    at = next(i for i, line in enumerate(lines) if "/LOOKED-UP" in line)
    assert len([line for line in lines[:at] if "/annex/objects/" in line]) >= 200
    assert not [line for line in lines[at:] if "/annex/objects/" in line]


def test_content_dropped_after_the_look_up_names_the_file(tmp_path):
    repo = tmp_path / "repo"
    keys = annex_repo(repo)
    from datalad_rdr import plan
    files = list(plan.list_commit(repo, "HEAD").files.values())
    found = content.look_up(files)
    gone = next(f for f in files if f.key)
    subprocess.run(["git", "annex", "drop", "--force", "--key", gone.key], cwd=repo,
                   check=True, capture_output=True)
    ms = content.members(files, {}, None, content.fetch(files, found))
    member = next(m for m in ms if m.arcname == gone.path)
    with pytest.raises(content.ContentError, match=f"content of {gone.path} is no longer "
                                                   f"here"):
        member.open()
    assert len(keys) == len(files)

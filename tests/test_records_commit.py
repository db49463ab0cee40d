"""The location records of many keys in one ``git fast-import``, at a cost per key that is
git's own: its heap is not handed back to the kernel and taken again for every object."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from datalad_rdr import gitannex

KEYS = 2000
UUID = "0d1b7a58-2c2f-4c55-9a52-6f5b2f0c1e10"


def annex_repo(path: Path) -> list[str]:
    """A git-annex repository of ``KEYS`` small files; their keys."""
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "annex", "init", "-q"], cwd=path, check=True)
    for i in range(KEYS):
        (path / f"f{i:05d}.dat").write_text(f"content {i}\n")
    subprocess.run(["git", "annex", "add", "--quiet", "."], cwd=path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "files"], cwd=path, check=True)
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

"""20,000 small annexed files: exported and read back, at a cost that does not grow per file.

The bound is on counts, not seconds: git and git-annex processes started by the export
(a ``git`` on PATH that logs each call and runs the real one), and the commits on the
git-annex branch. One process or one branch commit per file would be 20,000 of them.
"""

import io
import os
import random
import stat
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from conftest import rdr_export
from test_export import server_bundles

from datalad_rdr import gitannex
from datalad_rdr import manifest as mf
from datalad_rdr.demo import demo_metadata

FILES = 20_000


def make_dataset(path: Path, files: int) -> dict[str, bytes]:
    """A dataset of ``files`` small annexed files, added by one ``git annex add``."""
    from datalad.api import create

    create(path=str(path), result_renderer="disabled")
    rng = random.Random(13)
    content = {}
    for i in range(files):
        sub = f"sub-{i // 500:03d}"
        rel = (f"{sub}/func/{sub}_run-{i:05d}_physio.tsv.gz" if i % 5 == 0 else
               f"derivatives/fmriprep/{sub}/func/{sub}_desc-d{i:05d}_timeseries.tsv.gz")
        data = rng.randbytes(rng.randint(20, 200))
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        content[rel] = data
    meta = path / ".datalad" / "rdr" / "metadata.yaml"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(demo_metadata("rdr"))
    (path / "README").write_text("# Many small files\n")
    subprocess.run(["git", "-C", str(path), "annex", "add", "--quiet", "."], check=True,
                   capture_output=True)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", "many files"], check=True,
                   capture_output=True)
    return content


def counting_git(tmp: Path) -> Path:
    """A directory with a ``git`` that logs its first arguments to ``calls``, then runs the
    real git."""
    real = subprocess.run(["which", "git"], capture_output=True, text=True,
                          check=True).stdout.strip()
    wrapper = tmp / "bin"
    wrapper.mkdir()
    script = wrapper / "git"
    script.write_text(f'#!/bin/sh\necho "$*" | cut -c1-80 >> "{tmp}/calls"\n'
                      f'exec "{real}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return wrapper


@pytest.mark.skipif(sys.platform != "linux", reason="the git wrapper is a POSIX sh script")
def test_twenty_thousand_files_export_with_a_bounded_number_of_processes(
        token_env, tmp_path, monkeypatch):
    ds = tmp_path / "ds"
    content = make_dataset(ds, FILES)
    annex_commits = int(gitannex.git(ds, "rev-list", "--count", gitannex.ANNEX_BRANCH))
    monkeypatch.setenv("PATH", f"{counting_git(tmp_path)}{os.pathsep}{os.environ['PATH']}")

    results = rdr_export(ds, token_env)

    assert not [r for r in results if r["status"] in ("error", "impossible")], results
    calls = (tmp_path / "calls").read_text().splitlines()
    annex_calls = [c for c in calls if c.startswith("annex ")]
    # measured: ~150 git calls in all (git-annex's own included), ~10 of them 'git annex'
    assert len(calls) < 600, sorted(set(c.split()[0] for c in calls))
    assert len(annex_calls) < 40, annex_calls
    # the location records of all 20,000 keys: one commit on the git-annex branch
    added = int(gitannex.git(ds, "rev-list", "--count", gitannex.ANNEX_BRANCH)) \
        - annex_commits
    assert added < 10

    manifest = mf.load(ds)
    members = [m for b in manifest.bundles for m in b.members]
    assert len(members) == FILES + 1  # and the README
    size = sum(p.stat().st_size for p in mf.files(ds))
    assert size / len(members) <= 100, f"{size / len(members):.0f} bytes a member"
    # every member read back out of the server's bundles
    _, blobs = server_bundles(token_env, manifest.pid)
    seen = 0
    for bundle in manifest.bundles:
        data = blobs[bundle.filename]
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for m in bundle.members:
                raw = data[m.data_offset:m.data_offset + m.compressed_size]
                got = raw if m.method == "stored" else zlib.decompress(raw, -15)
                assert zlib.crc32(got) == int(m.crc32, 16), m.path
                if m.path in content:
                    assert got == content[m.path] == zf.read(m.path), m.path
                    seen += 1
    assert seen == FILES

    # the remote reads a member from a fresh clone, through the records of that one commit
    monkeypatch.setenv("PATH", os.environ["PATH"].split(os.pathsep, 1)[1])
    clone = tmp_path / "clone"
    subprocess.run(["datalad", "clone", str(ds), str(clone)], check=True,
                   capture_output=True)
    wanted = sorted(content)[::5000]
    # --from rdr: the dataset this clone came from has the content too
    r = subprocess.run(["git", "annex", "get", "--from", "rdr", *wanted], cwd=clone,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for rel in wanted:
        assert (clone / rel).read_bytes() == content[rel]

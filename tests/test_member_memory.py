"""Memory a file costs while its bundle is planned and laid out, counted by tracemalloc.

At 100,000 files every byte kept per file is 100 kB per byte in the export's process
(issue 13: <= 200 MB for the process tree). The bounds are on bytes a file the structures
keep (not on time): a Path per member, a closure per open or per checksum, or the
repository's path copied into every planned file would each exceed them.
"""

import gc
import tracemalloc

import pytest
from test_many_files import make_dataset

from datalad_rdr import content, plan

FILES = 2_000


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("memory") / "ds"
    make_dataset(path, FILES)
    return path


def _kept(make):
    """``make()``'s result, and the bytes it keeps allocated."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = make()
        gc.collect()
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_planned_file_keeps_few_bytes(repo):
    listing, kept = _kept(lambda: plan.list_commit(repo, "HEAD"))
    assert len(listing.files) >= FILES
    per_file = kept / len(listing.files)
    # 436 bytes with a copy of the repository's path and of the file's path in every file
    assert per_file <= 380, f"{per_file:.0f} bytes a planned file"
    first, second = list(listing.files.values())[:2]
    assert first.repo is second.repo and first.path is first.repo_path


def test_a_laid_out_member_keeps_few_bytes(repo):
    files = [f for f in plan.list_commit(repo, "HEAD").files.values() if f.key]
    blobs = {}
    members, kept = _kept(lambda: content.members(files, blobs))
    assert len(members) == len(files) >= FILES
    per_member = kept / len(members)
    # 1,435 bytes with a Path and a closure per member (open, checksum)
    assert per_member <= 600, f"{per_member:.0f} bytes a member"
    with members[0].open() as f:  # the path made at open is the annex object
        assert len(f.read()) == members[0].size


@pytest.mark.parametrize("keep", [0, 20_000])
def test_a_layout_keeps_its_members_bytes_within_its_budget(repo, keep):
    """What a layout keeps beyond its members: its place for each (a few dozen bytes) and
    at most ``keep`` bytes of small members' data for the stream."""
    from datalad_rdr.zipstream import layout_zip

    files = [f for f in plan.list_commit(repo, "HEAD").files.values() if f.key]
    members = content.members(files, {})
    layout, kept = _kept(lambda: layout_zip(members, mtime=0, md5=False, keep=keep))
    assert 0 < len(layout._kept.data) <= keep or keep == 0
    per_member = (kept - keep) / len(members)
    # 225 bytes (its LaidOutMember, offsets, CRC); a bytes object a member kept besides
    # the one buffer would add 33 bytes and more
    assert per_member <= 250, f"{per_member:.0f} bytes a member beyond the kept data"

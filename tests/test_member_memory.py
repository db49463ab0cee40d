"""Memory a file costs while its bundle is planned and laid out, counted by tracemalloc.

At 100,000 files every byte kept per file is 100 kB per byte in the export's process
(issue 13: <= 200 MB for the process tree). The bounds are on bytes a file the structures
keep (not on time): a Path per member, a closure per open or per checksum, or the
repository's path copied into every planned file would each exceed them.
"""

import gc
import os
import subprocess
import sys
import tracemalloc

import pytest
from test_many_files import make_dataset

from datalad_rdr import content, export, plan

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


HEAP_PROBE = """
import ctypes, sys
from datalad_rdr import export

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = export._glibc()
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "kept-small":
    export.heap_kept_small()
libc.free(libc.malloc(8 << 20))  # glibc's own threshold follows a freed block up to here
before = libc.mallinfo2().hblks
block = libc.malloc(2 << 20)
print(libc.mallinfo2().hblks - before)  # 1: the block has pages of its own
libc.free(block)
export.heap_trimmed()
"""


@pytest.mark.skipif(export._glibc() is None or not hasattr(export._glibc(), "mallinfo2"),
                    reason="glibc's malloc (2.33 or later) only")
def test_large_reads_stay_out_of_the_heap_of_long_lived_objects():
    """After a large block is freed, glibc puts blocks up to its size in the heap, between
    the per-file objects kept to the end, so the export's process kept every page it once
    had (246 MB at 100,000 files where Python's objects held under 100 MB); with the
    export's fixed threshold a block of 1 MiB or more has pages of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    mapped = [subprocess.run([sys.executable, "-c", HEAP_PROBE, how], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
              for how in ("glibc's", "kept-small")]
    assert mapped == ["0", "1"]

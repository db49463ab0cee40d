"""Where the bytes of a planned file are: fetched, opened, verified, dropped.

Annexed files are read from the annex object (whatever the worktree holds) and checked
against the hash in their key while they are streamed, so a corrupt object stops the export
with its path. Files in git are read from the blob of the exported commit.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from .gitannex import Annex, BlobReader, ContentError, git, key_checksum, \
    object_candidates
from .plan import PlannedFile
from .zipstream import Member

__all__ = ["BlobReader", "ContentError", "content_locations", "drop", "fetch",
           "key_checksum", "members", "missing_everywhere"]


# (repo, key) -> its annex object, as last found. The export asks for the same keys up to
# three times (pre-flight, fetch, layout). Strings: a Path is ~400 bytes, 40 MB at 100,000.
_objects: dict[tuple[str, str], str] = {}


def content_locations(repo: str, keys: list[str]) -> dict[str, Path | None]:
    """Where each key's object is in ``repo``, or None when it is not present."""
    repo = str(repo)
    where: dict[str, Path | None] = {}
    ask = []
    gitdir = None
    for key in keys:
        known = _objects.get((repo, key))
        if known is not None and os.path.isfile(known):  # not dropped since
            where[key] = Path(known)
            continue
        if gitdir is None:
            gitdir = _gitdir(repo)
        # a stat a key where git-annex's contentlocation takes ~50 us a key (5 s at 100,000)
        found = next((p for p in object_candidates(gitdir, key) if os.path.isfile(p)), None)
        if found is not None:
            where[key] = Path(found)
            _objects[(repo, key)] = found
        else:
            ask.append(key)
    for key, path in Annex(repo).content_locations(ask).items():
        where[key] = path
        if path is not None:
            _objects[(repo, key)] = str(path)
    return where


def _gitdir(repo: str) -> str:
    return git(repo, "rev-parse", "--absolute-git-dir").strip()


def missing_everywhere(repo: str, keys: list[str]) -> list[str]:
    """Keys with no copy in any known location (here or a remote)."""
    return Annex(repo).missing_everywhere(keys)


def fetch(files: list[PlannedFile]) -> list[str]:
    """Get annexed content that is not here from the dataset's other remotes.

    Returns the keys fetched (so they can be dropped again). Raises ContentError naming the
    paths that no remote could give.
    """
    by_repo: dict[str, list[PlannedFile]] = {}
    for f in files:
        if f.key:
            by_repo.setdefault(f.repo, []).append(f)
    fetched = []
    for repo, repo_files in by_repo.items():
        where = content_locations(repo, [f.key for f in repo_files])
        absent = [f for f in repo_files if where.get(f.key) is None]
        got = set(Annex(repo).get(sorted({f.key for f in absent})))
        fetched += sorted(got)
        failed = [f for f in absent if f.key not in got]
        if failed:
            raise ContentError("content not available from any remote: "
                               + ", ".join(f.path for f in failed))
    return fetched


def drop(repo: str, keys: list[str]) -> None:
    Annex(repo).drop(keys)
    for key in keys:
        _objects.pop((str(repo), key), None)


def members(files: list[PlannedFile], blobs: dict[str, BlobReader],
            crc32s: dict[str, int] | None = None) -> list[Member]:
    """ZIP members reading each file's committed content, verified against its key.

    ``blobs`` holds a :class:`BlobReader` per repository, made as needed; close them after.
    ``crc32s`` (by key or blob id, e.g. from an earlier export's manifest) spare the layout a
    read of those members; the stream checks them all the same.
    """
    crc32s = crc32s or {}
    by_repo: dict[str, list[str]] = {}
    for f in files:
        if f.key:
            by_repo.setdefault(f.repo, []).append(f.key)
    where = {}
    for repo, keys in by_repo.items():
        where.update({(repo, k): v for k, v in content_locations(repo, keys).items()})
    result = []
    for f in files:
        if f.key:
            path = where.get((f.repo, f.key))
            if path is None:
                raise ContentError(f"content of {f.path} is not present; run "
                                   f"'datalad get {f.path}'")
            result.append(Member(f.path, f.size, _opener(path), key_checksum(f.key),
                                 crc32=crc32s.get(f.key)))
        else:
            reader = blobs.setdefault(f.repo, BlobReader(f.repo))
            result.append(Member(f.path, f.size, _blob_opener(reader, f.blob),
                                 crc32=crc32s.get(f.blob)))
    return result


def _opener(path: Path):
    return lambda: open(path, "rb")


def _blob_opener(reader: BlobReader, blob: str):
    return lambda: io.BytesIO(reader.read(blob))

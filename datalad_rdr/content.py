"""Where the bytes of a planned file are: fetched, opened, verified, dropped.

Annexed files are read from the annex object (whatever the worktree holds) and checked
against the hash in their key while they are streamed, so a corrupt object stops the export
with its path. Files in git are read from the blob of the exported commit.
"""

from __future__ import annotations

import io
import os
from typing import NamedTuple

from .gitannex import Annex, BlobReader, ContentError, git_dir, key_checksum, object_path
from .plan import PlannedFile
from .zipstream import Member

__all__ = ["BlobReader", "ContentError", "Found", "Located", "content_locations", "drop",
           "fetch", "key_checksum", "look_up", "members", "missing_everywhere"]

#: Where annexed content is, per repository: its git dir, and each key's place as
#: :func:`_find` gives it (None: not present).
Found = dict[str, tuple[str, dict[str, "int | str | None"]]]


def content_locations(repo: str, keys: list[str]) -> dict[str, str | None]:
    """Where each key's object is in ``repo`` (a path), or None when it is not present."""
    gitdir, where = _find(str(repo), keys)
    return {k: object_path(gitdir, k, w) if isinstance(w, int) else w
            for k, w in where.items()}


def look_up(files: list[PlannedFile]) -> Found:
    """Where the content of the annexed ``files`` is (one stat a key, see :func:`_find`);
    the pre-flight's look-up, handed on to :func:`fetch`."""
    return {repo: _find(repo, keys) for repo, keys in _keys_by_repo(files).items()}


def _keys_by_repo(files: list[PlannedFile]) -> dict[str, list[str]]:
    by_repo: dict[str, list[str]] = {}
    for f in files:
        if f.key:
            by_repo.setdefault(f.repo, []).append(f.key)
    return by_repo


def _find(repo: str, keys: list[str]) -> tuple[str, dict[str, int | str | None]]:
    """The git dir, and for each key: the index of its object among
    :func:`~.gitannex.object_candidates`, the path git-annex gives for one found elsewhere,
    or None. Indexes, not paths: 100,000 paths are 17 MB, made again in 0.2 s."""
    gitdir = _gitdir(repo)
    where: dict[str, int | str | None] = {}
    ask = []
    isfile = os.path.isfile
    for key in keys:
        # a stat a key where git-annex's contentlocation takes ~50 us a key (5 s at 100,000)
        if isfile(object_path(gitdir, key, 0)):
            where[key] = 0
        elif isfile(object_path(gitdir, key, 1)):
            where[key] = 1
        else:
            ask.append(key)
    for key, path in Annex(repo).content_locations(ask).items():
        where[key] = None if path is None else str(path)
    return gitdir, where


def _gitdir(repo: str) -> str:
    return str(git_dir(repo))


def missing_everywhere(repo: str, keys: list[str]) -> list[str]:
    """Keys with no copy in any known location (here or a remote)."""
    return Annex(repo).missing_everywhere(keys)


class Located(NamedTuple):
    """What :func:`fetch` did and found: the keys it fetched (to drop again), and where
    each key's object is (per repository: the git dir, and the key's place as
    :func:`_find` gives it), so that :func:`members` need not look again."""

    fetched: list[str]
    found: Found


def fetch(files: list[PlannedFile], known: Found | None = None) -> Located:
    """Get annexed content that is not here from the dataset's other remotes.

    ``known``: a :func:`look_up` made earlier in this export (the pre-flight's). Keys it
    found present are not looked up again; it is not changed, so content that was absent
    then is fetched (again, when ``--drop-after`` dropped it after another bundle).
    Raises ContentError naming the paths that no remote could give.
    """
    by_repo: dict[str, list[PlannedFile]] = {}
    for f in files:
        if f.key:
            by_repo.setdefault(f.repo, []).append(f)
    fetched, found = [], {}
    for repo, repo_files in by_repo.items():
        gitdir, where = _known(repo, [f.key for f in repo_files], (known or {}).get(repo))
        missing = {f.key for f in repo_files if where.get(f.key) is None}
        got = set(Annex(repo).get(sorted(missing)))
        fetched += sorted(got)
        failed = [f for f in repo_files if f.key in missing and f.key not in got]
        if failed:
            raise ContentError("content not available from any remote: "
                               + ", ".join(f.path for f in failed))
        if got:  # only what was fetched is looked up again
            where.update(_find(repo, sorted(got))[1])
        found[repo] = (gitdir, where)
    return Located(fetched, found)


def _known(repo: str, keys: list[str], known) -> tuple[str, dict[str, int | str | None]]:
    """:func:`_find` of ``keys``, taking the present ones from ``known`` (``(gitdir, where)``
    of an earlier look-up) and looking up only the rest."""
    if known is None:
        return _find(repo, keys)
    gitdir, before = known
    where, rest = {}, []
    for key in keys:
        at = before.get(key)
        if at is None:
            rest.append(key)
        else:
            where[key] = at
    if rest:
        where.update(_find(repo, rest)[1])
    return gitdir, where


def drop(repo: str, keys: list[str]) -> None:
    Annex(repo).drop(keys)


def members(files: list[PlannedFile], blobs: dict[str, BlobReader],
            crc32s: dict[str, int] | None = None, located: Located | None = None
            ) -> list[Member]:
    """ZIP members reading each file's committed content, verified against its key.

    ``blobs`` holds a :class:`BlobReader` per repository, made as needed; close them after.
    ``crc32s`` (by key or blob id, e.g. from an earlier export's manifest) spare the layout a
    read of those members; the stream checks them all the same. ``located``: the
    :func:`fetch` of these files, whose look-up is used (a stat an object, not two).
    """
    crc32s = crc32s or {}
    known = located.found if located else {}
    found = {repo: known.get(repo) or _find(repo, keys)
             for repo, keys in _keys_by_repo(files).items()}
    result = []
    for f in files:
        if f.key:
            gitdir, where = found[f.repo]
            at = where.get(f.key)
            if at is None:
                raise ContentError(f"content of {f.path} is not present; run "
                                   f"'datalad get {f.path}'")
            result.append(Member(f.path, f.size, _AnnexObject(gitdir, f.key, at, f.path),
                                 key_checksum(f.key), crc32=crc32s.get(f.key)))
        else:
            reader = blobs.setdefault(f.repo, BlobReader(f.repo))
            result.append(Member(f.path, f.size, _blob_opener(reader, f.blob),
                                 crc32=crc32s.get(f.blob)))
    return result


class _AnnexObject:
    """Opens a key's annex object (a member's ``open``): its path is made at each open, not
    kept for every member of the bundle. Unbuffered: the ZIP stream reads into buffers of
    its own, and a buffer a member is a fifth of the cost of opening a small one. Content
    dropped since it was looked up is a :class:`ContentError` naming the file."""

    __slots__ = ("gitdir", "key", "at", "path")

    def __init__(self, gitdir: str, key: str, at: int | str, path: str):
        self.gitdir, self.key, self.at, self.path = gitdir, key, at, path

    def __call__(self):
        at = self.at
        try:
            return open(object_path(self.gitdir, self.key, at) if isinstance(at, int)
                        else at, "rb", buffering=0)
        except FileNotFoundError:
            raise ContentError(f"content of {self.path} is no longer here (dropped during "
                               f"the export?); rerun 'datalad rdr-export'") from None


def _blob_opener(reader: BlobReader, blob: str):
    return lambda: io.BytesIO(reader.read(blob))

"""The dataset's git history in the record: one file, ``dataset-history.git.bundle``.

The export deposits the history -- the exported branch up to the export's manifest commit,
and the ``git-annex`` branch with the ``rdr`` remote's configuration and the location of
every annexed file in its bundle; no annexed content -- as a *git bundle*, git's own format
for a repository in one file. ``datalad rdr-clone DOI`` clones from it
(:func:`datalad_rdr.clone.run_clone`), and anyone with git alone can::

    git clone dataset-history.git.bundle mystudy

Why a git bundle, and not datalad-next's ``datalad-annex::`` git remote helper: that helper
keeps a repository as two annex keys (``XDLRA--refs``, ``XDLRA--repo-export``) in a special
remote, so our ``rdr`` remote, which only reads members of our ZIP bundles, would have to
store and fetch loose files, and every clone would need datalad-next and the remote's
configuration spelled into the clone URL. A git bundle is one file that the landing page
shows under a name a researcher can read, that the server checksums like any other, and that
git clones with nothing else installed.

The file follows the documents' access: public, unless the metadata file says
``history: restricted``. It is sent by direct upload like the documents
(:func:`datalad_rdr.documents.send_file`), before verify and publish, so the version that
gets published holds it; a rerun that changes nothing sends nothing (the last deposit is
remembered in ``.git/datalad-rdr/history.json``).

Which commit a clone gets: the export's manifest commit ("[DATALAD RDR] export of ..."),
or the branch as it was at the last export when this one committed nothing. The commit that
publishing adds afterwards (the DOI in the manifest and ``CITATION.cff``) cannot be in the
version it describes; it is in the next export's deposit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Iterator

from . import content, gitannex
from .dataverse import Dataverse, DataverseError
from .dataverse_records import find
from .documents import send_file
from .register import RegisterError
from .upload import Uploader, UploadError

log = logging.getLogger("datalad.rdr.history")

NAME = "dataset-history.git.bundle"
DESCRIPTION = ("The dataset's git history (DataLad), no file content: 'datalad rdr-clone "
               "DOI', or 'git clone " + NAME + "'")
MIME = "application/x-git-bundle"
ANNEX_BRANCH = "refs/heads/git-annex"
CHUNK = 1024 * 1024


class HistoryError(Exception):
    pass


class FileSource:
    """A file on disk as an upload source."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    return
                left -= len(data)
                yield data

    iter_raw = iter_range


def _git(repo: Path, *args: str, check: bool = True) -> str:
    if not check:
        return (gitannex.git_or_none(repo, *args) or "").strip()
    try:
        return gitannex.git(repo, *args).strip()
    except gitannex.GitError as exc:
        raise HistoryError(str(exc)) from None


def _gitdir(dataset: Path) -> Path:
    return gitannex.git_dir(dataset)


def state(dataset: Path) -> dict:
    """What a deposit made now would hold: the branch, its commit, the git-annex branch."""
    branch = _git(dataset, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return {"branch": branch or "main", "commit": _git(dataset, "rev-parse", "HEAD"),
            "git-annex": _git(dataset, "rev-parse", "--verify", "--quiet", ANNEX_BRANCH,
                              check=False)}


#: git's settings for the bundle's pack (pack-objects reads them from its parent git): one
#: thread, no delta search, and small windows onto the dataset's packs, which count in the
#: process's memory as they are read (76 -> 62 MB at 100,000 annexed files, same time).
_LEAN_PACK = ("-c", "pack.threads=1", "-c", "pack.window=0",
              "-c", "core.packedGitWindowSize=1m", "-c", "core.packedGitLimit=8m",
              "-c", "core.deltaBaseCacheLimit=4m")


def make_bundle(dataset: Path, held: dict, out: Path) -> None:
    """Write the git bundle of ``held`` (see :func:`state`) to ``out``.

    Built in a scratch repository that borrows the dataset's objects: the bundle names
    exactly the branch and git-annex commits asked for, whatever the dataset's refs are now.
    One pack thread: the same history gives the same bytes, hence the same MD5. No search
    for deltas (git's deltas already in the packs are kept): at 100,000 annexed files it
    took 0.7 of 1.8 s and saved 0.1 % of the bundle (40 KB of 45 MB), the location logs
    being small and each unlike the others."""
    with tempfile.TemporaryDirectory(dir=_gitdir(dataset) / "datalad-rdr") as tmp:
        scratch = Path(tmp) / "repo.git"
        _git(Path(tmp), "init", "--quiet", "--bare", str(scratch))
        (scratch / "objects/info/alternates").write_text(
            str(_gitdir(dataset) / "objects") + "\n")
        refs = [f"refs/heads/{held['branch']}"]
        _git(scratch, "update-ref", refs[0], held["commit"])
        if held["git-annex"]:
            _git(scratch, "update-ref", ANNEX_BRANCH, held["git-annex"])
            refs.append(ANNEX_BRANCH)
        _git(scratch, "symbolic-ref", "HEAD", refs[0])
        _git(scratch, *_LEAN_PACK, "bundle", "create", "--quiet", str(out), "HEAD", *refs)


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _result(dataset: Path, status: str, message: str, **extra) -> dict:
    return {"action": "rdr-export", "path": str(dataset / NAME), "type": "file",
            "status": status, "message": message, **extra}


def deposit(dataset: Path, client: Dataverse, pid: str, uploader: Uploader, meta,
            committed: bool, lock_timeout: float = 300) -> Iterator[dict]:
    """Deposit the history in the draft of ``pid``; ``committed``: this export made a
    manifest commit (else the last deposit's history is the one to keep). Returns False
    when it could not."""
    dataset = Path(dataset)
    restricted = getattr(meta, "history", "public") == "restricted"
    marker = _gitdir(dataset) / "datalad-rdr" / "history.json"
    try:
        last = json.loads(marker.read_text())
    except (OSError, ValueError):
        last = None
    if last and (last.get("server"), last.get("pid")) != (client.url, pid):
        last = None
    try:
        listing = client.latest_files(pid)[1]
        held = state(dataset) if committed or last is None else last["held"]
        on_server = find(listing, NAME, None)
        # nothing exported changed: the deposit there stays, also when this clone of the
        # dataset did not make it (no marker; its branch may be past the deposited commit)
        if (not committed and on_server is not None and on_server.restricted == restricted
                and (last is None or on_server.md5 == last["md5"])):
            yield _result(dataset, "notneeded", f"{NAME} unchanged since the last export "
                          f"({'restricted' if restricted else 'public'})")
            return True
        marker.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=marker.parent) as tmp:
            path = Path(tmp) / NAME
            make_bundle(dataset, held, path)
            sent = send_file(client, pid, uploader, listing, FileSource(path), _md5(path),
                             NAME, NAME, None, restricted, DESCRIPTION, MIME, lock_timeout)
    except (HistoryError, content.ContentError, UploadError, RegisterError,
            DataverseError) as exc:
        yield _result(dataset, "error", f"the dataset's history was not deposited: {exc}; "
                                        f"rerun 'datalad rdr-export'")
        return False
    marker.write_text(json.dumps({"server": client.url, "pid": pid, "held": held,
                                  "md5": sent.md5, "file_id": sent.file_id}))
    message = sent.message.replace(
        NAME, f"the dataset's history ({NAME}, commit {held['commit'][:8]})", 1)
    if sent.status == "ok" and not restricted and getattr(meta, "access", "") != "open":
        message += ("; the bundles are restricted, the history is not: its commit "
                    "messages, file names and the files kept in git (not annexed) are "
                    "public ('history: restricted' in the metadata file changes that)")
    yield _result(dataset, sent.status, message, file_id=sent.file_id, md5=sent.md5,
                  size=sent.size, commit=held["commit"])
    return True

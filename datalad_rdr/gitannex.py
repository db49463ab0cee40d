"""git and git-annex plumbing: the one place that runs git or git-annex for datalad-rdr.

Every question is asked for many files at once: one ``git cat-file --batch`` per repository
and pass, one ``git annex contentlocation --batch`` / ``whereis --batch-keys`` / ``get
--batch-keys`` per list of keys, never one process per file (at 100,000 files a process
per file is minutes). What an annex key says about its content (backend, size, hash) is
read from the key itself (:func:`key_size`, :func:`key_checksum`).

Location records of a whole export go into the git-annex branch in one commit
(:meth:`Annex.record_urls`): ``git annex registerurl`` asks every external special remote to
claim every URL, one protocol round trip per key (19 ms a key here, 30 minutes at 100,000
keys), and even ``setpresentkey`` costs 1.7 ms a key. The records are the same lines
git-annex writes (its location log ``<key>.log`` and URL log ``<key>.log.web``, see
git-annex's ``internals`` page), committed on top of the branch with ``git fast-import`` and
moved into place only if the branch has not moved meanwhile; git-annex re-reads a branch
that changed under it. When git-annex has uncommitted changes of its own (its journal),
the records go through ``registerurl`` as before.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

from .zipmembers import Checksum

log = logging.getLogger("datalad.rdr.gitannex")

ANNEX_BRANCH = "refs/heads/git-annex"


class AnnexError(Exception):
    pass


class GitError(AnnexError):
    pass


class ContentError(Exception):
    """Content the export needs is not here (a blob, an annex object)."""


# -- what a key says -------------------------------------------------------------------

# git-annex backends whose key carries a hash of the content, and the hash.
_BACKENDS = {
    "MD5": "md5", "SHA1": "sha1", "SHA224": "sha224", "SHA256": "sha256",
    "SHA384": "sha384", "SHA512": "sha512", "SHA3_224": "sha3_224",
    "SHA3_256": "sha3_256", "SHA3_384": "sha3_384", "SHA3_512": "sha3_512",
    "BLAKE2B512": "blake2b", "BLAKE2S256": "blake2s",
}
# one constructor per backend, shared by every key's Checksum (not a closure per key)
_NEW = {backend: getattr(hashlib, algo) for backend, algo in _BACKENDS.items()}
_KEY = re.compile(r"^([A-Z0-9_]+?)(E?)-[^-]*(?:-[^-]*)*?--(.+)$")
_SIZE = re.compile(r"^[A-Z0-9_]+-s(\d+)-")


def key_checksum(key: str) -> Checksum | None:
    """The hash the key's content must have, when its backend names one."""
    m = _KEY.match(key)
    if not m or m.group(1) not in _BACKENDS:
        return None
    digest = m.group(3)
    if m.group(2):  # *E backends keep the file extension after the hash
        digest = digest.split(".", 1)[0]
    return Checksum(_NEW[m.group(1)], digest)


def key_size(key: str) -> int | None:
    """The content's size from the key's ``-s`` field (None: the key records none)."""
    m = _SIZE.match(key)
    return int(m.group(1)) if m else None


def key_of_pointer(content: bytes, mode: str) -> str | None:
    """The key an annexed file's blob points to (a symlink, or an unlocked file's pointer
    ``/annex/objects/KEY``), or None for a file in git."""
    text = content.decode("utf-8", "replace").strip()
    if "annex/objects/" not in text or "\n" in text:
        return None
    if mode != "120000" and not text.startswith("/annex/objects/"):
        return None
    return text.rsplit("/", 1)[-1]


def _key_file(key: str) -> str:
    """A key as git-annex names its files (objects, branch logs): ``&`` ``&a``, ``%``
    ``&s``, ``:`` ``&c``, ``/`` ``%``."""
    return key.replace("&", "&a").replace("%", "&s").replace(":", "&c").replace("/", "%")


_UNESCAPE = {"&a": "&", "&s": "%", "&c": ":", "%": "/"}
_ESCAPED = re.compile(r"&[asc]|%")


def _key_of_branch_file(path: str) -> str | None:
    """The key whose log is at ``path`` of the git-annex branch (``.log``, ``.log.web``),
    else None: :func:`_branch_file` undone (:func:`_key_file` in one pass)."""
    name = path.rpartition("/")[2]
    for suffix in (".log.web", ".log"):
        if name.endswith(suffix):
            return _ESCAPED.sub(lambda m: _UNESCAPE[m.group()], name[:-len(suffix)])
    return None


def _branch_file(key: str) -> str:
    """Where git-annex keeps a key's logs in its branch: hashdirlower of the key, then the
    key with git-annex's file name escapes (``&`` ``&a``, ``%`` ``&s``, ``:`` ``&c``,
    ``/`` ``%``)."""
    md5 = hashlib.md5(key.encode()).hexdigest()
    return f"{md5[:3]}/{md5[3:6]}/{_key_file(key)}"


# -- git ----------------------------------------------------------------------------------

def git(repo, *args, input: str | None = None) -> str:
    """One git command's output; GitError with git's last line when it fails."""
    r = subprocess.run(["git", "-C", str(repo), *args], text=True, capture_output=True,
                       input=input)
    if r.returncode:
        raise GitError(f"git {args[0]} failed: "
                       f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return r.stdout


def git_or_none(repo, *args, binary: bool = False) -> str | bytes | None:
    """One git command's output, or None when git says no (a ref, setting or path that is
    not there): for questions, where a failure is an answer."""
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=not binary)
    return r.stdout if r.returncode == 0 else None


def config(repo, name: str, file: str | os.PathLike | None = None) -> str | None:
    """A git setting of ``repo`` (or of a config ``file``); None when it is unset."""
    where = ["-f", str(Path(file).absolute())] if file is not None else []
    out = git_or_none(repo, "config", *where, name)
    return (out.strip() or None) if out is not None else None


def resolve(repo, rev: str) -> str | None:
    """The object id ``rev`` names (``HEAD``, ``main^{commit}``, a ref); None when none."""
    out = git_or_none(repo, "rev-parse", "--verify", "--quiet", rev)
    return (out.strip() or None) if out is not None else None


def git_dir(repo) -> Path:
    """The repository's git directory (``.git``, or where a ``.git`` file points). Asked
    of git once a repository and process (an export asks about twenty times), and taken
    again while that directory exists."""
    where = os.path.abspath(repo)
    known = _GIT_DIRS.get(where)
    if known is None or not known.is_dir():
        known = _GIT_DIRS[where] = Path(git(repo, "rev-parse", "--absolute-git-dir").strip())
    return known


_GIT_DIRS: dict[str, Path] = {}


def unsaved_paths(repo) -> list[str]:
    """Paths (relative to the work tree) with changes not saved in HEAD; a subdataset counts
    when its recorded commit changed (as ``datalad status`` with
    ``eval_subdataset_state="commit"``). git's own NUL-separated status: any name git can
    hold, newlines included, comes out whole."""
    out = subprocess.run(["git", "-C", str(repo), "status", "--porcelain=v1", "-z",
                          "--untracked-files=normal", "--ignore-submodules=dirty"],
                         capture_output=True, check=True).stdout.decode("utf-8",
                                                                        "surrogateescape")
    paths, entries = [], iter(out.split("\0"))
    for entry in entries:
        if not entry:
            continue
        paths.append(entry[3:].rstrip("/"))
        if entry[0] in "RC":  # a rename or copy: the old path follows
            next(entries, None)
    return sorted(paths)


def commit_time(repo, commit: str) -> int:
    """A commit's committer time, seconds since the epoch."""
    return int(git(repo, "show", "-s", "--format=%ct", commit).strip())


def ls_tree(repo, commit: str) -> bytes:
    """``git ls-tree -r -t -z --long --full-tree`` of a commit: every entry, NUL-separated."""
    return subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "-t", "-z", "--long",
                           "--full-tree", commit], check=True, capture_output=True).stdout


def cat_blobs(repo, objects: list[str]) -> dict[str, bytes | None]:
    """The content of many objects (ids or ``rev:path``) in one ``git cat-file --batch``;
    None for one that does not exist."""
    if not objects:
        return {}
    args = ["git", "-C", str(repo), "cat-file", "--batch", "--buffer"]  # read at the end
    data = _batch_output(args, "".join(f"{o}\n" for o in objects).encode())
    pos, result = 0, {}
    for obj in objects:
        header_end = data.index(b"\n", pos)
        header = data[pos:header_end].split()
        if header[-1] == b"missing" or len(header) != 3:
            result[obj], pos = None, header_end + 1
            continue
        start = header_end + 1
        size = int(header[2])
        result[obj] = data[start:start + size]
        pos = start + size + 1
    return result


def _batch_output(args: list[str], given: bytes) -> bytes:
    """What a batch command prints for ``given``, read in one call while a thread writes
    it: ``subprocess.run(input=...)`` takes turns at both pipes in Python, 64 KiB at a
    time (50,000 turns for 100,000 blobs: 0.5 s). CalledProcessError when git fails."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err)

        def feed():
            try:
                proc.stdin.write(given)
            except OSError:
                pass  # git stopped reading: its exit code and stderr tell why
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        writer = threading.Thread(target=feed, daemon=True, name="rdr-git-batch-input")
        writer.start()
        with proc:
            out = proc.stdout.read()
            writer.join()
        if proc.returncode:
            err.seek(0)
            raise subprocess.CalledProcessError(proc.returncode, args, out, err.read())
    return out


class BlobReader:
    """Blobs of one repository through a single ``git cat-file --batch`` process, kept open.

    The ZIP is read twice (layout, then stream) and a retried part again: one process per
    blob and pass cost ~1.5 ms each, 15% of the wall time of a sidecar-rich export.
    """

    def __init__(self, repo: str):
        self.repo = repo
        self._proc = None
        self._lock = threading.Lock()

    def read(self, blob: str) -> bytes:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    ["git", "-C", self.repo, "cat-file", "--batch"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._proc.stdin.write(f"{blob}\n".encode())
            self._proc.stdin.flush()
            header = self._proc.stdout.readline().split()
            if len(header) != 3:
                raise ContentError(f"git blob {blob} is missing from {self.repo}")
            size = int(header[2])
            data = self._proc.stdout.read(size)
            self._proc.stdout.read(1)  # the newline after each object
            return data

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.wait()
            self._proc = None


# -- git-annex ----------------------------------------------------------------------------

class Annex:
    """git-annex of one repository (a work tree, or the gitdir of a bare one)."""

    def __init__(self, repo: str | os.PathLike):
        repo = Path(repo)
        # A bare repository (a RIA store's) has no work tree: git-annex runs in the gitdir.
        self.cwd = repo.parent if repo.name == ".git" else repo

    def run(self, args: list[str], input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["git", "annex", *args], cwd=self.cwd, input=input,
                           capture_output=True, text=True, check=False)
        if check and r.returncode:
            raise AnnexError(f"git annex {args[0]} failed: "
                             f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        return r

    def _batch_keys(self, args: list[str], keys: list[str]) -> list[dict]:
        """JSON records of one ``--batch-keys --json`` run over ``keys``."""
        out = self.run([*args, "--json", "--batch-keys"],
                       "".join(k + "\n" for k in keys), check=False).stdout
        records = []
        for line in out.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def content_locations(self, keys: list[str]) -> dict[str, Path | None]:
        """Where each key's object is, or None when it is not present."""
        if not keys:
            return {}
        out = self.run(["contentlocation", "--batch"],
                       "".join(k + "\n" for k in keys), check=False).stdout.split("\n")
        return {k: (self.cwd / loc if loc else None) for k, loc in zip(keys, out)}

    def missing_everywhere(self, keys: list[str]) -> list[str]:
        """Keys with no copy in any known location (here or a remote)."""
        if not keys:
            return []
        found = {r.get("key") for r in self._batch_keys(["whereis"], keys)
                 if r.get("whereis") or r.get("untrusted")}
        return [k for k in keys if k not in found]

    def get(self, keys: list[str]) -> list[str]:
        """Fetch keys from the repository's remotes; returns those that came."""
        if not keys:
            return []
        got = {r.get("key") for r in self._batch_keys(["get"], keys) if r.get("success")}
        return [k for k in keys if k in got]

    def drop(self, keys: list[str]) -> None:
        if keys:
            self._batch_keys(["drop"], keys)

    def set_present(self, keys: list[str], uuid: str, present: bool) -> None:
        if keys:
            self.run(["setpresentkey", "--batch"],
                     "".join(f"{k} {uuid} {1 if present else 0}\n" for k in keys))

    def register_urls(self, pairs: list[tuple[str, str]], remote: str | None = None) -> None:
        """Record ``(key, url)``s as locations in ``remote`` (also marks the keys present);
        without one, in the remote that claims each URL (the web for plain HTTP). One
        claim round trip per key: for many keys, :meth:`record_urls`."""
        if pairs:
            self.run(["registerurl", "--batch", *([f"--remote={remote}"] if remote else [])],
                     "".join(f"{k} {u}\n" for k, u in pairs))

    def unregister_urls(self, pairs: list[tuple[str, str]], remote: str) -> None:
        if pairs:
            self.run(["unregisterurl", "--batch", f"--remote={remote}"],
                     "".join(f"{k} {u}\n" for k, u in pairs))

    def setkey(self, key: str, path: Path) -> None:
        """Move ``path`` into the annex as the content of ``key`` (it is verified)."""
        self.run(["setkey", key, str(path)])

    def urls(self, keys: list[str]) -> dict[str, list[str]]:
        """The URLs recorded for each key, whatever remote they belong to."""
        if not keys:
            return {}
        out = self.run(["whereis", "--json", "--batch-keys"],
                       "".join(k + "\n" for k in keys), check=False).stdout
        return _urls(out, {k: [] for k in keys})

    def all_urls(self) -> dict[str, list[str]]:
        """The URLs recorded for every key the git-annex branch knows (``--all``)."""
        return _urls(self.run(["whereis", "--all", "--json"], check=False).stdout, {})

    def worktree_paths(self) -> dict[str, str]:
        """key -> a path in the work tree that holds it (the first in sorted order)."""
        r = self.run(["find", "--json"], check=False)
        paths: dict[str, str] = {}
        for line in r.stdout.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            key, path = record.get("key"), record.get("file")
            if key and path and (key not in paths or path < paths[key]):
                paths[key] = path
        return paths

    # -- the git-annex branch, read and written in bulk ---------------------------------

    def _journal_empty(self) -> bool:
        journal = git_dir(self.cwd) / "annex" / "journal"
        return not journal.is_dir() or not any(journal.iterdir())

    def _branch(self) -> str | None:
        r = subprocess.run(["git", "-C", str(self.cwd), "rev-parse", "--verify", "--quiet",
                            ANNEX_BRANCH], capture_output=True, text=True)
        return r.stdout.strip() or None

    def branch_snapshot(self) -> str | None:
        """The git-annex branch's commit, if it holds all of git-annex's changes (none
        waiting in its journal); else None."""
        branch = self._branch()
        if branch is None or not self._journal_empty():
            return None
        return branch

    def branch_logs(self, keys: list[str], at: str | None = None) -> BranchLogs | None:
        """The location and URL logs of ``keys`` on the git-annex branch (at its commit
        ``at``, a :meth:`branch_snapshot`), read in one listing and one ``git cat-file``
        (no ``whereis`` per key); None when git-annex has changes of its own not yet in
        the branch (then ask :meth:`urls`)."""
        branch = at or self.branch_snapshot()
        if branch is None:
            return None
        return BranchLogs(branch, self._logs(branch, keys))

    def logs_now(self, logs: BranchLogs) -> BranchLogs | None:
        """``logs`` (of :meth:`branch_logs`) as of the branch's head now: the same when the
        branch has not moved, or moved with none of their keys' logs changed (a commit of
        the manifest's annexed files, a remote set up); read again when one did. None as
        :meth:`branch_logs` (git-annex has changes of its own not yet in the branch)."""
        branch = self.branch_snapshot()
        if branch is None:
            return None
        if branch == logs.branch:
            return logs
        changed = git(self.cwd, "diff-tree", "-r", "-z", "--name-only", "--no-renames",
                      logs.branch, branch).split("\0")
        if any(_key_of_branch_file(path) in logs.logs for path in changed if path):
            return BranchLogs(branch, self._logs(branch, list(logs.logs)))
        return BranchLogs(branch, logs.logs)

    def _logs(self, branch: str, keys: list[str]
              ) -> dict[str, tuple[bytes | None, bytes | None]]:
        """(``KEY.log``, ``KEY.log.web``) of each key at ``branch``, None for a file not
        there. One listing of the branch (``cat-file`` of ``rev:path`` walks the trees for
        every path, a millisecond each), read as it comes and kept to the keys asked about:
        all of a branch of 100,000 keys as a dict is 64 MB."""
        stems = {_branch_file(k): k for k in keys}
        shas: dict[str, list[str | None]] = {}
        proc = subprocess.Popen(["git", "-C", str(self.cwd), "ls-tree", "-r", "-z", branch],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rest = b""
        for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
            records = (rest + chunk).split(b"\0")
            rest = records.pop()
            for record in records:
                meta, _, raw = record.partition(b"\t")
                path = raw.decode("utf-8", "surrogateescape")
                if path.endswith(".log.web"):
                    stem, slot = path[:-8], 1
                elif path.endswith(".log"):
                    stem, slot = path[:-4], 0
                else:
                    continue
                key = stems.get(stem)
                if key is not None:
                    shas.setdefault(key, [None, None])[slot] = meta.split()[2].decode()
        err = proc.stderr.read()
        if proc.wait():
            raise GitError(f"git ls-tree {branch}: "
                           f"{err.decode(errors='replace').strip() or proc.returncode}")
        del stems
        content = cat_blobs(self.cwd, list(dict.fromkeys(
            sha for pair in shas.values() for sha in pair if sha)))
        found = {}
        for key in keys:
            log, web = shas.get(key) or (None, None)
            found[key] = (content.get(log) if log else None, content.get(web) if web else None)
        return found

    def record_urls(self, pairs: list[tuple[str, str]], remote: str, uuid: str,
                    logs: BranchLogs | None = None) -> None:
        """Record ``(key, url)``s as locations in ``remote`` (uuid ``uuid``) and mark the
        keys present there: one commit on the git-annex branch, or ``registerurl`` when
        the branch cannot take it directly. ``logs``: the keys' logs as
        :meth:`branch_logs` read them, used if the branch has not moved since."""
        if not pairs:
            return
        if not uuid or not self._commit_records(pairs, uuid, logs):
            self.register_urls(pairs, remote)

    def _commit_records(self, pairs: list[tuple[str, str]], uuid: str,
                        logs: BranchLogs | None) -> bool:
        branch = self._branch()
        if branch is None or not self._journal_empty():
            return False
        by_key: dict[str, list[str]] = {}
        for key, url in pairs:
            by_key.setdefault(key, []).append(url)
        if logs is None or logs.branch != branch or any(k not in logs.logs for k in by_key):
            logs = BranchLogs(branch, self._logs(branch, list(by_key)))
        old = logs.logs
        names = {k: _branch_file(k) for k in by_key}
        ns = time.time_ns()
        stamp = f"{ns // 10**9}.{ns % 10**9:09d}s"
        ident = git(self.cwd, "var", "GIT_COMMITTER_IDENT").strip()
        folders = self._folders(branch)
        keys = sorted(by_key, key=names.__getitem__)
        groups = groupby(keys, key=lambda k: names[k].partition("/")[0])
        # Each top folder (aaa/ of aaa/bbb/KEY.log) is made as a tree by a commit of its
        # own, and the branch's new root tree from those afterwards: fast-import finds a
        # path's folder by a linear search, and the root holds up to 4,096 of them (12 s
        # against 4 s at 100,000 keys). The folders are shared among a few fast-import
        # processes fed in turn: git's work (~300,000 objects at 100,000 keys, each hashed
        # and deflated) runs on several cores while this process writes the next folders.
        importers = [_FolderImport(self.cwd, f"{_RECORDS_REF}-{i}", ident)
                     for i in range(FAST_IMPORTS)]
        made: dict[str, str] = {}
        try:
            for n, (folder, group) in enumerate(groups):
                importer = importers[n % len(importers)]
                importer.start(folder, folders.get(folder))
                for key in group:
                    self._write_records(importer.stdin, "t/" + names[key].partition("/")[2],
                                        old[key], by_key[key], uuid, stamp)
            for importer in importers:
                made.update(importer.finish())
        except (OSError, ValueError) as exc:
            log.debug("git fast-import of location records failed: %s", exc)
            return False
        finally:
            for importer in importers:
                importer.close()
        changed = {f: tree for f, tree in made.items() if folders.get(f) != tree}
        if not changed:
            return True  # every record is there already: no commit
        try:
            root = self._root_with(branch, changed)
            new = git(self.cwd, "commit-tree", root, "-p", branch,
                      "-m", "update (datalad-rdr: location records of an export)").strip()
            # moved only if nothing changed the branch meanwhile (compare and swap)
            git(self.cwd, "update-ref", "-m", "datalad-rdr: location records",
                ANNEX_BRANCH, new, branch)
        except GitError as exc:
            log.debug("the git-annex branch moved during the export: %s", exc)
            return False
        log.debug("%d keys recorded in one commit of the git-annex branch", len(by_key))
        return True

    def _root_with(self, branch: str, folders: dict[str, str]) -> str:
        """The tree of ``branch``'s root with ``folders`` (name -> tree) put in."""
        entries = {}
        for record in git(self.cwd, "ls-tree", "-z", branch).split("\0"):
            if record:
                entries[record.partition("\t")[2]] = record
        for name, tree in folders.items():
            entries[name] = f"040000 tree {tree}\t{name}"
        return git(self.cwd, "mktree", "-z",
                   input="".join(f"{e}\0" for e in entries.values())).strip()

    @staticmethod
    def _write_records(out, path: str, old: tuple[bytes | None, bytes | None],
                       urls: list[str], uuid: str, stamp: str) -> None:
        """The key's logs (``old``: its location and URL logs) with ``uuid`` present and
        ``urls`` added, written at ``path`` of the commit fast-import is making."""
        locations, web = old
        # a log that does not name the uuid (or a URL) at all is not parsed: on a first
        # export, every key's location log names only the dataset's own repository
        if not (locations and uuid.encode() in locations and uuid in _present(locations)):
            out.write(_inline(f"{path}.log", (locations or b"")
                              + f"{stamp} 1 {uuid}\n".encode()))
        known = set(_present(web, strip=":")) if web else ()
        fresh = [u for u in dict.fromkeys(urls) if u not in known]
        if fresh:
            out.write(_inline(f"{path}.log.web", (web or b"") + "".join(
                f"{stamp} 1 :{u}\n" for u in fresh).encode()))

    def _folders(self, branch: str) -> dict[str, str]:
        """The top folders of the git-annex branch at ``branch``: name -> tree."""
        folders = {}
        for record in git(self.cwd, "ls-tree", "-z", branch).split("\0"):
            meta, _, path = record.partition("\t")
            if meta.startswith("040000 tree "):
                folders[path] = meta.split()[2]
        return folders


class BranchLogs(NamedTuple):
    """Logs of some keys on the git-annex branch at commit ``branch``: per key, its
    location log and its URL log (None: the key has none)."""

    branch: str
    logs: dict[str, tuple[bytes | None, bytes | None]]

    def urls(self) -> dict[str, list[str]]:
        """The URLs recorded for each key that has any."""
        found = {}
        for key, (_, web) in self.logs.items():
            if web:
                urls = _present(web, strip=":")
                if urls:
                    found[key] = urls
        return found


#: fast-import processes that share the location records of one commit
FAST_IMPORTS = 2
_RECORDS_REF = "refs/datalad-rdr/git-annex-records"
_PIPE_SIZE = 1 << 20  # Linux's F_SETPIPE_SZ: room for a few folders ahead of git
#: zlib level of the records' objects: each is a log of a line or two, which zlib barely
#: shrinks, and compressing them was a third of fast-import's time (100,000 keys: 6.6 s of
#: CPU at git's default, 4.2 s stored; the pack 26 -> 32 MB, until git gc repacks it)
_RECORDS_COMPRESSION = 0


class _FolderImport:
    """One ``git fast-import`` that makes top folders of the git-annex branch as trees:
    :meth:`start` a folder (its tree so far, if any), write its files to ``stdin``, and
    :meth:`finish` gives each folder's new tree. Its answers (``ls``) are read by a thread
    of their own, so that writing never waits for git to catch up."""

    def __init__(self, repo, ref: str, ident: str):
        self.ref, self.ident = ref, ident
        self.folders: list[str] = []
        self.answers: list[list[bytes]] = []
        self.errors = tempfile.TemporaryFile()
        read, write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                ["git", "-C", str(repo), "-c", f"pack.compression={_RECORDS_COMPRESSION}",
                 "fast-import", "--quiet", "--force",
                 f"--cat-blob-fd={write}"], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=self.errors, env=fast_import_env(),
                pass_fds=(write,))
        finally:
            os.close(write)
        self.repo = repo
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            try:
                fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass  # above the system's limit: the default pipe is slower, not wrong
        self.stdin = self.proc.stdin
        self.reader = threading.Thread(target=self._read, args=(read,), daemon=True,
                                       name="rdr-fast-import-answers")
        self.reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as answers:
            for line in answers:
                self.answers.append(line.split())

    def start(self, folder: str, tree: str | None) -> None:
        n = len(self.folders)
        if n:
            self.stdin.write(f"\nls :{n} t\n".encode())
        self.folders.append(folder)
        self.stdin.write(f"commit {self.ref}\nmark :{n + 1}\ncommitter {self.ident}\n"
                         f"data 0\n{'deleteall' + chr(10) if n else ''}".encode())
        if tree:
            self.stdin.write(f"M 040000 {tree} t\n".encode())

    def finish(self) -> dict[str, str]:
        """Each folder's tree (none for a folder left empty); OSError when git failed."""
        if self.folders:
            self.stdin.write(f"\nls :{len(self.folders)} t\n".encode())
        self.stdin.close()
        if self.proc.wait():
            self.errors.seek(0)
            raise OSError(f"git fast-import: {self.errors.read()[-500:]!r}")
        self.reader.join()
        if len(self.answers) != len(self.folders):
            raise OSError(f"git fast-import answered {len(self.answers)} of "
                          f"{len(self.folders)} folders")
        made = {}
        for folder, answer in zip(self.folders, self.answers):
            if answer[:1] == [b"missing"]:
                continue  # nothing to write there
            if len(answer) < 3 or answer[0] != b"040000":
                raise ValueError(f"fast-import answered {answer!r}")
            made[folder] = answer[2].decode()
        return made

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.stdin.close()
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait()
        self.errors.close()
        subprocess.run(["git", "-C", str(self.repo), "update-ref", "-d", self.ref],
                       capture_output=True)


def _inline(path: str, data: bytes) -> bytes:
    return f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n"


def _present(logfile: bytes | None, strip: str = "") -> list[str]:
    """What a git-annex log (``TIME STATUS INFO`` lines, the last word per info wins) says
    is present."""
    if not logfile:
        return []
    latest: dict[str, tuple[float, str]] = {}
    for line in logfile.decode("utf-8", "surrogateescape").splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue
        stamp, status, info = parts
        try:
            when = float(stamp.rstrip("s"))
        except ValueError:
            continue
        if info not in latest or when >= latest[info][0]:
            latest[info] = (when, status)
    return [info[len(strip):] if strip and info.startswith(strip) else info
            for info, (_, status) in latest.items() if status == "1"]


def _urls(whereis_json: str, found: dict[str, list[str]]) -> dict[str, list[str]]:
    for line in whereis_json.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        for where in record.get("whereis", []) + record.get("untrusted", []):
            found.setdefault(record.get("key"), []).extend(where.get("urls", []))
    return found


# -- committing a few files ---------------------------------------------------------------

def commit_files(repo, paths: list[Path], message: str, restore: bool = True,
                 added: Callable[[], None] | None = None) -> bool:
    """Commit ``paths`` (and nothing else) as ``datalad save PATHS`` would: annexed or in
    git as ``git annex add`` decides from the dataset's ``annex.largefiles`` rules, then
    ``git commit --only``. Returns False when nothing changed (no commit made). When git
    refuses, the paths are put back as HEAD has them, unless ``restore`` is False (what
    they say must not be lost: the caller tells the user to commit them). ``added`` is
    called once the paths are in the index, before the commit.

    ``datalad save`` of two files costs seconds at 100,000 files in the work tree (its
    status walks the whole tree); git only looks at the paths given.
    """
    repo = Path(repo)
    rel = [os.path.relpath(Path(p).absolute(), repo.absolute()) for p in paths]
    try:
        if is_annex(repo):
            # annex.dotfiles as DataLad sets it: files under .datalad/ follow largefiles too
            r = subprocess.run(["git", "annex", "add", "-c", "annex.dotfiles=true", "--quiet",
                                "--", *rel], cwd=repo, capture_output=True, text=True)
            if r.returncode:
                raise GitError(f"git annex add failed: {_last_line(r)}")
        else:
            git(repo, "add", "--", *rel)
        if added is not None:
            added()
        if subprocess.run(["git", "-C", str(repo), "diff", "--cached", "--quiet", "HEAD",
                           "--", *rel], capture_output=True).returncode == 0:
            return False
        r = subprocess.run(["git", "-C", str(repo), "commit", "--quiet", "-m", message,
                            "--only", "--", *rel], capture_output=True, text=True)
        if r.returncode:
            raise GitError(f"git commit failed: {_last_line(r)}")
        return True
    except GitError:
        if restore:
            _restore(repo, rel)
        raise


def _last_line(r: subprocess.CompletedProcess) -> str:
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {r.returncode}"


def _restore(repo: Path, rel: list[str]) -> None:
    """``rel`` in the index and the work tree as in HEAD again (removed where HEAD has
    none): nothing half-added is left to look like a change of the user's."""
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "HEAD", "--", *rel],
                   capture_output=True)
    for path in rel:
        if subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"HEAD:{path}"],
                          capture_output=True).returncode == 0:
            subprocess.run(["git", "-C", str(repo), "checkout", "-q", "HEAD", "--", path],
                           capture_output=True)
        else:
            (repo / path).unlink(missing_ok=True)


def is_annex(repo) -> bool:
    """Whether git-annex is initialised in ``repo``."""
    return config(repo, "annex.uuid") is not None


def save_paths(repo, paths: list[Path], message: str, restore: bool = True,
               added: Callable[[], None] | None = None) -> None:
    """Commit ``paths`` as ``datalad save PATHS`` would (:func:`commit_files`); on an
    adjusted branch through DataLad's save itself (``added`` is then not called). GitError
    when git refuses the commit."""
    if not on_adjusted_branch(repo):
        commit_files(repo, paths, message, restore=restore, added=added)
        return
    from datalad.api import save

    save(dataset=str(repo), path=[str(p) for p in paths], message=message,
         result_renderer="disabled", return_type="list", on_failure="stop")


def on_adjusted_branch(repo) -> bool:
    """git-annex's adjusted branches (crippled file systems) need DataLad's save."""
    head = git_or_none(repo, "symbolic-ref", "-q", "HEAD") or ""
    return head.strip().startswith("refs/heads/adjusted/")


def fast_import_env() -> dict[str, str]:
    """The environment for ``git fast-import`` of many small objects: glibc's malloc would
    hand the heap back to the kernel after each object's zlib stream and take it again for
    the next (two ``brk`` calls an object: 176,000 at 20,000 keys, 5.1 s against 1.3 s
    without). A trim threshold of 64 MiB keeps the few MiB it uses."""
    return {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(64 * 2**20)}


# -- where git-annex keeps an object ------------------------------------------------------

_MIXED = "0123456789zqjxkmvwgpfZQJXKMVWGPF"


def object_candidates(gitdir: str, key: str) -> list[str]:
    """Where a key's object is in ``gitdir/annex/objects`` if it is present: git-annex's
    ``hashdirmixed`` layout (work trees), then ``hashdirlower`` (bare repositories,
    ``annex.tune.objecthashlower``). The key's own name ends the path, so a file found
    there is that key's content; one not found is asked of git-annex. Strings, not Paths:
    100,000 keys' worth of Path joins cost seconds."""
    return [object_path(gitdir, key, 0), object_path(gitdir, key, 1)]


def object_path(gitdir: str, key: str, at: int) -> str:
    """The ``at``-th of :func:`object_candidates` alone: the first is all that a work
    tree's look-up and each open need (half the cost of both, 3 us a key)."""
    digest = hashlib.md5(key.encode()).digest()
    name = _key_file(key)
    if at == 0:
        word = int.from_bytes(digest[:4], "little")
        m = _MIXED
        return (f"{gitdir}/annex/objects/{m[(word >> 6) & 31]}{m[word & 31]}/"
                f"{m[(word >> 18) & 31]}{m[(word >> 12) & 31]}/{name}/{name}")
    lower = digest.hex()
    return f"{gitdir}/annex/objects/{lower[:3]}/{lower[3:6]}/{name}/{name}"

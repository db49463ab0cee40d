"""The dataset's files as the exported commit has them, or as the work tree has them.

The bundles and the pre-flight read the commit that is exported; the metadata file and the
README that gives the description must come from the same commit, or ``--commit`` (and an
edit not yet saved) would give a record that does not describe what was sent.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .readme import pick_readme

_SYMLINK = "120000"


class NotHere(LookupError):
    """An annexed file whose content cannot be had."""


def _annex_key(blob: bytes, mode: str) -> str | None:
    """The annex key of a committed symlink or pointer file, None for a plain file."""
    text = blob[:1024].decode("utf-8", "replace").strip()
    if "annex/objects/" not in text or "\n" in text:
        return None
    if mode != _SYMLINK and not text.startswith("/annex/objects/"):
        return None
    return text.rsplit("/", 1)[-1]


class Snapshot:
    """Files of `dataset` at `commit` (None: the work tree, for a directory that is not a
    repository, as tests give)."""

    def __init__(self, dataset: Path | None, commit: str | None = None):
        self.dataset = Path(dataset) if dataset is not None else None
        self.commit = commit

    def _git(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(self.dataset), *args], capture_output=True)

    def resolve(self) -> str | None:
        """The commit's hash; None when the dataset has no such commit."""
        out = self._git("rev-parse", "--verify", "--quiet", f"{self.commit}^{{commit}}")
        return out.stdout.decode().strip() if out.returncode == 0 else None

    def _entry(self, path: str) -> tuple[str, str] | None:
        """(mode, type) of `path` in the commit's tree; None when it is not there."""
        out = self._git("ls-tree", "-z", self.commit, "--", path)
        if out.returncode != 0 or not out.stdout:
            return None
        mode, kind, _ = out.stdout.decode("utf-8", "replace").split(" ", 2)
        return mode, kind

    def exists(self, path: str) -> bool:
        if self.dataset is None:
            return False
        if self.commit is None:
            return (self.dataset / path).is_symlink() or (self.dataset / path).exists()
        return self._entry(path) is not None

    def read(self, path: str) -> bytes | None:
        """The file's bytes; None when it is not there. An annexed file is read from the
        annex object of the key the commit names (got from a remote when it is not here:
        a fresh clone); :class:`NotHere` when no remote has it either."""
        if self.dataset is None:
            return None
        if self.commit is not None:
            entry = self._entry(path)
            if entry is None:
                return None
            blob = self._git("show", f"{self.commit}:{path}").stdout
            key = _annex_key(blob, entry[0])
            return blob if key is None else self._annexed(path, key)
        try:
            return (self.dataset / path).read_bytes()
        except OSError:
            return None

    def _annexed(self, path: str, key: str) -> bytes:
        for attempt in range(2):
            where = subprocess.run(["git", "-C", str(self.dataset), "annex", "contentlocation",
                                    key], capture_output=True, text=True)
            if where.returncode == 0 and where.stdout.strip():
                return (self.dataset / where.stdout.strip()).read_bytes()
            if attempt == 0:
                subprocess.run(["git", "-C", str(self.dataset), "annex", "get", "--key", key],
                               capture_output=True)
        raise NotHere(f"{path} is annexed and its content is not here nor on any remote; "
                      f"'datalad get {path}' (or add it to git: 'git annex unannex')")

    def readme(self) -> str:
        """The text of the top-level README (first by name), "" when there is none."""
        if self.dataset is None:
            return ""
        if self.commit is None:
            names = [p.name for p in self.dataset.iterdir() if p.is_file()]
        else:
            out = self._git("ls-tree", "-z", "--name-only", self.commit)
            names = [n for n in out.stdout.decode("utf-8", "replace").split("\0") if n]
        name = pick_readme(names)
        data = self.read(name) if name else None
        if data is not None:
            return data.decode("utf-8", errors="replace")
        return ""

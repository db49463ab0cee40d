"""The dataset's files as the exported commit has them, or as the work tree has them.

The bundles and the pre-flight read the commit that is exported; the metadata file and the
README that gives the description must come from the same commit, or ``--commit`` (and an
edit not yet saved) would give a record that does not describe what was sent.
"""

from __future__ import annotations

from pathlib import Path

from ..gitannex import Annex, git_or_none, key_of_pointer, resolve
from .readme import pick_readme


class NotHere(LookupError):
    """An annexed file whose content cannot be had."""


class Snapshot:
    """Files of `dataset` at `commit` (None: the work tree, for a directory that is not a
    repository, as tests give)."""

    def __init__(self, dataset: Path | None, commit: str | None = None):
        self.dataset = Path(dataset) if dataset is not None else None
        self.commit = commit

    def resolve(self) -> str | None:
        """The commit's hash; None when the dataset has no such commit."""
        return resolve(self.dataset, f"{self.commit}^{{commit}}")

    def _entry(self, path: str) -> tuple[str, str] | None:
        """(mode, type) of `path` in the commit's tree; None when it is not there."""
        out = git_or_none(self.dataset, "ls-tree", "-z", self.commit, "--", path, binary=True)
        if not out:
            return None
        mode, kind, _ = out.decode("utf-8", "replace").split(" ", 2)
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
            blob = git_or_none(self.dataset, "show", f"{self.commit}:{path}", binary=True) or b""
            key = key_of_pointer(blob[:1024], entry[0])
            return blob if key is None else self._annexed(path, key)
        try:
            return (self.dataset / path).read_bytes()
        except OSError:
            return None

    def _annexed(self, path: str, key: str) -> bytes:
        annex = Annex(self.dataset)
        for attempt in range(2):
            where = annex.content_locations([key])[key]
            if where is not None:
                return where.read_bytes()
            if attempt == 0:
                annex.get([key])
        raise NotHere(f"{path} is annexed and its content is not here nor on any remote; "
                      f"'datalad get {path}' (or add it to git: 'git annex unannex')")

    def readme(self) -> str:
        """The text of the top-level README (first by name), "" when there is none."""
        if self.dataset is None:
            return ""
        if self.commit is None:
            names = [p.name for p in self.dataset.iterdir() if p.is_file()]
        else:
            out = git_or_none(self.dataset, "ls-tree", "-z", "--name-only", self.commit,
                              binary=True) or b""
            names = [n for n in out.decode("utf-8", "replace").split("\0") if n]
        name = pick_readme(names)
        data = self.read(name) if name else None
        if data is not None:
            return data.decode("utf-8", errors="replace")
        return ""

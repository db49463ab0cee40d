"""git-annex plumbing, for the moments when the protocol is not there to ask.

After git-annex has closed the remote's stdin (the end of a session), during crash repair
and in ``rdr-export``, the remote's records are written with git-annex's own plumbing
commands, run in the repository: ``registerurl``/``unregisterurl --remote`` (location
records, also marking the key present), ``setpresentkey`` (the location log), ``setkey``
(content put back into the annex). git-annex takes its own locks; running these while the
parent git-annex waits for the remote to exit is what git-annex does for concurrent commands.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


class AnnexError(Exception):
    pass


class Annex:
    def __init__(self, gitdir: str | os.PathLike):
        gitdir = Path(gitdir)
        # A bare repository (a RIA store's) has no work tree: git-annex runs in the gitdir.
        self.cwd = gitdir.parent if gitdir.name == ".git" else gitdir

    def run(self, args: list[str], input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["git", "annex", *args], cwd=self.cwd, input=input,
                           capture_output=True, text=True, check=False)
        if check and r.returncode:
            raise AnnexError(f"git annex {args[0]} failed: "
                             f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        return r

    def set_present(self, keys: list[str], uuid: str, present: bool) -> None:
        if keys:
            self.run(["setpresentkey", "--batch"],
                     "".join(f"{k} {uuid} {1 if present else 0}\n" for k in keys))

    def register_urls(self, pairs: list[tuple[str, str]], remote: str) -> None:
        """Record ``(key, url)``s as locations in ``remote`` (also marks the keys present)."""
        if pairs:
            self.run(["registerurl", "--batch", f"--remote={remote}"],
                     "".join(f"{k} {u}\n" for k, u in pairs))

    def unregister_urls(self, pairs: list[tuple[str, str]], remote: str) -> None:
        if pairs:
            self.run(["unregisterurl", "--batch", f"--remote={remote}"],
                     "".join(f"{k} {u}\n" for k, u in pairs))

    def content_locations(self, keys: list[str]) -> dict[str, Path | None]:
        if not keys:
            return {}
        out = self.run(["contentlocation", "--batch"],
                       "".join(k + "\n" for k in keys), check=False).stdout.split("\n")
        return {k: (self.cwd / loc if loc else None) for k, loc in zip(keys, out)}

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


def _urls(whereis_json: str, found: dict[str, list[str]]) -> dict[str, list[str]]:
    for line in whereis_json.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        for where in record.get("whereis", []) + record.get("untrusted", []):
            found.setdefault(record.get("key"), []).extend(where.get("urls", []))
    return found

"""What goes to Zenodo: one :class:`ZenodoFile` per file key, since Zenodo has no folders.

``paths`` of zenodo.yaml (and the command line) name files, folders and globs; a ``zip:``
entry becomes one ZIP of a folder. Sizes and MD5s come from the annex key where possible, so
nothing is fetched to find out that nothing changed. Duplicate names and Zenodo's 100-file /
50 GB limits are refused here, before anything is sent.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from ..zipstream import Member, check_arcname, layout_zip
from .client import MAX_BYTES, MAX_FILES
from .config import ConfigError, PathSpec, SyncConfig


@dataclass
class ZenodoFile:
    """One file of the Zenodo record, and where its bytes are here (for a ZIP: the
    :class:`~datalad_rdr.zipstream.Member` files that go into it)."""

    key: str  # the name on Zenodo (flat: no folders)
    files: list[Path]  # one file, or the files of a ZIP
    origin: str  # how zenodo.yaml or the command line named it
    source: Path  # the file, or the folder or glob of a ZIP
    zip_root: Path | None = None  # ZIP: names inside are relative to this
    size: int | None = None
    md5: str | None = None
    annex_key: str | None = None  # sent as itself, and annexed unmodified
    repo: Path | None = None  # the repository holding annex_key
    fingerprint: str | None = None  # ZIP: what its members are (names, keys, hashes)
    local: Path | None = None  # the bytes to send (for a ZIP: once built)

    @property
    def is_zip(self) -> bool:
        return self.zip_root is not None

    @property
    def path(self) -> Path:
        return self.source


def _walk(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        found += [Path(root) / f for f in files]
    return sorted(found)


def _expand(spec: PathSpec) -> list[Path]:
    pattern = str(spec.pattern)
    if glob.has_magic(pattern):
        hits = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    else:
        hits = [spec.pattern] if os.path.lexists(spec.pattern) else []
    files = []
    for hit in hits:
        files += _walk(hit) if hit.is_dir() and not hit.is_symlink() else [hit]
    return files


def _inspect(ds, files: list[Path]) -> dict[Path, dict]:
    """What git and git-annex know of each file (key, size, state), without its content."""
    root = Path(ds.path)
    inside = [f for f in files if root in f.parents]
    if not inside:
        return {}
    info = {}
    for res in ds.status(path=[str(f) for f in inside], annex="basic", recursive=True,
                         untracked="all", eval_subdataset_state="no",
                         result_renderer="disabled", on_failure="ignore",
                         return_type="generator"):
        if res.get("status") == "ok" and res.get("type") in ("file", "symlink"):
            info[Path(res["path"])] = res
    return info


def _md5_from_key(key: str) -> str | None:
    m = re.match(r"^MD5E?-s\d+(?:-[^-]+)*--([0-9a-f]{32})", key)
    return m.group(1) if m else None


def md5_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def plan_members(ds, config: SyncConfig, known: dict, max_files: int = MAX_FILES,
                 max_bytes: int = MAX_BYTES) -> list[ZenodoFile]:
    """The files to send, as Zenodo will name them, with what is known of each without
    reading content. ``known`` is the last run's record of files (for cached MD5s)."""
    problems, members = [], []
    for spec in config.paths:
        files = _expand(spec)
        if not files:
            problems.append(f"{spec.origin}: matches no file")
        elif spec.zip:
            root = spec.pattern.parent if not glob.has_magic(str(spec.pattern)) \
                else config.base
            name = spec.name or f"{spec.pattern.name}.zip"
            for f in files:
                try:
                    check_arcname(_arcname(f, root))
                except ValueError as exc:
                    problems.append(f"{spec.origin}: {exc}")
            members.append(ZenodoFile(name, files, spec.origin, spec.pattern,
                                      zip_root=root))
        else:
            members += [ZenodoFile(f.name, [f], spec.origin, f) for f in files]
    listed = set()  # the same file named twice (config and command line) is sent once
    members = [m for m in members
               if m.is_zip or not (m.source in listed or listed.add(m.source))]
    seen: dict[str, ZenodoFile] = {}
    for m in members:
        other = seen.setdefault(m.key, m)
        if other is not m:
            problems.append(
                f"two files would be called {m.key!r} on Zenodo, which has no folders: "
                f"{shown(other.path, ds)} and {shown(m.path, ds)}; rename one, or send "
                "a folder as a ZIP")
    if problems:
        raise ConfigError(problems, config.path.name)
    if len(members) > max_files:
        raise ConfigError([f"{len(members)} files to send, but Zenodo takes at most "
                           f"{max_files} per record; send folders as ZIPs "
                           f"({{zip: <folder>}} in paths)"], config.path.name)
    info = _inspect(ds, [f for m in members for f in m.files])
    by_key = {v.get("annex_key"): v for v in known.values() if v.get("annex_key")}
    for m in members:
        if m.is_zip:
            m.fingerprint = _fingerprint(m, info)
            cached = known.get(m.key) or {}
            if cached.get("fingerprint") == m.fingerprint:
                m.md5, m.size = cached.get("md5"), cached.get("size")
            continue
        path = m.files[0]
        st = info.get(path, {})
        if st.get("key") and st.get("state") == "clean":
            m.annex_key, m.size = st["key"], st.get("bytesize")
            m.repo = Path(st.get("parentds") or ds.path)
            m.md5 = _md5_from_key(m.annex_key) or (by_key.get(m.annex_key) or {}).get("md5")
        elif path.exists():
            m.size = path.stat().st_size
        else:
            problems.append(f"{shown(path, ds)}: no content here and not annexed")
    if problems:
        raise ConfigError(problems, config.path.name)
    check_limits(members, ds, max_bytes)
    return members


def check_limits(members: list[ZenodoFile], ds, max_bytes: int) -> None:
    """Zenodo's quota is per record and so per file; refuse what cannot fit, by name."""
    problems = [f"{shown(m.path, ds)} ({m.key}) is {human_size(m.size)}, over the "
                f"{human_size(max_bytes)} Zenodo takes per record"
                for m in members if m.size is not None and m.size > max_bytes]
    total = sum(m.size or 0 for m in members)
    if not problems and total > max_bytes:
        problems.append(f"the files add up to {human_size(total)}, over the "
                        f"{human_size(max_bytes)} Zenodo takes per record")
    if problems:
        raise ConfigError(problems, "limits")


def _fingerprint(m: ZenodoFile, info: dict) -> str:
    """What a ZIP holds, by name and content identity: the same inputs make the same ZIP."""
    h = hashlib.sha256(ZIP_FORMAT.encode())
    for path in sorted(m.files, key=lambda p: _arcname(p, m.zip_root)):
        st = info.get(path, {})
        if st.get("key") and st.get("state") == "clean":
            ident = st["key"]
        elif st.get("gitshasum") and st.get("state") == "clean":
            ident = "git:" + st["gitshasum"]
        else:
            ident = "md5:" + md5_of(path)
        h.update(f"{_arcname(path, m.zip_root)}\0{ident}\0{_mode(path)}\n".encode())
    return h.hexdigest()


def _arcname(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _mode(path: Path) -> int:
    # Part of the fingerprint since ZIP_FORMAT 1; the ZIP itself now gives every member 0644.
    try:
        return 0o755 if os.stat(path).st_mode & 0o111 else 0o644
    except OSError:  # absent annexed content: the mode is git's, and git keeps 644
        return 0o644


# The earliest time a ZIP can hold, for every member: a ZIP's bytes depend on its files only.
ZIP_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)
# Part of every ZIP's fingerprint. It stays at 1 although the bytes changed once (the ZIP is
# now written by datalad_rdr.zipstream: level 1, compressed formats STORED, every mode 0644):
# a ZIP online whose files did not change keeps its cached MD5 and is not sent again, which
# would otherwise refuse every published version holding a ZIP ("its files cannot change").
# A ZIP is rebuilt, in the new form, when one of its files changes.
ZIP_FORMAT = "zenodo-sync zip 1\n"


class FetchError(Exception):
    """Content to send could not be brought here (``datalad get`` failed)."""


def materialize(ds, members: list[ZenodoFile], workdir: Path | None, dry_run: bool,
                notes: list[str]) -> None:
    """Bring the bytes of ``members`` here: fetch annexed content, build ZIPs (in
    ``workdir``), and compute MD5s. A dry run fetches nothing; it notes what it would fetch."""
    if not members:
        return
    wanted = [f for m in members for f in (m.files if m.is_zip else [m.files[0]])
              if not content_here(f)]
    if wanted and dry_run:
        for m in members:
            if any(not content_here(f) for f in m.files):
                notes.append(f"{m.key}: content not here, would be fetched")
        members = [m for m in members if all(content_here(f) for f in m.files)]
    elif wanted:
        failed = [r for r in ds.get(path=[str(f) for f in wanted], result_renderer="disabled",
                                    on_failure="ignore", return_type="list")
                  if r.get("status") in ("error", "impossible")]
        if failed:
            raise FetchError("cannot fetch the content to send: " + "; ".join(
                f"{shown(Path(r['path']), ds)}: {r.get('message')}" for r in failed))
    for m in members:
        if m.is_zip:
            if m.local is None:
                build_zip(m, workdir / m.key)
        else:
            m.local = m.files[0]
            if m.md5 is None:
                m.md5 = md5_of(m.local)
            m.size = m.local.stat().st_size


def build_zip(m: ZenodoFile, dest: Path) -> None:
    """A deterministic ZIP from the project's one ZIP writer: same files, same bytes."""
    layout = layout_zip([Member(_arcname(p, m.zip_root), p.stat().st_size,
                                partial(open, p, "rb")) for p in m.files],
                        mtime=ZIP_EPOCH)
    with open(dest, "wb") as out:
        for chunk in layout.iter_range():
            out.write(chunk)
    m.local, m.size, m.md5 = dest, layout.size, layout.md5


def shown(path: Path, ds) -> str:
    try:
        return path.relative_to(ds.path).as_posix()
    except ValueError:
        return str(path)


def human_size(n: int | None) -> str:
    if n is None:
        return "? bytes"
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"


def content_here(path: Path) -> bool:
    """The file's bytes are here (an absent annexed file is a dangling symlink or a
    pointer)."""
    if not path.exists():
        return False
    if path.is_symlink() or path.stat().st_size > 1024:
        return True
    with open(path, "rb") as fh:
        return not fh.read(1024).startswith(b"/annex/objects/")

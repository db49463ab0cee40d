"""After the manifest: the ``rdr`` remote, every key's location, and the RIA store.

Once the manifest is saved, :func:`record` (before the history is deposited, so that the
deposit holds the records) makes sure the dataset has an ``rdr`` special remote
for the exported server and dataset (``autoenable=true``, so every clone enables it; also when
the dataset has no annexed file yet, so that ``git annex copy --to rdr`` works later), records
for every annexed file of every bundle where it lies (in the format of
:mod:`.remote.locations`, with the key marked present in the remote; all in one commit of the
git-annex branch, see :meth:`.gitannex.Annex.record_urls`) unless the git-annex branch has
that record already, removes the records of bundles the server no longer
has (also those of keys the export no longer holds, from the previous manifest); last,
with ``--ria-store``, :func:`push` pushes the dataset -- history, manifest, git-annex
branch, no annexed content -- to a RIA store under an alias, so that::

    datalad clone 'ria+file:///store#~alias' && datalad get <file>

reads the file out of its bundle on RDR.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from pathlib import Path
from urllib.parse import urlsplit

from . import gitannex
from .gitannex import Annex, AnnexError
from .manifest import Manifest
from .remote import locations
from .remote.reader import BundleReader, ReadError

REMOTE = "rdr"
RIA_SIBLING = "rdr-ria"

log = logging.getLogger("datalad.rdr.after_export")


def _result(path: Path, status: str, message: str, **extra) -> dict:
    return {"action": "rdr-export", "path": str(path), "type": "dataset", "status": status,
            "message": message, **extra}


def run(dataset: Path, manifest: Manifest, previous: Manifest | None, opts,
        token: str | None) -> Iterator[dict]:
    if (yield from record(dataset, manifest, previous, token)):
        yield from push(dataset, opts)


class EarlyRemote:
    """The dataset's ``rdr`` remote set up in the background while the bundles are sent, on a
    first export (no ``rdr`` remote in the dataset yet): git-annex's ``initremote`` takes
    about a second, mostly waiting on the four remote processes it starts, which
    :func:`record` would otherwise wait for. Its answer (or error) is taken by
    :func:`record`; :meth:`close` waits for it on every other way out of the export."""

    def __init__(self, dataset: Path, server: str, pid: str):
        self.dataset = Path(dataset)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rdr-initremote")
        self.future = self._pool.submit(ensure_remote, self.dataset, server, pid)

    @classmethod
    def start(cls, dataset: Path, server: str, pid: str) -> EarlyRemote | None:
        """Started only when the dataset is an annex without any rdr remote: otherwise
        :func:`record` finds (or adds) it as before, or needs none (a no-op rerun)."""
        if not gitannex.is_annex(dataset) or _has_rdr_remote(Path(dataset)):
            return None
        return cls(dataset, server, pid)

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # the future is done after this
        if not self.future.cancelled() and self.future.exception():
            log.debug("the rdr remote's early set-up failed: %s", self.future.exception())


class LogsAhead:
    """What :func:`record` reads of the git-annex branch for a new manifest (every exported
    key's logs), read in a thread while the manifest is committed: that commit is git's
    work (``git annex add`` and ``git commit`` of two files in an index of every file,
    1.6 s at 100,000 files), and so is most of the reading (1.5 s there). :func:`record`
    takes the logs when none of them changed meanwhile (:meth:`.gitannex.Annex.logs_now`).

    The branch is taken as it is now, before the commit's git-annex writes its journal;
    the reading starts at :meth:`begin`, once ``git annex add`` is done: its git processes
    each hold the index of every file (about 150 MB at 100,000 files), and the branch's
    listing beside them made the export's highest point higher by 35 MB."""

    def __init__(self, dataset: Path, manifest: Manifest, previous: Manifest | None):
        dataset = Path(dataset)
        repos = [dataset] + [dataset / p for p in manifest.subdatasets or {}]
        self._at = {r: Annex(_gitdir(r)).branch_snapshot() for r in repos
                    if (r / ".git").exists()}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rdr-logs-ahead")
        self.future = None
        self.dataset, self.manifest, self.previous = dataset, manifest, previous

    def begin(self) -> None:
        if self.future is None:
            self.future = self._pool.submit(_read_ahead, self.dataset, self.manifest,
                                            self.previous, self._at)

    def take(self, manifest: Manifest) -> tuple | None:
        """``(members by repository, the previous manifest's, logs by repository)``, or None
        (another manifest, or the reading failed: :func:`record` reads them itself)."""
        if manifest is not self.manifest or self.future is None:
            return None
        try:
            return self.future.result()
        except (AnnexError, OSError) as exc:
            log.debug("the git-annex branch's logs were not read ahead: %s", exc)
            return None

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _read_ahead(dataset: Path, manifest: Manifest, previous: Manifest | None,
                at: dict[Path, str | None]) -> tuple:
    by_repo = _members_by_repo(dataset, manifest)
    old = _members_by_repo(dataset, previous) if previous else {}
    logs = {repo: Annex(_gitdir(repo)).branch_logs(_keys(members, old.get(repo, [])),
                                                   at[repo])
            for repo, members in by_repo.items() if members and at.get(repo)}
    return by_repo, old, logs


def _keys(members: list[tuple], old: list[tuple]) -> list[str]:
    """The keys whose records :func:`record` writes or removes: the exported ones, and
    those of the previous manifest."""
    return sorted({m.key for _, m in members} | {m.key for _, m in old})


def _has_rdr_remote(repo: Path) -> bool:
    found = gitannex.git_or_none(repo, "config", "--get-regexp",
                                 r"^remote\..*\.annex-externaltype$")
    return any(line.split()[-1:] == ["rdr"] for line in (found or "").splitlines())


def record(dataset: Path, manifest: Manifest, previous: Manifest | None,
           token: str | None, early: EarlyRemote | None = None,
           ahead: LogsAhead | None = None) -> Iterator[dict]:
    """The ``rdr`` remote and every key's location record; returns False on an error.
    ``early``: the dataset's remote, set up while the bundles were sent; ``ahead``: the
    branch's logs, read while the manifest was committed."""
    dataset = Path(dataset)
    read = ahead.take(manifest) if ahead else None
    if read is None:
        by_repo = _members_by_repo(dataset, manifest)
        old = _members_by_repo(dataset, previous) if previous else {}
        early_logs = {}
    else:
        by_repo, old, early_logs = read
    if dataset not in by_repo and gitannex.is_annex(dataset):
        by_repo[dataset] = []
    digest = manifest.digest()
    for repo, members in by_repo.items():
        marker = _marker(repo)
        if marker and _read(marker) == {"manifest": digest, "git-annex": _annex_branch(repo)}:
            # recorded for this very manifest, and the git-annex branch has not moved since:
            # nothing to ask git-annex (a whereis of every key is most of a no-op rerun)
            yield _result(repo, "notneeded", f"the git-annex branch already records the "
                                             f"{len(members)} annexed files in the rdr remote")
            continue
        try:
            # the remote's set-up is git-annex's work (~0.7 s, mostly waiting on its
            # processes) and formatting the records ours (~1 s at 100,000): both at once.
            # The records only now: formatting them is most of a no-op rerun
            if early and repo == early.dataset:  # set up while the bundles were sent
                pairs = _records(manifest, members)
                name = early.future.result()
            else:
                with ThreadPoolExecutor(1, thread_name_prefix="rdr-initremote") as pool:
                    remote = pool.submit(ensure_remote, repo, manifest.server, manifest.pid)
                    pairs = _records(manifest, members)
                    name = remote.result()
            annex = Annex(_gitdir(repo))
            keys = _keys(members, old.get(repo, []))
            read_before = early_logs.get(repo)
            logs = annex.logs_now(read_before) if read_before is not None else None
            if logs is None:  # read once: the records are written from them
                logs = annex.branch_logs(keys)
            recorded = logs.urls() if logs is not None else annex.urls(keys)
            new = [(k, u) for k, u in pairs if u not in recorded.get(k, ())]
            annex.record_urls(new, name, _uuid(repo, name), logs)
            del logs
            stale = _stale(manifest, recorded, token)
            annex.unregister_urls(stale, name)
            _mark_absent(annex, repo, name, stale, recorded, new)
        except (AnnexError, OSError) as exc:
            yield _result(repo, "error", f"the rdr remote could not record where the "
                                         f"annexed files are: {exc}")
            return False
        if marker:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"manifest": digest,
                                          "git-annex": _annex_branch(repo)}))
        if not new and not stale:
            yield _result(repo, "notneeded", f"the git-annex branch already records the "
                                             f"{len(pairs)} annexed files in the special "
                                             f"remote '{name}'" if pairs else
                          f"special remote '{name}' ready (no annexed files exported yet; "
                          f"'git annex copy --to {name}' adds some)", remote=name)
            continue
        gone = f"; {len(stale)} records of bundles no longer on the server removed" \
            if stale else ""
        yield _result(repo, "ok", f"{len(pairs)} annexed files recorded as in the special "
                                  f"remote '{name}' (git-annex branch, {len(new)} new){gone}",
                      remote=name)
    return True


def push(dataset: Path, opts) -> Iterator[dict]:
    """With ``--ria-store``: the dataset (no annexed content) pushed to the RIA store."""
    dataset = Path(dataset)
    store = getattr(opts, "ria_store", None)
    if store:
        alias = getattr(opts, "ria_alias", None) or dataset.name
        problem = ria_alias_problem(dataset, store, alias)
        if problem:
            yield _result(dataset, "error", problem)
            return
        yield from push_to_ria(dataset, store, alias, getattr(opts, "recursive", False))


def _marker(repo: Path) -> Path | None:
    try:
        return gitannex.git_dir(repo) / "datalad-rdr" / "recorded.json"
    except gitannex.GitError:
        return None


def _annex_branch(repo: Path) -> str:
    return gitannex.resolve(repo, gitannex.ANNEX_BRANCH) or ""


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _mark_absent(annex: Annex, repo: Path, name: str, stale, recorded, new) -> None:
    """Keys whose last record in the remote went stale are no longer in it: whereis says so
    (``unregisterurl`` keeps the location log as it was)."""
    gone = {u for _, u in stale}
    kept = {k for k, u in new}
    kept |= {k for k, uris in recorded.items()
             if any(u.startswith(locations.SCHEME) and u not in gone for u in uris)}
    absent = sorted({k for k, _ in stale} - kept)
    if absent:
        uuid = _uuid(repo, name)
        if uuid:
            annex.set_present(absent, uuid, False)


def _uuid(repo: Path, name: str) -> str:
    return gitannex.config(repo, f"remote.{name}.annex-uuid") or ""


def ria_alias_problem(dataset: Path, store: str, alias: str) -> str | None:
    """Why ``alias`` cannot name this dataset in a ``ria+file://`` store (another dataset has
    it), or None. ``<store>/alias/<name>`` is a symlink to the directory of the dataset it
    names, ``<store>/<id[:3]>/<id[3:]>``."""
    parts = urlsplit(store[len("ria+"):]) if store.startswith("ria+") else None
    if parts is None or parts.scheme != "file":
        return None  # not readable from here; DataLad warns on a taken alias
    link = Path(parts.path) / "alias" / alias
    if not os.path.lexists(link):
        return None
    target = Path(os.path.realpath(link))
    other = f"{target.parent.name}{target.name}"
    if other == _dataset_id(dataset):
        return None
    return (f"--ria-alias {alias} is taken in {store} by another dataset ({other}): a clone "
            f"of '{store}#~{alias}' would give that one; choose another with --ria-alias "
            f"NAME (nothing was exported)")


def _dataset_id(dataset: Path) -> str:
    return gitannex.config(dataset, "datalad.dataset.id",
                           file=Path(dataset) / ".datalad/config") or ""


def _records(manifest: Manifest, members: list[tuple]) -> list[tuple[str, str]]:
    """(key, location record) of each (bundle, member), in order (a bundle's together)."""
    pairs = []
    for _, run in groupby(members, key=lambda bm: id(bm[0])):
        run = list(run)
        bundle, ms = run[0][0], [m for _, m in run]
        records = locations.manifest_records(manifest.server, manifest.pid, bundle, ms)
        pairs += [(m.key, uri) for m, uri in zip(ms, records)]
    return pairs


def _members_by_repo(dataset: Path, manifest: Manifest) -> dict[Path, list[tuple]]:
    """(bundle, member) of every annexed member, per repository holding the key (the
    dataset, or the subdataset at the longest matching path when exported with -r)."""
    subs = sorted((p for p in manifest.subdatasets or {}), key=len, reverse=True)
    by_repo: dict[Path, list[tuple]] = {}
    installed: dict[Path, bool] = {}
    for bundle in manifest.bundles:
        for member in bundle.members:
            if not member.key:
                continue
            sub = next((s for s in subs if member.path.startswith(s.rstrip("/") + "/")), None)
            repo = dataset / sub if sub else dataset
            if repo not in installed:
                installed[repo] = (repo / ".git").exists()
            if installed[repo]:
                by_repo.setdefault(repo, []).append((bundle, member))
    return by_repo


def _stale(manifest: Manifest, recorded: dict[str, list[str]], token
           ) -> list[tuple[str, str]]:
    """Records pointing at bundles of this dataset that the server no longer has (replaced
    or removed by this export); those of bundles it still has (an earlier published version,
    bundles made by ``git annex copy``) stay."""
    current = {b.file_id for b in manifest.bundles}
    candidates: dict[int, list[tuple[str, str]]] = {}
    for key, uris in recorded.items():
        for uri in uris:
            if not locations.claims(uri, manifest.server, manifest.pid):
                continue
            file_id = locations.parse(uri).file_id
            if file_id not in current:
                candidates.setdefault(file_id, []).append((key, uri))
    if not candidates:
        return []
    reader = BundleReader(manifest.server.rstrip("/"), lambda: token)
    stale = []
    for file_id, pairs in candidates.items():
        try:
            if not reader.exists(file_id):
                stale += pairs
        except ReadError:
            continue  # cannot tell: keep the records
    return stale


def ensure_remote(repo: Path, server: str, pid: str) -> str:
    """The name of the repository's rdr remote for ``server`` and ``pid``, initialised or
    enabled as needed."""
    from datalad.support.annexrepo import AnnexRepo

    annex = AnnexRepo(str(repo), create=False)
    server = server.rstrip("/")
    names = set(annex.get_remotes())
    taken = set()
    for cfg in annex.get_special_remotes().values():
        taken.add(cfg.get("name"))
        if cfg.get("externaltype") == "rdr" and cfg.get("url", "").rstrip("/") == server \
                and cfg.get("pid") == pid:
            name = cfg["name"]
            if name not in names:
                annex.enable_remote(name)
            return name
    name = REMOTE
    n = 1
    while name in names or name in taken:
        n += 1
        name = f"{REMOTE}-{n}"
    annex.init_remote(name, ["type=external", "externaltype=rdr", "encryption=none",
                             f"url={server}", f"pid={pid}", "autoenable=true"])
    return name


def push_to_ria(dataset: Path, store: str, alias: str, recursive: bool) -> Iterator[dict]:
    """History, manifest and git-annex branch to a RIA store under ``alias``; no content."""
    import datalad.api as dl

    common = {"result_renderer": "disabled", "return_type": "list", "on_failure": "ignore"}
    ds = dl.Dataset(str(dataset))
    if RIA_SIBLING not in ds.repo.get_remotes():
        created = dl.create_sibling_ria(url=store, name=RIA_SIBLING, dataset=str(dataset),
                                        alias=alias, new_store_ok=True,
                                        storage_sibling=False, existing="skip",
                                        recursive=recursive, **common)
        bad = [r for r in created if r["status"] in ("error", "impossible")]
        if bad:
            yield _result(dataset, "error", f"could not create the RIA sibling in {store}: "
                                            f"{bad[0].get('message')}")
            return
    pushed = dl.push(dataset=str(dataset), to=RIA_SIBLING, data="nothing",
                     recursive=recursive, **common)
    bad = [r for r in pushed if r["status"] in ("error", "impossible")]
    if bad:
        yield _result(dataset, "error", f"push to {store} failed: {bad[0].get('message')}")
        return
    clone = f"{store}#~{alias}"
    yield _result(dataset, "ok", f"pushed to the RIA store (sibling '{RIA_SIBLING}', no "
                                 f"annexed content): datalad clone '{clone}'", ria=clone)


def _gitdir(repo: Path) -> Path:
    return repo / ".git"

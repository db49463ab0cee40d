"""``git-annex-remote-rdr repack``: rewrite draft bundles that hold removed members.

``git annex drop --from rdr`` takes a key out of the remote's view; the bytes stay in their
bundle (a ZIP on the server cannot lose a member) until the bundle holds nothing any more and
is deleted. ``repack``, run in the repository, does the rest for bundles the remote made
(``annex-*.zip``, with a key index) that are only in the draft: a bundle with nothing left is
deleted; one with some members left is rewritten with just those (content from the local
annex where it is, else read out of the old bundle by Range and verified), the new
locations are recorded, then the old bundle is deleted. Published bundles are never touched.
Exported bundles (``rdr-export``'s) are left alone: their manifest describes them.

    git-annex-remote-rdr repack [--remote rdr] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..credentials import CredentialError, obtain_token
from ..dataverse import Dataverse, DataverseError
from . import keys as annex_keys
from . import locations
from .annex import Annex, AnnexError
from .reader import BundleReader, ReadError, read_member
from ..sizes import parse_size
from .boundary import RemoteError
from .boundary import yes as _yes
from .keyindex import read_index
from .special import DEFAULT_BUNDLESIZE
from .store import PREFIX, FlushError, Store


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="git-annex-remote-rdr repack",
        description="Rewrite the rdr remote's draft bundles without the members that were "
                    "removed from it (git annex drop --from), and delete bundles with "
                    "nothing left. Run it in the repository.")
    parser.add_argument("--remote", help="name of the rdr special remote (default: the "
                                         "only one)")
    parser.add_argument("--dry-run", action="store_true",
                        help="only report what would be rewritten or deleted")
    args = parser.parse_args(argv)
    try:
        for line in repack(Path.cwd(), args.remote, args.dry_run):
            print(line, flush=True)
    except RepackError as exc:
        print(f"git-annex-remote-rdr repack: {exc}", file=sys.stderr)
        return 1
    return 0


class RepackError(Exception):
    pass


def _remote(repo: Path, name: str | None) -> tuple[str, dict, object]:
    from datalad.support.annexrepo import AnnexRepo
    from datalad.support.exceptions import (
        InvalidAnnexRepositoryError,
        InvalidGitRepositoryError,
        NoSuchPathError,
    )

    try:
        annex = AnnexRepo(str(repo), create=False)
    except (InvalidAnnexRepositoryError, InvalidGitRepositoryError, NoSuchPathError) as exc:
        raise RepackError(f"{repo} is not a git-annex repository ({exc})") from None
    found = {uuid: cfg for uuid, cfg in annex.get_special_remotes().items()
             if cfg.get("externaltype") == "rdr" and (name is None or cfg.get("name") == name)}
    if len(found) != 1:
        which = f"named {name!r}" if name else "(give --remote NAME)"
        raise RepackError(f"{len(found)} rdr special remotes {which} in this repository")
    return (*next(iter(found.items())), annex.config)


def repack(repo: Path, name: str | None = None, dry_run: bool = False):
    """Yield one line per bundle acted upon."""
    uuid, cfg, config = _remote(repo, name)
    url, pid = cfg["url"].rstrip("/"), cfg["pid"]
    # the server the records name may have moved (docs/remote.rst, "Moving servers")
    server = (config.get(f"remote.{cfg.get('name')}.rdr-url") or url).rstrip("/")
    try:
        _, token = obtain_token(config, server, cfg.get("credential"))
    except CredentialError as exc:
        raise RepackError(str(exc)) from None
    client = Dataverse(server, token)
    reader = BundleReader(server, lambda: token)
    annex = Annex(repo / ".git")
    try:
        versions = client.versions(pid)
    except DataverseError as exc:
        raise RepackError(f"cannot list the versions of {pid}: {exc}") from None
    released = {f.file_id for v in versions if v.released for f in v.files}
    draft = [f for v in versions if not v.released for f in v.files]
    bundlesize = parse_size(cfg.get("bundlesize") or str(DEFAULT_BUNDLESIZE))
    store = Store(repo / ".git", uuid, bundlesize)
    for entry in draft:
        file_id, label = entry.file_id, entry.label
        if not label.startswith(PREFIX) or file_id in released:
            continue
        try:
            index = read_index(reader, file_id, entry.size, uuid)
        except (RemoteError, ReadError) as exc:
            yield f"{label}: cannot read its key index ({exc}); left as it is"
            continue
        if index is None:
            continue
        where = locations.prefix(url) + f"{file_id}?"
        recorded = annex.urls(sorted(set(index.values())))
        live = {member: key for member, key in index.items()
                if any(u.startswith(where) for u in recorded.get(key, []))}
        if len(live) == len(index):
            continue
        if not live:
            yield f"{label}: nothing left in it; " + (
                "would delete it" if dry_run else _delete(client, file_id))
            continue
        if dry_run:
            yield (f"{label}: {len(index) - len(live)} of {len(index)} members removed; "
                   f"would rewrite it with the {len(live)} left")
            continue
        yield _rewrite(store, annex, client, reader, uuid, pid, cfg, entry, live, recorded,
                       where)


def _delete(client: Dataverse, file_id: int) -> str:
    try:
        client.delete_file(file_id)
    except DataverseError as exc:
        return f"could not delete it: {exc}"
    return "deleted from the draft"


def _rewrite(store, annex, client, reader, uuid, pid, cfg, entry, live, recorded,
             where) -> str:
    label, file_id = entry.label, entry.file_id
    here = annex.content_locations(sorted(set(live.values())))
    old = {}
    for key in live.values():
        for uri in recorded.get(key, []):
            if uri.startswith(where):
                old[key] = locations.parse(uri)
    with tempfile.TemporaryDirectory(dir=annex.cwd / ".git") as tmp:
        try:
            for member, key in sorted(live.items()):
                path = here.get(key)
                if path is None:
                    path = Path(tmp) / "member"
                    with open(path, "wb") as out:
                        read_member(reader, old[key], out, annex_keys.checksum(key))
                store.add(key, str(path), member, path.stat().st_size)
                if path.parent == Path(tmp):
                    path.unlink()
            bundle = store.open
            found = store.flush(bundle, client, cfg["url"].rstrip("/"), pid,
                                _yes(cfg.get("restrict"), True),
                                f"datalad-rdr bundle of {len(live)} annexed files, "
                                f"repacked from {label}")
            annex.register_urls([(k, loc.uri()) for k, loc in found.items()], uuid)
            annex.unregister_urls([(k, old[k].record) for k in old], uuid)
            store.done(bundle)
        except (ReadError, FlushError, AnnexError, OSError) as exc:
            if store.open is not None:
                store.done(store.open)
            return f"{label}: not rewritten ({exc}); left as it is"
    return (f"{label}: rewritten as {bundle.name} with the {len(live)} members left; "
            + _delete(client, file_id))

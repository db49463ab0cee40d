"""git-annex special remote ``rdr``: annexed files in ZIP bundles on RDR (Dataverse).

A clone of a dataset exported with ``datalad rdr-export`` knows, for every annexed file,
which bundle on RDR holds it and where inside (its location record, in the git-annex branch),
and ``datalad get`` fetches just those bytes by an HTTP Range request::

    $ datalad clone 'ria+file:///data/store#~mystudy' mystudy && cd mystudy
    $ datalad get sub-01/anat/sub-01_T1w.nii.gz   # ~ the file's size, not the bundle's

``rdr-export`` sets the remote up itself (``autoenable=true``, so clones enable it); by hand::

    $ git annex initremote rdr type=external externaltype=rdr encryption=none \\
          url=https://rdr.kuleuven.be pid=doi:10.48804/ABCDEF [bundlesize=4GB] \\
          [restrict=yes] [credential=NAME] [autoenable=true]

``git annex copy --to rdr`` (and ``datalad push --to rdr``) packs keys into size-capped
bundles (``bundlesize``, default 4 GB), named by their path in the work tree, uploaded with
the export's own stages. A key reported stored is uploaded before git-annex may rely on it:
its bundle is flushed before any CHECKPRESENT, RETRIEVE or REMOVE of it is answered, when
it is full, and when git-annex ends the session; a session killed during a flush is
repaired by the next one.

What the exit code says: git-annex sends one key at a time, the next only after the
answer, has no "flush" request and ignores the remote once it has closed its input, so the
upload of the bundle still open at the end cannot fail ``copy`` (answering each key only
after uploading would make one bundle per key; annexremote has no ASYNC). The remote makes
the foreseeable failures fail while git-annex listens: before the first key of a session
is answered it asks the server for the dataset with the token (a wrong ``pid``, a refused
token, a server that is down fail every key), and a full bundle is uploaded before the key
that no longer fits is answered (its failure fails that key). Only a failure of the last
bundle's upload leaves the exit code 0: its keys are then recorded as not in this remote
and the error is shown on stderr; ``git annex find --not --in rdr`` lists them.

``git annex drop --from rdr`` removes a key from the remote's view of a draft bundle and
deletes a bundle with nothing left; keys in published bundles cannot be removed (Dataverse
publications are immutable). ``git-annex-remote-rdr repack`` rewrites draft bundles that
still hold removed members.

Every request is one error boundary (:func:`request`): an unexpected exception fails that
request with one line, the session goes on. ``git config remote.<name>.rdr-url URL`` sends
the requests of a clone to where the records' server moved (the records stay as they are).

Reading public files needs no token (they are read without one); restricted or draft
files, storing and removing need the API token from DataLad's credential system
(``credential=NAME``, the last one used for the server, or the credential ``rdr``:
``DATALAD_CREDENTIAL_RDR_SECRET``). The remote is an annexremote special remote (:mod:`.base`)
run by :mod:`.cli`; DataLad is imported at the first need of a token, not at start-up
(:mod:`.process`). docs/remote.rst
is the user's guide; :mod:`.locations` owns the record format. A dataset made by
``datalad rdr-clone`` from a record uploaded by hand has archive records instead, read by
:mod:`.archived`, and ``nowrite=yes`` (docs/clone.rst).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import gitannex
from ..credentials import CredentialError, how_to_set, obtain
from ..sizes import GB, parse_size
from . import locations
from . import keys as annex_keys
from .annex import Annex, AnnexError
from .base import SpecialRemote
from .boundary import RemoteError, UnsupportedRequest, request, yes
from .errors import Denied, Embargoed, ReadError, request_access
from .process import datalad_config
from .store import FlushError, OpenBundle, Store

# The server's side (reader.py, dataverse.py, and requests with them) is imported at the
# first request to the server: git-annex starts the remote for many answers that need none.
if TYPE_CHECKING:
    from ..dataverse import Dataverse
    from .reader import BundleReader

#: bundlesize: smaller than rdr-export's cap, see docs/remote.rst ("bundlesize").
DEFAULT_BUNDLESIZE = 4 * GB
#: Seconds an answer about a bundle's existence or the dataset's versions is reused.
SERVER_TTL = 30.0
#: Bytes read at once for small chunks of a chunked key (the next chunks are in them).
CHUNK_WINDOW = 2**20


lgr = logging.getLogger("datalad.rdr.remote")
# (git-annex's own readonly=true would also keep the remote from claiming its records)
NOWRITE = ("this rdr remote reads a record as it is on RDR (nowrite=yes, as rdr-clone "
           "sets it): nothing is stored to or removed from the server")


class RdrRemote(SpecialRemote):
    """git-annex special remote for ZIP bundles on an RDR (Dataverse) dataset."""

    def __init__(self, annex):
        super().__init__(annex)
        self.configs = {
            "url": "base URL of the Dataverse installation, e.g. https://rdr.kuleuven.be",
            "pid": "persistent id of the dataset, e.g. doi:10.48804/ABCDEF",
            "bundlesize": "cap on the size of bundles made by STORE (default 4GB)",
            "restrict": "register stored bundles as restricted files (yes/no, default yes)",
            "credential": "name of the DataLad credential holding the API token",
            "nowrite": "never store to or remove from the server (yes/no; rdr-clone: yes)",
        }
        # Everything close() touches exists before prepare() runs (it may never run).
        self.url: str | None = None  # the server the records name
        self._server: str | None = None  # where requests go (remote.<name>.rdr-url)
        self.pid: str | None = None
        self.uuid: str | None = None
        self.gitdir: str | None = None
        self._store: Store | None = None
        self._reader: BundleReader | None = None
        self._writer: Dataverse | None = None
        self._token: str | None | bool = False  # False: not asked yet
        self._token_problem = ""
        self._credential = None  # where the token came from (credentials.Credential)
        self._target_problem: str | None = None  # None: not checked yet
        self._plumbing: Annex | None = None
        self._names: dict[str, str] | None = None
        self._exists: dict[int, tuple[bool, float]] = {}
        self._versions: tuple[set, set, float] | None = None
        self._live: dict[int, set | None] = {}
        self._made: set[int] = set()  # bundles this process put into the draft
        self.restrict = True
        self.cap = DEFAULT_BUNDLESIZE
        self.credential: str | None = None
        self.nowrite = False

    # -- setup ---------------------------------------------------------------------------
    @request
    def initremote(self):
        url = (self.annex.getconfig("url") or "").strip().rstrip("/")
        pid = (self.annex.getconfig("pid") or "").strip()
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise RemoteError("url= is required: the Dataverse base URL, e.g. "
                              "url=https://rdr.kuleuven.be")
        if not pid:
            raise RemoteError("pid= is required: the dataset's persistent id, e.g. "
                              "pid=doi:10.48804/ABCDEF")
        try:
            parse_size(self.annex.getconfig("bundlesize") or str(DEFAULT_BUNDLESIZE))
        except ValueError as exc:
            raise RemoteError(f"bundlesize=: {exc}") from None
        self.annex.setconfig("url", url)

    @request
    def prepare(self):
        self._configure()
        self.uuid = self.annex.getuuid()
        self.gitdir = os.path.abspath(self.annex.getgitdir())
        if Store.journals(self.gitdir, self.uuid):
            self._open_store()  # keys of another session are pending: repair them first

    def _configure(self):
        if self.url is not None:
            return
        url = (self.annex.getconfig("url") or "").rstrip("/")
        self.pid = self.annex.getconfig("pid") or ""
        if not url or not self.pid:
            raise RemoteError("this rdr remote has no url= or pid=; set them with "
                              "'git annex enableremote <name> url=... pid=...'")
        try:
            self.cap = parse_size(self.annex.getconfig("bundlesize")
                                  or str(DEFAULT_BUNDLESIZE))
        except ValueError as exc:
            raise RemoteError(f"bundlesize=: {exc}") from None
        self.restrict = yes(self.annex.getconfig("restrict"), True)
        self.credential = self.annex.getconfig("credential") or None
        self.nowrite = yes(self.annex.getconfig("nowrite"), False)
        self.url = url

    @property
    def server(self) -> str:
        """Where requests go: the clone's own ``remote.<name>.rdr-url`` if set (the server
        the records name moved there), else ``url=``. Read at the first request to a
        server, with the credential's configuration (one read of git config)."""
        if self._server is None:
            self._server = self._moved_to() or self.url
        return self._server

    def _moved_to(self) -> str | None:
        try:
            # this remote's only: a global datalad.rdr.url would send every rdr remote,
            # of any server, to one place
            # in the work tree, as the plumbing: git-annex gives the remote GIT_DIR=.git
            moved = gitannex.config(self.plumbing.cwd, f"remote.{self.remotename}.rdr-url")
        except Exception as exc:  # no GETGITREMOTENAME (old git-annex), no repository
            lgr.debug("no remote.<name>.rdr-url read: %s", exc)
            return None
        if not moved:
            return None
        moved = str(moved).strip().rstrip("/")
        if urlsplit(moved).scheme not in ("http", "https") or not urlsplit(moved).netloc:
            setting = f"remote.{self.remotename}.rdr-url"
            raise RemoteError(f"git config {setting}={moved!r} is not an http(s) URL; fix "
                              f"it with 'git config {setting} https://new.host'")
        return moved

    @property
    def store(self) -> Store:
        """The pending bundles: made, and sessions that died repaired, at the first need
        (reading needs neither)."""
        return self._store or self._open_store()

    def _open_store(self) -> Store:
        if self._store is None:
            self._store = Store(self.gitdir, self.uuid, self.cap)
            self._repair()
        return self._store

    def _pending(self, key: str) -> bool:
        return self._store is not None and key in self._store.pending

    @request
    def getavailability(self):
        return "global"

    @request
    def claimurl(self, url):
        self._configure()
        return (locations.claims(url, self.url, self.pid)
                or locations.claims_archive(url, self.url, self.pid))

    @request
    def checkurl(self, url):
        self._configure()
        try:
            if url.startswith(locations.ARCHIVE_SCHEME):
                locations.parse_archive(url)
                return locations.claims_archive(url, self.url, self.pid)
            locations.parse(url)
        except ValueError as exc:
            raise RemoteError(str(exc)) from None
        return locations.claims(url, self.url, self.pid)

    def whereis(self, key):
        raise UnsupportedRequest()

    def _gitdir(self) -> str:
        """The repository's git dir, also for requests before PREPARE."""
        if self.gitdir is None:
            self.gitdir = os.path.abspath(self.annex.getgitdir())
        return self.gitdir

    # -- credentials and server ---------------------------------------------------------
    def token(self) -> str | None:
        """The API token, asked for at the first need: only then is DataLad imported, for
        its credential manager (the remote starts without it, see :mod:`.process`)."""
        if self._token is False:
            try:
                config = datalad_config(self, self._gitdir())
                self._credential = obtain(config, self.server, self.credential)
                self._token = self._credential.secret
                lgr.debug("API token for %s: %s", self.server, self._credential.source)
            except CredentialError as exc:
                self._token, self._token_problem = None, str(exc)
                lgr.debug("no API token for %s: %s", self.server, exc)
        return self._token

    def need_token(self, what: str) -> str:
        token = self.token()
        if not token:
            raise RemoteError(f"{what} needs an API token: {self._token_problem}")
        return token

    @property
    def reader(self) -> BundleReader:
        if self._reader is None:
            from .reader import BundleReader

            hint = how_to_set(self.credential or "rdr", self.server)
            self._reader = BundleReader(self.server, self.token, hint)
        return self._reader

    def writer(self, what: str) -> Dataverse:
        if self._writer is None:
            from ..dataverse import Dataverse

            self._writer = Dataverse(self.server, self.need_token(what))
        return self._writer

    @property
    def plumbing(self) -> Annex:
        if self._plumbing is None:
            self._plumbing = Annex(self._gitdir())
        return self._plumbing

    def _bundle_exists(self, file_id: int) -> bool:
        known = self._exists.get(file_id)
        if known and known[1] > time.monotonic():
            return known[0]
        exists = self.reader.exists(file_id)
        self._exists[file_id] = (exists, time.monotonic() + SERVER_TTL)
        return exists

    def _released_and_draft(self) -> tuple[set, set]:
        """DataFile ids in published versions, and in the draft."""
        if self._versions is None or self._versions[2] < time.monotonic():
            from ..dataverse import DataverseError

            client = self.writer("removing from RDR")
            try:
                released, draft = client.released_and_draft_file_ids(self.pid)
            except DataverseError as exc:
                raise RemoteError(f"cannot list the versions of {self.pid}: {exc}") from exc
            self._versions = (released, draft, time.monotonic() + SERVER_TTL)
        return self._versions[0], self._versions[1]

    # -- location records ----------------------------------------------------------------
    def _locations(self, key: str, archive: bool = False) -> list:
        """The key's bundle records (``archive``: its records of members of archives
        made by other tools, :class:`locations.ArchiveLocation`)."""
        prefix, parse = ((locations.archive_prefix, locations.parse_archive) if archive
                         else (locations.prefix, locations.parse))
        found, newer = [], None
        for uri in self.annex.geturls(key, prefix(self.url)):
            try:
                loc = parse(uri)
            except locations.NewerFormat as exc:
                newer = exc
                continue
            except ValueError as exc:
                self.message(f"ignoring a location record of {key}: {exc}")
                continue
            if loc.pid == self.pid:
                found.append(loc)
        if not found and newer:
            raise RemoteError(str(newer))
        return found

    # -- STORE ---------------------------------------------------------------------------
    @request
    def transfer_store(self, key, local_file):
        self._configure()
        if self.nowrite:
            raise RemoteError(NOWRITE)
        store = self.store
        if key in store.pending:
            return
        try:
            if self._present(key):
                return  # already in a registered bundle: nothing to send again
        except ReadError:
            pass  # cannot tell: store it again, a second copy is harmless
        self._check_target()
        size = os.path.getsize(local_file)
        member = self._member_name(key)
        if not store.fits_alone(size, member, key):
            raise RemoteError(f"{key} ({size} bytes) does not fit in a bundle of "
                              f"bundlesize={self.cap}; raise it with 'git annex "
                              f"enableremote <name> bundlesize=...' or use chunk=...")
        if not store.fits(size, member, key):
            self._flush_in_session()
        try:
            store.add(key, local_file, member, size)
        except (OSError, FlushError) as exc:
            raise RemoteError(f"cannot take {key} into the bundle: {exc}") from exc

    def _check_target(self) -> None:
        """Before the session's first key is answered "stored": may the token add files to
        the dataset? The last keys of a session are uploaded only after git-annex stopped
        listening (see the module docstring), so a wrong ``pid``, a token without rights or
        a server that is down must fail the keys here, where git-annex still hears it."""
        if self._target_problem is None:
            from ..dataverse import DataverseError

            client = self.writer("storing into RDR")
            try:
                client.check_dataset(self.pid)
                self._target_problem = ""
                self._credential.mark_used()  # the server took the token
            except DataverseError as exc:
                self._target_problem = (f"cannot store into {self.pid} on {self.server}: "
                                        f"{exc}")
        if self._target_problem:
            raise RemoteError(self._target_problem)

    def _member_name(self, key: str) -> str:
        if self._names is None:
            try:
                self._names = self.plumbing.worktree_paths()
            except (AnnexError, OSError):
                self._names = {}
        return self._names.get(key) or f"keys/{key}"

    def _flush_in_session(self) -> None:
        """Flush the open bundle now; RemoteError (after correcting the records) if not."""
        bundle = self._store.open
        if bundle is None:
            return
        try:
            found = self._store.flush(bundle, self.writer("storing into RDR"), self.url,
                                      self.pid, self.restrict, self._description(bundle))
        except FlushError as exc:
            self._give_up(bundle)
            raise RemoteError(f"{exc}; these keys are recorded as not in this remote; "
                              f"copy them again") from exc
        for key, loc in found.items():
            self.annex.seturipresent(key, loc.uri())
            self._exists[loc.file_id] = (True, time.monotonic() + SERVER_TTL)
            self._made.add(loc.file_id)  # in the draft, whatever the cached versions say
        self._store.done(bundle)

    def _description(self, bundle: OpenBundle) -> str:
        return (f"datalad-rdr bundle of {len(bundle.members)} annexed files, stored by "
                f"git-annex into the rdr remote {self.uuid}")

    def _give_up(self, bundle: OpenBundle) -> None:
        """The bundle will not reach the server: record its keys as not in this remote,
        and keep content that is nowhere else (``git annex move`` dropped it)."""
        keys = [m.key for m in bundle.members]
        try:
            self.plumbing.set_present(keys, self.uuid, False)
        except (AnnexError, OSError) as exc:
            print(f"git-annex-remote-rdr: could not record {len(keys)} keys of "
                  f"{bundle.name} as not in this remote ({exc}); the next session tries "
                  f"again", file=sys.stderr)
            bundle.release()  # the journal stays: an orphan, repaired at the next start
            if self._store.open is bundle:
                self._store.open = None
            return
        parents = {m.key: annex_keys.parent(m.key) for m in bundle.members}
        here = self.plumbing.content_locations(sorted({p for p in parents.values() if p}))
        lost = []
        for m in bundle.members:
            spooled = bundle.spool / m.spool
            if parents[m.key] and here.get(parents[m.key]) or not spooled.exists():
                continue  # the annex has the content
            if parents[m.key] == m.key:
                try:
                    self.plumbing.setkey(m.key, spooled)  # back into the annex, verified
                    continue
                except AnnexError:
                    pass
            lost.append(m)
        if lost:
            kept = self._store.rescue(bundle, lost)
            print(f"git-annex-remote-rdr: {len(lost)} chunks or encrypted keys of "
                  f"{bundle.name} exist only in {kept} (keys.tsv lists them); 'git annex "
                  f"reinject' or keep them until the content is safe elsewhere",
                  file=sys.stderr)
        self._store.done(bundle)

    # -- CHECKPRESENT --------------------------------------------------------------------
    @request
    def checkpresent(self, key):
        if self._pending(key):
            try:
                self._flush_in_session()
            except RemoteError as exc:
                self.message(str(exc), type="info")
                return False
        elif self._pending_elsewhere(key):
            raise RemoteError(f"{key} is in a bundle another git-annex process has not "
                              f"uploaded yet")
        try:
            return self._present(key)
        except ReadError as exc:
            raise RemoteError(str(exc)) from exc

    def _pending_elsewhere(self, key: str) -> bool:
        """Is the key in a bundle another live process has not uploaded yet?"""
        if self._store is None and not Store.journals(self.gitdir, self.uuid):
            return False  # no journal, no pending bundle: no need to look further
        return self.store.pending_elsewhere(key)

    def _present(self, key: str) -> bool:
        errors = []
        for loc in self._locations(key) + self._locations(key, archive=True):
            ids = [fid for fid, _ in loc.volumes] or [loc.file_id]  # all volumes, if any
            try:
                if all(self._bundle_exists(fid) for fid in ids):
                    return True
            except ReadError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return False

    # -- RETRIEVE ------------------------------------------------------------------------
    @request
    def transfer_retrieve(self, key, local_file):
        from . import archived
        from .reader import read_member

        if self._pending(key):
            self._flush_in_session()
        found = self._locations(key)
        # first: in an archive someone uploaded by hand, or a public document's own file
        # (rdr-clone records those): no token needed for a public one
        members = self._locations(key, archive=True)
        if not found and not members:
            raise RemoteError(f"no location in {self.url} is recorded for {key}")
        errors = []
        for loc in members:
            try:
                with open(local_file, "wb") as out:
                    archived.read(self.reader, loc, out, self.annex.progress)
                return
            except (ReadError, OSError) as exc:
                errors.append(str(exc))
        checksum = annex_keys.checksum(key)
        # git-annex asks for a chunked key's chunks one by one; they lie close together
        window = CHUNK_WINDOW if annex_keys.is_chunk(key) else 0
        for loc in found:
            try:
                with open(local_file, "wb") as out:
                    read_member(self.reader, loc, out, checksum, self.annex.progress,
                                window if loc.compressed_size < window // 4 else 0)
                return
            except Embargoed as exc:
                errors.append(str(exc))
            except Denied as exc:  # a restricted bundle: how to get access, besides a token
                errors.append(f"{exc}; {request_access(self.url, loc.pid)}")
            except (ReadError, OSError) as exc:
                errors.append(str(exc))
        # Nothing that failed its checks stays where git-annex would look for content.
        try:
            os.unlink(local_file)
        except OSError:
            pass
        raise RemoteError("; ".join(errors))

    # -- REMOVE --------------------------------------------------------------------------
    @request
    def remove(self, key):
        from ..dataverse import DataverseError

        self._configure()
        if self.nowrite:
            raise RemoteError(NOWRITE)
        if self._pending(key):
            self._flush_in_session()
        found = self._locations(key)
        if not found:
            return
        released, draft = self._released_and_draft()
        published = [loc for loc in found if loc.file_id in released]
        if published:
            raise RemoteError(
                f"{key} is in {published[0].bundle}, published with {self.pid}: Dataverse "
                f"publications are immutable, so RDR keeps it (drop other copies instead)")
        for loc in found:
            live = self._live_keys(loc)
            self.annex.seturimissing(key, loc.record)
            if live is None:
                continue  # an exported bundle: it holds files in git too, it stays
            live.discard(key)
            if not live and (loc.file_id in draft or loc.file_id in self._made):
                try:
                    self.writer("removing from RDR").delete_file(loc.file_id)
                except DataverseError as exc:
                    self.message(f"{loc.bundle} holds nothing any more but could not be "
                                 f"deleted from the draft: {exc}", type="info")
                    continue
                draft.discard(loc.file_id)
                self._made.discard(loc.file_id)
                self._exists[loc.file_id] = (False, time.monotonic() + SERVER_TTL)

    def _live_keys(self, loc: locations.Location) -> set | None:
        """Keys still recorded in a bundle the remote made (None: not such a bundle)."""
        if loc.file_id not in self._live:
            from .keyindex import read_index

            index = read_index(self.reader, loc.file_id, loc.bundle_size, self.uuid)
            if index is None:
                self._live[loc.file_id] = None
            else:
                self._live[loc.file_id] = {
                    k for k in set(index.values())
                    if any(u.startswith(locations.prefix(self.url) + f"{loc.file_id}?")
                           for u in self.annex.geturls(k, locations.prefix(self.url)))}
        return self._live[loc.file_id]

    # -- the end of a session, and the start of the next --------------------------------
    def close(self):
        store = self._store
        if store is None:
            return  # prepare() never ran: nothing was stored
        try:
            bundle = store.open
            if bundle is not None and not bundle.members:
                store.done(bundle)
            elif bundle is not None and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
                self._flush_offline(bundle)
            # interrupted (Ctrl-C): the journal stays, the next session repairs it
        except Exception as exc:
            # git-annex no longer listens: one line where it shows stderr; the journal
            # stays, and the next session of the remote repairs what is left
            lgr.debug("close failed:\n%s", traceback.format_exc())
            print(f"git-annex-remote-rdr: unexpected {type(exc).__name__} at the end of the "
                  f"session: {exc}; the next git-annex command using the remote finishes "
                  f"its upload", file=sys.stderr)
        finally:
            store.close()
            self._store = None

    def _flush_offline(self, bundle: OpenBundle) -> bool:
        """Flush when git-annex no longer listens: records through plumbing, errors on
        stderr (git-annex shows them). True if the keys are on the server."""
        try:
            client = self.writer("storing into RDR")
            found = self._store.flush(bundle, client, self.url, self.pid, self.restrict,
                                      self._description(bundle))
            self.plumbing.register_urls([(k, loc.uri()) for k, loc in found.items()],
                                        self.uuid)
        except (FlushError, RemoteError, AnnexError) as exc:
            print(f"git-annex-remote-rdr: {exc}", file=sys.stderr)
            self._give_up(bundle)
            print(f"git-annex-remote-rdr: the {len(bundle.members)} keys of "
                  f"{bundle.name} are recorded as not in this remote; copy them again",
                  file=sys.stderr)
            return False
        self._store.done(bundle)
        return True

    def _repair(self) -> None:
        """Finish the flushes of sessions that died (kill -9, power loss)."""
        for bundle in self._store.orphans():
            self.message(f"repairing {bundle.name}: {len(bundle.members)} keys of a "
                         f"session that ended during its upload", type="info")
            if self._flush_offline(bundle):
                # The keys are in this remote now, whatever the dead session told git-annex.
                try:
                    self.plumbing.set_present([m.key for m in bundle.members], self.uuid,
                                              True)
                except AnnexError as exc:
                    self.message(f"could not record {bundle.name}'s keys: {exc}")


from .cli import main  # noqa: E402,F401  (the console script's entry point)

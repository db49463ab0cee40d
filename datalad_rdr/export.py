"""The export, stage by stage: prepare -> send bundles -> documents -> record -> verify ->
publish -> after-export.

- prepare: the export's settings (what was given, else what the last export used:
  :func:`settle`), the plan of bundles, the metadata file, pre-flight (:mod:`.preflight`), and
  every other problem that would stop the run -- all before any server call, so ``--dry-run``
  reports them too;
- send bundles: open the draft (created once; its PID goes to the journal at once), then
  each bundle that changed is streamed, uploaded and registered (plan -> ZIP stream -> upload
  -> register), up to ``-J`` bundles at once (:mod:`.send`);
- documents: the README and documentation as public files (:mod:`.documents`);
- record: the manifest, committed only when something changed; then the ``rdr`` remote's
  location records (:mod:`.after_export`) and the dataset's history deposited in the draft
  (:mod:`.history`), so that the version to publish holds both;
- verify (:mod:`.verify`), publish on request (:mod:`.publish`), and the push to a RIA store
  (:mod:`.after_export`).

:func:`run_export` is a generator of DataLad result records; the ``rdr-export`` command only
parses its arguments and renders these. One export of a dataset runs at a time.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from . import after_export, content, discovery, documents, embargo, gitannex, history, \
    manifest as mf, metadata, preflight, publish, verify
from .credentials import CredentialError
from .dataverse import Dataverse, DataverseError
from .dataverse_records import find
from .plan import DEFAULT_CAP, Plan, PlanError, make_plan
from .register import RegisterError, file_budget
from .send import _listing, fingerprint, result, send_bundles
from .sizes import human
from .upload import DEFAULT_JOBS, Uploader, UploadError

log = logging.getLogger("datalad.rdr.export")


@dataclass
class ExportOptions:
    """What the command was given; None: not given (the last export's setting is used)."""

    url: str | None = None
    token: str | None = None
    token_for: Callable[[str], str] | None = None  # the token for the settled server
    collection: str | None = None
    pid: str | None = None
    commit: str = "HEAD"
    cap: int | None = None
    recursive: bool | None = None
    dry_run: bool = False
    drop_after: bool = False
    restrict: bool | None = None  # False: --no-restrict (the dataset is open)
    lock_timeout: float = 300  # for the server's locks on the dataset
    wait: float = 60  # for another export of this dataset to finish
    jobs: int = DEFAULT_JOBS
    ignore_preflight: list[str] | None = None  # codes, or "all"
    publish: str | None = None  # "major" or "minor": publish after a clean verify
    publish_timeout: float = 600
    ria_store: str | None = None  # push to this RIA store (ria+file://...) after export
    ria_alias: str | None = None  # under this alias (default: the dataset's directory name)
    in_progress: bool = False  # settled: continuing an interrupted export
    changed: dict = field(default_factory=dict)  # settled: setting -> the last export's value


#: The interpreter's thread switch interval while an export runs (Python's default: 5 ms).
SWITCH_INTERVAL = 0.001


@contextmanager
def prompt_thread_switches() -> Iterator[None]:
    """The bundles' threads read many small files, and each read gives the GIL away: with
    Python's default switch interval a thread back from its read waits up to 5 ms while
    another thread computes (the "convoy" effect; at 100,000 files an open of a 300-byte
    file took 37 us instead of 11). A shorter interval while the export runs, the caller's
    restored after: at 100,000 small files on 2 cores, 1 ms made the first export 22-23.5 s
    instead of 27.7-28.5 (0.2 ms: 22.7-27.2 s)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """The stages freeze the per-file objects they keep to the end (``gc.freeze``): Python's
    cycle collector then no longer walks them at every full collection (at 100,000 files a
    perf profile put 2 s of the export's process in the collector). They are unfrozen with
    the caller's at the end, unless the caller had frozen some itself: those stay frozen,
    with ours."""
    caller_froze = gc.get_freeze_count() > 0
    try:
        yield
    finally:
        if not caller_froze:
            gc.unfreeze()


#: Allocations from this size on get their own pages from the kernel (glibc's
#: ``M_MMAP_THRESHOLD``), which go back to it when freed.
MMAP_THRESHOLD = 2**20


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library the process runs with (its symbols, without ``find_library``'s
    ``ldconfig``), if it is glibc's: musl has no ``malloc_trim``."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def heap_kept_small() -> None:
    """glibc's malloc raises its mmap threshold to the size of each large block freed (up
    to 32 MiB), so after the first 128 KiB read is freed, every later one comes from the
    heap, between the per-file objects that stay to the end: that heap keeps the pages it
    once had. At 100,000 files the export's process grew to 246 MB where Python's own
    objects held under 100. A fixed threshold (which also ends glibc's adjusting of it)
    keeps reads of 1 MiB and more out of the heap, and :func:`heap_trimmed` gives free
    pages back at the end of a stage. Nothing happens on other C libraries."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD


def heap_trimmed() -> None:
    """The heap's free pages back to the kernel (``malloc_trim``: the whole heap, not only
    its top), after a stage that made and dropped many objects."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def run_export(dataset: Path, opts: ExportOptions) -> Iterator[dict]:
    heap_kept_small()
    with prompt_thread_switches(), long_lived_objects_frozen():
        yield from _run_export(dataset, opts)


def _run_export(dataset: Path, opts: ExportOptions) -> Iterator[dict]:
    dataset = Path(dataset)
    if opts.dry_run:  # reads only: no lock
        yield from _export(dataset, opts)
        return
    try:
        with mf.ExportLock(gitannex.git_dir(dataset), opts.wait, on_wait=lambda holder: log.warning(
                "another rdr-export of this dataset is running (process %s); waiting up to "
                "%.0f s for it to finish", holder, opts.wait)):
            yield from _export(dataset, opts)
    except mf.ExportBusy as exc:
        yield result(dataset, "error", f"another rdr-export of this dataset is still running "
                                       f"(process {exc}); nothing was done: rerun when it "
                                       f"has finished")


def _export(dataset: Path, opts: ExportOptions) -> Iterator[dict]:
    with ExitStack() as background:  # what runs beside the stages is waited for on any exit
        yield from _stages(dataset, opts, background)


def _stages(dataset: Path, opts: ExportOptions, background: ExitStack) -> Iterator[dict]:
    # -- prepare ---------------------------------------------------------------------------
    prepared = yield from prepare(dataset, opts)
    if prepared is None:
        return
    opts, plan, meta, previous, overrides, found = prepared
    del prepared  # not to keep ``found`` past the send
    if opts.dry_run:
        return
    gc.freeze()  # the plan, the previous manifest, the places (long_lived_objects_frozen)
    heap_trimmed()  # the listings the plan was read from
    # -- send bundles ----------------------------------------------------------------------
    try:
        token = opts.token if opts.token or opts.token_for is None else opts.token_for(opts.url)
    except CredentialError as exc:
        yield result(dataset, "error", str(exc), exc)
        return
    client = Dataverse(opts.url, token)
    pid = yield from open_draft(dataset, opts, client, meta, plan)
    if pid is None:
        return
    if previous and (previous.server, previous.pid) != (opts.url, pid):
        previous = None
    journal = mf.Journal(gitannex.git_dir(dataset), opts.url, pid, settings_of(opts))
    journal.start()
    # every bundle added or replaced counts against the dataset's file-count limit, which
    # counts every file the dataset ever had (fidelity row 21): stop before, not half-way
    known = {**({b.name: b for b in previous.bundles} if previous else {}), **journal.bundles}
    adding = sum(b.server_files for b in plan.bundles
                 if b.name not in known or known[b.name].fingerprint != fingerprint(b))
    if adding:
        try:
            budget = file_budget(client, pid, adding, collection=opts.collection)
        except DataverseError as exc:
            yield result(dataset, "error", _explain(exc, opts), exc)
            return
        if not budget.fits:
            yield result(dataset, "error", budget.message(pid))
            return
    # a first export's rdr remote is set up while the bundles go (git-annex's ~1 s)
    early = after_export.EarlyRemote.start(dataset, opts.url, pid)
    if early:
        background.callback(early.close)
    uploader = Uploader(client, pid, jobs=opts.jobs)
    records, failed = [], False
    for res in send_bundles(dataset, plan, opts, client, pid, uploader, previous, journal,
                            found):
        if res.get("record") is not None:
            records.append(res.pop("record"))
        failed = failed or res["status"] == "error"
        yield res
    del found  # 100,000 keys' places: not needed past the send
    gc.freeze()  # and the bundles' records
    heap_trimmed()
    # -- documents -------------------------------------------------------------------------
    sent_documents: list[mf.DocumentRecord] = []
    if not failed:
        for res in send_documents(dataset, plan, meta, client, pid, uploader, previous, opts):
            if res.get("document_record") is not None:
                sent_documents.append(res.pop("document_record"))
            failed = failed or res["status"] == "error"
            yield res
    if failed:
        yield result(dataset, "error", "export incomplete: rerun 'datalad rdr-export' to "
                                       "send the remaining bundles (confirmed bundles are "
                                       "not sent again)")
        return
    yield from _remove_unplanned(client, pid, records, previous, dataset)
    yield from embargo.apply(dataset, client, pid, meta, records)
    # -- record ----------------------------------------------------------------------------
    manifest = mf.Manifest(opts.url, pid, plan.commit, plan.subdatasets, records,
                           doi=previous.doi if previous else None,
                           documents=sent_documents, preflight_overrides=overrides,
                           version=previous.version if previous else None,
                           published=previous.published if previous else None,
                           settings=asdict(settings_of(opts)))
    committed = not manifest.same_export(previous)
    ahead = None
    if not committed:
        manifest = previous  # nothing changed: no new commit (D14)
        yield result(dataset / mf.MANIFEST, "notneeded",
                     f"nothing changed since the export of {previous.dataset_commit[:8]}: "
                     f"nothing sent, manifest kept", pid=pid)
    else:
        ahead = after_export.LogsAhead(dataset, manifest, previous)  # while git commits
        background.callback(ahead.close)
        path = mf.save(dataset, manifest)
        try:
            gitannex.save_paths(dataset, mf.files(dataset),
                                f"[DATALAD RDR] export of {plan.commit[:8]} to {pid}",
                                added=ahead.begin)
        except gitannex.GitError as exc:  # a hook's refusal, say: the journal keeps the rest
            yield result(dataset, "error", f"the manifest could not be committed ({exc}); "
                                           f"the bundles are on the server: rerun 'datalad "
                                           f"rdr-export' to commit it (nothing is sent "
                                           f"again)", exc, pid=pid)
            return
        yield result(path, "ok", f"manifest of {len(records)} bundles saved", pid=pid)
    journal.clear()
    # -- the rdr remote's records, then the history: both in the version that is published
    if not ((yield from after_export.record(dataset, manifest, previous, token, early,
                                            ahead)) and
            (yield from history.deposit(dataset, client, pid, uploader, meta, committed,
                                        opts.lock_timeout))):
        yield result(dataset, "error", "export incomplete: neither verified nor published; "
                                       "rerun 'datalad rdr-export' (nothing sent is sent "
                                       "again)")
        return
    # -- verify, publish -------------------------------------------------------------------
    try:
        checked = verify.run(dataset, client, manifest, opts.restrict, embargo.until(meta))
    except DataverseError as exc:
        checked = [result(dataset, "error", f"verify: {_explain(exc, opts)}", exc)]
    yield from checked
    if opts.publish:
        if any(r["status"] == "error" for r in checked):
            yield result(dataset, "error", "not published: the server's files do not match "
                                           "the manifest (see the verify table); fix them "
                                           "and rerun with --publish")
        else:
            # records the DOI in ``manifest`` itself, and saves it
            yield from publish.run(dataset, client, pid, opts.publish, manifest, meta,
                                   opts.publish_timeout)
    # -- after-export: last, so that a RIA store gets the commit with the DOI too ----------
    yield from after_export.push(dataset, opts)


# -- prepare -----------------------------------------------------------------------------

def settle(dataset: Path, opts: ExportOptions, previous: mf.Manifest | None,
           journal: dict | None) -> tuple[ExportOptions, list[dict], str | None]:
    """The export's settings: what was given, else what the interrupted (``journal``) or
    last (``previous``) export used.

    Returns the settled options, notes (results) on given values that differ from the last
    export's, and an error message when the given ones would orphan a draft in progress.
    """
    last, where = None, None
    if journal:
        last = (journal["server"], journal["pid"],
                mf.Settings.from_json(journal.get("settings")) or mf.Settings())
        where = "the interrupted export"
    elif previous:
        last = (previous.server, previous.pid, mf.Settings.from_json(previous.settings)
                or mf.Settings(recursive=bool(previous.subdatasets),
                               ignore_preflight=sorted({o.get("code") for o in
                                                        previous.preflight_overrides})))
        where = "the last export"
    notes = []
    if last is None:
        return replace(opts, cap=opts.cap or DEFAULT_CAP, recursive=bool(opts.recursive),
                       restrict=opts.restrict is not False,
                       ignore_preflight=list(opts.ignore_preflight or [])), notes, None
    server, pid, settings = last

    def note(message):
        notes.append(result(dataset, "ok", message))

    url, given_pid, changed = opts.url, opts.pid, {}
    same_server = url is None or url.rstrip("/") == server.rstrip("/")
    if not same_server:
        if journal and not given_pid:
            return opts, notes, (
                f"{where} went to {server} (draft {pid}) and has not finished: finish it "
                f"with a plain 'datalad rdr-export' (a second draft is not made), or give "
                f"--pid to export into another dataset")
        note(f"exporting to {url}, not to {server} of {where}")
        return replace(opts, cap=opts.cap or DEFAULT_CAP, recursive=bool(opts.recursive),
                       restrict=opts.restrict is not False,
                       ignore_preflight=list(opts.ignore_preflight or [])), notes, None
    url = server
    if given_pid and given_pid != pid:
        note(f"exporting into {given_pid}, not into {pid} of {where}")
    pid = given_pid or pid
    if opts.collection and settings.collection and opts.collection != settings.collection \
            and pid:
        note(f"--collection {opts.collection} not used: the dataset {pid} exists already "
             f"(in {settings.collection})")
    old_cap = settings.cap or DEFAULT_CAP
    cap = opts.cap if opts.cap is not None else old_cap
    if cap != old_cap:
        changed["cap"] = old_cap
    recursive = settings.recursive if opts.recursive is None else opts.recursive
    if recursive != settings.recursive:
        changed["recursive"] = settings.recursive
    ignore = settings.ignore_preflight if opts.ignore_preflight is None \
        else list(opts.ignore_preflight)
    if sorted(ignore) != sorted(settings.ignore_preflight):
        note(f"--ignore-preflight {', '.join(ignore) or '(none)'} instead of "
             f"{', '.join(settings.ignore_preflight) or '(none)'} of {where}")
    restrict = settings.restrict if opts.restrict is None else opts.restrict
    if restrict != settings.restrict:
        note(f"bundles {'restricted' if restrict else 'public'} now, "
             f"{'restricted' if settings.restrict else 'public'} in {where}")
    return replace(opts, url=url, pid=pid, collection=opts.collection or settings.collection,
                   cap=cap, recursive=recursive, ignore_preflight=ignore, restrict=restrict,
                   in_progress=bool(journal), changed=changed), notes, None


def settings_of(opts: ExportOptions) -> mf.Settings:
    return mf.Settings(opts.collection, opts.cap, bool(opts.recursive),
                       list(opts.ignore_preflight or []), opts.restrict is not False)


def prepare(dataset: Path, opts: ExportOptions):
    """Everything checked before any server call; yields results, returns
    ``(opts, plan, meta, previous, overrides, found)`` (``found``: where the annexed
    content is, :func:`.content.look_up`) or None when the export stops (a dry run
    goes on to the end, reporting every problem)."""
    previous, journal = mf.load(dataset), mf.read_journal(gitannex.git_dir(dataset))
    opts, notes, problem = settle(dataset, opts, previous, journal)
    if problem:
        yield result(dataset, "error", problem)
        return None
    yield from notes
    if not opts.url and not opts.dry_run:
        yield result(dataset, "error", "no server given: use --url (and --collection for a "
                                       "new draft); nothing was exported here before")
        return None
    if not opts.dry_run:  # what --check-server found out about this server
        cap, notes = discovery.adjust(gitannex.git_dir(dataset), opts.url, opts.cap)
        opts = replace(opts, cap=cap)
        for note in notes:
            yield result(dataset, "ok", note)
    if not opts.dry_run and not opts.pid and not opts.collection:
        yield result(dataset, "error", "no dataset given: use --collection to create a "
                                       "draft, or --pid")
        return None
    if opts.ria_store:
        problem = after_export.ria_alias_problem(dataset, opts.ria_store,
                                                 opts.ria_alias or dataset.name)
        if problem:
            yield result(dataset, "error", problem)
            return None
    if gitannex.resolve(dataset, f"{opts.commit}^{{commit}}") is None:
        yield result(dataset, "error", f"--commit {opts.commit}: no such commit in the "
                                       f"dataset; give a commit id, branch or tag "
                                       f"('git log' lists them)")
        return None
    log.debug("export of %s: server %s, dataset %s, collection %s, cap %d, -r %s, "
              "ignored pre-flight %s%s", dataset, opts.url, opts.pid or "(new draft)",
              opts.collection, opts.cap, opts.recursive, opts.ignore_preflight,
              ", continuing an interrupted export" if opts.in_progress else "")
    try:
        plan = make_plan(dataset, opts.commit, opts.cap, opts.recursive)
    except (PlanError, subprocess.CalledProcessError) as exc:
        yield result(dataset, "error", str(exc).strip() or repr(exc), exc)
        return None
    log.debug("plan of %s: %s", plan.commit[:8],
              ", ".join(f"{b.filename} ({len(b.files)} files)" for b in plan.bundles))
    stop = opts.dry_run and "the export would stop: " or ""
    stopped = False
    meta, meta_problem = None, None
    try:
        meta = metadata.load(dataset, plan.commit)  # the exported commit's, as the bundles
        opts = replace(opts, restrict=bundles_restricted(opts, meta))
    except metadata.MetadataError as exc:
        meta_problem = exc
    # pre-flight before the metadata's verdict: an empty README is the cause of a missing
    # description taken from it
    documentation = meta.documentation if meta else []
    checks, overrides, blocked = preflight.report(
        dataset, preflight.check(dataset, plan, documentation,
                                 largest=_largest_file(dataset, opts)), opts.ignore_preflight,
        preflight.summary(plan))
    yield from checks
    if blocked and not opts.dry_run:
        return None
    if meta_problem is not None:
        yield result(dataset, "error", f"{stop}{meta_problem}; nothing was uploaded",
                     meta_problem)
        stopped = True
    elif meta is None:
        yield result(dataset, "error", stop + metadata.missing_message())
        stopped = True
    if stopped and not opts.dry_run:
        return None
    unsaved = gitannex.unsaved_paths(dataset) if opts.commit == "HEAD" else []
    if unsaved:
        shown = ", ".join(unsaved[:5]) + (f" and {len(unsaved) - 5} more"
                                          if len(unsaved) > 5 else "")
        yield result(dataset, "error", f"{stop}the dataset has unsaved changes ({shown}); "
                                       f"'datalad save' them first (the export publishes a "
                                       f"commit)")
        if not opts.dry_run:
            return None
    problem, found = _unavailable(plan)
    if problem:
        yield result(dataset, "error", stop + problem)
        if not opts.dry_run:
            return None
    known = _known_records(opts, previous, journal)
    if opts.changed or opts.dry_run:
        yield from _what_changes(dataset, plan, known, opts)
    return opts, plan, meta, previous, overrides, found


def _largest_file(dataset: Path, opts: ExportOptions) -> int | None:
    """The largest file the server accepts, as ``--check-server`` found it out (or None)."""
    known = discovery.cached(gitannex.git_dir(dataset), opts.url) if opts.url else None
    largest = (known or {}).get("facts", {}).get("largest_file")
    return largest if isinstance(largest, int) else None


def _known_records(opts: ExportOptions, previous, journal) -> dict[str, mf.BundleRecord]:
    """The bundles on the server as far as the manifest and the journal know, by name."""
    known = {}
    if previous and (previous.server, previous.pid) == (opts.url, opts.pid):
        known = {b.name: b for b in previous.bundles}
    if journal and (journal["server"], journal["pid"]) == (opts.url, opts.pid):
        known.update({n: mf.BundleRecord.from_json(b)
                      for n, b in journal.get("bundles", {}).items()})
    return known


def _what_changes(dataset: Path, plan: Plan, known: dict, opts: ExportOptions
                  ) -> Iterator[dict]:
    """Per bundle whether it would be sent; for a changed setting, the one line saying what
    it re-sends and removes. No server call: fingerprints against the records."""
    send, replace_, unchanged = [], [], []
    for b in plan.bundles:
        record = known.get(b.name)
        if record is None:
            send.append(b)
        elif record.fingerprint != fingerprint(b):
            replace_.append(b)
        else:
            unchanged.append(b)
    removed = sorted(set(known) - {b.name for b in plan.bundles})
    if opts.dry_run:
        for b in plan.bundles:
            verb = ("unchanged" if b in unchanged else "would replace" if b in replace_
                    else "would send")
            split = (f" in {b.server_files} volumes of at most {human(b.volume_size)}"
                     if b.volume_size else "")
            yield result(dataset / b.filename, "ok",
                         f"{verb} {b.filename}{split}: {len(b.files)} files, "
                         f"{human(b.nbytes)}", volumes=b.server_files if split else None,
                         bundle=b.filename, logical=b.logical,
                         files=[f.path for f in b.files], bytes=b.nbytes, dry_run=True,
                         change=verb.replace("would ", ""))
        for name in removed:
            yield result(dataset / f"{name}.zip", "ok", f"would remove {name}.zip from the "
                         f"draft: no longer in the plan", bundle=f"{name}.zip", dry_run=True,
                         change="remove")
    what = []
    if "cap" in opts.changed:
        what.append(f"--max-bundle-size {human(opts.cap)} instead of "
                    f"{human(opts.changed['cap'])} of the last export")
    if "recursive" in opts.changed:
        what.append("without -r (subdatasets left out)" if not opts.recursive
                    else "with -r (subdatasets included)")
    if what:
        resent = [b.filename for b in send + replace_]
        yield result(dataset, "ok", f"{'; '.join(what)}: "
                     f"{'would send' if opts.dry_run else 'sends'} "
                     f"{', '.join(resent) or 'nothing'}"
                     + (f"; {'would remove' if opts.dry_run else 'removes'} "
                        f"{', '.join(n + '.zip' for n in removed)}" if removed else ""))


# -- send bundles ------------------------------------------------------------------------

def open_draft(dataset: Path, opts: ExportOptions, client: Dataverse, meta, plan):
    """The PID of the draft to fill (the known one, its metadata synced, or a new one)."""
    try:
        client.check_token()
        # checked against the server's own fields before a draft is made or a byte is sent
        mapping = metadata.server_mapping(dataset, client, meta, plan, opts.url,
                                          collection=opts.collection, pid=opts.pid)
        embargo.check(client, meta, dataset, plan.commit, opts.url)
        if opts.pid:
            yield metadata.sync_draft(client, opts.pid, mapping,
                                      result(dataset, "ok", "", pid=opts.pid),
                                      opts.lock_timeout)
            return opts.pid
        pid = client.create_dataset(opts.collection, mapping.draft())
        # in the journal before anything else can fail: a rerun continues in this draft
        mf.Journal(gitannex.git_dir(dataset), opts.url, pid, settings_of(opts)).start()
        yield result(dataset, "ok", f"draft {pid} created in {opts.collection} from "
                                    f"{metadata.METADATA}{mapping.note()}", pid=pid)
        return pid
    except metadata.MetadataError as exc:
        yield result(dataset, "error", f"{exc}; nothing was uploaded", exc)
    except DataverseError as exc:
        yield result(dataset, "error", _explain(exc, opts), exc)
    return None


# -- documents ---------------------------------------------------------------------------

def send_documents(dataset, plan, meta, client, pid, uploader, previous, opts):
    """README and documentation: separate public files, besides their bundle."""
    documentation = meta.documentation if meta else []
    try:
        sent = []
        for doc, status, message in documents.send(
                dataset, documents.select(plan, documentation), client, pid, uploader,
                _listing(client, pid), opts.lock_timeout):
            sent.append(doc)
            yield result(dataset / doc.path, status, message, document=doc.path,
                         file_id=doc.file_id, md5=doc.md5, size=doc.size,
                         document_record=doc)
        for old in documents.stray(previous, sent):
            entry = client.file_in_draft(pid, old.label, old.directory)
            if entry is not None:
                client.delete_file(entry.file_id)
                yield result(dataset / old.path, "ok", f"{old.path} removed from the "
                             f"draft: no longer a document of the dataset")
    except (content.ContentError, UploadError, RegisterError, DataverseError) as exc:
        yield result(dataset, "error", f"documents: {exc}", exc)


def _remove_unplanned(client, pid, records, previous, dataset) -> Iterator[dict]:
    """Bundles of an earlier export that this plan no longer has: removed from the draft."""
    if previous is None:
        return
    current = {label for r in records for label, _ in r.files}  # a bundle or its volumes
    gone = [label for old in previous.bundles for label, _ in old.files
            if label not in current]
    if not gone:
        return
    listing = client.draft_files(pid)
    for label in gone:
        entry = find(listing, label)
        if entry is not None:
            client.delete_file(entry.file_id)
            yield result(dataset / label, "ok",
                         f"{label} removed from the draft: no longer in the plan")


# -- problems found before any server call -----------------------------------------------

def _unavailable(plan: Plan) -> tuple[str | None, content.Found]:
    """A problem when some annexed content is nowhere, and where the content here is (the
    send stage fetches what is not, and looks up nothing else again)."""
    files = [f for b in plan.bundles for f in b.files if f.key]
    found = content.look_up(files)
    gone = {}
    for repo, (_, where) in found.items():
        absent = [k for k, at in where.items() if at is None]
        if absent:
            gone[repo] = set(content.missing_everywhere(repo, absent))
    lost = [f.path for f in files if f.key in gone.get(f.repo, ())]
    if lost:
        shown = ", ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        return (f"content of {len(lost)} file(s) is available nowhere (not here, no remote "
                f"has it): {shown}; nothing was uploaded"), found
    return None, found


# -- verify only -------------------------------------------------------------------------

def run_verify(dataset: Path, opts: ExportOptions) -> Iterator[dict]:
    """``--verify-only``: the server's listing against the manifest, nothing sent."""
    dataset = Path(dataset)
    manifest = mf.load(dataset)
    if manifest is None:
        in_progress = mf.read_journal(gitannex.git_dir(dataset))
        yield result(dataset, "error",
                     f"no {mf.MANIFEST}: nothing exported yet to verify; run 'datalad "
                     f"rdr-export' first" + (" (an interrupted export waits to be finished)"
                                             if in_progress else ""))
        return
    try:
        token = opts.token if opts.token or opts.token_for is None \
            else opts.token_for(manifest.server)
        meta = metadata.load(dataset)
        yield from verify.run(dataset, Dataverse(manifest.server, token), manifest,
                              bundles_restricted(opts, meta), embargo.until(meta))
    except CredentialError as exc:
        yield result(dataset, "error", str(exc), exc)
    except metadata.MetadataError as exc:
        yield result(dataset, "error", str(exc), exc)
    except DataverseError as exc:
        yield result(dataset, "error", _explain(exc, replace(opts, url=manifest.server)), exc)


def bundles_restricted(opts: ExportOptions, meta) -> bool:
    """Bundles are restricted unless the dataset is declared open (metadata or option)."""
    if meta is None:
        return opts.restrict is not False
    if opts.restrict is False and embargo.restricted(meta):
        raise metadata.MetadataError(
            f"--no-restrict contradicts 'access: {meta.access}' in {metadata.METADATA}; "
            f"declare the dataset open there ('access: open') instead", "access")
    return embargo.restricted(meta)


def _explain(exc: DataverseError, opts: ExportOptions) -> str:
    if exc.status == 401:
        return (f"the API token was refused by {opts.url} ({exc.message}); set a valid "
                f"token with 'datalad credentials set' or DATALAD_CREDENTIAL_RDR_SECRET")
    if exc.status == 404 and "not found" in exc.message.lower():
        return f"{exc.message} Check --pid or --collection."
    return str(exc)

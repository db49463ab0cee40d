"""The export, stage by stage: plan -> ZIP stream -> upload -> register -> record.

Around it, the publishing steps of the RDR guide: pre-flight (:mod:`.preflight`) before any
server call, the README and documentation as public files (:mod:`.documents`), verify
(:mod:`.verify`) after the manifest is saved, and publish (:mod:`.publish`) on request.

:func:`run_export` is a generator of DataLad result records: pre-flight, one per bundle and
document, the manifest, verify, publish; the ``rdr-export`` command only parses its arguments
and renders these.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from datalad.log import log_progress

from . import content, discovery, documents, manifest as mf, metadata, preflight, publish, \
    verify
from .dataverse import Dataverse, DataverseError
from .plan import GB, Bundle, Plan, PlanError, make_plan, split_bundle
from .register import RegisterError, draft_files, find_in_draft, register_bundle
from .upload import TooSlowForUrlLifetime, Uploader, UploadError
from .zipstream import MemberError, layout_zip

log = logging.getLogger("datalad.rdr.export")


@dataclass
class ExportOptions:
    url: str
    token: str | None
    collection: str | None = None
    pid: str | None = None
    commit: str = "HEAD"
    cap: int = 20 * GB
    recursive: bool = False
    dry_run: bool = False
    drop_after: bool = False
    restrict: bool = True  # False: --no-restrict (the dataset is open)
    lock_timeout: float = 300
    jobs: int = 4  # parts of a bundle sent at once
    ignore_preflight: list[str] = field(default_factory=list)  # codes, or "all"
    publish: str | None = None  # "major" or "minor": publish after a clean verify
    publish_timeout: float = 600
    ria_store: str | None = None  # push to this RIA store (ria+file://...) after export
    ria_alias: str | None = None  # under this alias (default: the dataset's directory name)


def result(action_path: Path, status: str, message: str, **extra) -> dict:
    return {"action": "rdr-export", "path": str(action_path), "type": "file",
            "status": status, "message": message, **extra}


def run_export(dataset: Path, opts: ExportOptions) -> Iterator[dict]:
    dataset = Path(dataset)
    if not opts.dry_run:  # what --check-server found out about this server
        cap, notes = discovery.adjust(_git_dir(dataset), opts.url, opts.cap)
        opts = replace(opts, cap=cap)
        for note in notes:
            yield result(dataset, "ok", note)
    try:
        plan = make_plan(dataset, opts.commit, opts.cap, opts.recursive)
    except (PlanError, subprocess.CalledProcessError) as exc:
        yield result(dataset, "error", str(exc).strip() or repr(exc))
        return
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
        dataset, preflight.check(dataset, plan, documentation), opts.ignore_preflight,
        preflight.summary(plan))
    yield from checks
    if meta_problem is not None:
        yield result(dataset, "error", f"{meta_problem}; nothing was uploaded")
        return
    if blocked and not opts.dry_run:
        return
    if opts.dry_run:
        for b in plan.bundles:
            yield result(dataset / b.filename, "ok",
                         f"would send {b.filename}: {len(b.files)} files, "
                         f"{b.nbytes / 1e6:.1f} MB", bundle=b.filename, logical=b.logical,
                         files=[f.path for f in b.files], bytes=b.nbytes, dry_run=True)
        return

    problem = _unavailable(plan)
    if problem:
        yield result(dataset, "error", problem)
        return
    if meta is None:
        yield result(dataset, "error", metadata.missing_message())
        return
    client = Dataverse(opts.url, opts.token)
    try:
        client.check_token()
        # checked against the server's own fields before a draft is made or a byte is sent
        pid = opts.pid or _known_pid(dataset, opts.url)
        mapping = metadata.server_mapping(dataset, client, meta, plan, opts.url,
                                          collection=opts.collection, pid=pid)
        if pid:
            yield metadata.sync_draft(client, pid, mapping, result(dataset, "ok", "", pid=pid),
                                      opts.lock_timeout)
        else:
            pid = client.create_dataset(opts.collection,
                                        {"datasetVersion": mapping.version_json()})
            yield result(dataset, "ok", f"draft {pid} created in {opts.collection} from "
                                        f"{metadata.METADATA}{mapping.note()}", pid=pid)
    except metadata.MetadataError as exc:
        yield result(dataset, "error", f"{exc}; nothing was uploaded")
        return
    except DataverseError as exc:
        yield result(dataset, "error", _explain(exc, opts))
        return

    previous = mf.load(dataset)
    if previous and (previous.server, previous.pid) != (opts.url, pid):
        previous = None
    journal = mf.Journal(_git_dir(dataset), opts.url, pid)
    records: list[mf.BundleRecord] = []
    uploader = Uploader(client, pid, jobs=opts.jobs)
    commit_time = _commit_time(dataset, plan.commit)
    failed = False
    queue = list(plan.bundles)
    while queue:
        bundle = queue.pop(0)
        try:
            record, status, message = _export_bundle(
                dataset, bundle, opts, client, pid, uploader, commit_time, previous, journal)
        except TooSlowForUrlLifetime as exc:
            smaller = split_bundle(bundle.logical, bundle.files, max(exc.fits, 1))
            if len(smaller) <= 1:
                failed = True
                yield result(dataset / bundle.filename, "error", str(exc))
                continue
            # Name the parts after the bundle they replace: raw -> raw-01.., raw-02 -> raw-02-01..
            for i, part in enumerate(smaller, 1):
                part.name = f"{bundle.name}-{i:02d}"
            log.warning("%s; splitting %s into %d bundles", exc, bundle.filename,
                        len(smaller))
            yield result(dataset / bundle.filename, "notneeded",
                         f"{exc}: split into {len(smaller)} bundles", bundle=bundle.filename)
            queue = smaller + queue
            continue
        except (content.ContentError, MemberError, UploadError, RegisterError,
                DataverseError) as exc:
            failed = True
            advice = ""
            if isinstance(exc, MemberError):
                advice = (f"; nothing of {bundle.filename} was registered: check the copy "
                          f"here with 'git annex fsck {exc.arcname}' and get a good one "
                          f"from another remote")
            yield result(dataset / bundle.filename, "error",
                         f"{bundle.filename}: {exc}{advice}", bundle=bundle.filename)
            continue
        records.append(record)
        yield result(dataset / bundle.filename, status, message, bundle=bundle.filename,
                     file_id=record.file_id, md5=record.md5, size=record.size)
    sent_documents: list[mf.DocumentRecord] = []
    if not failed:
        # README and documentation: separate public files, besides their bundle
        try:
            for doc, status, message in documents.send(
                    dataset, documents.select(plan, documentation), client, pid, uploader,
                    _listing(client, pid), opts.lock_timeout):
                sent_documents.append(doc)
                yield result(dataset / doc.path, status, message, document=doc.path,
                             file_id=doc.file_id, md5=doc.md5, size=doc.size)
            for old in documents.stray(previous, sent_documents):
                entry = find_in_draft(draft_files(client, pid), old.label, old.directory)
                if entry is not None:
                    client.delete_file(entry["dataFile"]["id"])
                    yield result(dataset / old.path, "ok", f"{old.path} removed from the "
                                 f"draft: no longer a document of the dataset")
        except (content.ContentError, UploadError, RegisterError, DataverseError) as exc:
            failed = True
            yield result(dataset, "error", f"documents: {exc}")
    if failed:
        yield result(dataset, "error", "export incomplete: rerun 'datalad rdr-export' to "
                                       "send the remaining bundles (confirmed bundles are "
                                       "not sent again)")
        return
    yield from _stray_files(client, pid, records, previous, dataset)
    manifest = mf.Manifest(opts.url, pid, plan.commit, plan.subdatasets, records,
                           doi=previous.doi if previous else None,
                           documents=sent_documents, preflight_overrides=overrides,
                           version=previous.version if previous else None,
                           published=previous.published if previous else None)
    path = mf.save(dataset, manifest)
    _save(dataset, path, f"[DATALAD RDR] export of {plan.commit[:8]} to {pid}")
    journal.clear()
    yield result(path, "ok", f"manifest of {len(records)} bundles saved", pid=pid)
    try:
        checked = verify.run(dataset, client, manifest, opts.restrict)
    except DataverseError as exc:
        checked = [result(dataset, "error", f"verify: {_explain(exc, opts)}")]
    yield from checked
    if opts.publish:
        if any(r["status"] == "error" for r in checked):
            yield result(dataset, "error", "not published: the server's files do not match "
                                           "the manifest (see the verify table); fix them "
                                           "and rerun with --publish")
        else:
            yield from publish.run(dataset, client, pid, opts.publish, manifest, meta,
                                   opts.publish_timeout)
    # last, so that a RIA store gets the commit with the DOI too
    from .remote.export_hook import remote_after_export  # docs/remote.rst
    yield from remote_after_export(dataset, manifest, opts)  # rdr remote, records, RIA


def run_verify(dataset: Path, opts: ExportOptions) -> Iterator[dict]:
    """``--verify-only``: the server's listing against the manifest, nothing sent."""
    dataset = Path(dataset)
    manifest = mf.load(dataset)
    if manifest is None:
        yield result(dataset, "error", f"no {mf.MANIFEST}: nothing exported yet to verify; "
                                       f"run 'datalad rdr-export' first")
        return
    try:
        restricted = bundles_restricted(opts, metadata.load(dataset))
        yield from verify.run(dataset, Dataverse(manifest.server, opts.token), manifest,
                              restricted)
    except metadata.MetadataError as exc:
        yield result(dataset, "error", str(exc))
    except DataverseError as exc:
        yield result(dataset, "error", _explain(exc, replace(opts, url=manifest.server)))


def bundles_restricted(opts: ExportOptions, meta) -> bool:
    """Bundles are restricted unless the dataset is declared open (metadata or option)."""
    if meta is None:
        return opts.restrict
    if not opts.restrict and meta.access != "open":
        raise metadata.MetadataError(
            f"--no-restrict contradicts 'access: {meta.access}' in {metadata.METADATA}; "
            f"declare the dataset open there ('access: open') instead", "access")
    return meta.access != "open"


def _export_bundle(dataset, bundle: Bundle, opts, client, pid, uploader, commit_time,
                   previous, journal):
    fp = mf.fingerprint([(f.path, f.key, f.blob, f.size) for f in bundle.files])
    known = journal.bundles.get(bundle.name) or (previous and previous.bundle(bundle.name))
    if known and known.fingerprint == fp:
        on_server = find_in_draft(_listing(client, pid), bundle.filename)
        if on_server and on_server["dataFile"]["id"] == known.file_id:
            if bool(on_server.get("restricted")) != opts.restrict:
                # changed by hand in the web UI, or the dataset's access changed
                client.restrict(known.file_id, opts.restrict)
                known.restricted = opts.restrict
                return known, "ok", (f"{bundle.filename} unchanged since the last export; "
                                     f"made {'restricted' if opts.restrict else 'public'}")
            return known, "notneeded", f"{bundle.filename} unchanged since the last export"
    fetched = content.fetch(bundle.files)
    blobs: dict[str, content.BlobReader] = {}
    try:
        # the uploader hashes the ZIP in its check pass: no MD5 in the layout
        layout = layout_zip(content.members(bundle.files, blobs,
                                            mf.known_crc32s(previous, journal)),
                            mtime=commit_time, md5=False)
        # the same members, sizes and timestamps give the same bytes: parts sent by an
        # interrupted run of this very layout can be kept
        same_bytes = f"{fp}:{layout.size}:{commit_time.isoformat()}"
        progress_id = f"rdr-export-{bundle.name}"
        log_progress(log.info, progress_id, f"Sending {bundle.filename}",
                     total=layout.size, unit=" Bytes", label=bundle.filename)
        try:
            uploaded = uploader.upload(
                layout, progress=lambda n: log_progress(log.info, progress_id, "",
                                                        update=n, increment=True),
                on_state=lambda state: journal.record_upload(bundle.name, same_bytes, state),
                resume=journal.upload_state(bundle.name, same_bytes))
        finally:
            log_progress(log.info, progress_id, f"Sent {bundle.filename}")
        registered = register_bundle(
            client, pid, bundle.filename, uploaded, opts.restrict,
            f"datalad-rdr bundle '{bundle.logical}': {len(bundle.files)} files of "
            f"{dataset.name}", lock_timeout=opts.lock_timeout)
        record = mf.BundleRecord(
            bundle.name, bundle.logical, bundle.filename, registered.size, registered.md5,
            registered.file_id, registered.storage_identifier, registered.restricted, fp,
            [_member_record(e, f) for e, f in zip(layout.entries,
                                                   sorted(bundle.files, key=lambda f: f.path))])
        journal.record(record)
    finally:
        for reader in blobs.values():
            reader.close()
        if opts.drop_after and fetched:
            for repo in {f.repo for f in bundle.files if f.key in fetched}:
                content.drop(repo, [f.key for f in bundle.files
                                    if f.repo == repo and f.key in fetched])
    verb = "adopted" if registered.adopted else "sent"
    return record, "ok", (f"{bundle.filename} {verb}: {len(bundle.files)} files, "
                          f"{registered.size / 1e6:.1f} MB, file id {registered.file_id}"
                          + "".join(f"; {note}" for note in registered.notes))


def _member_record(entry, f) -> mf.MemberRecord:
    assert entry.arcname == f.path
    return mf.MemberRecord(f.path, f.size, f.key, f.blob,
                           "stored" if entry.method == 0 else "deflated",
                           f"{entry.crc32:08x}", entry.compressed_size, entry.header_offset,
                           entry.data_offset)


def _listing(client, pid) -> list[dict]:
    return draft_files(client, pid) or client.files(pid, ":latest")


def _stray_files(client, pid, records, previous, dataset) -> Iterator[dict]:
    """Bundles of an earlier export that this plan no longer has: removed from the draft."""
    if previous is None:
        return
    current = {r.filename for r in records}
    for old in previous.bundles:
        if old.filename in current:
            continue
        entry = find_in_draft(draft_files(client, pid), old.filename)
        if entry is not None:
            client.delete_file(entry["dataFile"]["id"])
            yield result(dataset / old.filename, "ok",
                         f"{old.filename} removed from the draft: no longer in the plan")


def _unavailable(plan: Plan) -> str | None:
    by_repo: dict[str, list] = {}
    for b in plan.bundles:
        for f in b.files:
            if f.key:
                by_repo.setdefault(f.repo, []).append(f)
    lost = []
    for repo, files in by_repo.items():
        where = content.content_locations(repo, [f.key for f in files])
        absent = [f for f in files if where.get(f.key) is None]
        gone = set(content.missing_everywhere(repo, [f.key for f in absent]))
        lost += [f.path for f in absent if f.key in gone]
    if lost:
        shown = ", ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        return (f"content of {len(lost)} file(s) is available nowhere (not here, no remote "
                f"has it): {shown}; nothing was uploaded")
    return None


def _explain(exc: DataverseError, opts: ExportOptions) -> str:
    if exc.status == 401:
        return (f"the API token was refused by {opts.url} ({exc.message}); set a valid "
                f"token with 'datalad credentials set' or DATALAD_CREDENTIAL_RDR_SECRET")
    if exc.status == 404 and "not found" in exc.message.lower():
        return f"{exc.message} Check --pid or --collection."
    return str(exc)


def _known_pid(dataset: Path, url: str) -> str | None:
    previous = mf.load(dataset)
    if previous and previous.server == url:
        return previous.pid
    return None


def _git_dir(dataset: Path) -> Path:
    return Path(subprocess.run(["git", "-C", str(dataset), "rev-parse", "--absolute-git-dir"],
                               capture_output=True, text=True, check=True).stdout.strip())


def _commit_time(dataset: Path, commit: str) -> dt.datetime:
    seconds = int(subprocess.run(["git", "-C", str(dataset), "show", "-s", "--format=%ct",
                                  commit], capture_output=True, text=True,
                                 check=True).stdout.strip())
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _save(dataset: Path, path: Path, message: str) -> None:
    from datalad.api import save

    save(dataset=str(dataset), path=[str(path)], message=message,
         result_renderer="disabled", return_type="list", on_failure="stop")

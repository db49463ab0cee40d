"""``datalad zenodo-sync``: compare the dataset with its Zenodo record, act, remember.

The stages, in the order the data goes through them:

1. **config** (:mod:`.config`) -- zenodo.yaml, read and checked into the RDM JSON StepUp would
   send.
2. **members** (:mod:`.members`) -- what goes to Zenodo, one member per file key.
3. **compare and decide** (:mod:`.decide`, here) -- the draft or record is read; only members
   whose MD5 differs are fetched (``datalad get``), built (ZIPs) and sent; files no longer
   listed are deleted; metadata is PUT only when it differs (:class:`Sync`).
4. **remember** (:mod:`.state`) -- StepUp's record id file and ``.datalad/rdr/zenodo.json``
   are saved; after a publish, the annexed files' Zenodo URLs are registered.

The token comes from :mod:`datalad_rdr.credentials` (the same workflow as for RDR), then from
StepUp's token file and ``REPREP_ZENODO_TOKEN``; it is marked "last used" only once Zenodo
accepted it. Everything server-specific is in :mod:`.client`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datalad.interface.results import get_status_dict
from datalad.log import log_progress

from ..credentials import Credential, CredentialError, how_to_set, obtain, realm
from ..http import Backoff
from . import state as saved_state
from .client import (MAX_BYTES, MAX_FILES, FileEntry, Forbidden, NotFound, Record, Zenodo,
                     ZenodoError)
from .config import RELATION_TYPES, ConfigError, SyncConfig, drop_empty, find_config, \
    load_config
from .decide import FilePlan, compare_versions, metadata_changes, needs_content, plan_files
from .members import (FetchError, ZenodoFile, check_limits, human_size, materialize,
                      plan_members, shown)

lgr = logging.getLogger("datalad.rdr.zenodo.sync")

ACTION = "zenodo-sync"
DEFAULT_CREDENTIAL = "zenodo"


class SyncError(Exception):
    """Something the user has to decide or fix before Zenodo can be brought up to date."""


@dataclass
class Settings:
    dry_run: bool = False
    publish: bool = False
    max_files: int = MAX_FILES
    max_bytes: int = MAX_BYTES
    data_relation: str | None = "issupplementedby"
    backoff: Backoff | None = None


class Sync:
    """One run: the config, its members, a client (None: validate only), and the results."""

    def __init__(self, ds, config: SyncConfig, client: Zenodo | None, settings: Settings):
        self.ds, self.config, self.client, self.settings = ds, config, client, settings
        self.name = config.path.relative_to(ds.path).as_posix()
        self.state = saved_state.load(ds, self.name, config.endpoint)
        self.members: list[ZenodoFile] = []
        self.sent_bytes = 0
        self.notes: list[str] = []
        self.record: Record | None = None  # the draft or record as last seen
        self.rid: str | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- helpers -------------------------------------------------------------------------
    def result(self, status: str, message, path=None, **kw) -> dict:
        return get_status_dict(action=ACTION, ds=self.ds, status=status, message=message,
                               path=str(path or self.config.path), type="file",
                               dry_run=self.settings.dry_run, **kw)

    def body(self, publication_date: str | None, with_files=True) -> dict:
        metadata = dict(self.config.metadata)
        metadata["publication_date"] = publication_date or dt.date.today().isoformat()
        doi = saved_state.data_doi(self.ds)
        relation = self.settings.data_relation
        if doi and relation:
            related = list(metadata.get("related_identifiers") or [])
            if not any(r.get("identifier", "").lower() == doi.lower() for r in related):
                related.append({"scheme": "doi", "identifier": doi,
                                "relation_type": {"id": relation},
                                "resource_type": {"id": "dataset"}})
            metadata["related_identifiers"] = related
        files = {"enabled": bool(self.members)}
        if with_files and self.members:
            files.update(order=[m.key for m in self.members],
                         default_preview=self.members[0].key)
        return {"access": self.config.access, "metadata": metadata,
                "custom_fields": self.config.custom_fields, "files": files}

    def read_record_id(self) -> str | None:
        path = self.config.path_record_id
        if not path.exists():
            return None
        rid = path.read_text().strip()
        if not rid:
            raise SyncError(f"{shown(path, self.ds)} is empty; remove it to create a new "
                            "record, or put the record id in it")
        return rid

    def write_record_id(self, rid: str) -> None:
        self.rid = rid
        if self.settings.dry_run:
            return
        path = self.config.path_record_id
        if not path.exists() or path.read_text().strip() != rid:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{rid}\n")

    # -- the run -------------------------------------------------------------------------
    def run(self) -> Iterator[dict]:
        s = self.settings
        self.members = plan_members(self.ds, self.config, self.state.get("files") or {},
                                    s.max_files, s.max_bytes)
        if self.client is None:
            yield self._validate_only()
            return
        try:
            rid = self.read_record_id()
            if rid is None:
                yield from self._first_run()
            else:
                draft = self.client.draft(rid)
                if draft is not None and not draft.is_published:
                    yield from self._refresh_draft(rid, draft)
                else:
                    yield from self._published(rid, draft)
        except (SyncError, FetchError, ZenodoError, ConfigError):
            # A draft made before the failure exists on Zenodo: remember it all the same.
            yield from self._remember()
            raise
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
        yield from self._remember()

    def _validate_only(self) -> dict:
        """Without a token: the config and the files were checked. That is all a dry run
        asks for; a real run did not do what it was asked, and says how to give a token."""
        total = sum(m.size or 0 for m in self.members)
        valid = (f"{self.name} is valid: {len(self.members)} file(s), {human_size(total)}, "
                 f"for {self.config.endpoint}")
        fix = (f"{how_to_set(DEFAULT_CREDENTIAL, self.config.endpoint)} (or StepUp's "
               "path_token file, or REPREP_ZENODO_TOKEN)")
        extra = dict(zenodo_files=[m.key for m in self.members], zenodo_body=self.body(None))
        if self.settings.dry_run:
            return self.result("ok", f"{valid}; no token, so Zenodo was not read (to sync: "
                                     f"{fix})", **extra)
        return self.result("impossible", f"{valid}; no Zenodo token for "
                           f"{realm(self.config.endpoint)}, so nothing was sent: {fix}",
                           **extra)

    def _first_run(self) -> Iterator[dict]:
        if self.settings.dry_run:
            self._materialize(self.members)
            yield from self._describe_files(FilePlan(add=list(self.members)))
            yield self.result("ok", f"would create a draft for version {self.config.version}"
                              f" on {self.config.endpoint}" +
                              (" and publish it" if self.settings.publish else ""),
                              zenodo_body=self.body(None))
            return
        self._materialize(self.members)
        body = self.body(None, with_files=False)
        draft = self.client.create_draft(body)
        rid = draft.id
        self.write_record_id(rid)
        yield from self._sync_files(rid, {})
        yield from self._sync_metadata(rid, draft, body["metadata"]["publication_date"])
        if self.settings.publish:
            yield from self._publish(rid)
        yield self._summary("created")

    def _refresh_draft(self, rid: str, draft: Record) -> Iterator[dict]:
        online = draft.files
        self.rid, self.record = rid, draft
        if not online and draft.version_index > 1:
            # A new version whose files were never imported (an interrupted run).
            concept = draft.concept_id or rid
            previous = self.client.record(self.client.latest_id(concept))
            online = yield from self._import(rid, previous)
        self._materialize(needs_content(self.members, online))
        if self.settings.dry_run:
            yield from self._describe_files(plan_files(self.members, online))
            yield from self._describe_metadata(draft, draft.publication_date)
            return
        changed = yield from self._sync_files(rid, online)
        if changed:  # deleting a file also takes it out of files.order
            draft = self.client.draft(rid) or draft
        yield from self._sync_metadata(rid, draft, draft.publication_date)
        if self.settings.publish:
            yield from self._publish(rid)
        yield self._summary("updated")

    def _published(self, rid: str, edit_draft: Record | None) -> Iterator[dict]:
        try:
            record = self.client.record(rid)
        except NotFound:
            raise SyncError(f"record {rid} (from {shown(self.config.path_record_id, self.ds)})"
                            f" is neither a draft nor a published record on "
                            f"{self.config.endpoint}; if its draft was discarded, remove that "
                            "file to create a new record") from None
        latest = self.client.latest_id(rid)
        if latest != rid:
            other = self.client.record(latest)
            if other.version != self.config.version:
                raise SyncError(
                    f"record {rid} (version {record.version}) is not the latest version "
                    f"on Zenodo; {latest} (version {other.version}) is. Update "
                    f"{shown(self.config.path_record_id, self.ds)} and metadata.version "
                    "(e.g. pull your collaborators' work)")
            self.notes.append(f"followed to the latest version {latest}")
            rid, record, edit_draft = latest, other, self.client.draft(latest)
            self.write_record_id(rid)
        self.rid, self.record = rid, record
        order = compare_versions(self.config.version, record.version)
        if order == 0:
            yield from self._same_version(rid, record, edit_draft)
        elif order is None or order > 0:
            yield from self._new_version(rid, record)
        else:
            raise SyncError(f"metadata.version {self.config.version} is older than the "
                            f"published version {record.version} of record {rid}")

    def _same_version(self, rid: str, record: Record,
                      edit_draft: Record | None) -> Iterator[dict]:
        online = record.files
        self._materialize([m for m in self.members if m.md5 is None])
        plan = plan_files(self.members, online)
        if plan.changes:
            what = [f"{m.key} changed" for m in plan.replace] + \
                   [f"{m.key} new" for m in plan.add] + \
                   [f"{k} no longer listed" for k in plan.delete]
            raise SyncError(f"version {self.config.version} is published (record {rid}) and "
                            f"its files cannot change: {', '.join(what)}. Raise "
                            "metadata.version to send them as a new version")
        for m in plan.same:
            yield self._file_result(m, "notneeded", "unchanged (published)")
        date = record.publication_date
        want = self.body(date)
        changed = metadata_changes(want, record)
        if changed and not self.settings.publish:
            yield self.result("notneeded",
                              f"the published metadata of {rid} differs from {self.name} "
                              f"({', '.join(changed)}); run with --publish to edit and "
                              "republish it", record_id=rid, changed=changed)
        elif changed and self.settings.dry_run:
            yield self.result("ok", f"would edit record {rid} ({', '.join(changed)}) and "
                                    "republish it", record_id=rid, changed=changed)
        elif changed:
            draft = edit_draft if edit_draft is not None else self.client.edit(rid)
            if metadata_changes(want, draft):
                self._check_saved(self.client.update_draft(rid, want))
            self.record = self.client.publish(rid)
            yield self.result("ok", f"republished record {rid} with new metadata "
                                    f"({', '.join(changed)})", record_id=rid)
        if not self.settings.dry_run and rid not in (self.state.get("urls_registered") or []):
            yield from self._register_urls(rid, self.record)
        yield self._summary("published")

    def _new_version(self, rid: str, record: Record) -> Iterator[dict]:
        if self.settings.dry_run:
            online = record.files
            self._materialize(needs_content(self.members, online))
            plan = plan_files(self.members, online)
            yield self.result("ok", f"would create version {self.config.version} as a new "
                              f"version of record {rid} (version {record.version}), "
                              f"importing {len(plan.same)} unchanged file(s)")
            yield from self._describe_files(plan)
            return
        draft = self.client.new_version(rid)
        new = draft.id
        self.write_record_id(new)
        self.rid, self.record = new, draft
        online = draft.files
        if not online:
            online = yield from self._import(new, record)
        yield self.result("ok", f"new version {self.config.version}: draft {new} (after "
                                f"{record.version}, record {rid})", record_id=new)
        yield from self._sync_files(new, online)
        # the new version's draft has no version and no date: its metadata differs anyway
        yield from self._sync_metadata(new, draft, draft.publication_date)
        if self.settings.publish:
            yield from self._publish(new)
        yield self._summary("new version")

    def _import(self, rid: str, previous: Record):
        """Copy the previous version's files if any are still wanted (no bytes move)."""
        before = previous.files
        self._materialize([m for m in self.members if m.md5 is None and m.key in before])
        keep = [m for m in self.members if before.get(m.key) and before[m.key].md5 == m.md5]
        if not keep:
            return {}
        if self.settings.dry_run:
            yield self.result("ok", f"would import the {len(before)} file(s) of the "
                                    f"previous version into {rid}", record_id=rid)
            return before
        self.client.import_files(rid)
        yield self.result("ok", f"imported {len(before)} file(s) of the previous version "
                                f"into {rid} (no upload)", record_id=rid)
        return before

    # -- files -------------------------------------------------------------------------
    def _materialize(self, members: list[ZenodoFile]) -> None:
        """Bring the bytes of ``members`` here, then check the limits again (a ZIP's size is
        known only once it is built)."""
        if self._tmp is None and any(m.is_zip and m.local is None for m in members):
            self._tmp = tempfile.TemporaryDirectory(prefix="zenodo-sync-")
        materialize(self.ds, members, Path(self._tmp.name) if self._tmp else None,
                    self.settings.dry_run, self.notes)
        check_limits(self.members, self.ds, self.settings.max_bytes)

    def _sync_files(self, rid: str, online: dict[str, FileEntry]) -> Iterator[dict]:
        self._materialize([m for m in needs_content(self.members, online)
                           if m.local is None])
        plan = plan_files(self.members, online)
        for key in plan.delete:
            self.client.delete_file(rid, key)
            yield self.result("ok", f"deleted {key} from draft {rid} (no longer listed)",
                              zenodo_key=key, record_id=rid)
        for m in plan.replace:
            self.client.delete_file(rid, m.key)
        self.client.init_files(rid, [m.key for m in plan.replace + plan.add])
        for m in plan.send:
            yield self._upload(rid, m, "replaced" if m in plan.replace else "uploaded")
        for m in plan.same:
            yield self._file_result(m, "notneeded", f"unchanged in draft {rid}")
        return plan.changes

    def _upload(self, rid: str, m: ZenodoFile, verb: str) -> dict:
        pid = f"zenodo-upload-{rid}-{m.key}"
        quiet = dict(noninteractive_level=logging.DEBUG)  # results say it when no bar shows
        log_progress(lgr.info, pid, "Uploading %s", m.key, label=f"Uploading {m.key}",
                     total=m.size, unit=" Bytes", **quiet)
        try:
            committed, sent_md5 = self.client.upload(
                rid, m.key, str(m.local), m.size,
                progress=lambda n: log_progress(lgr.info, pid, "Uploading %s", m.key,
                                                update=n, increment=False, **quiet))
        finally:
            log_progress(lgr.info, pid, "Uploaded %s", m.key, **quiet)
        if (committed.size, committed.md5, sent_md5) != (m.size, m.md5, m.md5):
            raise SyncError(f"{m.key}: Zenodo holds {committed.size} bytes with MD5 "
                            f"{committed.md5}, the local file is {m.size} bytes with MD5 "
                            f"{m.md5}; the file changed while it was sent, or the "
                            "transfer was corrupted. Run again")
        self.sent_bytes += m.size
        return self._file_result(m, "ok", f"{verb} in draft {rid} ({human_size(m.size)}, "
                                          f"md5:{m.md5})", bytes=m.size)

    def _file_result(self, m: ZenodoFile, status: str, message: str, **kw) -> dict:
        return self.result(status, f"{m.key}: {message}", path=m.path, zenodo_key=m.key,
                           md5=m.md5, **kw)

    def _describe_files(self, plan: FilePlan) -> Iterator[dict]:
        for key in plan.delete:
            yield self.result("ok", f"would delete {key} (no longer listed)", zenodo_key=key)
        for m in plan.send:
            verb = "replace" if m in plan.replace else "upload"
            yield self._file_result(m, "ok", f"would {verb} ({human_size(m.size)})")
        for m in plan.same:
            yield self._file_result(m, "notneeded", "unchanged")
        for note in self.notes:
            yield self.result("ok", note)
        self.notes = []

    # -- metadata, publishing, URLs -----------------------------------------------------------
    def _sync_metadata(self, rid: str, draft: Record, date: str | None) -> Iterator[dict]:
        want = self.body(date)
        changed = metadata_changes(want, draft or {})
        if not changed:
            yield self.result("notneeded", f"metadata of draft {rid} unchanged",
                              record_id=rid)
            return
        saved = self.client.update_draft(rid, want)
        self.record = saved
        yield self.result("ok", f"metadata of draft {rid} updated ({', '.join(changed)})"
                          + self._check_saved(saved), record_id=rid, changed=changed)

    def _check_saved(self, saved: Record) -> str:
        """Zenodo saves a draft with what is valid and lists the rest: say so."""
        if not saved.problems:
            return ""
        listed = "; ".join(saved.problems)
        if self.settings.publish:
            raise SyncError(f"Zenodo did not accept the metadata: {listed}")
        return f"; Zenodo reports (publishing will fail until fixed): {listed}"

    def _describe_metadata(self, draft: Record, date: str | None) -> Iterator[dict]:
        changed = metadata_changes(self.body(date), draft)
        yield self.result("ok" if changed else "notneeded",
                          f"would update metadata ({', '.join(changed)})" if changed
                          else "metadata unchanged", changed=changed)
        if self.settings.publish:
            yield self.result("ok", f"would publish draft {self.rid}")

    def _publish(self, rid: str) -> Iterator[dict]:
        record = self.client.publish(rid)
        self.record = record
        yield self.result("ok", f"published version {self.config.version}: record {rid}, "
                                f"DOI {record.doi} (all versions: {record.concept_doi})",
                          record_id=rid, doi=record.doi, concept_doi=record.concept_doi)
        yield from self._register_urls(rid, record)

    def _register_urls(self, rid: str, record: Record) -> Iterator[dict]:
        """Tell git-annex where Zenodo serves each annexed file sent as itself (web remote),
        so that clones can ``datalad get`` it from there."""
        entries = record.files
        by_repo: dict[Path, list[tuple[str, str]]] = {}
        for m in self.members:
            entry = entries.get(m.key)
            if m.annex_key is None or entry is None or entry.md5 != m.md5:
                continue
            url = entry.content_url or self.client.content_url(rid, m.key)
            by_repo.setdefault(m.repo, []).append((m.annex_key, url))
        for repo, pairs in by_repo.items():
            refused = saved_state.register_urls(repo, pairs)
            if refused:
                yield self.result("error", f"git annex registerurl failed in {repo}: "
                                           f"{refused}")
                continue
            yield self.result("ok", f"registered the Zenodo URLs of {len(pairs)} annexed "
                                    f"file(s) of record {rid}", record_id=rid)
        self.state.setdefault("urls_registered", [])
        if rid not in self.state["urls_registered"]:
            self.state["urls_registered"].append(rid)

    # -- remember ---------------------------------------------------------------------
    def _summary(self, what: str) -> dict:
        record = self.record
        published = bool(record and record.is_published)
        where = (f"record {self.rid} (version {self.config.version}, "
                 f"{'published' if published else 'draft'})")
        if self.client.changed:
            message = f"{what}: {where}, {human_size(self.sent_bytes)} sent"
        else:  # "updated ..., 0 bytes sent" read as if something had been done
            message = f"{where} is up to date: nothing changed, nothing sent"
        if self.notes:
            message += "; " + "; ".join(self.notes)
        return self.result("ok", message, record_id=self.rid,
                           concept_id=record.concept_id if record else None,
                           doi=record.doi if record else None,
                           concept_doi=record.concept_doi if record else None,
                           bytes_sent=self.sent_bytes, url=record.url if record else None)

    def _remember(self) -> Iterator[dict]:
        if self.settings.dry_run or self.rid is None:
            return
        record = self.record
        published = bool(record and record.is_published)
        state = dict(self.state)
        state.update(endpoint=self.config.endpoint, record_id=self.rid,
                     concept_id=(record and record.concept_id) or state.get("concept_id"),
                     version=self.config.version, state="published" if published else "draft",
                     url=record.url if record else None)
        doi = record.doi if record else None
        state["concept_doi"] = (record and record.concept_doi) or state.get("concept_doi")
        versions = {v["record_id"]: v for v in state.get("versions") or []}
        versions[self.rid] = {"record_id": self.rid, "version": self.config.version,
                              "doi": doi, "state": state["state"]}
        state["versions"] = sorted(versions.values(), key=lambda v: int(v["record_id"])
                                   if v["record_id"].isdigit() else 0)
        state["doi"] = doi
        state["files"] = {m.key: drop_empty(
            md5=m.md5, size=m.size, path=shown(m.path, self.ds), annex_key=m.annex_key,
            zip_of=shown(m.source, self.ds) if m.is_zip else None,
            fingerprint=m.fingerprint) for m in self.members}
        failed = saved_state.save(
            self.ds, self.name, state, [self.config.path_record_id],
            f"[DATALAD RDR] zenodo-sync: record {self.rid} (version {self.config.version}, "
            f"{state['state']})")
        for r in failed:
            yield self.result("error", f"datalad save failed: {r.get('message')}",
                              path=r.get("path"))


def _config_int(ds, name: str, default: int) -> int:
    value = ds.config.get(f"datalad.rdr.zenodo.{name}")
    try:
        return int(value) if value is not None else default
    except ValueError:
        raise ConfigError([f"datalad.rdr.zenodo.{name} = {value!r}: not a number"],
                          "git config") from None


def settings_from(ds, dry_run: bool, publish: bool) -> Settings:
    relation = ds.config.get("datalad.rdr.zenodo.data-relation", "issupplementedby")
    if relation and relation.lower() in ("none", "no", "off", ""):
        relation = None
    elif relation and relation not in RELATION_TYPES:
        raise ConfigError([f"datalad.rdr.zenodo.data-relation = {relation!r}: not a "
                           "relation type"], "git config")
    return Settings(dry_run=dry_run, publish=publish,
                    max_files=_config_int(ds, "max-files", MAX_FILES),
                    max_bytes=_config_int(ds, "max-bytes", MAX_BYTES),
                    data_relation=relation)


def find_token(ds, config: SyncConfig, credential: str | None = None) -> Credential | None:
    """The Zenodo token: the credential manager (as for RDR, default name ``zenodo``), then
    StepUp's token file (``path_token``, ``REPREP_PATH_ZENODO_TOKEN``), then
    ``REPREP_ZENODO_TOKEN``. None: validate only."""
    try:
        return obtain(ds.config, config.endpoint, credential, DEFAULT_CREDENTIAL)
    except CredentialError as exc:
        if credential:  # a credential asked for by name must not be replaced by another
            raise SyncError(str(exc)) from None
    token_file = os.environ.get("REPREP_PATH_ZENODO_TOKEN") or config.path_token
    if token_file:
        path = Path(os.path.expanduser(str(token_file)))
        if not path.is_absolute():
            path = config.base / path
        if path.is_file():
            secret = path.read_text().strip()
            if secret:
                return Credential(None, secret, f"token file {path}")
    secret = os.environ.get("REPREP_ZENODO_TOKEN", "").strip()
    if secret:
        return Credential(None, secret, "REPREP_ZENODO_TOKEN")
    return None


def _refused(exc: Forbidden, token: Credential, config: SyncConfig) -> str:
    """A 401/403 with what to check: Zenodo runs a request with an unknown token as
    anonymous, so a wrong token shows as "Permission denied" on the first draft read."""
    return (f"{exc}. Zenodo refused the token from {token.source} for {config.endpoint}: "
            "check that it is a valid personal access token of that server with the scopes "
            "deposit:write and deposit:actions, and that its owner owns the record "
            f"(to replace it: "
            f"{how_to_set(token.name or DEFAULT_CREDENTIAL, config.endpoint)})")


def sync(ds, config_path: Path | None, paths=(), *, description: Path | None = None,
         dry_run: bool = False, publish: bool = False,
         credential: str | None = None) -> Iterator[dict]:
    """Bring the Zenodo record of ``ds``'s zenodo.yaml up to date; yield result records."""
    where = str(config_path or ds.path)
    token = None
    try:
        config_path = Path(config_path) if config_path else find_config(Path(ds.path))
        where = str(config_path.absolute())
        if Path(ds.path) not in config_path.absolute().parents:
            raise ConfigError([f"{config_path} is not inside the dataset {ds.path}"],
                              "zenodo-sync")
        config = load_config(config_path, paths, description)
        settings = settings_from(ds, dry_run, publish)
        token = find_token(ds, config, credential)
        client = None
        if token is not None:
            client = Zenodo(config.endpoint, token.secret, backoff=settings.backoff)
        yield from Sync(ds, config, client, settings).run()
        if client is not None and client.token_accepted:
            token.mark_used()
    except ConfigError as exc:
        yield get_status_dict(action=ACTION, ds=ds, path=where, type="file",
                              status="impossible", message=str(exc),
                              problems=exc.problems)
    except Forbidden as exc:
        yield get_status_dict(action=ACTION, ds=ds, path=where, type="file",
                              status="error", message=_refused(exc, token, config))
    except (SyncError, FetchError, ZenodoError) as exc:
        yield get_status_dict(action=ACTION, ds=ds, path=where, type="file",
                              status="error", message=str(exc))

"""Drafts and records: create, save, edit, publish, new versions, listings."""

from __future__ import annotations

import copy
import uuid
from urllib.parse import urlencode

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from .answers import ApiError, json_response, no_pid, validation_error
from .model import Parent, Record, Snapshot
from .validation import load_record_input, publish_problems


class RecordEndpoints:
    """Mixed into InvenioSandbox: drafts and records."""

    @staticmethod
    def _latest_published(parent: Parent) -> Record | None:
        published = [r for r in parent.versions if r.published is not None]
        return published[-1] if published else None

    def _apply_files_options(self, snap: Snapshot, files_in: dict, errors: list,
                             on_update: bool) -> None:
        enabled = files_in.get("enabled", True)
        if enabled is not snap.files_enabled:
            # Zenodo: RDM_ALLOW_METADATA_ONLY_RECORDS = False, so users may not toggle.
            errors.append({"field": "files.enabled",
                           "messages": ["You don't have permissions to manage files "
                                        "options."]})
            return
        if not on_update:
            return  # creating a draft only takes files.enabled
        if snap.files_enabled and not snap.files:
            errors.append({"field": "files.enabled",
                           "messages": ["Missing uploaded files."]})
        preview = files_in.get("default_preview") or None
        if preview is not None and preview not in snap.files:
            errors.append({"field": "files.default_preview",
                           "messages": [f'No file with key "{preview}"']})
        else:
            snap.default_preview = preview
        order = files_in.get("order")
        if order is not None:
            missing = [k for k in order if k not in snap.files]
            if missing:
                errors.append({"field": "files.order",
                               "messages": [f'File with key "{missing[0]}" does not '
                                            "exist"]})
            else:
                snap.order = list(order)

    def create_draft(self, request):
        user = self._require_user(request)
        body = self._body(request)
        if not isinstance(body, dict):
            raise validation_error([{"field": "_schema", "messages": ["Invalid input type."]}])
        data, errors = load_record_input(body)
        parent = Parent(self._next_id(), user)
        record = Record(self._next_id(), parent, 1)
        snap = Snapshot(data["metadata"], data["access"], data["custom_fields"])
        self._apply_files_options(snap, data["files"], errors, on_update=False)
        record.draft = snap
        parent.versions.append(record)
        self.parents[parent.id] = parent
        self.records[record.id] = record
        return self._answer(request, self._record_json(request, record, snap, True, errors),
                            201, snap.revision_id)

    def read_draft(self, request, rid):
        record = self._owned(request, rid)
        if record.draft is None:
            raise no_pid()  # DraftNotCreatedError
        return self._answer(request, self._record_json(request, record, record.draft, True),
                            etag=record.draft.revision_id)

    def update_draft(self, request, rid):
        record, snap = self._draft_of(request, rid)
        if_match = request.headers.get("If-Match")
        if if_match is not None:
            wanted = if_match.strip().strip('"')
            if wanted != str(snap.revision_id):
                raise ApiError(412, f"Revision id provided({wanted}) doesn't match "
                                    f"record's one({snap.revision_id}).")
        body = self._body(request)
        if not isinstance(body, dict):
            raise validation_error([{"field": "_schema", "messages": ["Invalid input type."]}])
        data, errors = load_record_input(body)
        snap.metadata, snap.access = data["metadata"], data["access"]
        snap.custom_fields = data["custom_fields"]
        self._apply_files_options(snap, data["files"], errors, on_update=True)
        snap.touch()
        return self._answer(request, self._record_json(request, record, snap, True, errors),
                            etag=snap.revision_id)

    def edit(self, request, rid):
        record = self._owned(request, rid)
        if record.draft is None:
            pub = self._published(record)
            draft = copy.copy(pub)
            draft.files = self._copy_files(pub.files)
            draft.metadata = copy.deepcopy(pub.metadata)
            draft.access = copy.deepcopy(pub.access)
            draft.custom_fields = copy.deepcopy(pub.custom_fields)
            draft.order = list(pub.order)
            draft.bucket_id = str(uuid.uuid4())
            draft.locked = True  # RDM_LOCK_EDIT_PUBLISHED_FILES: changing files = new version
            record.draft = draft
        return self._answer(request, self._record_json(request, record, record.draft, True),
                            201, record.draft.revision_id)

    def delete_draft(self, request, rid):
        record, snap = self._draft_of(request, rid)
        self._drop_snapshot(snap)
        record.draft = None
        if record.published is None:  # never published: the version disappears
            parent = record.parent
            parent.versions.remove(record)
            del self.records[record.id]
            if not parent.versions:
                del self.parents[parent.id]
        return Response(status=204)

    def publish(self, request, rid):
        record, snap = self._draft_of(request, rid)
        errors = publish_problems(snap)
        if errors:
            raise validation_error(errors)
        if snap.files_enabled and not snap.files:
            raise validation_error([{"field": "files.enabled", "messages": [
                "Missing uploaded files. To disable files for this record please mark "
                "it as metadata-only."]}])
        if any(not f.committed for f in snap.files.values()):
            raise validation_error([{"field": "files", "messages": [
                "One or more files have not completed their transfer, please wait."]}])
        if not snap.metadata.get("publisher"):
            raise validation_error([{"field": "metadata.publisher", "messages": [
                "Missing publisher field required for DOI registration."]}])
        parent = record.parent
        if record.doi is None:
            record.doi = self._doi(record.id)
        if parent.doi is None:
            parent.doi = self._doi(parent.id)
        if record.published is not None:
            self._drop_snapshot(record.published)
            snap.revision_id = max(snap.revision_id, record.published.revision_id)
        snap.locked = True
        snap.touch()
        record.published, record.draft = snap, None
        return self._answer(request, self._record_json(request, record, snap, False), 202,
                            snap.revision_id)

    def reserve_doi(self, request, rid):
        record, snap = self._draft_of(request, rid)
        if record.doi is not None:
            raise ApiError(400, "A PID already exists for type doi")
        record.doi = self._doi(record.id)
        snap.touch()
        return self._answer(request, self._record_json(request, record, snap, True), 201,
                            snap.revision_id)

    def read_record(self, request, rid):
        record = self._record(rid)
        snap = self._published(record)
        return self._answer(request, self._record_json(request, record, snap, False),
                            etag=snap.revision_id)

    def new_version(self, request, rid):
        record = self._owned(request, rid)
        self._published(record)
        parent = record.parent
        last = parent.versions[-1]
        if last.published is None:  # the next version's draft exists: return it
            return self._answer(request, self._record_json(request, last, last.draft, True),
                                201, last.draft.revision_id)
        base = self._latest_published(parent).published
        metadata = {k: copy.deepcopy(v) for k, v in base.metadata.items()
                    if k not in ("publication_date", "version")}
        snap = Snapshot(metadata, copy.deepcopy(base.access),
                        copy.deepcopy(base.custom_fields), files_enabled=base.files_enabled)
        new = Record(self._next_id(), parent, last.index + 1, draft=snap)
        parent.versions.append(new)
        self.records[new.id] = new
        return self._answer(request, self._record_json(request, new, snap, True), 201,
                            snap.revision_id)

    def import_files(self, request, rid):
        record, snap = self._draft_of(request, rid)
        latest = self._latest_published(record.parent)
        if latest is None:
            raise ApiError(404, "Not found.")
        if not snap.files_enabled:
            raise validation_error([{"field": "files.enabled",
                                      "messages": ["Files support must be enabled."]}])
        if snap.files:
            raise validation_error([{"field": "files.enabled",
                                      "messages": ["Please remove all files first."]}])
        if not latest.published.files_enabled:
            raise validation_error([{"field": "files.enabled",
                                      "messages": ["The record has no files."]}])
        snap.files = self._copy_files(latest.published.files)
        snap.touch()
        return json_response(self._files_json(request, record, snap, list(snap.files.values())),
                     201)

    def list_versions(self, request, rid):
        record = self._record(rid)
        versions = [r for r in reversed(record.parent.versions) if r.published is not None]
        page, size = self._paging(request)
        hits = [self._record_json(request, r, r.published, False)
                for r in versions[(page - 1) * size: page * size]]
        links = self._page_links(request, f"/api/records/{rid}/versions", page, size,
                                 len(versions))
        return self._answer_list(request, hits, len(versions), links, "version")

    def latest(self, request, rid):
        parent = self.parents.get(rid)  # the concept (parent) id resolves too
        if parent is None:
            parent = self._record(rid).parent
            self._published(self._record(rid))
        latest = self._latest_published(parent)
        if latest is None:
            raise ApiError(404, "The persistent identifier is not registered.")
        location = f"{self._base(request)}/api/records/{latest.id}"
        resp = json_response({"status": 301, "message": "Redirecting...", "location": location},
                     301)
        resp.headers["Location"] = location
        return resp

    def user_records(self, request):
        user = self._require_user(request)
        allversions = request.args.get("allversions", "").lower() in ("1", "true", "yes")
        items = []
        for parent in self.parents.values():
            if parent.owner != user:
                continue
            for record in reversed(parent.versions):
                if not allversions and record is not parent.versions[-1]:
                    continue
                is_draft = record.draft is not None
                snap = record.draft if is_draft else record.published
                items.append((record, snap, is_draft))
        items.sort(key=lambda item: item[1].updated, reverse=True)  # "newest"
        page, size = self._paging(request)
        hits = [self._record_json(request, r, s, d)
                for r, s, d in items[(page - 1) * size: page * size]]
        links = self._page_links(request, "/api/user/records", page, size, len(items))
        return self._answer_list(request, hits, len(items), links, "newest")

    def _paging(self, request: Request) -> tuple[int, int]:
        try:
            page = int(request.args.get("page", 1))
            size = int(request.args.get("size", 10))
        except ValueError:
            raise ApiError(400, "Invalid querystring parameters.") from None
        if page < 1 or size < 1 or size > self.settings.max_page_size:
            raise ApiError(400, "Invalid querystring parameters.")
        return page, size

    def _page_links(self, request, path: str, page: int, size: int, total: int) -> dict:
        url = f"{self._base(request)}{path}?"
        links = {"self": url + urlencode({"page": page, "size": size})}
        if page > 1:
            links["prev"] = url + urlencode({"page": page - 1, "size": size})
        if page * size < total:
            links["next"] = url + urlencode({"page": page + 1, "size": size})
        return links


RULES = [
    Rule("/api/records", methods=["POST"], endpoint="create_draft"),
    Rule("/api/records/<rid>", methods=["GET"], endpoint="read_record"),
    Rule("/api/records/<rid>/draft", methods=["GET"], endpoint="read_draft"),
    Rule("/api/records/<rid>/draft", methods=["PUT"], endpoint="update_draft"),
    Rule("/api/records/<rid>/draft", methods=["POST"], endpoint="edit"),
    Rule("/api/records/<rid>/draft", methods=["DELETE"], endpoint="delete_draft"),
    Rule("/api/records/<rid>/draft/actions/publish", methods=["POST"],
         endpoint="publish"),
    Rule("/api/records/<rid>/draft/actions/files-import", methods=["POST"],
         endpoint="import_files"),
    Rule("/api/records/<rid>/draft/pids/doi", methods=["POST"], endpoint="reserve_doi"),
    Rule("/api/records/<rid>/versions", methods=["POST"], endpoint="new_version"),
    Rule("/api/records/<rid>/versions", methods=["GET"], endpoint="list_versions"),
    Rule("/api/records/<rid>/versions/latest", methods=["GET"], endpoint="latest"),
    Rule("/api/user/records", methods=["GET"], endpoint="user_records"),
]

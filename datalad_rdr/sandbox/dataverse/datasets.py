"""Datasets and their versions: create, view and list, edit the metadata, the JSON of a version
and its files.
"""

from __future__ import annotations

import json
import secrets
import string

from werkzeug.routing import Rule

from .. import metadatablocks as mb
from .answers import TOUA_INVALID, ApiError, ok
from .model import Dataset, FileMetadata, Version, type_class, version_tuple


class DatasetEndpoints:
    """Mixed into DataverseSandbox: datasets, their versions and metadata."""

    def create_dataset(self, request, alias):
        user = self.require_user(request)
        if alias not in (self.settings.collection, "root"):
            raise ApiError(404, f"Can't find dataverse with identifier='{alias}'")
        if user == self.settings.other_token:
            raise ApiError(403, f"User @stranger is not permitted to perform requested "
                                f"action. Can not execute command CreateNewDatasetCommand "
                                f"on dataverse {alias}.")
        try:
            body = json.loads(request.get_data() or b"null")
            version_json = body["datasetVersion"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, "Error parsing Json: malformed dataset JSON") from None
        if body.get("files") or version_json.get("files"):
            if not self.is_super(user):
                raise ApiError(400, "You may not add files via this api.")
        fields, blocks = self._read_blocks(version_json.get("metadataBlocks", {}))
        self._validate(fields, blocks, alias)
        license_, terms = self._read_license(version_json)
        # A dataset created through the API always allows access requests
        # (Dataverses.createDataset), whatever the JSON says.
        ds = Dataset(self.next_id(), self._new_identifier(), alias, user,
                     [Version(self.next_id(), fields, blocks, license_, terms,
                              terms_of_access=version_json.get("termsOfAccess"))])
        self.datasets[ds.id] = ds
        return ok({"id": ds.id, "persistentId": self.pid(ds)}, status=201)

    def _new_identifier(self) -> str:
        alphabet = string.ascii_uppercase + string.digits
        existing = {ds.identifier for ds in self.datasets.values()}
        while True:
            ident = self.settings.shoulder + "".join(secrets.choice(alphabet) for _ in range(6))
            if ident not in existing:
                return ident

    @staticmethod
    def _read_blocks(blocks_json: dict) -> tuple[dict, dict]:
        fields, blocks = {}, {}
        for name, block in blocks_json.items():
            entries = {f["typeName"]: f for f in block.get("fields", [])}
            if name == "citation":
                fields = entries
            else:
                blocks[name] = entries
        return fields, blocks

    def _read_license(self, version_json: dict) -> tuple[dict | None, dict | None]:
        lic = version_json.get("license")
        terms = version_json.get("termsOfUse")
        if isinstance(lic, dict):
            found = self.find_license(lic.get("name"), lic.get("uri"))
            if found is None:
                raise ApiError(400, f"Invalid license: {lic.get('uri') or lic.get('name')}")
            return {"name": found[0], "uri": found[1]}, None
        if terms:
            return None, {"termsOfUse": terms}
        return None, None

    def dataset_json(self, ds: Dataset, version: Version, user) -> dict:
        data = {
            "id": ds.id,
            "identifier": ds.identifier,
            "persistentUrl": f"https://doi.org/{self.settings.authority}/{ds.identifier}",
            "protocol": "doi",
            "authority": self.settings.authority,
            "publisher": "RDR sandbox",
            "storageIdentifier": f"{self.settings.store_id}://{self.settings.authority}/"
                                 f"{ds.identifier}",
            "latestVersion": self.version_json(ds, version),
        }
        if ds.released:
            data["publicationDate"] = ds.released[0].release_time[:10]
        return data

    def version_json(self, ds: Dataset, v: Version) -> dict:
        data = {
            "id": v.id,
            "datasetId": ds.id,
            "datasetPersistentId": self.pid(ds),
            "storageIdentifier": f"{self.settings.store_id}://{self.settings.authority}/"
                                 f"{ds.identifier}",
            "versionState": v.state,
            "latestVersionPublishingState": ds.latest.state,
            "lastUpdateTime": v.last_update,
            "createTime": ds.created,
            "fileAccessRequest": v.access_request,
            "metadataBlocks": {
                "citation": {"displayName": "Citation Metadata", "name": "citation",
                             "fields": list(v.fields.values())},
                **{name: {"displayName": name, "name": name, "fields": list(f.values())}
                   for name, f in v.blocks.items()},
            },
            "files": [self.filemeta_json(fm, v) for fm in v.files],
        }
        if v.state == "RELEASED":
            data.update(versionNumber=v.major, versionMinorNumber=v.minor,
                        releaseTime=v.release_time)
        if v.license:
            data["license"] = dict(v.license)
        if v.terms:
            data.update(v.terms)
        if v.terms_of_access:
            data["termsOfAccess"] = v.terms_of_access
        return data

    def filemeta_json(self, fm: FileMetadata, v: Version) -> dict:
        df = fm.datafile
        data_file = {
            "id": df.id, "persistentId": "", "filename": fm.label,
            "contentType": df.content_type, "friendlyType": df.content_type,
            "filesize": df.filesize, "description": fm.description,
            "categories": fm.categories, **self.embargo_field(df),
            "storageIdentifier": df.storage_identifier,
            "rootDataFileId": -1,
            "checksum": {"type": df.checksum_type, "value": df.checksum_value},
            "tabularData": False, "creationDate": df.creation_date[:10],
            "fileAccessRequest": v.access_request,
        }
        if df.checksum_type == "MD5":
            data_file["md5"] = df.checksum_value
        if fm.directory_label:
            data_file["directoryLabel"] = fm.directory_label
        data = {"description": fm.description, "label": fm.label,
                "restricted": fm.restricted, "version": 1, "datasetVersionId": v.id,
                "categories": fm.categories, "dataFile": data_file}
        if fm.directory_label:
            data["directoryLabel"] = fm.directory_label
        return data

    def select_version(self, ds: Dataset, spec: str, user) -> Version:
        can_edit = self.can_edit(user, ds)
        if spec == ":draft":
            if ds.draft is None or not can_edit:
                raise ApiError(404, f"Dataset version {spec} of dataset {ds.id} not found")
            return ds.draft
        if spec == ":latest":
            if ds.draft is not None and can_edit:
                return ds.draft
            if ds.released:
                return ds.released[-1]
        elif spec == ":latest-published" and ds.released:
            return ds.released[-1]
        else:
            for v in ds.released:
                if spec in (f"{v.major}.{v.minor}", str(v.major)) and v.minor is not None:
                    if spec == f"{v.major}.{v.minor}" or v.minor == 0:
                        return v
        raise ApiError(404, f"Dataset version {spec} of dataset {ds.id} not found")

    def dataset_view(self, request, dsid):
        user = self.user(request)
        ds = self.find_dataset(request, dsid)
        data = self.dataset_json(ds, self.select_version(ds, ":latest", user), user)
        owners = request.args.get("returnOwners", "").lower() == "true"
        if owners and version_tuple(self.settings.version) >= (6, 1):  # JsonPrinter, 6.1+
            data["isPartOf"] = {"type": "DATAVERSE", "identifier": ds.collection,
                                "isReleased": True, "displayName": ds.collection}
        return ok(data)

    def versions_list(self, request, dsid):
        user = self.user(request)
        ds = self.find_dataset(request, dsid)
        visible = [v for v in reversed(ds.versions)
                   if v.state == "RELEASED" or self.can_edit(user, ds)]
        return ok([self.version_json(ds, v) for v in visible], totalCount=len(visible))

    def version_view(self, request, dsid, version):
        user = self.user(request)
        ds = self.find_dataset(request, dsid)
        return ok(self.version_json(ds, self.select_version(ds, version, user)))

    def version_files(self, request, dsid, version):
        user = self.user(request)
        ds = self.find_dataset(request, dsid)
        v = self.select_version(ds, version, user)
        files = [self.filemeta_json(fm, v) for fm in v.files]
        offset = int(request.args.get("offset", 0))
        limit = request.args.get("limit")
        page = files[offset:offset + int(limit)] if limit else files[offset:]
        return ok(page, totalCount=len(files))

    def user_permissions(self, request, dsid):
        """``GET /api/datasets/{id}/userPermissions`` (Datasets.java, 6.1+): what the caller
        may do. With ``review`` set, a depositor edits but only curators publish."""
        user = self.require_user(request)
        ds = self.find_dataset(request, dsid)
        edit = self.can_edit(user, ds)
        return ok({"canViewUnpublishedDataset": edit, "canEditDataset": edit,
                   "canPublishDataset": self.can_publish(user, ds),
                   "canManageDatasetPermissions": edit,
                   "canDeleteDatasetDraft": edit})

    def _editable(self, request, dsid, editing: bool = True) -> tuple[Dataset, str]:
        user = self.require_user(request)
        ds = self.find_dataset(request, dsid)
        if not self.can_edit(user, ds):
            raise ApiError(403, "User is not permitted to perform requested action. Can "
                                "not execute command UpdateDatasetVersionCommand on "
                                f"dataset {ds.id}.")
        if editing:
            self._check_review_lock(ds, user)
        return ds, user

    def _check_review_lock(self, ds: Dataset, user) -> None:
        # The InReview lock is no lock for curators (PermissionServiceBean).
        if (any(lock["lockType"] == "InReview" for lock in ds.locks)
                and not self.can_publish(user, ds)):
            raise ApiError(403, "Dataset cannot be edited due to In Review dataset lock.")

    def edit_metadata(self, request, dsid):
        ds, _ = self._editable(request, dsid)
        try:
            body = json.loads(request.get_data())
        except ValueError:
            raise ApiError(400, "Error parsing Json: malformed body") from None
        updates = body.get("fields", [body])
        replace = request.args.get("replace", "").lower() == "true"
        if any(not upd.get("typeName") for upd in updates):
            raise ApiError(400, "Error parsing Json: field without typeName")
        self._parse_check(updates)
        draft = self.editable_draft(ds)
        before = json.loads(json.dumps([draft.fields, draft.blocks]))
        for upd in updates:
            name = upd.get("typeName")
            block = self._block_of(name, draft)
            current = block.get(name)
            if current is None or replace or not current.get("value"):
                block[name] = {**(current or {"typeName": name, "multiple":
                                              isinstance(upd.get("value"), list),
                                              "typeClass": type_class(upd.get("value"))}),
                               "value": upd.get("value")}
            elif isinstance(current.get("value"), list):
                current["value"] = current["value"] + list(upd.get("value") or [])
            else:
                draft.fields, draft.blocks = before
                raise ApiError(400, f"You may not add data to a field that already has "
                                    f"data and does not allow multiples. Use "
                                    f"replace=true to replace existing data ({name})")
        try:
            self._validate(draft.fields, draft.blocks, ds.collection)
        except ApiError:
            draft.fields, draft.blocks = before  # the update command rolls back
            raise
        return ok(self.version_json(ds, draft))

    def _block_of(self, name: str, version: Version) -> dict:
        found = mb.find_type(self.metadata_types(), name)
        if found and found[0] != "citation":
            return version.blocks.setdefault(found[0], {})
        for block in version.blocks.values():
            if name in block:
                return block
        return version.fields

    def replace_draft_version(self, request, dsid):
        ds, _ = self._editable(request, dsid)
        try:
            body = json.loads(request.get_data())
        except ValueError:
            raise ApiError(400, "Error parsing Json: malformed body") from None
        fields, blocks = self._read_blocks(body.get("metadataBlocks", {}))
        self._validate(fields, blocks, ds.collection)
        license_, terms = self._read_license(body)
        draft = self.editable_draft(ds)
        # The terms are replaced by the parsed ones, where a missing fileAccessRequest is
        # false (JsonParser.parseDatasetVersion), and checked before the update.
        access_request = body.get("fileAccessRequest", False) is True
        terms_of_access = body.get("termsOfAccess")
        before = draft.access_request, draft.terms_of_access
        draft.access_request, draft.terms_of_access = access_request, terms_of_access
        if not draft.terms_valid():
            draft.access_request, draft.terms_of_access = before
            raise ApiError(409, TOUA_INVALID)
        draft.fields, draft.blocks = fields, blocks
        draft.license, draft.terms = license_, terms
        return ok(self.version_json(ds, draft))

    def semantic_metadata(self, request, dsid):
        ds, _ = self._editable(request, dsid)
        if not request.content_type or "ld+json" not in request.content_type:
            raise ApiError(415, "Unsupported Media Type")
        body = json.loads(request.get_data() or b"{}")
        value = body.get("http://schema.org/license") or body.get("schema:license")
        draft = self.editable_draft(ds)
        if value is not None:
            found = self.find_license(value, value)
            if found is None:
                raise ApiError(400, "Invalid license")
            draft.license, draft.terms = {"name": found[0], "uri": found[1]}, None
        return ok({"id": ds.id, "persistentId": self.pid(ds)})


RULES = [
    Rule("/api/dataverses/<alias>/datasets", endpoint="create_dataset", methods=["POST"]),
    Rule("/api/datasets/<dsid>", endpoint="dataset_view", methods=["GET"]),
    Rule("/api/datasets/<dsid>/", endpoint="dataset_view", methods=["GET"]),
    Rule("/api/datasets/<dsid>/versions", endpoint="versions_list", methods=["GET"]),
    Rule("/api/datasets/<dsid>/versions/<version>", endpoint="version_view",
         methods=["GET"]),
    Rule("/api/datasets/<dsid>/versions/:draft", endpoint="replace_draft_version",
         methods=["PUT"]),
    Rule("/api/datasets/<dsid>/versions/<version>/files", endpoint="version_files",
         methods=["GET"]),
    Rule("/api/datasets/<dsid>/editMetadata", endpoint="edit_metadata", methods=["PUT"]),
    Rule("/api/datasets/<dsid>/metadata", endpoint="semantic_metadata", methods=["PUT"]),
    Rule("/api/datasets/<dsid>/userPermissions", endpoint="user_permissions",
         methods=["GET"]),
]

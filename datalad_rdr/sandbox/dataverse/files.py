"""Files of a draft: delete, restrict, change their metadata; cleanStorage."""

from __future__ import annotations

import json

from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from .answers import TOUA_INVALID, ApiError, ok, ok_message
from .model import Dataset, FileMetadata, Version, as_bool, clean_directory
from .settings import STORED_NAME


class FileEndpoints:
    """Mixed into DataverseSandbox: the ``/api/files/{id}`` edits and ``cleanStorage``."""

    def _editable_file(self, request, fid) -> tuple[Dataset, Version, FileMetadata]:
        user = self.require_user(request)
        ds, _ = self.find_filemeta(fid)
        if not self.can_edit(user, ds):
            raise ApiError(403, "User is not permitted to perform requested action.")
        self._check_review_lock(ds, user)
        draft = self.editable_draft(ds)
        fm = next((f for f in draft.files if f.datafile.id == int(fid)), None)
        if fm is None:
            raise ApiError(400, f"Could not find datafile with id {fid}")
        return ds, draft, fm

    def delete_file(self, request, fid):
        ds, draft, fm = self._editable_file(request, fid)
        draft.files.remove(fm)
        return ok(self._forget(fm.datafile))

    def delete_files(self, request, dsid):
        ds, _ = self._editable(request, dsid)
        try:
            ids = [int(i) for i in json.loads(request.get_data())]
        except (ValueError, TypeError):
            raise ApiError(400, "Error parsing Json: expected an array of file ids") from None
        draft = self.editable_draft(ds)
        by_id = {fm.datafile.id: fm for fm in draft.files}
        if any(i not in by_id for i in ids):
            raise ApiError(400, "Some files listed are not present in the latest dataset "
                                "version and cannot be deleted.")
        for i in ids:
            draft.files.remove(by_id[i])
            self._forget(by_id[i].datafile)
        return ok_message(f"{len(ids)} files deleted successfully")

    def restrict(self, request, fid):
        ds, draft, fm = self._editable_file(request, fid)
        raw = request.get_data(as_text=True).strip()
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, f"Unable to parse restrict value: {raw}") from None
        wanted = as_bool(body.get("restrict") if isinstance(body, dict) else body)
        if fm.restricted == wanted:
            state = "restricted" if wanted else "unrestricted"
            raise ApiError(400, f"Problem trying to update restriction status on "
                                f"{fm.label}: File {fm.label} is already {state}")
        before = fm.restricted, draft.access_request, draft.terms_of_access
        fm.restricted = wanted
        if isinstance(body, dict) and "enableAccessRequest" in body:
            draft.access_request = as_bool(body["enableAccessRequest"])
        if isinstance(body, dict) and "termsOfAccess" in body:
            draft.terms_of_access = body["termsOfAccess"]
        if not draft.terms_valid():
            # The UpdateDatasetVersionCommand after the restriction fails (Files.java).
            fm.restricted, draft.access_request, draft.terms_of_access = before
            raise ApiError(409, TOUA_INVALID)
        return ok_message(f"File {fm.label} {'restricted' if wanted else 'unrestricted'}.")

    def file_metadata(self, request, fid):
        ds, draft, fm = self._editable_file(request, fid)
        spec = self._json_data(request) or {}
        if "label" in spec:
            fm.label = spec["label"]
        if "directoryLabel" in spec:
            fm.directory_label = clean_directory(spec["directoryLabel"])
        if "description" in spec:
            fm.description = spec["description"]
        if "categories" in spec:
            fm.categories = list(spec["categories"])
        if "restrict" in spec:
            fm.restricted = as_bool(spec["restrict"])
        gson = {"label": fm.label, "description": fm.description,
                "restricted": fm.restricted, "categories": fm.categories, "id": fm.id}
        if fm.directory_label:
            gson["directoryLabel"] = fm.directory_label
        # 200 text/plain, with the FileMetadata id, not the DataFile id (ref §2.7).
        return Response("File Metadata update has been completed: " + json.dumps(gson),
                        content_type="text/plain")

    def clean_storage(self, request, dsid):
        """Datasets.cleanStorage: delete stored objects no DataFile of the dataset names.

        "Found" lists the dataset's own DataFiles (from the database, not the store);
        "Deleted" the objects whose name looks like a Dataverse storage identifier and
        does not start with one of those (aux files such as ``<id>.orig`` survive). A dry
        run lists what would be deleted. It deletes every unregistered upload, including
        another job's that is not registered yet.
        """
        user = self.user(request)
        ds = self.find_dataset(request, dsid)
        if not self.can_edit(user, ds):
            raise ApiError(500, "Access denied!")
        dry = request.args.get("dryrun", "false").lower() == "true"
        prefix = f"{self.settings.authority}/{ds.identifier}/"
        names = sorted({fm.datafile.storage_identifier.rsplit(":", 1)[-1]
                        for v in ds.versions for fm in v.files})
        doomed = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix):]
                if STORED_NAME.match(name) and not any(name.startswith(n) for n in names):
                    doomed.append(name)
                    if not dry:
                        self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
        return ok_message(f"Found: {', '.join(names)}\nDeleted: {', '.join(doomed)}")


RULES = [
    Rule("/api/datasets/<dsid>/deleteFiles", endpoint="delete_files", methods=["PUT"]),
    Rule("/api/datasets/<dsid>/cleanStorage", endpoint="clean_storage", methods=["GET"]),
    Rule("/api/files/<fid>", endpoint="delete_file", methods=["DELETE"]),
    Rule("/api/files/<fid>/restrict", endpoint="restrict", methods=["PUT"]),
    Rule("/api/files/<fid>/metadata", endpoint="file_metadata", methods=["POST"]),
]

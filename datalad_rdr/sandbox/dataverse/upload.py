"""Files into a draft: direct upload (presigned URLs, multipart), registration, the ordinary
upload that unpacks ZIPs, replacement.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
import shutil
import tempfile
import time
import uuid
import zipfile

from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from .answers import ApiError, ok, ok_message
from .model import (DataFile, Dataset, FileMetadata, Version, as_bool, clean_directory,
                    new_file_name, now)
from .settings import CHECKSUM_TYPES, CHUNK


class UploadEndpoints:
    """Mixed into DataverseSandbox: direct upload and the registration of files."""

    def upload_urls(self, request, dsid):
        user = self.user(request)  # no token: the guest, who may not upload (row 53)
        ds = self.find_dataset(request, dsid)
        if not self.can_edit(user, ds):
            raise ApiError(403, "You are not permitted to upload files to this dataset.")
        s = self.settings
        if not s.direct_upload:
            raise ApiError(404, f"Direct upload not supported for files in this dataset: "
                                f"{ds.id}")
        self._check_count(ds, user)
        size = int(request.args.get("size") or 0)
        if s.max_file_size is not None and size > s.max_file_size:
            raise ApiError(400, "The file you are trying to upload is too large to be "
                                "uploaded to this dataset. The maximum allowed file size "
                                f"is {s.max_file_size} bytes.")
        ident = f"{int(time.time() * 1000):x}-{uuid.uuid4().hex[-12:]}"
        key = f"{s.authority}/{ds.identifier}/{ident}"
        storage_identifier = f"{s.store_id}://{self.bucket}:{ident}"
        if size <= s.part_size:
            params = {"Bucket": self.bucket, "Key": key}
            if s.tagging:
                params["Tagging"] = "dv-state=temp"
            url = self.s3.generate_presigned_url("put_object", Params=params,
                                                 ExpiresIn=s.url_lifetime)
            return ok({"url": url, "partSize": s.part_size,
                       "storageIdentifier": storage_identifier})
        upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        count = size // s.part_size + (1 if size % s.part_size else 0)
        urls = {
            str(n): self.s3.generate_presigned_url(
                "upload_part", ExpiresIn=s.url_lifetime,
                Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                        "PartNumber": n})
            for n in range(1, count + 1)
        }
        # Relative and not URL-encoded, as the real server builds them (ref §1.1).
        tail = (f"/api/datasets/mpupload?globalid={self.pid(ds)}&uploadid={upload_id}"
                f"&storageidentifier={storage_identifier}")
        return ok({"urls": urls, "abort": tail, "complete": tail,
                   "partSize": s.part_size, "storageIdentifier": storage_identifier})

    def _key_of(self, storage_identifier: str, ds: Dataset | str) -> str:
        """The object key of a storage identifier in a dataset (or under a bare PID)."""
        m = re.fullmatch(rf"{re.escape(self.settings.store_id)}://([^:]+):([0-9a-f]+-[0-9a-f]{{12}})",
                         storage_identifier or "")
        if not m or m.group(1) != self.bucket:
            raise ApiError(400, "Dataset store configuration does not allow provided "
                                "storageIdentifier.")
        if isinstance(ds, str):
            return f"{ds.split(':', 1)[-1]}/{m.group(2)}"
        return f"{self.settings.authority}/{ds.identifier}/{m.group(2)}"

    def _mpupload_target(self, request, verb: str) -> tuple[str, str]:
        """The object key and upload id; the user must be able to edit the dataset.

        An unknown globalid is allowed: the source keeps it for uploads during dataset
        creation (Datasets.completeMPUpload), and the S3 call fails unless all three
        parameters name a live upload.
        """
        user = self.require_user(request)
        pid = request.args.get("globalid", "")
        ds = next((d for d in self.datasets.values() if self.pid(d) == pid), None)
        if ds is not None and not self.can_edit(user, ds):
            raise ApiError(403, f"You are not permitted to {verb} file uploads with the "
                                f"supplied parameters.")
        key = self._key_of(request.args.get("storageidentifier", ""), ds or pid)
        return key, request.args.get("uploadid", "")

    def mpupload_complete(self, request):
        key, upload_id = self._mpupload_target(request, "complete")
        try:
            # In the JSON's own order, unsorted, as Datasets.completeMPUpload passes them.
            etags = json.loads(request.get_data())
            parts = [{"PartNumber": int(n), "ETag": tag} for n, tag in etags.items()]
            self.s3.complete_multipart_upload(Bucket=self.bucket, Key=key,
                                              UploadId=upload_id,
                                              MultipartUpload={"Parts": parts})
        except Exception:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                               UploadId=upload_id)
            except Exception:
                pass
            raise ApiError(500, "Could not complete multipart upload") from None
        return ok_message("Multipart Upload completed")

    def mpupload_abort(self, request):
        key, upload_id = self._mpupload_target(request, "abort")
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:
            raise ApiError(500, "Could not abort multipart upload") from None
        return Response(status=204)

    def _check_count(self, ds: Dataset, user, adding: int = 0) -> None:
        """The dataset file-count limit, as the source compares it.

        The count is getDataFileCountByOwner: every DataFile the dataset still owns, so
        files replaced or deleted in the draft still count while a release holds them.
        ``uploadurls`` and ``/add`` refuse at ``count >= limit``; ``/addFiles`` at
        ``count + N >= limit`` for the whole call (AddReplaceFileHelper), so through it a
        dataset reaches at most limit - 1 files.
        """
        limit = self.settings.dataset_file_limit
        if limit is None or self.is_super(user):
            return
        count = len({fm.datafile.id for v in ds.versions for fm in v.files})
        if count + adding >= limit:
            raise ApiError(400, "Number of files can not exceed the maximum number of "
                                f"files allowed for this Dataset ({limit}).")

    @staticmethod
    def _check_checksum_types(specs: list) -> None:
        """ChecksumType.fromString throws outside the per-file loop: one unknown type fails
        the whole call (OptionalFileParams, AddReplaceFileHelper)."""
        for spec in specs:
            checksum = spec.get("checksum") if isinstance(spec, dict) else None
            if isinstance(checksum, dict) and checksum.get("@type") not in CHECKSUM_TYPES:
                raise ApiError(400, "ChecksumType must be one of these values: [MD5, SHA-1, "
                                    "SHA-256, SHA-512].")

    @staticmethod
    def _json_data(request) -> object:
        raw = request.form.get("jsonData")
        if raw is None and "jsonData" in request.files:
            raw = request.files["jsonData"].read().decode()
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ApiError(400, f"Json Parsing Exception :{e}") from None

    def _register(self, ds: Dataset, spec: dict, draft: Version) -> FileMetadata:
        """Create a DataFile for an object already in the store; sizes come from the store."""
        for name in ("storageIdentifier", "fileName", "mimeType"):
            if not spec.get(name):
                raise ApiError(400, "You must provide a storageidentifier, filename, and "
                                    "mimetype.")
        checksum = spec.get("checksum") or {}
        ctype, cvalue = checksum.get("@type"), checksum.get("@value")
        if spec.get("md5Hash"):
            ctype, cvalue = "MD5", spec["md5Hash"]
        if ctype not in CHECKSUM_TYPES or not cvalue:
            # Sandbox choice: the source does not check up front (IQSS/dataverse#10344)
            # and fails the whole batch at save; a per-file error is kinder and as final.
            raise ApiError(400, "Checksum is required for direct upload (md5Hash or "
                                "checksum with @type MD5, SHA-1, SHA-256 or SHA-512).")
        key = self._key_of(spec["storageIdentifier"], ds)
        if any(fm.datafile.key == key for v in ds.versions for fm in v.files):
            raise ApiError(400, "The storageIdentifier is already in use in this dataset.")
        try:
            size = self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except Exception:
            size = None
        limit = self.settings.max_file_size
        # A file is saved only if confirmedFileSize < limit (IngestServiceBean), although
        # uploadurls accepted size == limit; a missing object fails the same way.
        if size is None or (limit is not None and size >= limit):
            raise ApiError(400, "Failed to save the content of the uploaded file.")
        return self._new_filemeta(draft, spec, key, spec["storageIdentifier"], size,
                                  spec["mimeType"], ctype, cvalue.lower())

    def _new_filemeta(self, draft, spec, key, sid, size, mime, ctype, cvalue):
        directory = clean_directory(spec.get("directoryLabel"))
        # A path already in the draft is not refused: Dataverse renames the new file and
        # reports success (IngestUtil.checkForDuplicateFileNamesFinal).
        taken = {fm.path for fm in draft.files}
        label = spec.get("label") or spec.get("fileName")
        while (f"{directory}/{label}" if directory else label) in taken:
            label = new_file_name(label)
        df = DataFile(self.next_id(), sid, key, size, mime, ctype, cvalue, now())
        self.datafiles[df.id] = df
        fm = FileMetadata(self.next_id(), df, label, directory,
                          spec.get("description", ""), list(spec.get("categories") or []),
                          as_bool(spec.get("restrict", False)))
        draft.files.append(fm)
        return fm

    def add_file(self, request, dsid):
        ds, user = self._editable(request, dsid)
        spec = self._json_data(request) or {}
        upload = request.files.get("file")
        draft = self.editable_draft(ds)
        if upload is None:
            if not spec.get("storageIdentifier"):
                raise ApiError(400, "You must upload a file or provide a valid "
                                    "storageidentifier, filename, and mimetype.")
            self._check_checksum_types([spec])
            self._check_count(ds, user)
            fm = self._register(ds, spec, draft)
            return ok({"files": [self.filemeta_json(fm, draft)]})
        return self._add_uploaded(ds, user, draft, spec, upload)

    def _add_uploaded(self, ds, user, draft, spec, upload):
        """The ordinary upload path: the server sees the bytes, and a ZIP is unpacked."""
        with tempfile.TemporaryFile() as tmp:
            shutil.copyfileobj(upload.stream, tmp, CHUNK)
            tmp.seek(0)
            name = spec.get("fileName") or spec.get("label") or upload.filename or "file"
            if zipfile.is_zipfile(tmp):
                tmp.seek(0)
                with zipfile.ZipFile(tmp) as zf:
                    members = [i for i in zf.infolist() if not i.is_dir()]
                    limit = self.settings.zip_unpack_limit
                    if len(members) > limit:
                        raise ApiError(400, f"The number of files in the zip archive is "
                                            f"over the limit ({limit}); please upload a "
                                            f"zip archive with fewer files, if you want "
                                            f"them to be ingested as individual DataFiles.")
                    self._check_count(ds, user, len(members) - 1)
                    added = []
                    for info in members:
                        folder, _, base = info.filename.rpartition("/")
                        directory = "/".join(p for p in (spec.get("directoryLabel"),
                                                         folder) if p)
                        with zf.open(info) as member:
                            added.append(self._store_and_add(
                                ds, draft, member, {**spec, "fileName": base,
                                                    "label": base,
                                                    "directoryLabel": directory}))
            else:
                self._check_count(ds, user)
                tmp.seek(0)
                added = [self._store_and_add(ds, draft, tmp, {**spec, "fileName": name,
                                                              "label": spec.get("label",
                                                                                name)})]
        return ok({"files": [self.filemeta_json(fm, draft) for fm in added]})

    def _store_and_add(self, ds, draft, stream, spec) -> FileMetadata:
        ident = f"{int(time.time() * 1000):x}-{uuid.uuid4().hex[-12:]}"
        key = f"{self.settings.authority}/{ds.identifier}/{ident}"
        with tempfile.TemporaryFile() as tmp:
            digest = hashlib.md5()
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                digest.update(chunk)
                tmp.write(chunk)
            size = tmp.tell()
            tmp.seek(0)
            self.s3.upload_fileobj(tmp, self.bucket, key)
        mime = spec.get("mimeType") or mimetypes.guess_type(spec["fileName"])[0] \
            or "application/octet-stream"
        return self._new_filemeta(draft, spec, key, f"{self.settings.store_id}://"
                                  f"{self.bucket}:{ident}", size, mime, "MD5",
                                  digest.hexdigest())

    def add_files(self, request, dsid):
        ds, user = self._editable(request, dsid)
        specs = self._json_data(request)
        if not isinstance(specs, list):
            raise ApiError(400, "Json Parsing Exception :jsonData must be a JSON array")
        self._check_checksum_types(specs)
        self._check_count(ds, user, len(specs))
        draft = self.editable_draft(ds)
        results, added = [], 0
        for spec in specs:
            try:
                fm = self._register(ds, spec, draft)
            except ApiError as e:
                results.append({"storageIdentifier": spec.get("storageIdentifier"),
                                "errorMessage": f"Bad Request:{e.message}",
                                "fileDetails": spec})
                continue
            added += 1
            results.append({"storageIdentifier": spec["storageIdentifier"],
                            "successMessage": "Added successfully to the dataset",
                            "fileDetails": self.filemeta_json(fm, draft)})
        return ok({"Files": results, "Result": {
            "Total number of files": len(specs),
            "Number of files successfully added": added}})

    def _replace(self, ds: Dataset, draft: Version, spec: dict) -> FileMetadata:
        try:
            old_id = int(spec.get("fileToReplaceId"))
        except (TypeError, ValueError):
            raise ApiError(400, "fileToReplaceId is required to replace a file.") from None
        old = next((fm for fm in draft.files if fm.datafile.id == old_id), None)
        if old is None:
            raise ApiError(400, f"Existing file to replace not found (id {old_id}).")
        checksum = (spec.get("checksum") or {}).get("@value") or spec.get("md5Hash")
        if checksum and checksum.lower() == old.datafile.checksum_value:
            raise ApiError(400, "Error! You may not replace a file with a file that has "
                                "duplicate content.")
        draft.files.remove(old)
        try:
            fm = self._register(ds, {"directoryLabel": old.directory_label,
                                     "description": old.description,
                                     "categories": old.categories,
                                     "restrict": old.restricted, **spec}, draft)
        except ApiError:
            draft.files.append(old)
            raise
        self._forget(old.datafile)
        return fm

    def replace_files(self, request, dsid):
        ds, _ = self._editable(request, dsid)
        specs = self._json_data(request)
        if not isinstance(specs, list):
            raise ApiError(400, "Json Parsing Exception :jsonData must be a JSON array")
        self._check_checksum_types(specs)
        draft = self.editable_draft(ds)
        results, done = [], 0
        for spec in specs:
            try:
                fm = self._replace(ds, draft, spec)
            except ApiError as e:
                results.append({"storageIdentifier": spec.get("storageIdentifier"),
                                "errorMessage": f"Bad Request:{e.message}",
                                "fileDetails": spec})
                continue
            done += 1
            results.append({"storageIdentifier": spec["storageIdentifier"],
                            "successMessage": "Replaced successfully in the dataset",
                            "fileDetails": self.filemeta_json(fm, draft)})
        return ok({"Files": results, "Result": {
            "Total number of files": len(specs),
            "Number of files successfully replaced": done}})

    def replace_file(self, request, fid):
        user = self.require_user(request)
        ds, _ = self.find_filemeta(fid)
        if not self.can_edit(user, ds):
            raise ApiError(403, "You do not have permission to replace this file.")
        self._check_review_lock(ds, user)
        spec = self._json_data(request) or {}
        self._check_checksum_types([spec])
        draft = self.editable_draft(ds)
        fm = self._replace(ds, draft, {**spec, "fileToReplaceId": int(fid)})
        return ok({"files": [self.filemeta_json(fm, draft)]})

    def _forget(self, df: DataFile) -> bool:
        """Drop a never-released DataFile and its bytes; True if bytes were deleted."""
        if df.released:
            return False
        self.datafiles.pop(df.id, None)
        self.s3.delete_object(Bucket=self.bucket, Key=df.key)
        return True


RULES = [
    Rule("/api/datasets/mpupload", endpoint="mpupload_complete", methods=["PUT"]),
    Rule("/api/datasets/mpupload", endpoint="mpupload_abort", methods=["DELETE"]),
    Rule("/api/datasets/<dsid>/uploadurls", endpoint="upload_urls", methods=["GET"]),
    Rule("/api/datasets/<dsid>/add", endpoint="add_file", methods=["POST"]),
    Rule("/api/datasets/<dsid>/addFiles", endpoint="add_files", methods=["POST"]),
    Rule("/api/datasets/<dsid>/replaceFiles", endpoint="replace_files", methods=["POST"]),
    Rule("/api/files/<fid>/replace", endpoint="replace_file", methods=["POST"]),
]

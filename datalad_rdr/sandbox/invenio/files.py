"""Files of drafts and records: the three-step upload streamed to S3, downloads, the objects'
reference counts.
"""

from __future__ import annotations

import copy
import hashlib
import uuid

from boto3.s3.transfer import TransferConfig
from werkzeug.exceptions import ClientDisconnected
from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from .answers import ApiError, json_response, validation_error
from .model import Record, Snapshot, StoredFile, now
from .settings import CHUNK
from .validation import as_errors


# At most a few 8 MiB parts of an upload in memory at once, whatever the file's size.
_TRANSFER = TransferConfig(max_concurrency=2)
_TRANSFER.max_in_memory_upload_chunks = 2  # s3transfer's knob; boto3 does not pass it on


class _TooLarge(Exception):
    pass


class _CountingReader:
    """The request body as boto3 reads it: counted, hashed and cut off at ``limit``."""

    def __init__(self, stream, limit: int | None, reason: str, count):
        self.stream, self.limit, self.reason, self.count = stream, limit, reason, count
        self.md5 = hashlib.md5()
        self.size = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        data = self.stream.read(n)
        self.size += len(data)
        self.count(len(data))
        if self.limit is not None and self.size > self.limit:
            raise _TooLarge(self.reason)
        self.md5.update(data)
        return data


class FileEndpoints:
    """Mixed into InvenioSandbox: files of drafts and records."""

    def _ref(self, f: StoredFile) -> StoredFile:
        if f.object_key:
            self._refs[f.object_key] += 1
        return f

    def _unref(self, f: StoredFile) -> None:
        if not f.object_key:
            return
        self._refs[f.object_key] -= 1
        if self._refs[f.object_key] <= 0:
            del self._refs[f.object_key]
            self.s3.delete_object(Bucket=self.bucket, Key=f.object_key)

    def _copy_files(self, files: dict) -> dict:
        return {k: self._ref(copy.copy(f)) for k, f in files.items()}

    def _drop_snapshot(self, snap: Snapshot | None) -> None:
        if snap is not None:
            for f in snap.files.values():
                self._unref(f)

    def _draft_file(self, request, rid, key) -> tuple[Record, Snapshot, StoredFile]:
        record, snap = self._draft_of(request, rid)
        f = snap.files.get(key)
        if f is None:
            raise ApiError(404, f"Record '{rid}' has no file '{key}'.")
        return record, snap, f

    @staticmethod
    def _check_unlocked(snap: Snapshot) -> None:
        if snap.locked:
            raise ApiError(403, "Bucket is locked for modifications.")

    def list_draft_files(self, request, rid):
        record, snap = self._draft_of(request, rid)
        return json_response(self._files_json(request, record, snap, list(snap.files.values())))

    def init_files(self, request, rid):
        record, snap = self._draft_of(request, rid)
        body = self._body(request, default=[])
        if not isinstance(body, list):
            raise validation_error([{"field": "0._schema",
                                      "messages": ["Invalid input type."]}])
        if not body:
            raise ApiError(400, "No files to upload.")
        keys, problems = [], []
        for i, item in enumerate(body):
            if not isinstance(item, dict):
                problems.append((f"{i}._schema", "Invalid input type."))
            elif not isinstance(item.get("key"), str) or not item["key"]:
                problems.append((f"{i}.key", "Missing data for required field."))
            else:
                keys.append(item["key"])
        if problems:
            raise validation_error(as_errors(problems))
        if not snap.files_enabled:
            raise ApiError(400, "Files are not enabled.")
        if len(snap.files) + len(body) > self.settings.max_files:
            raise ApiError(400, "Uploading selected files will result in exceeding the "
                                "max amount per record.")
        seen = set(snap.files)
        for key in keys:
            if key in seen:
                raise ApiError(400, f"File with key {key} already exists.")
            seen.add(key)
        created = []
        for item in body:
            f = StoredFile(item["key"], metadata=item.get("metadata"))
            snap.files[f.key] = f
            created.append(f)
        snap.touch()
        return json_response(self._files_json(request, record, snap, created), 201)

    def read_draft_file(self, request, rid, key):
        record, snap, f = self._draft_file(request, rid, key)
        return json_response(self._file_json(request, record, snap, f))

    def update_draft_file(self, request, rid, key):
        record, snap, f = self._draft_file(request, rid, key)
        body = self._body(request)
        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            f.metadata = body["metadata"]
            f.updated = now()
        return json_response(self._file_json(request, record, snap, f))

    def upload_content(self, request, rid, key):
        with self.lock:
            record, snap, f = self._draft_file(request, rid, key)
            self._check_unlocked(snap)
            if f.committed:
                raise ApiError(400, f'File with key "{key}" is already committed.')
            others = sum(o.size or 0 for o in snap.files.values()
                         if o.object_key and o.key != key)
            limits = [(self.settings.max_record_bytes - others, "Bucket quota exceeded.")]
            if self.settings.max_file_bytes is not None:
                limits.append((self.settings.max_file_bytes, "Maximum file size exceeded."))
            limit, reason = min(limits, key=lambda lim: lim[0])
            if request.content_length is not None and request.content_length > limit:
                raise ApiError(400, reason)
            object_key = f"{self.settings.s3_prefix}/{snap.bucket_id}/{uuid.uuid4()}"
        reader = _CountingReader(request.stream, limit, reason, self._count_upload)
        try:
            self.s3.upload_fileobj(reader, self.bucket, object_key,
                                   Config=_TRANSFER)
        except Exception as e:  # noqa: BLE001 - boto3 wraps what the reader raised
            self._delete_object(object_key)
            if isinstance(e, _TooLarge) or (reader.limit is not None
                                            and reader.size > reader.limit):
                raise ApiError(400, reason) from None
            if isinstance(e, ClientDisconnected):
                raise ApiError(400, "The file upload transfer failed, please try "
                                    "again.") from None
            raise
        if request.content_length is not None and reader.size != request.content_length:
            self._delete_object(object_key)
            raise ApiError(400, "The file upload transfer failed, please try again.")
        with self.lock:
            current = self.records.get(rid)
            if current is not record or record.draft is not snap or \
                    snap.files.get(key) is not f:
                self._delete_object(object_key)  # the draft or entry went away meanwhile
                raise ApiError(404, f"Record '{rid}' has no file '{key}'.")
            self._unref(f)
            f.object_key, f.size, f.md5 = object_key, reader.size, reader.md5.hexdigest()
            self._ref(f)
            f.updated = now()
            return json_response(self._file_json(request, record, snap, f))

    def _delete_object(self, object_key: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=object_key)
        except Exception:  # noqa: BLE001 - cleaning up after a failure already reported
            pass

    def commit_file(self, request, rid, key):
        record, snap, f = self._draft_file(request, rid, key)
        if f.object_key is None:
            # invenio-records-resources raises a bare Exception: the client sees a 500.
            raise ApiError(500, "Internal server error.")
        if not f.committed:
            f.committed = True
            f.file_id, f.version_id = str(uuid.uuid4()), str(uuid.uuid4())
            f.updated = now()
            snap.touch()
        return json_response(self._file_json(request, record, snap, f))

    def delete_file(self, request, rid, key):
        _, snap, f = self._draft_file(request, rid, key)
        self._check_unlocked(snap)
        self._remove_file(snap, f)
        snap.touch()
        return Response(status=204)

    def delete_all_files(self, request, rid):
        _, snap = self._draft_of(request, rid)
        self._check_unlocked(snap)
        for f in list(snap.files.values()):
            self._remove_file(snap, f)
        snap.touch()
        return Response(status=204)

    def _remove_file(self, snap: Snapshot, f: StoredFile) -> None:
        self._unref(f)
        del snap.files[f.key]
        if snap.default_preview == f.key:
            snap.default_preview = None
        if f.key in snap.order:
            snap.order.remove(f.key)

    def download_draft_file(self, request, rid, key):
        with self.lock:
            _, _, f = self._draft_file(request, rid, key)
            if f.object_key is None:
                raise ApiError(404, f"Record '{rid}' has no file '{key}'.")
            f = copy.copy(f)
        return self._send(f, f.committed)

    def _record_file(self, rid, key) -> tuple[Record, Snapshot, StoredFile]:
        record = self._record(rid)
        snap = self._published(record)
        f = snap.files.get(key)
        if f is None:
            raise ApiError(404, f"Record '{rid}' has no file '{key}'.")
        return record, snap, f

    def list_record_files(self, request, rid):
        record = self._record(rid)
        snap = self._published(record)
        return json_response(self._files_json(request, record, snap, list(snap.files.values()),
                                      is_draft=False))

    def read_record_file(self, request, rid, key):
        record, snap, f = self._record_file(rid, key)
        return json_response(self._file_json(request, record, snap, f, is_draft=False))

    def download_record_file(self, request, rid, key):
        with self.lock:
            _, _, f = self._record_file(rid, key)
            f = copy.copy(f)
        return self._send(f, True)

    def _send(self, f: StoredFile, committed: bool) -> Response:
        obj = self.s3.get_object(Bucket=self.bucket, Key=f.object_key)
        body = obj["Body"]

        def chunks():
            try:
                yield from iter(lambda: body.read(CHUNK), b"")
            finally:
                body.close()

        resp = Response(chunks(), mimetype=f.mimetype, direct_passthrough=True)
        resp.headers["Content-Length"] = str(obj["ContentLength"])
        resp.headers["Content-Disposition"] = "inline"
        if committed and f.md5:
            resp.headers["ETag"] = f'"md5:{f.md5}"'
            resp.headers["Content-MD5"] = f.md5
        return resp


RULES = [
    Rule("/api/records/<rid>/draft/files", methods=["GET"], endpoint="list_draft_files"),
    Rule("/api/records/<rid>/draft/files", methods=["POST"], endpoint="init_files"),
    Rule("/api/records/<rid>/draft/files", methods=["DELETE"],
         endpoint="delete_all_files"),
    Rule("/api/records/<rid>/draft/files/<path:key>/content", methods=["PUT"],
         endpoint="upload_content"),
    Rule("/api/records/<rid>/draft/files/<path:key>/content", methods=["GET"],
         endpoint="download_draft_file"),
    Rule("/api/records/<rid>/draft/files/<path:key>/commit", methods=["POST"],
         endpoint="commit_file"),
    Rule("/api/records/<rid>/draft/files/<path:key>", methods=["GET"],
         endpoint="read_draft_file"),
    Rule("/api/records/<rid>/draft/files/<path:key>", methods=["PUT"],
         endpoint="update_draft_file"),
    Rule("/api/records/<rid>/draft/files/<path:key>", methods=["DELETE"],
         endpoint="delete_file"),
    Rule("/api/records/<rid>/files", methods=["GET"], endpoint="list_record_files"),
    Rule("/api/records/<rid>/files/<path:key>/content", methods=["GET"],
         endpoint="download_record_file"),
    Rule("/api/records/<rid>/files/<path:key>", methods=["GET"],
         endpoint="read_record_file"),
]

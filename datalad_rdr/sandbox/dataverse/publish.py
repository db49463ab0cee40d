"""Locks, review and publication: PublishDatasetCommand's checks and
FinalizeDatasetPublicationCommand's validation.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from werkzeug.routing import Rule

from .answers import TOUA_INVALID, ApiError, ok, ok_message
from .model import DataFile, Dataset, Version, now
from .settings import CHUNK

log = logging.getLogger("datalad.rdr.sandbox.dataverse")


class PublishEndpoints:
    """Mixed into DataverseSandbox: locks, review and publication."""

    def locks_view(self, request, dsid):
        self.user(request)
        ds = self.find_dataset(request, dsid)
        kind = request.args.get("type")
        return ok([lock for lock in ds.locks if kind is None or lock["lockType"] == kind])

    def lock_add(self, request, dsid, kind):
        user = self.require_user(request)
        if not self.is_super(user):
            raise ApiError(403, "This API call can be used by superusers only")
        ds = self.find_dataset(request, dsid)
        self._add_lock(ds, kind, "Lock added through the API")
        return ok_message(f"dataset locked with lock type {kind}")

    def locks_delete(self, request, dsid):
        user = self.require_user(request)
        if not self.is_super(user):
            raise ApiError(403, "This API call can be used by superusers only")
        ds = self.find_dataset(request, dsid)
        kind = request.args.get("type")
        ds.locks = [lock for lock in ds.locks if kind and lock["lockType"] != kind]
        return ok_message("locks removed")

    def _add_lock(self, ds: Dataset, kind: str, message: str) -> None:
        ds.locks.append({"lockType": kind, "date": time.strftime("%a %b %d %H:%M:%S UTC %Y"),
                         "user": "dataverseAdmin", "dataset": self.pid(ds),
                         "message": message})

    def can_publish(self, user, ds: Dataset) -> bool:
        """PublishDataset permission: curators only on an installation with review."""
        return self.is_super(user) or (not self.settings.review and user == ds.owner)

    def publish(self, request, dsid):
        # Datasets.publishDataset: the type is checked before the dataset is looked up.
        kind = request.args.get("type")
        if kind is None:
            raise ApiError(400, "Missing 'type' parameter (either 'major','minor', or "
                                "'updatecurrent').")
        kind = kind.lower()
        if kind not in ("major", "minor", "updatecurrent"):
            raise ApiError(400, f"Illegal 'type' parameter value '{kind}'. It needs to be "
                                f"either 'major', 'minor', or 'updatecurrent'.")
        ds, user = self._editable(request, dsid, editing=False)
        if kind == "updatecurrent":
            raise ApiError(403, "Only superusers can update the current version")
        if not ds.latest.terms_valid():
            raise ApiError(409, TOUA_INVALID)
        if not self.can_publish(user, ds):
            # A PermissionException in execCommand: 401, not 403 (AbstractApiBean).
            raise ApiError(401, f"User {self.user_identifier(user)} is not permitted to "
                                f"perform requested action.")
        draft = ds.draft
        if draft is not None and draft.license is None and draft.terms is None:
            raise ApiError(409, "Dataset must have a valid license or Custom Terms Of Use "
                                "configured before it can be published.")
        self._check_publishable(ds, kind == "minor")
        last = ds.released[-1] if ds.released else None
        if last is None:
            major, minor = 1, 0
        elif kind == "major":
            major, minor = last.major + 1, 0
        else:
            major, minor = last.major, last.minor + 1
        self._add_lock(ds, "finalizePublication", "Publishing the dataset; Validating "
                                                   "Datafiles Asynchronously")
        threading.Thread(target=self._finalize, args=(ds, draft, major, minor),
                         daemon=True).start()
        return ok(self.dataset_json(ds, draft, None))

    def submit_for_review(self, request, dsid):
        """SubmitDatasetForReviewCommand: an InReview lock until a curator publishes."""
        ds, _ = self._editable(request, dsid, editing=False)
        if ds.draft is None:
            raise ApiError(403, "Latest version of dataset is already released. Only draft "
                                "versions can be submitted for review.")
        if any(lock["lockType"] == "InReview" for lock in ds.locks):
            raise ApiError(403, "You cannot submit this dataset for review because it is "
                                "already in review.")
        self._add_lock(ds, "InReview", "Dataset submitted for review")
        return ok({"inReview": True,
                   "message": f"Dataset id {ds.id} has been submitted for review."})

    def _check_publishable(self, ds: Dataset, minor: bool) -> None:
        """PublishDatasetCommand.verifyCommandArguments, in its order and with its texts."""
        kinds = {lock["lockType"] for lock in ds.locks}
        if kinds & {"Workflow", "Ingest", "finalizePublication", "EditInProgress"}:
            raise ApiError(403, "This dataset is locked. Reason: "
                                + ",".join(lock["lockType"] for lock in ds.locks)
                                + ". Please try publishing later.")
        if "FileValidationFailed" in kinds:
            # Sic: the source joins ". " and ". Please".
            raise ApiError(403, "This dataset cannot be published because some files have "
                                "been found missing or corrupted. . Please contact support "
                                "to address this.")
        if ds.draft is None:
            raise ApiError(403, f"Latest version of dataset {ds.identifier} is already "
                                f"released. Only draft versions can be released.")
        if minor and not ds.released:
            raise ApiError(403, "Cannot publish as minor version. Re-try as major release.")
        if minor and not self._is_minor_update(ds):
            raise ApiError(403, "Cannot release as minor version. Re-try as major release.")

    @staticmethod
    def _is_minor_update(ds: Dataset) -> bool:
        """DatasetVersion.isMinorUpdate: the draft holds exactly the released DataFiles."""
        last = ds.released[-1]
        draft = {fm.datafile.id for fm in ds.draft.files}
        return (len(ds.draft.files) == len(last.files)
                and all(fm.datafile.id in draft for fm in last.files))

    def _finalize(self, ds: Dataset, draft: Version, major: int, minor: int) -> None:
        """FinalizeDatasetPublicationCommand: a major (x.0) release re-hashes every file the
        dataset owns from the store; a minor release is not validated at all."""
        time.sleep(self.settings.publish_delay)
        failed = []
        if minor == 0:
            owned = {fm.datafile.id: fm for v in ds.versions for fm in v.files}
            started, read = time.monotonic(), 0
            for fm in owned.values():
                df = fm.datafile
                try:
                    stored = self._stored_checksum(df)
                except Exception:  # a store failure fails validation, as an IOException
                    log.exception("validating %s", fm.path)
                    stored = None
                if stored != df.checksum_value:
                    failed.append(fm.path)
                    break  # the first failure ends validation (a Throwable in the loop)
                read += df.filesize
                rate = self.settings.validation_rate
                if rate:
                    time.sleep(max(0.0, started + read / rate - time.monotonic()))
        with self.lock:
            ds.locks = [lock for lock in ds.locks
                        if lock["lockType"] != "finalizePublication"]
            if failed:
                log.info("validation failed for %s", ", ".join(failed))
                self._add_lock(ds, "FileValidationFailed", "FILE VALIDATION ERROR")
                return
            ds.locks = [lock for lock in ds.locks if lock["lockType"] != "InReview"]
            draft.state, draft.major, draft.minor = "RELEASED", major, minor
            draft.release_time = now()
            for fm in draft.files:
                fm.datafile.released = True

    def _stored_checksum(self, df: DataFile) -> str | None:
        """The checksum of the stored bytes; None if the object is missing."""
        algo = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256",
                "SHA-512": "sha512"}[df.checksum_type]
        digest = hashlib.new(algo)
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=df.key)["Body"]
        except self.s3.exceptions.NoSuchKey:
            return None
        for chunk in iter(lambda: body.read(CHUNK), b""):
            digest.update(chunk)
            self.s3_bytes_read["validation"] += len(chunk)
        return digest.hexdigest()


RULES = [
    Rule("/api/datasets/<dsid>/locks", endpoint="locks_view", methods=["GET"]),
    Rule("/api/datasets/<dsid>/locks", endpoint="locks_delete", methods=["DELETE"]),
    Rule("/api/datasets/<dsid>/lock/<kind>", endpoint="lock_add", methods=["POST"]),
    Rule("/api/datasets/<dsid>/actions/:publish", endpoint="publish", methods=["POST"]),
    Rule("/api/datasets/<dsid>/submitForReview", endpoint="submit_for_review",
         methods=["POST"]),
]

"""Client of the Dataverse native API: everything datalad-rdr knows about the server.

Only the calls this project needs, each answering with a record of
:mod:`datalad_rdr.dataverse_records` (a file entry, a version, a lock, an upload target ...)
parsed from the ``data`` of the reply, or raising a :class:`DataverseError` subclass with the
server's own message. No other module reads the server's JSON. The API token is sent to the
Dataverse API only; presigned S3 URLs are used by :mod:`datalad_rdr.upload` without it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from urllib.parse import urljoin

import requests

from .dataverse_records import (DatasetVersion, FieldType, FieldValue, FileEntry,
                                License, Lock, MetadataBlock, NewFile, Permissions,
                                RecordFile, RecordVersion, Registration, UploadTarget,
                                VersionMetadata, find)
from .http import Backoff, with_retries

__all__ = ["Dataverse", "DataverseError", "Unauthorized", "Forbidden", "NotFound", "Conflict",
           "Locked", "NoAnswer", "DatasetVersion", "FieldType", "FieldValue", "FileEntry",
           "License", "Lock", "MetadataBlock", "NewFile", "Permissions", "Registration", "UploadTarget",
           "VersionMetadata"]


class DataverseError(Exception):
    """The server refused or failed; ``status`` is the HTTP status (0: no answer).

    :func:`error` gives the subclass for a status, so callers catch by intent
    (``except NotFound``) rather than compare numbers.
    """

    def __init__(self, status: int, message: str, what: str = ""):
        self.status, self.message, self.what = status, message, what
        super().__init__(f"{what}: HTTP {status}: {message}" if what else message)


class Unauthorized(DataverseError):
    """401: the API token was refused (unknown, expired or revoked)."""


class Forbidden(DataverseError):
    """403: this user may not do this (or the server refuses the action as such)."""


class NotFound(DataverseError):
    """404: no such dataset, file, version or endpoint."""


class Conflict(DataverseError):
    """409: the dataset's state does not allow it (terms, license)."""


class Locked(DataverseError):
    """The dataset holds a lock that did not go away."""


class NoAnswer(DataverseError):
    """No HTTP answer at all (status 0): the server is unreachable."""


_BY_STATUS = {0: NoAnswer, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
              423: Locked}


def error(status: int, message: str, what: str = "") -> DataverseError:
    """The :class:`DataverseError` (subclass) for an HTTP status."""
    return _BY_STATUS.get(status, DataverseError)(status, message, what)


class Dataverse:
    def __init__(self, url: str, token: str | None, backoff: Backoff | None = None,
                 timeout: float = 120):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["X-Dataverse-key"] = token
        self.backoff = backoff or Backoff()
        self.timeout = timeout

    @property
    def has_token(self) -> bool:
        """Requests go as a user (not anonymously)."""
        return "X-Dataverse-key" in self.session.headers

    # -- plumbing --------------------------------------------------------------------
    def call(self, method: str, path: str, *, what: str, retry: bool = True,
             expect=(200,), **kw):
        url = urljoin(self.url + "/", path.lstrip("/"))

        def send():
            return self.session.request(method, url, timeout=self.timeout, **kw)

        try:
            if retry:
                response = with_retries(send, what=what, backoff=self.backoff)
            else:
                response = send()
        except requests.RequestException as exc:
            raise NoAnswer(0, f"no answer from {self.url} ({type(exc).__name__})", what) \
                from exc
        if response.status_code not in expect:
            raise error(response.status_code, _message(response), what)
        if response.status_code == 204 or not response.content:
            return None
        if "json" not in response.headers.get("Content-Type", ""):
            return response.text
        return response.json().get("data")

    @staticmethod
    def _pid(pid: str) -> dict:
        return {"persistentId": pid}

    # -- server and datasets ------------------------------------------------------
    def version(self) -> str:
        return self.call("GET", "/api/info/version", what="server version")["version"]

    def check_token(self) -> dict:
        return self.call("GET", "/api/users/:me", what="checking the API token")

    def create_dataset(self, collection: str, metadata: VersionMetadata) -> str:
        """A new dataset whose draft has this metadata; its persistent id."""
        data = self.call("POST", f"/api/dataverses/{collection}/datasets",
                         json={"datasetVersion": metadata.to_json()},
                         expect=(201,), what=f"creating a dataset in {collection}",
                         retry=False)
        return data["persistentId"]

    def _dataset(self, pid: str, what: str = "", **params) -> dict:
        return self.call("GET", "/api/datasets/:persistentId/",
                         params={**self._pid(pid), **params},
                         what=what or f"reading dataset {pid}")

    def check_dataset(self, pid: str) -> None:
        """Raise unless this token may see the dataset."""
        self._dataset(pid)

    def latest_version(self, pid: str) -> DatasetVersion:
        """The draft if there is one, else the last release."""
        return DatasetVersion.from_json(self._dataset(pid)["latestVersion"])

    def dataset_version(self, pid: str, version: str = ":latest-published") -> DatasetVersion:
        return DatasetVersion.from_json(self.call(
            "GET", f"/api/datasets/:persistentId/versions/{version}", params=self._pid(pid),
            what=f"reading version {version} of {pid}"))

    def last_release(self, pid: str) -> DatasetVersion | None:
        """The latest published version; None when the dataset was never published."""
        try:
            return self.dataset_version(pid, ":latest-published")
        except NotFound:
            return None

    def versions(self, pid: str) -> list[DatasetVersion]:
        """All versions of a dataset this user may see, newest first, with their files."""
        return [DatasetVersion.from_json(v) for v in self.call(
            "GET", "/api/datasets/:persistentId/versions", params=self._pid(pid),
            what=f"listing versions of {pid}")]

    def files(self, pid: str, version: str = ":latest") -> list[FileEntry]:
        return [FileEntry.from_json(e) for e in self.call(
            "GET", f"/api/datasets/:persistentId/versions/{version}/files",
            params=self._pid(pid), what=f"listing files of {pid}")]

    def draft_files(self, pid: str) -> list[FileEntry]:
        """The draft's files; none when there is no draft (everything published)."""
        try:
            return self.files(pid, ":draft")
        except NotFound:
            return []

    def current_files(self, pid: str) -> list[FileEntry]:
        """The files the next registration meets: the draft's, or, without a draft, those of
        the latest version, which the server copies into the draft it makes (defect D3)."""
        try:
            return self.files(pid, ":draft")
        except NotFound:
            pass
        try:
            return self.files(pid, ":latest")
        except NotFound:
            return []

    def latest_files(self, pid: str) -> tuple[str, list[FileEntry]]:
        """("draft", its files) when the draft holds any, else ("published", the files of
        the latest version)."""
        draft = self.draft_files(pid)
        if draft:
            return "draft", draft
        return "published", self.files(pid, ":latest")

    def file_in_draft(self, pid: str, label: str,
                      directory: str | None = None) -> FileEntry | None:
        return find(self.draft_files(pid), label, directory)

    def released_and_draft_file_ids(self, pid: str) -> tuple[set[int], set[int]]:
        """File ids in any published version, and in the draft."""
        released, draft = set(), set()
        for v in self.versions(pid):
            (released if v.released else draft).update(e.file_id for e in v.files)
        return released, draft

    def locks(self, pid: str) -> list[Lock]:
        return [Lock.from_json(lock) for lock in self.call(
            "GET", "/api/datasets/:persistentId/locks", params=self._pid(pid),
            what=f"reading locks of {pid}")]

    def is_locked(self, pid: str, kind: str | None = None) -> bool:
        """Whether the dataset holds a lock (of ``kind``: Ingest, InReview, ...)."""
        return any(kind is None or lock.kind == kind for lock in self.locks(pid))

    def wait_unlocked(self, pid: str, timeout: float = 300, poll: float = 0.5,
                      on_wait=None) -> None:
        """Wait until the dataset has no lock (as dvuploader does before registering);
        ``on_wait`` is given the :class:`Lock` list after each look that found some."""
        deadline = time.monotonic() + timeout
        while True:
            locks = self.locks(pid)
            if not locks:
                return
            if time.monotonic() > deadline:
                kinds = ", ".join(lock.kind for lock in locks)
                raise Locked(423, f"dataset {pid} still locked ({kinds}) after "
                                          f"{timeout:.0f} s", "waiting for locks")
            if on_wait:
                on_wait(locks)
            time.sleep(poll)

    # -- direct upload --------------------------------------------------------------
    def upload_urls(self, pid: str, size: int) -> UploadTarget:
        return UploadTarget.from_json(self.call(
            "GET", "/api/datasets/:persistentId/uploadurls",
            params={**self._pid(pid), "size": size}, what="asking for upload URLs"))

    def complete_multipart(self, complete_path: str, etags: dict[int, str]) -> None:
        body = json.dumps({str(n): etags[n] for n in sorted(etags)})
        self.call("PUT", complete_path, data=body, what="completing a multipart upload")

    def abort_multipart(self, abort_path: str) -> None:
        self.call("DELETE", abort_path, expect=(200, 204),
                  what="aborting a multipart upload")

    # -- registering and editing files ----------------------------------------------
    def add_file(self, pid: str, new: NewFile) -> Registration:
        """Register an uploaded object; the per-file result inside the 200 reply."""
        return self._register(pid, "addFiles", new.to_json(), "registering files")

    def replace_file(self, pid: str, file_id: int, new: NewFile) -> Registration:
        return self._register(pid, "replaceFiles", new.to_json(replacing=file_id),
                              "replacing files")

    def _register(self, pid: str, endpoint: str, spec: dict, what: str) -> Registration:
        data = self.call("POST", f"/api/datasets/:persistentId/{endpoint}",
                         params=self._pid(pid), retry=False, what=what,
                         files={"jsonData": (None, json.dumps([spec]), "application/json")})
        (result,) = data["Files"]
        return Registration.from_json(result)

    def delete_file(self, file_id: int) -> bool:
        return self.call("DELETE", f"/api/files/{file_id}", what=f"deleting file {file_id}")

    def restrict(self, file_id: int, restricted: bool) -> None:
        self.call("PUT", f"/api/files/{file_id}/restrict",
                  data="true" if restricted else "false",
                  what=f"{'restricting' if restricted else 'unrestricting'} file {file_id}")

    def set_file_label(self, file_id: int, label: str, directory: str | None = None) -> None:
        spec = {"label": label, **({"directoryLabel": directory} if directory else {})}
        self.call("POST", f"/api/files/{file_id}/metadata",
                  files={"jsonData": (None, json.dumps(spec), "application/json")},
                  what=f"renaming file {file_id} to {label}")

    def clean_storage(self, pid: str, dry_run: bool = False) -> dict[str, list[str]]:
        """Delete the dataset's stored objects that no file references (all of them, other
        processes' pending uploads included); ``{"found": [...], "deleted": [...]}``.

        6.7.1 answers a message, "Found: a, b\nDeleted: c" (Datasets.java; fidelity row 49);
        a dry run lists under "Deleted" what it would delete."""
        data = self.call("GET", "/api/datasets/:persistentId/cleanStorage",
                         params={**self._pid(pid), "dryrun": str(dry_run).lower()},
                         what="removing unregistered uploads")
        if isinstance(data, dict) and "message" not in data:  # an older server's arrays
            return {"found": list(data.get("Found") or []),
                    "deleted": list(data.get("Deleted") or [])}
        text = data.get("message", "") if isinstance(data, dict) else str(data or "")
        out = {"found": [], "deleted": []}
        for line in text.splitlines():
            name, _, names = line.partition(":")
            if name.strip().lower() in out:
                out[name.strip().lower()] = [n.strip() for n in names.split(",") if n.strip()]
        return out

    # -- metadata and publishing ------------------------------------------------------
    def metadata_block(self, name: str) -> MetadataBlock:
        """A block with its field types, requiredness as the installation sets it."""
        return MetadataBlock.from_json(self.call("GET", f"/api/metadatablocks/{name}",
                                                 what=f"reading metadata block '{name}'"))

    def collection_blocks(self, alias: str) -> list[MetadataBlock]:
        """The metadata blocks of a collection with their field types, requiredness as the
        collection sets it (input levels): ``GET /api/dataverses/{alias}/metadatablocks
        ?returnDatasetFieldTypes=true`` (Dataverses.java; fidelity row 48)."""
        return [MetadataBlock.from_json(b) for b in self.call(
            "GET", f"/api/dataverses/{alias}/metadatablocks",
            params={"returnDatasetFieldTypes": "true"},
            what=f"reading the metadata blocks of collection {alias}")]

    def dataset_collection(self, pid: str) -> str | None:
        """The alias of the collection that holds the dataset: ``isPartOf`` of the dataset
        with ``returnOwners=true`` (6.1+; JsonPrinter); None when the server does not say."""
        data = self._dataset(pid, f"reading the collection of {pid}", returnOwners="true")
        owner = (data or {}).get("isPartOf") or {}
        return owner.get("identifier") if owner.get("type") == "DATAVERSE" else None

    def licenses(self) -> list[License]:
        """The server's licenses, inactive ones too: the metadata mapping matches the
        metadata file's license against them."""
        return [License.from_json(lic) for lic in self.call(
            "GET", "/api/licenses", what="listing the server's licenses")]

    def license_names(self) -> list[str]:
        """The names of the licenses a dataset may be given (the active ones)."""
        return [lic.name for lic in self.licenses() if lic.active]

    def field_types(self, collection: str | None = None) -> tuple[list[str], list[FieldType]]:
        """The metadata block names and every field type in them (child fields too), of
        ``collection`` as it sets requiredness, else of the installation's citation block."""
        if collection:
            blocks = self.collection_blocks(collection)
        else:
            blocks = [self.metadata_block("citation")]
        return [b.name for b in blocks], [t for b in blocks for t in b.field_types()]

    def update_draft(self, pid: str, metadata: VersionMetadata) -> dict:
        """Replace the draft's metadata (and license or terms) as a whole; creates the draft
        from the last release when there is none. Files are kept.

        The body replaces the terms of access too, and a missing ``fileAccessRequest``
        means false (JsonParser.java; fidelity row 32): a dataset with restricted files
        and neither access requests nor terms of access then gets 409 on every restrict
        and publish. So access requests stay on unless the caller gives terms of access."""
        body = metadata.to_json()
        if not body.get("termsOfAccess") and "fileAccessRequest" not in body:
            body["fileAccessRequest"] = True
        return self.call("PUT", "/api/datasets/:persistentId/versions/:draft",
                         params=self._pid(pid), json=body,
                         what=f"updating the metadata of {pid}")

    def edit_metadata(self, pid: str, fields: list[FieldValue]) -> dict:
        """Replace these fields of the draft, keeping the others."""
        return self.call("PUT", "/api/datasets/:persistentId/editMetadata",
                         params={**self._pid(pid), "replace": "true"},
                         json={"fields": [f.to_json() for f in fields]},
                         what="editing metadata")

    def set_license(self, pid: str, name_or_uri: str) -> None:
        # The 6.7 way (the /license endpoint exists only from 6.9).
        self.call("PUT", "/api/datasets/:persistentId/metadata",
                  params={**self._pid(pid), "replace": "true"},
                  headers={"Content-Type": "application/ld+json"},
                  data=json.dumps({"http://schema.org/license": name_or_uri}),
                  what="setting the license")

    def submit_for_review(self, pid: str) -> dict:
        """Hand the draft to the collection's curators, who publish it (``InReview`` lock:
        the depositor cannot edit it until it is published or returned)."""
        return self.call("POST", "/api/datasets/:persistentId/submitForReview",
                         params=self._pid(pid), retry=False,
                         what=f"submitting {pid} for review")

    def user_permissions(self, pid: str) -> Permissions:
        """What this token may do with the dataset (``GET /api/datasets/{id}/
        userPermissions``, 6.1+)."""
        return Permissions.from_json(self.call(
            "GET", "/api/datasets/:persistentId/userPermissions", params=self._pid(pid),
            what=f"reading the permissions on {pid}"))

    def _collection(self, alias: str) -> dict:
        return self.call("GET", f"/api/dataverses/{alias}",
                         what=f"reading collection {alias}")

    def file_count_limit(self, pid: str | None, collection: str | None = None) -> int | None:
        """The file-count limit when the server tells it (6.7: ``datasetFileCountLimit`` and
        ``effectiveDatasetFileCountLimit`` of the dataset, else of its collection); None
        when neither says."""
        limit = _limit(self._dataset(pid)) if pid else None
        if limit is None and collection:
            limit = _limit(self._collection(collection))
        return limit

    def files_ever_owned(self, pid: str) -> int:
        """How many files the dataset owns in any version: what the file-count limit counts
        (replaced and removed files that are in a published version count too)."""
        return len({entry.file_id for version in self.versions(pid) for entry in version.files})

    def publish(self, pid: str, kind: str = "major") -> dict:
        return self.call("POST", "/api/datasets/:persistentId/actions/:publish",
                         params={**self._pid(pid), "type": kind}, retry=False,
                         what=f"publishing {pid}")

    # -- reading files -------------------------------------------------------------------
    def access_url(self, file_id: int) -> str:
        return f"{self.url}/api/access/datafile/{file_id}"

    def access(self, file_id: int, first: int | None = None, last: int | None = None,
               anonymous: bool = False) -> requests.Response:
        """Open a file's access URL (bytes ``first..last`` when given), streaming.

        A store with download-redirect answers 303 with a presigned GET in ``Location``;
        the redirect is not followed here, so the API token never reaches the store
        (requests keeps custom headers across redirects): the caller sends the Range there
        with a token-less session. Otherwise the server streams 206 (200 without Range);
        403 means the file exists but this user may not read it, 404 that it does not exist.
        ``anonymous`` leaves the token out (public files, or a token the server refuses).
        """
        headers = {"Range": f"bytes={first}-{last}"} if first is not None else {}
        # gbrecs: not a user's download, so no guestbook entry and no Make Data Count hit
        # (Access.java; fidelity row 41)
        if anonymous:
            self._anonymous = getattr(self, "_anonymous", None) or requests.Session()
        session = self._anonymous if anonymous else self.session
        try:
            return with_retries(
                lambda: session.get(self.access_url(file_id), headers=headers,
                                    params={"gbrecs": "true"},
                                    allow_redirects=False, stream=True,
                                    timeout=self.timeout),
                what=f"reading file {file_id}", backoff=self.backoff)
        except requests.RequestException as exc:
            raise NoAnswer(0, f"no answer from {self.url} ({type(exc).__name__})",
                           f"reading file {file_id}") from exc

    def record_version(self, pid: str, version: str = ":latest-published") -> RecordVersion:
        """One version of a dataset and its files, as :class:`RecordVersion` (for
        ``rdr-clone``, which reads records it did not write)."""
        v = self.dataset_version(pid, version)
        files = [RecordFile(f.file_id, f.label, f.directory or "", int(f.size or 0),
                            f.restricted, f.checksum_type or "",
                            (f.checksum or f.md5 or "").lower()) for f in v.files]
        return RecordVersion("draft" if v.state == "DRAFT" else f"{v.major}.{v.minor}", files)


    # -- embargo (issue 15): files closed until a date, the record public now ----------
    def max_embargo_months(self) -> int | None:
        """The longest embargo the server allows, in months from today; 0: embargoes are
        off (``:MaxEmbargoDurationInMonths`` not set or 0), None: no limit (-1).

        Read from ``GET /api/info/settings/:MaxEmbargoDurationInMonths`` (Info.java), which
        answers 404 "Setting ... not found" when it is not set."""
        try:
            data = self.call("GET", "/api/info/settings/:MaxEmbargoDurationInMonths",
                             what="reading the maximum embargo duration")
        except NotFound as exc:
            if exc.message.lower().startswith("setting"):  # not "no such endpoint"
                return 0
            raise
        text = data.get("message") if isinstance(data, dict) else data
        try:
            months = int(str(text).strip())
        except ValueError:
            raise DataverseError(200, f"the maximum embargo duration is not a number: "
                                      f"{text!r}", "reading the maximum embargo duration"
                                 ) from None
        return None if months < 0 else months

    def set_embargo(self, pid: str, file_ids: list[int], date: dt.date, reason: str) -> None:
        """Close the files until ``date`` (they open on it); replaces an embargo they have.

        Dataverse lets the depositor embargo only files that are in no published version;
        a superuser may change released ones too (Datasets.createFileEmbargo)."""
        self._embargo(":set-embargo", pid, {"dateAvailable": date.isoformat(),
                                            "reason": reason, "fileIds": list(file_ids)},
                      f"embargoing {len(file_ids)} file(s) of {pid} until {date}")

    def unset_embargo(self, pid: str, file_ids: list[int]) -> None:
        """Lift the files' embargo now (the same rule: released files only by a superuser)."""
        self._embargo(":unset-embargo", pid, {"fileIds": list(file_ids)},
                      f"lifting the embargo of {len(file_ids)} file(s) of {pid}")

    def _embargo(self, action: str, pid: str, body: dict, what: str) -> None:
        try:
            self.call("POST", f"/api/datasets/:persistentId/files/actions/{action}",
                      params=self._pid(pid), json=body, retry=False, what=what)
        except DataverseError as exc:
            if exc.status in (400, 403) and _EMBARGO_REFUSALS.search(exc.message):
                raise EmbargoRefused(exc.status, exc.message, what) from None
            raise


def _limit(obj: dict) -> int | None:
    for key in ("effectiveDatasetFileCountLimit", "datasetFileCountLimit"):
        value = obj.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _message(response: requests.Response) -> str:
    try:
        return response.json().get("message") or response.text[:200]
    except ValueError:
        text = response.text.strip()
        return text[:200] if text else response.reason


# -- embargo (issue 15) ---------------------------------------------------------------------

# The server's words when it refuses an embargo as such (Datasets.java)
_EMBARGO_REFUSALS = re.compile(r"embargo|date available|released", re.IGNORECASE)
_MAX_MONTHS = re.compile(r"MaxEmbargoDurationInMonths:\s*(-?\d+)")


class EmbargoRefused(DataverseError):
    """The server refused to set or lift an embargo: embargoes are off ("No Embargoes
    allowed"), the date is past or beyond the maximum, or the files are published and only
    a superuser may change their embargo. ``max_months``: the maximum the refusal names."""

    @property
    def off(self) -> bool:
        return "no embargoes allowed" in self.message.lower()

    @property
    def published(self) -> bool:
        return self.status == 403

    @property
    def max_months(self) -> int | None:
        found = _MAX_MONTHS.search(self.message)
        return int(found.group(1)) if found else (0 if self.off else None)

"""The sandbox's Dataverse application: identity, lookups, and the WSGI entry that routes
each request to the endpoint module that answers it.

The contract is ../shared/reference/dataverse-api.md (sections cited as "ref §"). Status codes,
JSON shapes and messages follow the real server's source where the reference quotes it; where
it is uncertain the choice is named in docs/sandbox.rst. Bytes are never kept here: they live
in the S3 server (:mod:`datalad_rdr.sandbox.s3`), reached with boto3 as a real Dataverse
reaches its store.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map
from werkzeug.wrappers import Request, Response

from ..faults import Faults
from .access import RULES as ACCESS_RULES, AccessEndpoints
from .answers import ApiError, internal_error
from .datasets import RULES as DATASET_RULES, DatasetEndpoints
from .embargo import RULES as EMBARGO_RULES, Clock, EmbargoEndpoints
from .files import RULES as FILE_RULES, FileEndpoints
from .installation import RULES as INSTALLATION_RULES, InstallationEndpoints
from .model import DataFile, Dataset, FileMetadata, Version, now
from .publish import RULES as PUBLISH_RULES, PublishEndpoints
from .settings import DataverseSettings
from .upload import RULES as UPLOAD_RULES, UploadEndpoints

log = logging.getLogger("datalad.rdr.sandbox.dataverse")

# The endpoints whose UpdateDatasetVersionCommand can meet a concurrent one.
REGISTRATIONS = ("add_file", "add_files", "replace_files")


class OptimisticLock(Exception):
    """Another transaction changed the dataset version since this one read it."""


class DataverseSandbox(InstallationEndpoints, DatasetEndpoints, PublishEndpoints,
                       UploadEndpoints, FileEndpoints, AccessEndpoints, EmbargoEndpoints):
    """A Werkzeug WSGI application answering Dataverse's native API."""

    def __init__(self, settings: DataverseSettings, s3_client, bucket: str):
        self.settings = settings
        self.s3 = s3_client
        self.bucket = bucket
        self.lock = threading.RLock()
        self.datasets: dict[int, Dataset] = {}
        self.datafiles: dict[int, DataFile] = {}
        self._ids = iter(range(1, 10**9))
        self.url_map = Map([rule.empty() for rule in _RULES])
        self.faults = Faults()
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests to read
        # Bytes this server read from the store, by purpose ("download", "validation"):
        # what serving a range or validating a release costs RDR (fidelity rows 25, 39).
        self.s3_bytes_read: Counter = Counter()
        self.download_reads: list[list[int]] = []  # per streamed download: [bytes read]
        self.guestbook_entries: Counter = Counter()  # DataFile id -> download records
        self.clock = Clock()  # "today", for embargo dates; tests move it

    def next_id(self) -> int:
        return next(self._ids)

    def user(self, request: Request) -> str | None:
        token = request.headers.get("X-Dataverse-key") or request.args.get("key")
        if token is None:
            return None
        s = self.settings
        if token not in (s.api_token, s.admin_token, s.other_token):
            raise ApiError(401, "Bad API key")
        return token

    def is_super(self, user) -> bool:
        return user == self.settings.admin_token

    def can_edit(self, user, ds: Dataset) -> bool:
        return user is not None and (user == ds.owner or self.is_super(user))

    def require_user(self, request: Request) -> str:
        user = self.user(request)
        if user is None:
            raise ApiError(401, "Only authenticated users can perform the requested operation")
        return user

    def find_dataset(self, request: Request, dsid: str) -> Dataset:
        if dsid == ":persistentId":
            pid = request.args.get("persistentId", "")
            for ds in self.datasets.values():
                if self.pid(ds) == pid:
                    return ds
            raise ApiError(404, f"Dataset with Persistent ID {pid} not found.")
        try:
            return self.datasets[int(dsid)]
        except (ValueError, KeyError):
            raise ApiError(404, f"Dataset with ID {dsid} not found.") from None

    def find_filemeta(self, fid: str) -> tuple[Dataset, FileMetadata]:
        try:
            df = self.datafiles[int(fid)]
        except (ValueError, KeyError):
            raise ApiError(404, f"File with ID {fid} not found.") from None
        for ds in self.datasets.values():
            for fm in ds.latest.files:
                if fm.datafile is df:
                    return ds, fm
            for version in reversed(ds.versions):
                for fm in version.files:
                    if fm.datafile is df:
                        return ds, fm
        raise ApiError(404, f"File with ID {fid} not found.")

    def pid(self, ds: Dataset) -> str:
        return f"doi:{self.settings.authority}/{ds.identifier}"

    def editable_draft(self, ds: Dataset) -> Version:
        """The draft, created from the latest release when there is none (as Dataverse does)."""
        # PermissionServiceBean.checkEditDatasetLock: an Ingest lock alone allows edits.
        if any(lock["lockType"] not in ("Ingest", "InReview") for lock in ds.locks):
            raise ApiError(403, "Dataset cannot be edited due to dataset lock.")
        if ds.draft is None:
            base = ds.latest
            draft = Version(self.next_id(), json.loads(json.dumps(base.fields)),
                            json.loads(json.dumps(base.blocks)), base.license, base.terms,
                            [fm.copy(self.next_id()) for fm in base.files],
                            access_request=base.access_request,
                            terms_of_access=base.terms_of_access)
            ds.versions.append(draft)
        ds.draft.last_update = now()
        return ds.draft

    def __call__(self, environ, start_response):
        request = Request(environ)
        path = request.path
        if path.startswith("/api/v1/"):
            path = "/api/" + path[len("/api/v1/"):]
        adapter = self.url_map.bind_to_environ(environ)
        self.requests.append((request.method, path))
        fault = self.faults.take(request.method, path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        elif fault is not None and not fault.optimistic_lock:
            response = internal_error(fault.status or 500)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = str(fault.retry_after)
            return response(environ, start_response)
        try:
            endpoint, args = adapter.match(path, method=request.method)
            seen = self._revision_seen(request, endpoint, args)
            with self.lock:
                if fault is not None and fault.optimistic_lock:
                    raise OptimisticLock
                if seen is not None and seen[0].revision != seen[1]:
                    raise OptimisticLock
                response = getattr(self, endpoint)(request, **args)
                if seen is not None and response.status_code == 200:
                    seen[0].revision += 1
        except ApiError as e:
            response = e.response()
        except OptimisticLock:
            # An EJBException wrapping EclipseLink's OptimisticLockException reaches the
            # API's generic handler (IQSS/dataverse#11265); the transaction rolls back.
            log.info("OptimisticLockException on %s %s", request.method, path)
            response = internal_error()
        except NotFound:
            response = Response(json.dumps({
                "status": "ERROR", "code": 404,
                "message": "API endpoint does not exist on this server. Please check your "
                           "code for typos, or consult our API guide at "
                           "http://guides.dataverse.org.",
                "requestUrl": request.url, "requestMethod": request.method}),
                status=404, content_type="application/json")
        except HTTPException as e:
            response = Response(json.dumps({"status": "ERROR", "message": e.description}),
                                status=e.code, content_type="application/json")
        except Exception:
            log.exception("sandbox Dataverse failed on %s %s", request.method, path)
            response = internal_error()
        return response(environ, start_response)

    def _revision_seen(self, request, endpoint, args) -> tuple[Dataset, int] | None:
        """For a registration, the dataset and its revision when the request arrived.

        Dataverse reads the dataset, works on the files (reading each from the store), and
        merges the version at commit; another registration committed in between makes the
        merge fail. The global lock only keeps the sandbox's own data consistent: a request
        that waited for it while another registration on the dataset committed fails.
        """
        if endpoint not in REGISTRATIONS or not self.settings.optimistic_locking:
            return None
        try:  # without the lock: waiting for it is the window of the race
            ds = self.find_dataset(request, args["dsid"])
        except (ApiError, RuntimeError):
            return None
        return ds, ds.revision


_RULES = [*INSTALLATION_RULES, *DATASET_RULES, *PUBLISH_RULES, *UPLOAD_RULES, *FILE_RULES,
          *ACCESS_RULES, *EMBARGO_RULES]

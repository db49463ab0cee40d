"""The sandbox's Zenodo: the InvenioRDM REST API (``/api/records``) as zenodo.org answers it.

The contract is ../shared/reference/invenio-rdm-api.md ("ref §"); where the reference is
silent or uncertain the behaviour was read from the server's own source (InvenioRDM's
invenio-drafts-resources, invenio-records-resources, invenio-rdm-records, invenio-files-rest
and zenodo-rdm) and the choice is listed in docs/sandbox-zenodo.md. What it does, in short:

- drafts and records with numeric ids; a parent (concept) per dataset; version DOIs and the
  concept DOI ``10.5281/zenodo.<id>`` minted on the first publish;
- partial validation when a draft is saved (200/201 with ``errors`` in the body), strict
  validation on publish (400);
- the three-step upload (init, content, commit), with the bytes streamed to and from an S3
  server through boto3, never held in memory; files of a published record are locked
  (changing them needs a new version); the per-record limits of 100 files and 50 GB;
- Zenodo's quirk (ref §1.0): the records routes answer in Zenodo's legacy JSON unless the
  request carries the header ``Accept: application/vnd.inveniordm.v1+json``;
- for tests, under ``/_sandbox/`` (a path zenodo.org does not have): request and byte
  counters, and injectable faults (429 with Retry-After, an nginx-style HTML 504, ...).

Wiring::

    app = InvenioSandbox(InvenioSettings(tokens={"secret": "1"}), s3_client, "bucket")
    server = ServedApp(app).start()    # the API is then at server.url + "/api"
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import mimetypes
import re
import threading
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import quote, urlencode

from boto3.s3.transfer import TransferConfig
from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

RDM_JSON = "application/vnd.inveniordm.v1+json"
CHUNK = 1024 * 1024
GB = 10**9

# Zenodo's resource type vocabulary titles, for the ones tests and StepUp use; an id not
# listed here is stored and served without a title (the sandbox does not check vocabularies).
RESOURCE_TYPE_TITLES = {
    "dataset": "Dataset",
    "software": "Software",
    "publication": "Publication",
    "publication-article": "Journal article",
    "publication-report": "Report",
    "publication-preprint": "Preprint",
    "image": "Image",
    "image-figure": "Figure",
    "poster": "Poster",
    "presentation": "Presentation",
    "video": "Video/Audio",
    "lesson": "Lesson",
    "workflow": "Workflow",
    "model": "Model",
    "other": "Other",
}

# RDM relation type id -> the legacy serializer's camelCase name (zenodo-rdm common.py).
LEGACY_RELATIONS = {
    r.lower(): r
    for r in (
        "isCitedBy cites isSupplementTo isSupplementedBy isContinuedBy continues "
        "isDescribedBy describes hasMetadata isMetadataFor hasVersion isVersionOf "
        "isNewVersionOf isPreviousVersionOf isPartOf hasPart isPublishedIn "
        "isReferencedBy references isDocumentedBy documents isCompiledBy compiles "
        "isVariantFormOf isOriginalFormOf isIdenticalTo isReviewedBy reviews "
        "isDerivedFrom isSourceOf isRequiredBy requires isObsoletedBy obsoletes "
        "isAlternateIdentifier"
    ).split()
}

GATEWAY_TIMEOUT_HTML = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass
class InvenioSettings:
    """What Zenodo's operators configure, made small where tests need it."""

    # Personal access tokens -> user id. The first one is "the depositor".
    tokens: dict = field(
        default_factory=lambda: {uuid.uuid4().hex: "1", uuid.uuid4().hex: "2"}
    )
    max_files: int = 100  # RDM_RECORDS_MAX_FILES_COUNT
    max_record_bytes: int = 50 * GB  # RDM_FILES_DEFAULT_QUOTA_SIZE (bucket quota)
    max_file_bytes: int | None = None  # RDM_FILES_DEFAULT_MAX_FILE_SIZE; None: the quota
    base_url: str | None = None  # scheme+host in links; None: taken from each request
    doi_prefix: str = "10.5281"  # DATACITE_PREFIX; DOIs are {prefix}/zenodo.{id}
    first_id: int = 100001  # ids are numeric; parents and records share the sequence
    max_page_size: int = 100  # Zenodo refuses larger search pages
    s3_prefix: str = "zenodo"  # object keys in the S3 bucket start with this

    @property
    def token(self) -> str:
        return next(iter(self.tokens))


@dataclass
class Fault:
    """Make the next ``count`` requests matching ``method`` and ``path`` (a regex) fail.

    ``status`` 429 answers like Zenodo's rate limiter (JSON, Retry-After and X-RateLimit-*
    headers); 502/503/504 answer like the nginx in front of it (an HTML page). ``when``
    "after" lets the request take effect first and then loses the answer, as a gateway
    timeout on a slow but successful request does.
    """

    method: str = "*"
    path: str = ".*"
    status: int = 429
    count: int = 1
    retry_after: int | None = 60
    when: str = "before"
    hits: int = 0


@dataclass
class InvenioStats:
    requests: Counter = field(default_factory=Counter)  # method -> number of requests
    changing: int = 0  # requests other than GET/HEAD/OPTIONS
    upload_bytes: int = 0  # body bytes received by file content PUTs
    routes: Counter = field(default_factory=Counter)  # "METHOD endpoint" -> number

    def reset(self) -> None:
        self.requests.clear()
        self.routes.clear()
        self.changing = 0
        self.upload_bytes = 0

    def as_json(self) -> dict:
        return {
            "requests": sum(self.requests.values()),
            "by_method": dict(self.requests),
            "changing": self.changing,
            "upload_bytes": self.upload_bytes,
            "by_route": dict(self.routes),
        }


class ApiError(Exception):
    """An error answered as flask-resources does: ``{"status", "message", "errors"?}``."""

    def __init__(self, status: int, message: str, errors: list | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors

    def response(self) -> Response:
        body = {"status": self.status, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return _json(body, self.status)


def _validation_error(errors: list) -> ApiError:
    return ApiError(400, "A validation error occurred.", errors)


def _no_pid() -> ApiError:
    return ApiError(404, "The persistent identifier does not exist.")


def _json(data, status: int = 200, mimetype: str = "application/json") -> Response:
    return Response(json.dumps(data), status=status, mimetype=mimetype)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


# -- the stored state ------------------------------------------------------------------
@dataclass
class StoredFile:
    """A file entry of a draft or a record; its bytes are one S3 object."""

    key: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    metadata: dict | None = None
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    object_key: str | None = None  # set once content was uploaded
    size: int | None = None
    md5: str | None = None
    committed: bool = False
    file_id: str | None = None
    version_id: str | None = None

    @property
    def mimetype(self) -> str:
        return mimetypes.guess_type(self.key)[0] or "application/octet-stream"


@dataclass
class Snapshot:
    """One state of a version: its draft, or its published record."""

    metadata: dict
    access: dict
    custom_fields: dict
    bucket_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    files: dict = field(default_factory=dict)  # key -> StoredFile, in upload order
    files_enabled: bool = True
    default_preview: str | None = None
    order: list = field(default_factory=list)
    locked: bool = False  # the bucket lock of an edited published record
    revision_id: int = 1
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)

    def touch(self) -> None:
        self.revision_id += 1
        self.updated = _now()


@dataclass
class Parent:
    id: str
    owner: str
    doi: str | None = None
    versions: list = field(default_factory=list)  # Record, by version index


@dataclass
class Record:
    """One version of a dataset: a draft, a published record, or both while edited."""

    id: str
    parent: Parent
    index: int
    draft: Snapshot | None = None
    published: Snapshot | None = None
    doi: str | None = None
    created: str = field(default_factory=_now)


# -- what a draft may hold (partial validation), and what publishing needs (strict) --------
REQUIRED_METADATA = ("title", "publication_date", "resource_type", "creators")
STRING_FIELDS = ("version", "publisher", "description", "copyright", "title")
LIST_FIELDS = (
    "creators", "contributors", "rights", "subjects", "related_identifiers", "funding",
    "languages", "dates", "identifiers", "references", "additional_descriptions",
    "additional_titles", "sizes", "formats",
)
_EDTF_DAY = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def _is_edtf_level0(value) -> bool:
    if not isinstance(value, str):
        return False
    parts = value.split("/")
    if len(parts) > 2 or not all(_EDTF_DAY.match(p) for p in parts):
        return False
    for p in parts:
        nums = [int(x) for x in p.split("-")] + [1, 1]
        try:
            dt.date(*nums[:3])
        except ValueError:
            return False
    return True


def _creator_problems(i: int, creator) -> list:
    where = f"metadata.creators.{i}"
    if not isinstance(creator, dict):
        return [(where, "Invalid input type.")]
    person = creator.get("person_or_org")
    if not isinstance(person, dict):
        return [(f"{where}.person_or_org", "Missing data for required field.")]
    kind = person.get("type")
    if kind not in ("personal", "organizational"):
        return [(f"{where}.person_or_org.type",
                 "Invalid value. Choose one of ['organizational', 'personal'].")]
    if kind == "personal" and not person.get("family_name"):
        return [(f"{where}.person_or_org.family_name", "Family name must be filled.")]
    if kind == "organizational" and not person.get("name"):
        return [(f"{where}.person_or_org.name", "Name cannot be blank.")]
    for j, aff in enumerate(creator.get("affiliations") or []):
        if not (isinstance(aff, dict) and (aff.get("id") or aff.get("name"))):
            return [(f"{where}.affiliations.{j}",
                     "An existing id or a free text name must be present.")]
    return []


def _metadata_problems(name: str, value) -> list:
    """(field, message) pairs for one metadata field; empty when the field is valid."""
    where = f"metadata.{name}"
    if name in STRING_FIELDS and not isinstance(value, str):
        return [(where, "Not a valid string.")]
    if name in LIST_FIELDS and not isinstance(value, list):
        return [(where, "Not a valid list.")]
    if name == "title" and len(value.strip()) < 3:
        return [(where, "Shorter than minimum length 3.")]
    if name == "publication_date" and not _is_edtf_level0(value):
        return [(where, "Please provide a valid date or interval.")]
    if name == "resource_type":
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            return [(f"{where}.id", "Missing data for required field.")]
    if name == "creators":
        if not value:
            return [(where, "Missing data for required field.")]
        return [p for i, c in enumerate(value) for p in _creator_problems(i, c)]
    return []


def _as_errors(problems: list) -> list:
    merged: dict = {}
    for where, message in problems:
        merged.setdefault(where, []).append(message)
    return [{"field": f, "messages": m} for f, m in merged.items()]


def load_record_input(body: dict) -> tuple[dict, list]:
    """Split a create/update body into what a draft keeps and the problems found.

    Like InvenioRDM saving a draft: invalid fields are dropped and reported, the rest is
    kept (missing required fields are reported too, but do not prevent saving).
    """
    problems = []
    metadata_in = body.get("metadata") or {}
    if not isinstance(metadata_in, dict):
        problems.append(("metadata", "Invalid input type."))
        metadata_in = {}
    metadata = {}
    for name, value in metadata_in.items():
        found = _metadata_problems(name, value)
        problems.extend(found)
        if not found:
            metadata[name] = copy.deepcopy(value)
    for name in REQUIRED_METADATA:
        if name not in metadata_in:
            problems.append((f"metadata.{name}", "Missing data for required field."))

    access_in = body.get("access") or {}
    access = {"record": "public", "files": "public"}
    if isinstance(access_in, dict):
        for level in ("record", "files"):
            value = access_in.get(level, "public")
            if value not in ("public", "restricted"):
                problems.append((f"access.{level}", "Must be one of: public, restricted."))
            else:
                access[level] = value
        if access["record"] == "restricted":
            # Zenodo: RDM_ALLOW_RESTRICTED_RECORDS = False
            problems.append(("access.record",
                             "You don't have permissions to manage record access."))
            access["record"] = "public"
        if isinstance(access_in.get("embargo"), dict):
            embargo = copy.deepcopy(access_in["embargo"])
            found = _embargo_problems(embargo)
            problems.extend(found)
            if not found:
                access["embargo"] = embargo
    files = body.get("files") if isinstance(body.get("files"), dict) else {}
    custom = body.get("custom_fields") if isinstance(body.get("custom_fields"), dict) else {}
    data = {"metadata": metadata, "access": access, "files": files,
            "custom_fields": copy.deepcopy(custom)}
    return data, _as_errors(problems)


def _embargo_problems(embargo: dict) -> list:
    """invenio-rdm-records' EmbargoSchema: an active embargo ends in the future, an inactive
    one has no end ahead."""
    try:
        until = dt.date.fromisoformat(embargo["until"]) if embargo.get("until") else None
    except (TypeError, ValueError):
        return [("access.embargo.until", "Not a valid date.")]
    today = dt.datetime.now(dt.UTC).date()
    if embargo.get("active") and (until is None or until <= today):
        return [("access.embargo.until", "Embargo end date must be set to a future date.")]
    if embargo.get("active") is False and until is not None and until > today:
        return [("access.embargo.until", "Embargo end date must be unset or in the past.")]
    return []


def publish_problems(snap: Snapshot) -> list:
    """Errors of the strict validation run when a draft is published."""
    problems = []
    for name in REQUIRED_METADATA:
        if name not in snap.metadata:
            problems.append((f"metadata.{name}", "Missing data for required field."))
    for name, value in snap.metadata.items():
        problems.extend(_metadata_problems(name, value))
    return _as_errors(problems)


# -- the application -----------------------------------------------------------------
_RULES = [
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
    Rule("/api/records/<rid>/versions", methods=["POST"], endpoint="new_version"),
    Rule("/api/records/<rid>/versions", methods=["GET"], endpoint="list_versions"),
    Rule("/api/records/<rid>/versions/latest", methods=["GET"], endpoint="latest"),
    Rule("/api/user/records", methods=["GET"], endpoint="user_records"),
    # The sandbox's own interface for tests; zenodo.org has no such path.
    Rule("/_sandbox/stats", methods=["GET"], endpoint="admin_stats"),
    Rule("/_sandbox/stats", methods=["DELETE"], endpoint="admin_stats_reset"),
    Rule("/_sandbox/faults", methods=["GET"], endpoint="admin_faults"),
    Rule("/_sandbox/faults", methods=["POST"], endpoint="admin_fault_add"),
    Rule("/_sandbox/faults", methods=["DELETE"], endpoint="admin_faults_clear"),
]
# These move bytes to or from S3 and must not hold the state lock while doing so.
_STREAMING = {"upload_content", "download_draft_file", "download_record_file"}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
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


class InvenioSandbox:
    """A Werkzeug WSGI application answering Zenodo's InvenioRDM REST API."""

    def __init__(self, settings: InvenioSettings, s3_client, bucket: str):
        self.settings = settings
        self.s3 = s3_client
        self.bucket = bucket
        self.lock = threading.RLock()
        self.records: dict[str, Record] = {}
        self.parents: dict[str, Parent] = {}
        self.stats = InvenioStats()
        self.faults: list[Fault] = []
        self._refs: Counter = Counter()  # S3 object key -> file entries using it
        self._ids = iter(range(settings.first_id, 10**12))
        self.url_map = Map([rule.empty() for rule in _RULES], strict_slashes=False)

    # -- faults --------------------------------------------------------------------------
    def inject(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if (fault.count > 0 and fault.method in ("*", method)
                        and re.search(fault.path, path)):
                    fault.count -= 1
                    fault.hits += 1
                    return fault
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> Response:
        if fault.status == 429:
            resp = _json({"status": 429, "message": "100 per 1 minute"}, 429)
            resp.headers["X-RateLimit-Limit"] = "100"
            resp.headers["X-RateLimit-Remaining"] = "0"
            reset = int(dt.datetime.now(dt.timezone.utc).timestamp()) + (
                fault.retry_after or 60)
            resp.headers["X-RateLimit-Reset"] = str(reset)
        elif fault.status in (502, 503, 504):
            text = GATEWAY_TIMEOUT_HTML
            if fault.status != 504:
                title = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable"}
                text = text.replace("504 Gateway Time-out", title[fault.status])
            resp = Response(text, status=fault.status, mimetype="text/html")
        else:
            resp = _json({"status": fault.status, "message": "Internal server error."},
                         fault.status)
        if fault.retry_after is not None and fault.status in (429, 503):
            resp.headers["Retry-After"] = str(fault.retry_after)
        return resp

    # -- WSGI ----------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request = Request(environ)
        adapter = self.url_map.bind_to_environ(environ)
        admin = request.path.startswith("/_sandbox/")
        fault = None
        if not admin:
            with self.lock:
                self.stats.requests[request.method] += 1
                if request.method not in _SAFE_METHODS:
                    self.stats.changing += 1
            fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.when == "before":
            response = self._fault_response(fault)
        else:
            response = self._dispatch(request, adapter, admin)
            if fault is not None:
                response = self._fault_response(fault)
        # The nginx in front of Zenodo buffers the whole request body before anything
        # answers, so a client always gets to read the answer: read what is left.
        self._drain(request)
        return response(environ, start_response)

    def _dispatch(self, request: Request, adapter, admin: bool) -> Response:
        try:
            endpoint, args = adapter.match(method=request.method)
            if not admin:
                with self.lock:
                    self.stats.routes[f"{request.method} {endpoint}"] += 1
            handler = getattr(self, endpoint)
            if endpoint in _STREAMING:
                return handler(request, **args)
            with self.lock:
                return handler(request, **args)
        except ApiError as e:
            return e.response()
        except HTTPException as e:
            return _json({"status": e.code, "message": e.description}, e.code)

    def _drain(self, request: Request) -> None:
        counted = request.method == "PUT" and request.path.endswith("/content")
        try:
            while data := request.stream.read(CHUNK):
                if counted:
                    self._count_upload(len(data))
        except (ClientDisconnected, OSError):
            pass

    def _count_upload(self, n: int) -> None:
        with self.lock:
            self.stats.upload_bytes += n

    # -- identity, lookup and JSON in/out --------------------------------------------------
    def _next_id(self) -> str:
        return str(next(self._ids))

    def _user(self, request: Request) -> str | None:
        # An unknown token leaves the request anonymous, as invenio-oauth2server does.
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        token = token or request.args.get("access_token")
        return self.settings.tokens.get(token) if token else None

    def _require_user(self, request: Request) -> str:
        user = self._user(request)
        if user is None:
            raise ApiError(403, "Permission denied.")
        return user

    def _record(self, rid: str) -> Record:
        record = self.records.get(rid)
        if record is None:
            raise _no_pid()
        return record

    def _owned(self, request: Request, rid: str) -> Record:
        record = self._record(rid)  # an unknown id is a 404 even without a token
        if self._user(request) != record.parent.owner:
            raise ApiError(403, "Permission denied.")
        return record

    def _draft_of(self, request: Request, rid: str) -> tuple[Record, Snapshot]:
        record = self._owned(request, rid)
        if record.draft is None:  # a published record that is not being edited
            raise ApiError(404, "Not found.")
        return record, record.draft

    @staticmethod
    def _published(record: Record) -> Snapshot:
        if record.published is None:
            raise ApiError(404, "The persistent identifier is not registered.")
        return record.published

    @staticmethod
    def _body(request: Request, default=None):
        raw = request.get_data(cache=True)
        if not raw.strip():
            return {} if default is None else default
        if request.mimetype != "application/json":
            raise ApiError(415, "The server does not support the media type transmitted "
                                "in the request.")
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "Unable to decode JSON data in request body.") from None

    def _base(self, request: Request) -> str:
        return (self.settings.base_url or request.host_url).rstrip("/")

    def _answer(self, request: Request, data: dict, status: int = 200,
                etag: int | None = None) -> Response:
        """A records-resource answer: legacy Zenodo JSON unless RDM JSON was asked for."""
        if RDM_JSON in request.headers.get("Accept", ""):
            resp = _json(data, status, RDM_JSON)
        else:
            resp = _json(self._legacy(data), status)
        if etag is not None:
            resp.headers["ETag"] = f'"{etag}"'
        return resp

    def _answer_list(self, request: Request, hits: list, total: int, links: dict,
                     sort: str) -> Response:
        legacy = RDM_JSON not in request.headers.get("Accept", "")
        if legacy:
            hits = [self._legacy(h) for h in hits]
        body = {"hits": {"hits": hits, "total": total}, "aggregations": {},
                "sortBy": sort, "links": links}
        return _json(body, 200, "application/json" if legacy else RDM_JSON)

    # -- record JSON (RDM) -------------------------------------------------------------------
    def _doi(self, pid: str) -> str:
        return f"{self.settings.doi_prefix}/zenodo.{pid}"

    def _file_entry(self, f: StoredFile, files_url: str) -> dict:
        entry = {"id": f.id, "key": f.key, "metadata": f.metadata or {},
                 "access": {"hidden": False},
                 "links": {"self": f"{files_url}/{quote(f.key)}",
                           "content": f"{files_url}/{quote(f.key)}/content"}}
        if f.committed:
            entry.update(checksum=f"md5:{f.md5}", size=f.size, mimetype=f.mimetype,
                         ext=f.key.rsplit(".", 1)[-1].lower() if "." in f.key else None,
                         storage_class="L")
        return entry

    def _record_json(self, request: Request, record: Record, snap: Snapshot,
                     is_draft: bool, errors: list | None = None) -> dict:
        base = self._base(request)
        api = f"{base}/api/records/{record.id}"
        parent = record.parent
        latest = self._latest_published(parent)
        published = [r for r in parent.versions if r.published is not None]
        links = {
            "latest": f"{api}/versions/latest",
            "latest_html": f"{base}/records/{record.id}/latest",
            "versions": f"{api}/versions",
            "access_links": f"{api}/access/links",
            "parent": f"{base}/api/records/{parent.id}",
            "parent_html": f"{base}/records/{parent.id}",
            "draft": f"{api}/draft",
            "record": api,
            "record_html": f"{base}/records/{record.id}",
        }
        if is_draft:
            files_url = f"{api}/draft/files"
            links.update(self=f"{api}/draft", self_html=f"{base}/uploads/{record.id}",
                         publish=f"{api}/draft/actions/publish",
                         reserve_doi=f"{api}/draft/pids/doi", files=files_url,
                         archive=f"{api}/draft/files-archive")
        else:
            files_url = f"{api}/files"
            links.update(self=api, self_html=f"{base}/records/{record.id}",
                         files=files_url, archive=f"{api}/files-archive")
        pids = {}
        if record.doi:
            pids = {"doi": {"identifier": record.doi, "provider": "datacite",
                            "client": "datacite"},
                    "oai": {"identifier": f"oai:zenodo.org:{record.id}",
                            "provider": "oai"}}
            links.update(doi=f"https://doi.org/{record.doi}",
                         self_doi=f"https://doi.org/{record.doi}")
        parent_json = {"id": parent.id,
                       "access": {"owned_by": {"user": parent.owner},
                                  "settings": {"allow_user_requests": False,
                                               "allow_guest_requests": False,
                                               "accept_conditions_text": None,
                                               "secret_link_expiration": 0}},
                       "communities": {}, "pids": {}}
        if parent.doi:
            parent_json["pids"] = {"doi": {"identifier": parent.doi,
                                           "provider": "datacite", "client": "datacite"}}
            links["parent_doi"] = f"https://doi.org/{parent.doi}"
        metadata = copy.deepcopy(snap.metadata)
        for creator in metadata.get("creators", []):
            person = creator.get("person_or_org", {})
            if person.get("type") == "personal":
                given = person.get("given_name")
                person["name"] = (f"{person['family_name']}, {given}" if given
                                  else person["family_name"])
        rtype = metadata.get("resource_type", {}).get("id")
        if rtype in RESOURCE_TYPE_TITLES:
            metadata["resource_type"]["title"] = {"en": RESOURCE_TYPE_TITLES[rtype]}
        entries = {f.key: self._file_entry(f, files_url) for f in snap.files.values()}
        files = {"enabled": snap.files_enabled, "order": list(snap.order),
                 "count": len(entries),
                 "total_bytes": sum(f.size or 0 for f in snap.files.values()
                                    if f.committed),
                 "entries": entries}
        if snap.default_preview:
            files["default_preview"] = snap.default_preview
        is_published = record.published is not None
        if not is_draft or is_published:
            status = "published"
        else:
            status = "new_version_draft" if record.index > 1 else "draft"
        embargoed = (snap.access.get("embargo") or {}).get("active")
        access = {**snap.access, "status": "embargoed" if embargoed else
                  "open" if snap.access["files"] == "public" else "restricted"}
        access.setdefault("embargo", {"active": False, "reason": None})
        data = {
            "id": record.id,
            "created": record.created,
            "updated": snap.updated,
            "links": links,
            "revision_id": snap.revision_id,
            "parent": parent_json,
            "versions": {"index": record.index,
                         "is_latest": latest is record,
                         "is_latest_draft": parent.versions[-1] is record},
            "is_published": is_published,
            "is_draft": is_draft,
            "pids": pids,
            "metadata": metadata,
            "custom_fields": copy.deepcopy(snap.custom_fields),
            "access": access,
            "files": files,
            "media_files": {"enabled": False, "order": [], "count": 0,
                            "total_bytes": 0, "entries": {}},
            "status": status,
            "deletion_status": {"is_deleted": False, "status": "P"},
        }
        if not is_draft:
            data["stats"] = {"this_version": {"views": 0, "downloads": 0},
                             "all_versions": {"views": 0, "downloads": 0}}
            data["versions"]["count"] = len(published)
        if errors:
            data["errors"] = errors
        return data

    # -- record JSON (Zenodo's legacy serializer, zenodo-rdm legacy/serializers) -------------
    @staticmethod
    def _legacy(r: dict) -> dict:
        md = r.get("metadata", {})
        legacy_md: dict = {}
        for name in ("title", "publication_date", "description", "version"):
            if name in md:
                legacy_md[name] = md[name]
        doi = r.get("pids", {}).get("doi", {}).get("identifier")
        if doi:
            legacy_md["doi"] = doi
        files_access = r["access"]["files"]
        legacy_md["access_right"] = "open" if files_access == "public" else "restricted"
        creators = []
        for c in md.get("creators", []):
            person = c.get("person_or_org", {})
            out = {"name": person.get("name"),
                   "affiliation": (c.get("affiliations") or [{}])[0].get("name")}
            for ident in person.get("identifiers", []):
                if ident.get("scheme") in ("orcid", "gnd"):
                    out[ident["scheme"]] = ident.get("identifier")
            creators.append(out)
        if "creators" in md:
            legacy_md["creators"] = creators
        keywords = [s["subject"] for s in md.get("subjects", []) if s.get("subject")
                    and not s.get("id")]
        if keywords:
            legacy_md["keywords"] = keywords
        related = []
        for rel in md.get("related_identifiers", []):
            item = {"identifier": rel.get("identifier"), "scheme": rel.get("scheme")}
            relation = LEGACY_RELATIONS.get((rel.get("relation_type") or {}).get("id"))
            if relation:
                item["relation"] = relation
            if rel.get("resource_type"):
                item["resource_type"] = rel["resource_type"].get("id")
            related.append(item)
        if related:
            legacy_md["related_identifiers"] = related
        if md.get("rights"):
            # zenodo-rdm maps the first right through rdm_to_legacy; ids are passed here.
            legacy_md["license"] = {"id": md["rights"][0].get("id")}
        if md.get("languages"):
            legacy_md["language"] = md["languages"][0].get("id")
        rtype = md.get("resource_type", {})
        if rtype.get("id"):
            legacy_rt = {"type": rtype["id"].split("-")[0]}
            if "-" in rtype["id"]:
                legacy_rt["subtype"] = rtype["id"].split("-")[-1]
            if rtype.get("title", {}).get("en"):
                legacy_rt["title"] = rtype["title"]["en"]
            legacy_md["resource_type"] = legacy_rt
        legacy_md["relations"] = {"version": [{
            "index": r["versions"]["index"] - 1,
            "is_last": r["versions"]["is_latest"],
            "parent": {"pid_type": "recid", "pid_value": r["parent"]["id"]},
        }]}
        files_url = r["links"].get("files")
        files = [{"id": f["id"], "key": f["key"], "size": f.get("size"),
                  "checksum": f.get("checksum"),
                  "links": {"self": f"{files_url}/{quote(key)}/content"}}
                 for key, f in r["files"]["entries"].items()]
        out = {
            "created": r["created"],
            "modified": r["updated"],
            "updated": r["updated"],
            "id": int(r["id"]),
            "recid": r["id"],
            "conceptrecid": r["parent"]["id"],
            "metadata": legacy_md,
            "title": md.get("title", ""),
            "links": r["links"],
            "revision": r["revision_id"],
            "files": files,
            "swh": {},
            "owners": [{"id": r["parent"]["access"]["owned_by"]["user"]}],
            "status": "draft" if r["is_draft"] else "published",
            "state": ("unsubmitted" if not r["is_published"]
                      else "inprogress" if r["is_draft"] else "done"),
            "submitted": r["is_published"],
        }
        if doi:
            out["doi"] = doi
            out["doi_url"] = r["links"].get("doi")
        concept = r["parent"].get("pids", {}).get("doi", {}).get("identifier")
        if concept:
            out["conceptdoi"] = concept
        return out  # the legacy schema has no "errors": a draft's problems are not shown

    # -- file JSON (the draft-files resource always answers RDM file JSON) ----------------------
    def _file_json(self, request: Request, record: Record, snap: Snapshot,
                   f: StoredFile, is_draft: bool = True) -> dict:
        api = f"{self._base(request)}/api/records/{record.id}"
        url = f"{api}/draft/files/{quote(f.key)}" if is_draft else \
            f"{api}/files/{quote(f.key)}"
        data = {"key": f.key, "created": f.created, "updated": f.updated,
                "status": "completed" if f.committed else "pending",
                "metadata": f.metadata, "access": {"hidden": False},
                "transfer": {"type": "L"},
                "links": {"self": url, "content": f"{url}/content"}}
        if is_draft:
            data["links"]["commit"] = f"{url}/commit"
        if f.committed:
            data.update(checksum=f"md5:{f.md5}", mimetype=f.mimetype, size=f.size,
                        file_id=f.file_id, version_id=f.version_id,
                        bucket_id=snap.bucket_id, storage_class="L")
        return data

    def _files_json(self, request: Request, record: Record, snap: Snapshot,
                    files: list, is_draft: bool = True) -> dict:
        api = f"{self._base(request)}/api/records/{record.id}"
        return {"enabled": snap.files_enabled, "default_preview": snap.default_preview,
                "order": list(snap.order),
                "entries": [self._file_json(request, record, snap, f, is_draft)
                            for f in files],
                "links": {"self": f"{api}/draft/files" if is_draft else f"{api}/files"}}

    # -- versions --------------------------------------------------------------------------
    @staticmethod
    def _latest_published(parent: Parent) -> Record | None:
        published = [r for r in parent.versions if r.published is not None]
        return published[-1] if published else None

    # -- S3: every stored file entry holds a reference to its object ------------------------
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

    # -- drafts and records ---------------------------------------------------------------------
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
            raise _validation_error([{"field": "_schema", "messages": ["Invalid input type."]}])
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
            raise _no_pid()  # DraftNotCreatedError
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
            raise _validation_error([{"field": "_schema", "messages": ["Invalid input type."]}])
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
            raise _validation_error(errors)
        if snap.files_enabled and not snap.files:
            raise _validation_error([{"field": "files.enabled", "messages": [
                "Missing uploaded files. To disable files for this record please mark "
                "it as metadata-only."]}])
        if any(not f.committed for f in snap.files.values()):
            raise _validation_error([{"field": "files", "messages": [
                "One or more files have not completed their transfer, please wait."]}])
        if not snap.metadata.get("publisher"):
            raise _validation_error([{"field": "metadata.publisher", "messages": [
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
            raise _validation_error([{"field": "files.enabled",
                                      "messages": ["Files support must be enabled."]}])
        if snap.files:
            raise _validation_error([{"field": "files.enabled",
                                      "messages": ["Please remove all files first."]}])
        if not latest.published.files_enabled:
            raise _validation_error([{"field": "files.enabled",
                                      "messages": ["The record has no files."]}])
        snap.files = self._copy_files(latest.published.files)
        snap.touch()
        return _json(self._files_json(request, record, snap, list(snap.files.values())),
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
        resp = _json({"status": 301, "message": "Redirecting...", "location": location},
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

    # -- draft files -------------------------------------------------------------------------
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
        return _json(self._files_json(request, record, snap, list(snap.files.values())))

    def init_files(self, request, rid):
        record, snap = self._draft_of(request, rid)
        body = self._body(request, default=[])
        if not isinstance(body, list):
            raise _validation_error([{"field": "0._schema",
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
            raise _validation_error(_as_errors(problems))
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
        return _json(self._files_json(request, record, snap, created), 201)

    def read_draft_file(self, request, rid, key):
        record, snap, f = self._draft_file(request, rid, key)
        return _json(self._file_json(request, record, snap, f))

    def update_draft_file(self, request, rid, key):
        record, snap, f = self._draft_file(request, rid, key)
        body = self._body(request)
        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            f.metadata = body["metadata"]
            f.updated = _now()
        return _json(self._file_json(request, record, snap, f))

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
            f.updated = _now()
            return _json(self._file_json(request, record, snap, f))

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
            f.updated = _now()
            snap.touch()
        return _json(self._file_json(request, record, snap, f))

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

    # -- files of published records ------------------------------------------------------------
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
        return _json(self._files_json(request, record, snap, list(snap.files.values()),
                                      is_draft=False))

    def read_record_file(self, request, rid, key):
        record, snap, f = self._record_file(rid, key)
        return _json(self._file_json(request, record, snap, f, is_draft=False))

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

    # -- the sandbox's own interface --------------------------------------------------------------
    def admin_stats(self, request):
        return _json(self.stats.as_json())

    def admin_stats_reset(self, request):
        self.stats.reset()
        return Response(status=204)

    def admin_faults(self, request):
        return _json([asdict(f) for f in self.faults if f.count > 0])

    def admin_fault_add(self, request):
        body = self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "Bad fault: expected a JSON object.")
        known = {k: v for k, v in body.items() if k in Fault.__dataclass_fields__}
        try:
            fault = Fault(**known)
            re.compile(fault.path)
        except (TypeError, re.error) as e:
            raise ApiError(400, f"Bad fault: {e}") from None
        self.faults.append(fault)
        return _json(asdict(fault), 201)

    def admin_faults_clear(self, request):
        self.faults.clear()
        return Response(status=204)

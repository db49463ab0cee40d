"""The sandbox's Zenodo application: identity, lookups, faults, and the WSGI entry that
routes each request to the module that answers it."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections import Counter
from dataclasses import asdict

from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .answers import ApiError, json_response, no_pid
from .files import RULES as FILE_RULES, FileEndpoints
from .model import Parent, Record, Snapshot
from .records import RULES as RECORD_RULES, RecordEndpoints
from .serializers import RecordSerializer
from .settings import CHUNK, GATEWAY_TIMEOUT_HTML, RDM_JSON, ZenodoFault, InvenioSettings, InvenioStats

# These move bytes to or from S3 and must not hold the state lock while doing so.
_STREAMING = {"upload_content", "download_draft_file", "download_record_file"}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class InvenioSandbox(RecordEndpoints, FileEndpoints, RecordSerializer):
    """A Werkzeug WSGI application answering Zenodo's InvenioRDM REST API."""

    def __init__(self, settings: InvenioSettings, s3_client, bucket: str):
        self.settings = settings
        self.s3 = s3_client
        self.bucket = bucket
        self.lock = threading.RLock()
        self.records: dict[str, Record] = {}
        self.parents: dict[str, Parent] = {}
        self.stats = InvenioStats()
        self.faults: list[ZenodoFault] = []
        self._refs: Counter = Counter()  # S3 object key -> file entries using it
        self._ids = iter(range(settings.first_id, 10**12))
        self.url_map = Map([rule.empty() for rule in _RULES], strict_slashes=False)

    def inject(self, fault: ZenodoFault) -> ZenodoFault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def _take_fault(self, method: str, path: str) -> ZenodoFault | None:
        with self.lock:
            for fault in self.faults:
                if (fault.count > 0 and fault.method in ("*", method)
                        and re.search(fault.path, path)):
                    fault.count -= 1
                    fault.hits += 1
                    return fault
        return None

    @staticmethod
    def _fault_response(fault: ZenodoFault) -> Response:
        if fault.status == 429:
            resp = json_response({"status": 429, "message": "100 per 1 minute"}, 429)
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
            resp = json_response({"status": fault.status, "message": "Internal server error."},
                         fault.status)
        if fault.retry_after is not None and fault.status in (429, 503):
            resp.headers["Retry-After"] = str(fault.retry_after)
        return resp

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
            return json_response({"status": e.code, "message": e.description}, e.code)

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
            raise no_pid()
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
            resp = json_response(data, status, RDM_JSON)
        else:
            resp = json_response(self._legacy(data), status)
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
        return json_response(body, 200, "application/json" if legacy else RDM_JSON)

    def admin_stats(self, request):
        return json_response(self.stats.as_json())

    def admin_stats_reset(self, request):
        self.stats.reset()
        return Response(status=204)

    def admin_faults(self, request):
        return json_response([asdict(f) for f in self.faults if f.count > 0])

    def admin_fault_add(self, request):
        body = self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "Bad fault: expected a JSON object.")
        known = {k: v for k, v in body.items() if k in ZenodoFault.__dataclass_fields__}
        try:
            fault = ZenodoFault(**known)
            re.compile(fault.path)
        except (TypeError, re.error) as e:
            raise ApiError(400, f"Bad fault: {e}") from None
        self.faults.append(fault)
        return json_response(asdict(fault), 201)

    def admin_faults_clear(self, request):
        self.faults.clear()
        return Response(status=204)


_RULES = [*RECORD_RULES, *FILE_RULES,
          # The sandbox's own interface for tests; zenodo.org has no such path.
          Rule("/_sandbox/stats", methods=["GET"], endpoint="admin_stats"),
          Rule("/_sandbox/stats", methods=["DELETE"], endpoint="admin_stats_reset"),
          Rule("/_sandbox/faults", methods=["GET"], endpoint="admin_faults"),
          Rule("/_sandbox/faults", methods=["POST"], endpoint="admin_fault_add"),
          Rule("/_sandbox/faults", methods=["DELETE"], endpoint="admin_faults_clear")]

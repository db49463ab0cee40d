"""Client of Zenodo's InvenioRDM API (``/api/records``): everything we know about the server.

Only the calls ``datalad zenodo-sync`` needs, named for what they do. Each answer is read
here, once, into a :class:`Record` (a draft or a published record) with its
:class:`FileEntry` list; a refusal raises a :class:`ZenodoError` subclass saying what kind
(:class:`NotFound`, :class:`Forbidden`, :class:`Conflict`, :class:`Locked`), with the
server's own message. No other module reads Zenodo's JSON. What Zenodo does that a reader of
the InvenioRDM docs would not expect (../shared/reference/invenio-rdm-api.md, "ref §"):

- The records routes answer in Zenodo's *legacy* JSON unless the request carries the header
  ``Accept: application/vnd.inveniordm.v1+json`` (ref §1.0). It is sent on every request,
  as a header, never as a query parameter, and so is the token (``Authorization: Bearer``),
  so neither ends up in a URL or a log line.
- An unknown token is not refused as such: the request runs anonymously, and a draft then
  answers 403 (or 404). :attr:`Zenodo.token_accepted` says whether any request that needs
  the token succeeded, which is when a credential may be remembered as working.
- A published record's files are locked; changing files means a new version (ref §1.2), whose
  draft starts without files until ``files-import`` copies the previous version's (no bytes
  move). ``new_version`` is idempotent: an existing next-version draft is returned.
- 429 (with Retry-After), 5xx and the HTML 504 page of the gateway are retried with backoff
  (:func:`datalad_rdr.http.with_retries`). A gateway time-out can also hide a request that
  *did* take effect; calls whose repetition would then fail (init, delete, import, publish)
  recognise that answer as success.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import requests

from ..http import Backoff, with_retries

RDM_JSON = "application/vnd.inveniordm.v1+json"
MD5_PREFIX = "md5:"
CHUNK = 1024 * 1024

# What Zenodo allows per record (ref §1.6: "50GB total in the record (and any given file),
# and up to 100 files in the record"). Configurable in datalad-rdr for tests.
MAX_FILES = 100
MAX_BYTES = 50 * 10**9


class ZenodoError(Exception):
    """Zenodo refused or failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str, what: str = "",
                 errors: list | None = None):
        self.status, self.message, self.what = status, message, what
        self.errors = errors or []
        detail = "; ".join(f"{e.get('field')}: {' '.join(e.get('messages') or [])}"
                           for e in self.errors if isinstance(e, dict))
        text = f"{what}: HTTP {status}: {message}" if what else message
        super().__init__(f"{text} ({detail})" if detail else text)


class NotFound(ZenodoError):
    """No such record, draft or file (404)."""


class Forbidden(ZenodoError):
    """401/403: the token is unknown, lacks a scope, or does not own the record."""


class Locked(ZenodoError):
    """The files of a published record (its bucket) cannot change (a 403 that is no
    refusal of the token)."""


class Conflict(ZenodoError):
    """The request clashes with what the draft holds (409; "already exists"; "remove all
    files first")."""


def _error(response: requests.Response, what: str) -> ZenodoError:
    try:
        body = response.json()
        message = body.get("message") or response.text[:200]
        errors = body.get("errors")
    except ValueError:  # e.g. the gateway's HTML 504 page
        text = response.text.strip()
        message = response.reason or (text[:200] if text else "")
        errors = None
    message = str(message)
    status = response.status_code
    lowered = message.lower()
    if status == 404:
        kind = NotFound
    elif status == 403 and "locked" in lowered:
        kind = Locked
    elif status in (401, 403):
        kind = Forbidden
    elif status == 409 or (status == 400 and ("already exists" in lowered or
                                              "remove all files" in lowered)):
        kind = Conflict
    else:
        kind = ZenodoError
    return kind(status, message, what, errors)


@dataclass(frozen=True)
class FileEntry:
    """One file of a draft or record; ``md5`` is None while an upload is not committed."""

    key: str
    md5: str | None
    size: int | None
    content_url: str | None = None


def _entry(key: str, e: dict) -> FileEntry:
    checksum = e.get("checksum")
    md5 = checksum[len(MD5_PREFIX):] if isinstance(checksum, str) and \
        checksum.startswith(MD5_PREFIX) else None
    return FileEntry(key, md5, e.get("size"), (e.get("links") or {}).get("content"))


def _entries(files: dict) -> dict[str, FileEntry]:
    """A record's files by key (the record JSON holds a dict of entries)."""
    entries = files.get("entries") or {}
    return {key: _entry(key, e) for key, e in entries.items()}


@dataclass
class Record:
    """A draft or a published record, as far as a sync needs it.

    ``content`` holds the parts of the record that a sync sends (``metadata``,
    ``custom_fields``, ``access``, ``files.order``/``default_preview``), in the RDM form the
    config builds, so that the two can be compared key by key.
    """

    id: str
    is_published: bool
    files: dict[str, FileEntry]
    content: dict
    version_index: int = 1
    concept_id: str | None = None
    doi: str | None = None  # minted when the version is published
    concept_doi: str | None = None
    url: str | None = None  # the record's page
    problems: list[str] = field(default_factory=list)  # what Zenodo did not accept

    @property
    def version(self) -> str | None:
        return self.content["metadata"].get("version")

    @property
    def publication_date(self) -> str | None:
        return self.content["metadata"].get("publication_date")

    @classmethod
    def parse(cls, body: dict) -> Record:
        parent = body.get("parent") or {}
        files = body.get("files") or {}
        return cls(
            id=str(body["id"]),
            is_published=bool(body.get("is_published")),
            files=_entries(files) if isinstance(files, dict) else {},
            content={
                "metadata": body.get("metadata") or {},
                "custom_fields": body.get("custom_fields") or {},
                "access": body.get("access") or {},
                "files": {k: files[k] for k in ("order", "default_preview")
                          if isinstance(files, dict) and k in files},
            },
            version_index=(body.get("versions") or {}).get("index", 1),
            concept_id=parent.get("id"),
            doi=((body.get("pids") or {}).get("doi") or {}).get("identifier"),
            concept_doi=((parent.get("pids") or {}).get("doi") or {}).get("identifier"),
            url=(body.get("links") or {}).get("self_html"),
            problems=[f"{e.get('field')}: {' '.join(e.get('messages') or [])}"
                      for e in body.get("errors") or [] if isinstance(e, dict)],
        )


class _Body:
    """A file as a request body: length known (so Content-Length is sent), read in chunks,
    hashed on the way and reported to ``progress(bytes_sent)``."""

    def __init__(self, fh, size: int, progress: Callable[[int], None] | None):
        self.fh, self.size, self.progress = fh, size, progress
        self.md5 = hashlib.md5()
        self.sent = 0

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(CHUNK if n is None or n < 0 else n)
        self.md5.update(data)
        self.sent += len(data)
        if self.progress and data:
            self.progress(self.sent)
        return data


class Zenodo:
    def __init__(self, endpoint: str, token: str, backoff: Backoff | None = None,
                 timeout: float = 120):
        self.endpoint = endpoint.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["Accept"] = RDM_JSON
        self.backoff = backoff or Backoff()
        self.timeout = timeout
        self.token_accepted = False
        self.changed = False  # a request that changes something on Zenodo succeeded

    # -- plumbing --------------------------------------------------------------------
    def _call(self, method: str, path: str, *, what: str, expect=(200,), retry: bool = True,
              public: bool = False, **kw) -> requests.Response:
        """``public``: anyone may make this request, so its success proves nothing about
        the token."""
        url = f"{self.endpoint}/{path.lstrip('/')}"
        kw.setdefault("allow_redirects", False)

        def send():
            return self.session.request(method, url, timeout=self.timeout, **kw)

        try:
            response = with_retries(send, what=what, backoff=self.backoff) if retry \
                else send()
        except requests.RequestException as exc:
            raise ZenodoError(0, f"no answer from {self.endpoint} ({type(exc).__name__})",
                              what) from exc
        if response.status_code not in expect:
            raise _error(response, what)
        if not public:
            self.token_accepted = True
        if method != "GET":
            self.changed = True
        return response

    def _json(self, method: str, path: str, *, what: str, expect=(200,), **kw) -> dict:
        response = self._call(method, path, what=what, expect=expect, **kw)
        try:
            return response.json()
        except ValueError:
            raise ZenodoError(response.status_code, "the answer is not JSON: "
                              f"{response.text[:200]!r}", what) from None

    def _record(self, method: str, path: str, **kw) -> Record:
        return Record.parse(self._json(method, path, **kw))

    @staticmethod
    def _file(rid: str, key: str) -> str:
        return f"records/{rid}/draft/files/{quote(key, safe='')}"

    # -- reading ---------------------------------------------------------------------
    def draft(self, rid: str) -> Record | None:
        """The draft of record ``rid`` (a new record, a new version or an edit), or None."""
        try:
            return self._record("GET", f"records/{rid}/draft", what=f"reading draft {rid}")
        except NotFound:  # only "no draft": a 401/403 must not look like one
            return None

    def record(self, rid: str) -> Record:
        """The published record ``rid``."""
        return self._record("GET", f"records/{rid}", what=f"reading record {rid}",
                            public=True)

    def latest_id(self, rid: str) -> str:
        """The id of the latest published version of ``rid``'s dataset (a 301 on Zenodo)."""
        response = self._call("GET", f"records/{rid}/versions/latest", public=True,
                              expect=(200, 301, 302),
                              what=f"finding the latest version of {rid}")
        if response.status_code == 200:
            return str(response.json()["id"])
        return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def content_url(self, rid: str, key: str) -> str:
        """Where anyone downloads a public file of a published record."""
        return f"{self.endpoint}/records/{rid}/files/{quote(key, safe='')}/content"

    # -- drafts ----------------------------------------------------------------------
    def create_draft(self, body: dict) -> Record:
        # Only files.enabled is taken on create; order and preview need the files (PUT later).
        return self._record("POST", "records", json=body, expect=(201,),
                            what="creating a draft")

    def update_draft(self, rid: str, body: dict) -> Record:
        """Replace the draft's metadata; Zenodo keeps what is valid and lists the rest
        (:attr:`Record.problems`)."""
        return self._record("PUT", f"records/{rid}/draft", json=body,
                            what=f"updating the metadata of draft {rid}")

    def edit(self, rid: str) -> Record:
        return self._record("POST", f"records/{rid}/draft", expect=(200, 201),
                            what=f"opening published record {rid} for editing")

    def publish(self, rid: str) -> Record:
        try:
            return self._record("POST", f"records/{rid}/draft/actions/publish",
                                expect=(200, 202), what=f"publishing {rid}")
        except NotFound:
            # The draft is gone: a first attempt that was answered by a gateway time-out
            # may have published it. If so, that is what we wanted.
            record = self.record(rid)
            if not record.is_published:
                raise
            return record

    def new_version(self, rid: str) -> Record:
        """The draft of the next version (created, or the existing one: idempotent)."""
        return self._record("POST", f"records/{rid}/versions", expect=(200, 201),
                            what=f"creating a new version of {rid}")

    def import_files(self, rid: str) -> None:
        """Copy the previous version's files into this new-version draft (no bytes sent)."""
        try:
            self._call("POST", f"records/{rid}/draft/actions/files-import",
                       expect=(200, 201),
                       what=f"importing the previous version's files into {rid}")
        except Conflict as exc:
            # "Please remove all files first." after a lost answer: the import happened.
            if "remove all files" in exc.message.lower() and (self.draft(rid) or _NONE).files:
                return
            raise

    # -- files -----------------------------------------------------------------------
    def init_files(self, rid: str, keys: list[str]) -> None:
        """Announce the files about to be uploaded (all at once)."""
        if not keys:
            return
        try:
            self._call("POST", f"records/{rid}/draft/files", json=[{"key": k} for k in keys],
                       expect=(201,), what=f"announcing {len(keys)} file(s) to {rid}")
        except Conflict as exc:
            if "already exists" in exc.message:  # a retry of a request that took effect
                present = (self.draft(rid) or _NONE).files
                if all(k in present for k in keys):
                    return
            raise

    def upload(self, rid: str, key: str, path: str, size: int,
               progress: Callable[[int], None] | None = None) -> tuple[FileEntry, str]:
        """Send ``path``'s bytes as ``key`` and commit them; the file must be announced.

        Returns the file as Zenodo committed it (size, MD5) and the MD5 of what was sent.
        A retry opens the file again, so the bytes and the MD5 start over.
        """
        bodies = []

        def send():
            with open(path, "rb") as fh:
                body = _Body(fh, size, progress)
                bodies.append(body)
                return self.session.put(
                    f"{self.endpoint}/{self._file(rid, key)}/content", data=body,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=self.timeout)

        what = f"uploading {key} to {rid}"
        try:
            response = with_retries(send, what=what, backoff=self.backoff)
        except requests.RequestException as exc:
            raise ZenodoError(0, f"no answer from {self.endpoint} ({type(exc).__name__})",
                              what) from exc
        if response.status_code != 200:
            raise _error(response, what)
        committed = self._json("POST", f"{self._file(rid, key)}/commit",
                               what=f"committing {key} in {rid}")
        return _entry(key, committed), bodies[-1].md5.hexdigest()

    def delete_file(self, rid: str, key: str) -> None:
        # A 404 after a retry means the first attempt deleted it.
        self._call("DELETE", self._file(rid, key), expect=(204, 404),
                   what=f"deleting {key} from {rid}")


_NONE = Record("", False, {}, {"metadata": {}})  # "no draft" for the retry checks above

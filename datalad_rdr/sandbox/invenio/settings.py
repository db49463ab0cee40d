"""What Zenodo's operators configure, the sandbox's faults and counters, and constants."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field


RDM_JSON = "application/vnd.inveniordm.v1+json"


CHUNK = 1024 * 1024


GB = 10**9


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
class ZenodoFault:
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

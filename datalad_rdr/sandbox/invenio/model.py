"""The stored state: records (versions), their parents, drafts and published snapshots, file
entries.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import uuid
from dataclasses import dataclass, field


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclass
class StoredFile:
    """A file entry of a draft or a record; its bytes are one S3 object."""

    key: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    metadata: dict | None = None
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)
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
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)

    def touch(self) -> None:
        self.revision_id += 1
        self.updated = now()


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
    created: str = field(default_factory=now)

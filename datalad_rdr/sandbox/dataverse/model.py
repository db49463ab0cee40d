"""The state of the sandbox's Dataverse: datasets, their versions, file metadata and DataFiles."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from .embargo import Embargo


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DataFile:
    id: int
    storage_identifier: str
    key: str  # S3 object key
    filesize: int
    content_type: str
    checksum_type: str
    checksum_value: str
    creation_date: str
    released: bool = False
    embargo: Embargo | None = None


@dataclass
class FileMetadata:
    id: int
    datafile: DataFile
    label: str
    directory_label: str | None = None
    description: str = ""
    categories: list = field(default_factory=list)
    restricted: bool = False

    def copy(self, new_id: int) -> "FileMetadata":
        return FileMetadata(new_id, self.datafile, self.label, self.directory_label,
                            self.description, list(self.categories), self.restricted)

    @property
    def path(self) -> str:
        return f"{self.directory_label}/{self.label}" if self.directory_label else self.label


@dataclass
class Version:
    id: int
    fields: dict  # citation typeName -> field JSON
    blocks: dict  # other metadata blocks: name -> {typeName: field JSON}
    license: dict | None
    terms: dict | None
    files: list = field(default_factory=list)
    state: str = "DRAFT"
    major: int | None = None
    minor: int | None = None
    release_time: str | None = None
    last_update: str = field(default_factory=now)
    # Terms of access (TermsOfUseAndAccess): what restricted files need to be valid.
    access_request: bool = True
    terms_of_access: str | None = None

    def terms_valid(self) -> bool:
        """TermsOfAccessValidator: restricted files need access requests or terms."""
        return (not any(fm.restricted for fm in self.files) or self.access_request
                or bool(self.terms_of_access))


@dataclass
class Dataset:
    id: int
    identifier: str  # e.g. FK2/ABCDEF
    collection: str
    owner: str  # token of the creator
    versions: list
    locks: list = field(default_factory=list)
    created: str = field(default_factory=now)
    revision: int = 0  # JPA's @Version: bumped by every committed registration

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    @property
    def draft(self) -> Version | None:
        return self.latest if self.latest.state == "DRAFT" else None

    @property
    def released(self) -> list:
        return [v for v in self.versions if v.state == "RELEASED"]


def new_file_name(name: str) -> str:
    """The next name Dataverse tries for a duplicate (IngestUtil.generateNewFileName).

    ``raw.zip`` -> ``raw-1.zip``; an existing numeric suffix is incremented, so
    ``raw-02.zip`` -> ``raw-3.zip``.
    """
    base, dot, extension = name.rpartition(".")
    if not dot:
        base, extension = name, None
    m = re.fullmatch(r"(.*)-([0-9]+)", base)
    base = f"{m.group(1)}-{int(m.group(2)) + 1}" if m else f"{base}-1"
    return f"{base}.{extension}" if extension is not None else base


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def type_class(value) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "compound"
    return "primitive"


def clean_directory(label: str | None) -> str | None:
    """Dataverse's directoryLabel sanitising: odd characters to '.', trim '/-. '."""
    if not label:
        return None
    cleaned = re.sub(r"[^A-Za-z0-9_ ./-]", ".", label)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip("/-. ")
    return cleaned or None

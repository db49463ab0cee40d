"""What the Dataverse server answers, parsed once: the records :mod:`datalad_rdr.dataverse`
hands out. Every key of the server's JSON is read here (and in the client), so the stages
speak of files, versions and locks, never of ``dataFile`` or ``versionState``.

Shapes as Dataverse 6.7.1 prints them (JsonPrinter.java) and the sandbox mirrors them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Embargo:
    """A file's embargo: unreadable by others until ``date_available``."""

    date_available: dt.date
    reason: str = ""

    @classmethod
    def from_json(cls, data: dict | None) -> Embargo | None:
        if not data or not data.get("dateAvailable"):
            return None
        # an embargo whose date has passed is still listed (JsonPrinter)
        return cls(dt.date.fromisoformat(str(data["dateAvailable"])[:10]),
                   data.get("reason") or "")


@dataclass(frozen=True)
class FileEntry:
    """One file of a dataset version (its file metadata with its DataFile)."""

    file_id: int
    label: str
    directory: str | None = None  # the folder on the server (directoryLabel)
    size: int | None = None
    md5: str | None = None  # lower-case hex; None when the server has no MD5 of it
    content_type: str | None = None
    restricted: bool = False
    storage_identifier: str | None = None
    creation_date: str | None = None
    description: str | None = None
    embargo: Embargo | None = None
    checksum_type: str | None = None  # as Dataverse names it: MD5, SHA-1, SHA-256, SHA-512
    checksum: str | None = None  # lower-case hex

    @classmethod
    def from_json(cls, entry: dict) -> FileEntry:
        df = entry.get("dataFile") or {}
        checksum = df.get("checksum") or {}
        md5 = df.get("md5") or checksum.get("value") or ""
        return cls(
            file_id=df["id"], label=entry["label"],
            directory=entry.get("directoryLabel") or df.get("directoryLabel") or None,
            size=df.get("filesize"), md5=md5.lower() or None,
            content_type=df.get("contentType"), restricted=bool(entry.get("restricted")),
            storage_identifier=df.get("storageIdentifier"),
            creation_date=df.get("creationDate"),
            description=entry.get("description") or df.get("description") or None,
            embargo=Embargo.from_json(df.get("embargo")),
            checksum_type=checksum.get("type") or None,
            checksum=(checksum.get("value") or "").lower() or None)

    @property
    def path(self) -> str:
        """folder/label, as the server shows the file."""
        return f"{self.directory}/{self.label}" if self.directory else self.label

    def is_at(self, label: str, directory: str | None = None) -> bool:
        return self.label == label and self.directory == (directory or None)

    def moved(self, label: str, directory: str | None = None) -> FileEntry:
        """This file under another name (after the server was told to rename it)."""
        return replace(self, label=label, directory=directory or None)


def find(entries, label: str, directory: str | None = None) -> FileEntry | None:
    """The file called ``label`` in ``directory``, if the listing has it."""
    return next((e for e in entries if e.is_at(label, directory)), None)


@dataclass(frozen=True)
class License:
    """A license the server offers (``GET /api/licenses``) or a version carries."""

    name: str
    uri: str | None = None
    active: bool = True

    @classmethod
    def from_json(cls, data: dict) -> License:
        return cls(data["name"], data.get("uri"), bool(data.get("active", True)))

    def to_json(self) -> dict:
        """As a version names its license: ``name`` and ``uri``."""
        return {"name": self.name, "uri": self.uri}


@dataclass(frozen=True)
class FieldValue:
    """One metadata field of a version: a text (``value`` a str), several (a tuple of str),
    or a compound: one entry ({child name: FieldValue}) or several (a tuple of them)."""

    name: str  # typeName
    value: object
    type_class: str = "primitive"  # primitive, controlledVocabulary, compound
    multiple: bool = False

    @classmethod
    def from_json(cls, data: dict) -> FieldValue:
        return cls(data["typeName"], _value_from_json(data.get("value")),
                   data.get("typeClass") or "primitive", bool(data.get("multiple")))

    def to_json(self) -> dict:
        return {"typeName": self.name, "typeClass": self.type_class,
                "multiple": self.multiple, "value": _value_to_json(self.value)}

    def plain(self):
        """The value without the wrapping of each field: what the user wrote, to compare."""
        return _plain(self.value)

    def entries(self) -> tuple[dict[str, FieldValue], ...]:
        """A compound's entries (none for a text field)."""
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        return tuple(v for v in values if isinstance(v, dict))


def _value_from_json(value):
    if isinstance(value, list):
        return tuple(_value_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: FieldValue.from_json(c) for k, c in value.items()}
    return value


def _value_to_json(value):
    if isinstance(value, (tuple, list)):
        return [_value_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: c.to_json() for k, c in value.items()}
    return value


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(c.value) for k, c in sorted(value.items())}
    return value


@dataclass(frozen=True)
class VersionMetadata:
    """The metadata of a version to create a draft with or to replace the draft's with: its
    fields per block, in the order sent, and its license, or else its terms of use."""

    fields: dict  # {block: (FieldValue, ...)}
    license: License | None = None
    terms_of_use: str | None = None

    def to_json(self) -> dict:
        terms = ({"license": self.license.to_json()} if self.license
                 else {"termsOfUse": self.terms_of_use})
        blocks = {name: {"fields": [f.to_json() for f in fields]}
                  for name, fields in self.fields.items() if fields}
        return {**terms, "metadataBlocks": blocks}


@dataclass(frozen=True)
class DatasetVersion:
    """One version of a dataset: its state, number, files, license and metadata."""

    state: str  # DRAFT, RELEASED, DEACCESSIONED
    major: int | None = None
    minor: int | None = None
    persistent_id: str | None = None
    release_time: str | None = None
    files: tuple[FileEntry, ...] = ()
    license: License | None = None
    terms_of_use: str | None = None
    file_access_request: bool | None = None
    #: {block: {field name: FieldValue}}: what the metadata stage compares with the
    #: metadata file and merges into the draft.
    fields: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_json(cls, data: dict) -> DatasetVersion:
        blocks = data.get("metadataBlocks") or {}
        lic = data.get("license")
        return cls(
            state=data.get("versionState") or "DRAFT",
            major=data.get("versionNumber"), minor=data.get("versionMinorNumber"),
            persistent_id=data.get("datasetPersistentId"),
            release_time=data.get("releaseTime"),
            files=tuple(FileEntry.from_json(f) for f in data.get("files") or []),
            license=License.from_json(lic) if isinstance(lic, dict) and lic.get("name")
            else None,
            terms_of_use=data.get("termsOfUse") or None,
            file_access_request=data.get("fileAccessRequest"),
            fields={name: {f["typeName"]: FieldValue.from_json(f)
                           for f in block.get("fields") or []}
                    for name, block in blocks.items()})

    @property
    def released(self) -> bool:
        return self.state == "RELEASED"

    @property
    def number(self) -> tuple[int, int]:
        """(major, minor); (0, 0) for a draft."""
        return int(self.major or 0), int(self.minor or 0)

    @property
    def name(self) -> str:
        """"1.0", "2.1" ... as the web UI shows it (and the API takes it)."""
        return "{}.{}".format(*self.number)

    def has_file(self, file_id: int) -> bool:
        return any(e.file_id == file_id for e in self.files)

    def file(self, label: str, directory: str | None = None) -> FileEntry | None:
        return find(self.files, label, directory)


@dataclass(frozen=True)
class Lock:
    """A dataset lock: while one is held, files cannot be added nor the draft published."""

    kind: str  # lockType: Ingest, finalizePublication, InReview, FileValidationFailed ...
    reason: str | None = None
    user: str | None = None
    date: str | None = None

    @classmethod
    def from_json(cls, data: dict) -> Lock:
        return cls(data.get("lockType") or "", data.get("message") or None,
                   data.get("user"), data.get("date"))


@dataclass(frozen=True)
class Permissions:
    """What this token may do with one dataset; None where the server does not say."""

    can_edit: bool | None = None
    can_publish: bool | None = None
    can_view_unpublished: bool | None = None
    can_manage_permissions: bool | None = None
    can_delete_draft: bool | None = None

    @classmethod
    def from_json(cls, data: dict) -> Permissions:
        return cls(data.get("canEditDataset"), data.get("canPublishDataset"),
                   data.get("canViewUnpublishedDataset"),
                   data.get("canManageDatasetPermissions"),
                   data.get("canDeleteDatasetDraft"))


@dataclass(frozen=True)
class UploadTarget:
    """Where to send one file by direct upload: one presigned URL, or one per part and the
    server paths that complete or abort the multipart upload."""

    storage_identifier: str
    part_size: int
    urls: tuple[str, ...]  # in part order; one URL when not multipart
    multipart: bool = False
    complete: str | None = None  # server path (relative) that completes the upload
    abort: str | None = None

    @classmethod
    def from_json(cls, data: dict) -> UploadTarget:
        if "urls" in data:
            urls = tuple(data["urls"][k] for k in sorted(data["urls"], key=int))
            return cls(data["storageIdentifier"], int(data["partSize"]), urls, True,
                       data.get("complete"), data.get("abort"))
        return cls(data["storageIdentifier"], int(data["partSize"]), (data["url"],))

    def to_json(self) -> dict:
        """The server's own shape, for the resume state (read back by :meth:`from_json`)."""
        if not self.multipart:
            return {"url": self.urls[0], "partSize": self.part_size,
                    "storageIdentifier": self.storage_identifier}
        return {"urls": {str(n): u for n, u in enumerate(self.urls, 1)},
                "complete": self.complete, "abort": self.abort,
                "partSize": self.part_size, "storageIdentifier": self.storage_identifier}


@dataclass(frozen=True)
class NewFile:
    """An uploaded object to register as a file of the draft (``/addFiles``)."""

    storage_identifier: str
    label: str
    md5: str
    mime_type: str
    description: str = ""
    directory: str | None = None
    restricted: bool = False

    def to_json(self, replacing: int | None = None) -> dict:
        spec = {"storageIdentifier": self.storage_identifier, "fileName": self.label,
                "mimeType": self.mime_type, "description": self.description,
                "checksum": {"@type": "MD5", "@value": self.md5},
                "restrict": self.restricted, "tabIngest": False}
        if self.directory:
            spec["directoryLabel"] = self.directory
        if replacing is not None:
            spec.update(fileToReplaceId=replacing, forceReplace=True)
        return spec


@dataclass(frozen=True)
class Registration:
    """The server's answer for one file of an ``/addFiles`` or ``/replaceFiles``: the file
    it registered, or why not (the reply is 200 even when a file failed)."""

    entry: FileEntry | None
    problem: str | None = None

    @classmethod
    def from_json(cls, data: dict) -> Registration:
        details = data.get("fileDetails") or {}
        if "errorMessage" in data or "dataFile" not in details:
            return cls(None, data.get("errorMessage") or data.get("message"))
        return cls(FileEntry.from_json(details))


@dataclass(frozen=True)
class FieldType:
    """A metadata field a dataset may fill (a child of a compound field, too)."""

    name: str
    required: bool = False
    vocabulary: tuple[str, ...] = ()  # its controlled vocabulary, if it has one
    display_name: str = ""
    type_class: str = "primitive"  # primitive, controlledVocabulary, compound
    multiple: bool = False
    controlled: bool = False  # values must come from the vocabulary
    children: dict = field(default_factory=dict, compare=False, hash=False)  # name -> type

    @classmethod
    def from_json(cls, name: str, t: dict) -> FieldType:
        return cls(name, bool(t.get("isRequired")),
                   tuple(t.get("controlledVocabularyValues") or ()),
                   t.get("displayName") or "", t.get("typeClass") or "primitive",
                   bool(t.get("multiple")), bool(t.get("isControlledVocabulary")),
                   {n: cls.from_json(n, c) for n, c in (t.get("childFields") or {}).items()})

    def value(self, value) -> FieldValue:
        """This field filled with ``value`` (a text, a list of texts, one compound entry
        {child name: FieldValue} or a list of them)."""
        if isinstance(value, list):
            value = tuple(value)
        return FieldValue(self.name, value, self.type_class, self.multiple)


def _flat(types) -> list[FieldType]:
    out = []
    for t in types:
        out += [t, *_flat(t.children.values())]
    return out


@dataclass(frozen=True)
class MetadataBlock:
    """A metadata block with its field types (``fields`` None when the listing left them
    out)."""

    name: str
    fields: dict | None = None  # name -> FieldType

    @classmethod
    def from_json(cls, data: dict) -> MetadataBlock:
        fields = data.get("fields")
        return cls(data.get("name") or "?", None if fields is None else
                   {n: FieldType.from_json(n, t) for n, t in fields.items()})

    def field_types(self) -> list[FieldType]:
        """Every field type, each followed by its child fields."""
        return _flat((self.fields or {}).values())


@dataclass(frozen=True)
class RecordFile:
    """A file of a dataset version: ``checksum_type`` as Dataverse names it (MD5,
    SHA-1, SHA-256, SHA-512), ``checksum`` its lower-case hex value."""

    id: int
    label: str
    directory: str
    size: int
    restricted: bool
    checksum_type: str
    checksum: str

    @property
    def path(self) -> str:
        return f"{self.directory.strip('/')}/{self.label}" if self.directory else self.label


@dataclass(frozen=True)
class RecordVersion:
    label: str  # "1.0", or "draft"
    files: list[RecordFile]

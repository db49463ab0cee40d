"""The dataset's publication metadata, kept in a versioned file in the dataset.

``.datalad/rdr/metadata.yaml`` holds what RDR asks for (title, authors, contact, license,
access, ...). This module reads and checks it, writes a commented template for a new user,
and maps it to the Dataverse citation block and RDR's own block. The export reads it before
anything is uploaded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

METADATA = ".datalad/rdr/metadata.yaml"

TEMPLATE_HINT = "run 'datalad rdr-export --metadata-template' for a commented template"

# What a user may write for the license, and the name Dataverse knows it by (the names of the
# licenses a stock Dataverse installs; GET /api/licenses on the server lists them).
LICENSES = {
    "cc-by-4.0": "CC-BY-4.0", "cc by 4.0": "CC-BY-4.0", "cc-by": "CC-BY-4.0",
    "cc0-1.0": "CC0-1.0", "cc0 1.0": "CC0-1.0", "cc0": "CC0-1.0",
    "custom": "custom",
}
DATAVERSE_LICENSE = {"CC-BY-4.0": "CC BY 4.0", "CC0-1.0": "CC0 1.0"}
LICENSE_URI = {"CC-BY-4.0": "http://creativecommons.org/licenses/by/4.0",
               "CC0-1.0": "http://creativecommons.org/publicdomain/zero/1.0"}
ACCESS = ("restricted", "open")


class MetadataError(Exception):
    """Missing or invalid metadata; the message names the field and what to do."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class Person:
    name: str
    affiliation: str | None = None
    orcid: str | None = None
    email: str | None = None


@dataclass
class Grant:
    agency: str
    number: str | None = None


@dataclass
class DatasetMetadata:
    title: str
    authors: list[Person]
    contact: Person
    description: str
    subject: list[str]
    keywords: list[str] = field(default_factory=list)
    related_publication: str | None = None  # DOI of the paper
    code_repository: str | None = None  # URL
    code_doi: str | None = None  # Zenodo concept DOI of the code
    funding: list[str] = field(default_factory=list)
    license: str = "CC-BY-4.0"  # "CC-BY-4.0", "CC0-1.0" or "custom"
    terms_of_use: str | None = None  # the custom terms when license == "custom"
    access: str = "restricted"  # "restricted" (bundles restricted) or "open"
    opt_out_reason: str | None = None  # legitimate reason for restricted access
    documentation: list[str] = field(default_factory=list)  # dataset paths sent public,
    # as separate files, besides the README (which is always sent)
    grants: list[Grant] = field(default_factory=list)  # funding, structured (agency, number)
    department: list[str] = field(default_factory=list)  # RDR's Department / Faculty
    # openMINDS terms EBRAINS curation requires: data_types, techniques,
    # experimental_approaches, ethics_assessment -> [term names]
    ebrains: dict[str, list[str]] = field(default_factory=dict)
    description_from_readme: bool = False  # True when description was taken from the README


def load(dataset: Path) -> DatasetMetadata | None:
    """The dataset's metadata, or None when it has no metadata file.

    Raises MetadataError (naming the field and the fix) when the file is there but incomplete
    or invalid.
    """
    dataset = Path(dataset)
    path = dataset / METADATA
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{METADATA}: cannot be read ({exc})") from exc
    return parse(text, dataset)


def parse(text: str, dataset: Path | None = None) -> DatasetMetadata:
    """Check the YAML text of a metadata file; `dataset` supplies the README and doc paths."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise MetadataError(f"{METADATA}: not valid YAML{line}: "
                            f"{getattr(exc, 'problem', None) or exc}; fix the syntax") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MetadataError(f"{METADATA}: expected 'field: value' lines, found "
                            f"{type(data).__name__}; {TEMPLATE_HINT}")
    return _Reader(data, dataset).read()


def first_paragraphs(readme_text: str, limit: int = 1500) -> str:
    """The README's opening prose: the paragraphs before the second heading, at most `limit`
    characters (whole paragraphs; at least the first one)."""
    lines = readme_text.replace("\r\n", "\n").split("\n")
    paragraphs: list[str] = []
    current: list[str] = []
    seen_text = False
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        heading = (line.lstrip().startswith("#")
                   or (line.strip() and re.fullmatch(r"[=\-~^*+#`]{3,}", nxt.strip() or "x")))
        underline = (re.fullmatch(r"[=\-~^*+#`]{3,}", line.strip() or "x")
                     and i > 0 and lines[i - 1].strip())
        if heading or underline:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            if seen_text:
                break
            continue
        if not line.strip():
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        seen_text = True
        current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    out: list[str] = []
    for p in paragraphs:
        if out and len("\n\n".join(out + [p])) > limit:
            break
        out.append(p)
    return "\n\n".join(out)


def find_readme(dataset: Path) -> Path | None:
    candidates = [p for p in sorted(Path(dataset).iterdir())
                  if p.name.lower().split(".")[0] == "readme" and p.is_file()]
    return candidates[0] if candidates else None


# -- checking ------------------------------------------------------------------------------

FIELDS = ("title", "authors", "contact", "description", "subject", "keywords",
          "department", "related_publication", "code_repository", "code_doi", "funding",
          "license", "terms_of_use", "access", "opt_out_reason", "documentation", "ebrains")
EBRAINS_KEYS = ("data_types", "techniques", "experimental_approaches", "ethics_assessment")

_ORCID = re.compile(r"^(?:https?://orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])$")
_DOI = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)?(10\.\d{4,9}/\S+)$", re.I)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^https?://[^\s/]+\S*$")


def _orcid_checksum_ok(digits: str) -> bool:
    # ISO 7064 11,2, as ORCID computes its last character
    total = 0
    for ch in digits[:-1]:
        total = (total + int(ch)) * 2
    check = (12 - total % 11) % 11
    return digits[-1] == ("X" if check == 10 else str(check))


class _Reader:
    def __init__(self, data: dict, dataset: Path | None):
        self.data = data
        self.dataset = Path(dataset) if dataset is not None else None

    def fail(self, name: str, problem: str, fix: str):
        raise MetadataError(f"{METADATA}: '{name}' {problem}; {fix}", field=name)

    def text(self, name: str, value, required: bool = False, fix: str = "") -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.fail(name, "is missing", fix or f"add '{name}: ...' ({TEMPLATE_HINT})")
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(name, f"must be text, found {type(value).__name__}",
                      f"write it as '{name}: some text'")
        return str(value).strip()

    def texts(self, name: str, value, required: bool = False, fix: str = "") -> list[str]:
        if value is None or value == [] or value == "":
            if required:
                self.fail(name, "is missing", fix or f"add '{name}: [...]' ({TEMPLATE_HINT})")
            return []
        items = value if isinstance(value, list) else [value]
        return [self.text(f"{name}[{i}]", v, required=True,
                          fix=f"remove the empty entry or fill it in")
                for i, v in enumerate(items)]

    def doi(self, name: str, value) -> str | None:
        value = self.text(name, value)
        if value is None:
            return None
        m = _DOI.match(value)
        if not m:
            self.fail(name, f"is not a DOI: {value!r}",
                      "write it as 10.xxxx/yyyy (https://doi.org/ prefix allowed)")
        return m.group(1)

    def person(self, name: str, value, need_email: bool = False) -> Person:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            self.fail(name, "must be a person (name, affiliation, orcid, email)",
                      "see the template")
        unknown = set(value) - {"name", "affiliation", "orcid", "email"}
        if unknown:
            self.fail(f"{name}.{sorted(unknown)[0]}", "is not a known field",
                      "a person has name, affiliation, orcid and email")
        person = Person(self.text(f"{name}.name", value.get("name"), required=True,
                                  fix=f"add 'name: Family, Given' under {name}"),
                        self.text(f"{name}.affiliation", value.get("affiliation")))
        orcid = self.text(f"{name}.orcid", value.get("orcid"))
        if orcid is not None:
            m = _ORCID.match(orcid)
            if not m or not _orcid_checksum_ok(m.group(1).replace("-", "")):
                self.fail(f"{name}.orcid", f"is not a valid ORCID iD: {orcid!r}",
                          "write it as 0000-0002-1825-0097 (check the last digit)")
            person.orcid = m.group(1)
        email = self.text(f"{name}.email", value.get("email"), required=need_email,
                          fix=f"add 'email: ...' under {name} (RDR requires a contact email)")
        if email is not None and not _EMAIL.match(email):
            self.fail(f"{name}.email", f"is not an email address: {email!r}",
                      "write it as name@example.org")
        person.email = email
        return person

    def read(self) -> DatasetMetadata:
        d = self.data
        unknown = [k for k in d if k not in FIELDS]
        if unknown:
            self.fail(str(unknown[0]), "is not a known field",
                      f"known fields: {', '.join(FIELDS)}")
        title = self.text("title", d.get("title"), required=True,
                          fix="add 'title: <the dataset's title>'")
        authors_raw = d.get("authors")
        if not authors_raw:
            self.fail("authors", "is missing",
                      "add 'authors:' with at least one '- name: Family, Given' entry")
        if not isinstance(authors_raw, list):
            authors_raw = [authors_raw]
        authors = [self.person(f"authors[{i}]", a) for i, a in enumerate(authors_raw)]
        if d.get("contact") is None:
            self.fail("contact", "is missing",
                      "add 'contact:' with 'name:' and 'email:' (RDR requires a contact)")
        contact = self.person("contact", d.get("contact"), need_email=True)

        description = self.text("description", d.get("description"))
        from_readme = False
        if description is None:
            readme = find_readme(self.dataset) if self.dataset else None
            text = readme.read_text(encoding="utf-8", errors="replace") if readme else ""
            description = first_paragraphs(text) or None
            from_readme = True
            if not description:
                self.fail("description", "is missing and there is no README text to take it "
                          "from", "add 'description: ...' or write a README")

        # The subject list is the server's (RDR has its own): checked against it before the
        # export sends anything (check_against_server).
        subject = list(dict.fromkeys(self.texts(
            "subject", d.get("subject"), required=True,
            fix="add 'subject: [<one of the server's subjects>]' (the template lists them)")))

        code_repository = self.text("code_repository", d.get("code_repository"))
        if code_repository is not None and not _URL.match(code_repository):
            self.fail("code_repository", f"is not a URL: {code_repository!r}",
                      "write it as https://github.com/owner/repo")

        grants = []
        funding_raw = d.get("funding") or []
        for i, g in enumerate(funding_raw if isinstance(funding_raw, list) else [funding_raw]):
            name = f"funding[{i}]"
            if isinstance(g, dict):
                unknown = set(g) - {"agency", "grant"}
                if unknown:
                    self.fail(f"{name}.{sorted(unknown)[0]}", "is not a known field",
                              "a funding entry has 'agency' and 'grant'")
                grants.append(Grant(self.text(f"{name}.agency", g.get("agency"), required=True,
                                              fix=f"add 'agency: ...' under {name}"),
                                    self.text(f"{name}.grant", g.get("grant"))))
            else:
                grants.append(Grant(self.text(name, g, required=True,
                                              fix="remove the empty entry or fill it in")))

        license_raw = self.text("license", d.get("license"), required=True,
                                fix="add 'license: CC-BY-4.0' (or CC0-1.0, or custom with "
                                    "terms_of_use)")
        license = LICENSES.get(license_raw.lower())
        if license is None:
            self.fail("license", f"{license_raw!r} is not supported",
                      "use CC-BY-4.0, CC0-1.0, or custom (with terms_of_use)")
        terms = self.text("terms_of_use", d.get("terms_of_use"), required=license == "custom",
                          fix="license is custom: add 'terms_of_use: ...' with the terms")

        access = self.text("access", d.get("access"), required=True,
                           fix="add 'access: restricted' (with opt_out_reason) or "
                               "'access: open'")
        if access.lower() not in ACCESS:
            self.fail("access", f"{access!r} is neither 'restricted' nor 'open'",
                      "write 'access: restricted' or 'access: open'")
        access = access.lower()
        reason = self.text("opt_out_reason", d.get("opt_out_reason"),
                           required=access == "restricted",
                           fix="access is restricted: add 'opt_out_reason: ...' with the "
                               "legitimate reason (e.g. personal data under GDPR), or set "
                               "'access: open'")

        documentation = []
        for i, p in enumerate(self.texts("documentation", d.get("documentation"))):
            posix = p.replace("\\", "/")
            if posix.startswith("/") or ".." in posix.split("/"):
                self.fail(f"documentation[{i}]", f"{p!r} is not a path inside the dataset",
                          "give the path relative to the dataset's top")
            if self.dataset is not None and not os.path.lexists(self.dataset / posix):
                self.fail(f"documentation[{i}]", f"names {p!r}, which is not in the dataset",
                          "fix the path or remove the entry")
            documentation.append(posix)

        return DatasetMetadata(
            title=title, authors=authors, contact=contact, description=description,
            subject=subject, keywords=self.texts("keywords", d.get("keywords")),
            related_publication=self.doi("related_publication", d.get("related_publication")),
            code_repository=code_repository, code_doi=self.doi("code_doi", d.get("code_doi")),
            funding=[f"{g.agency} {g.number}" if g.number else g.agency for g in grants],
            license=license, terms_of_use=terms, access=access, opt_out_reason=reason,
            documentation=documentation, grants=grants, description_from_readme=from_readme,
            department=self.texts("department", d.get("department")),
            ebrains=self.ebrains(d.get("ebrains")))

    def ebrains(self, value) -> dict[str, list[str]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail("ebrains", "must be a mapping",
                      f"give some of: {', '.join(EBRAINS_KEYS)}")
        for key in value:
            if key not in EBRAINS_KEYS:
                self.fail(f"ebrains.{key}", "is not a known field",
                          f"known: {', '.join(EBRAINS_KEYS)}")
        return {key: self.texts(f"ebrains.{key}", value.get(key)) for key in EBRAINS_KEYS
                if value.get(key)}


# -- technical format ------------------------------------------------------------------------

_COMPRESSED = {"gz", "bz2", "xz", "zst", "lz4", "z"}
_EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")


def file_format(path: str) -> str | None:
    """The format a file name says: 'nii.gz' for sub-01_T1w.nii.gz, 'json', 'tsv', ... ;
    None for names without an extension (README, CHANGES) and dot files."""
    name = path.rsplit("/", 1)[-1].lower()
    parts = name.split(".")
    if len(parts) < 2 or parts[0] == "":
        return None
    ext = parts[-1]
    if ext in _COMPRESSED and len(parts) > 2 and _EXTENSION.match(parts[-2]):
        ext = f"{parts[-2]}.{ext}"
    return ext if all(_EXTENSION.match(p) for p in ext.split(".")) else None


def technical_formats(paths) -> list[str]:
    """The sorted formats of the files that are exported (RDR's "technical format")."""
    return sorted({fmt for p in paths if (fmt := file_format(p))})


# -- where RDR's own fields go (configurable) ------------------------------------------------

@dataclass
class RdrFields:
    """Block and field names of RDR's own required fields.

    The defaults are those of KU Leuven's citation block as the RDM build installs it
    (libis/rdm-build, test configuration; docs/metadata.rst). ``parent/child`` names a child of
    a compound field; an empty name leaves that field out.
    """

    block: str = "citation"
    technical_format: str = "technicalFormat"
    access: str = "access/accessRights"
    opt_out: str = "access/legitimateOptout"
    department: str = "departmentFaculty"


CONFIG_KEYS = {
    "block": "datalad.rdr.metadata.block",
    "technical_format": "datalad.rdr.metadata.technical-format-field",
    "access": "datalad.rdr.metadata.access-field",
    "opt_out": "datalad.rdr.metadata.opt-out-field",
    "department": "datalad.rdr.metadata.department-field",
}


def rdr_fields(config_get) -> RdrFields:
    """RdrFields from configuration; `config_get(key)` is e.g. a DataLad ConfigManager's
    ``get`` (git config and the dataset's .datalad/config)."""
    values = {}
    for attr, key in CONFIG_KEYS.items():
        value = config_get(key)
        if value is not None:
            values[attr] = str(value).strip()
    return RdrFields(**values)


# -- mapping to the server's metadata blocks --------------------------------------------------

# Which entry of the metadata file fills which Dataverse field (for messages).
SOURCE = {"title": "title", "author": "authors", "datasetContact": "contact",
          "dsDescription": "description", "subject": "subject", "keyword": "keywords",
          "publication": "related_publication", "grantNumber": "funding",
          "relatedMaterial": "code_repository"}


class _Blocks:
    """The server's field types: {block: {name: JsonPrinter field JSON}}."""

    def __init__(self, blocks: dict[str, dict]):
        self.blocks = blocks

    def type(self, block: str, name: str) -> dict | None:
        return (self.blocks.get(block) or {}).get("fields", {}).get(name)

    @staticmethod
    def child(parent: dict | None, name: str) -> dict | None:
        return ((parent or {}).get("childFields") or {}).get(name)


def _value(t: dict, value) -> dict:
    return {"typeName": t["name"], "typeClass": t["typeClass"], "multiple": t["multiple"],
            "value": value}


def _canonical(t: dict, value: str, source: str) -> str:
    """A value in the type's controlled vocabulary, matched without regard to case."""
    allowed = t.get("controlledVocabularyValues") or []
    if not t.get("isControlledVocabulary") or not allowed:
        return value
    for a in allowed:
        if a.lower() == value.lower():
            return a
    raise MetadataError(
        f"{METADATA}: '{source}' {value!r} is not one of the server's values for "
        f"{t['displayName']} ({t['name']}); use one of: {'; '.join(allowed)}", field=source)


class Mapping:
    """The metadata file as the server's blocks want it: the version JSON to create a draft
    with or to replace the draft's metadata with, and the fields it manages."""

    def __init__(self, md: DatasetMetadata, formats: list[str], rdr: RdrFields,
                 blocks: dict[str, dict], licenses: list[dict], server: str = "the server"):
        self.md, self.formats, self.rdr, self.server = md, formats, rdr, server
        self.types = _Blocks(blocks)
        self.licenses = licenses
        self.fields: dict[str, dict[str, dict]] = {}  # block -> typeName -> field JSON
        self.skipped: list[str] = []  # fields this server does not have
        self._build()

    # -- building ---------------------------------------------------------------------
    def _top(self, block: str, name: str, source: str) -> dict | None:
        t = self.types.type(block, name)
        if t is None:
            self.skipped.append(f"{block}/{name} ({source})")
        return t

    def _put(self, block: str, t: dict, value) -> None:
        self.fields.setdefault(block, {})[t["name"]] = _value(t, value)

    def _compound(self, block: str, name: str, source: str, entries: list[dict]) -> None:
        """entries: [{child name: value or None}]; children the server lacks are dropped."""
        t = self._top(block, name, source)
        if t is None or not entries:
            return
        values = []
        for entry in entries:
            value = {}
            for child_name, v in entry.items():
                ct = self.types.child(t, child_name)
                if ct is None or v in (None, "", []):
                    continue
                if ct.get("isControlledVocabulary"):
                    v = _canonical(ct, v, source)
                value[child_name] = _value(ct, v)
            if value:
                values.append(value)
        if values:
            self._put(block, t, values if t["multiple"] else values[0])

    def _primitive(self, block: str, name: str, source: str, values: list[str]) -> None:
        t = self._top(block, name, source)
        if t is None or not values:
            return
        if t.get("isControlledVocabulary"):
            values = list(dict.fromkeys(_canonical(t, v, source) for v in values))
        if t["multiple"]:
            self._put(block, t, values)
        else:
            self._put(block, t, ", ".join(values))

    def _build(self) -> None:
        md, c = self.md, "citation"
        self._primitive(c, "title", "title", [md.title])
        self._compound(c, "author", "authors", [
            {"authorName": a.name, "authorAffiliation": a.affiliation,
             "authorIdentifierScheme": "ORCID" if a.orcid else None,
             "authorIdentifier": a.orcid} for a in md.authors])
        self._compound(c, "datasetContact", "contact", [
            {"datasetContactName": md.contact.name,
             "datasetContactAffiliation": md.contact.affiliation,
             "datasetContactEmail": md.contact.email}])
        self._compound(c, "dsDescription", "description",
                       [{"dsDescriptionValue": md.description}])
        self._primitive(c, "subject", "subject", md.subject)
        self._compound(c, "keyword", "keywords", [{"keywordValue": k} for k in md.keywords])
        self._compound(c, "grantNumber", "funding", [
            {"grantNumberAgency": g.agency, "grantNumberValue": g.number} for g in md.grants])
        self._related()
        self._rdr_own()

    def _related(self) -> None:
        """The paper and the code (see docs/metadata.rst, "Cross-links", for the choice)."""
        md, c = self.md, "citation"
        publications = []
        if md.related_publication:
            doi = md.related_publication
            publications.append({"publicationRelationType": "IsSupplementTo",
                                 "publicationCitation": f"https://doi.org/{doi}",
                                 "publicationIDType": "doi", "publicationIDNumber": doi,
                                 "publicationURL": f"https://doi.org/{doi}"})
        if not (md.code_repository or md.code_doi):
            self._compound(c, "publication", "related_publication", publications)
            return
        source = "code_doi" if md.code_doi else "code_repository"
        text = "Source code: " + ", ".join(
            x for x in (md.code_repository,
                        f"all versions: https://doi.org/{md.code_doi}" if md.code_doi else None)
            if x)
        url = md.code_repository or f"https://doi.org/{md.code_doi}"
        related = self.types.type(c, "relatedMaterial")
        publication = self.types.type(c, "publication")
        if related is not None and related.get("childFields"):
            # RDR: relatedMaterial is a compound with a type and an identifier
            self._compound(c, "relatedMaterial", source, [{
                "relatedMaterialType": "Related material", "relatedMaterialCitation": text,
                "relatedMaterialIDType": "doi" if md.code_doi else "url",
                "relatedMaterialIDNumber": md.code_doi or md.code_repository,
                "relatedMaterialURL": url}])
        else:
            if md.code_doi and self.types.child(publication, "publicationRelationType"):
                # Dataverse >= 6.4: the one related field with a relation type, which goes
                # to DataCite as a relatedIdentifier
                publications.append({"publicationRelationType": "IsSupplementedBy",
                                     "publicationCitation": text,
                                     "publicationIDType": "doi",
                                     "publicationIDNumber": md.code_doi,
                                     "publicationURL": f"https://doi.org/{md.code_doi}"})
            self._primitive(c, "relatedMaterial", source, [text])
        self._compound(c, "publication", "related_publication", publications)

    def _rdr_own(self) -> None:
        md, r = self.md, self.rdr
        own: dict[str, list] = {}  # parent -> [(child, value, source)], "" = top level
        for path, value, source in (
                (r.technical_format, self.formats, "technical format (from the files)"),
                (r.access, [md.access], "access"),
                (r.opt_out, [md.opt_out_reason] if md.access == "restricted"
                 and md.opt_out_reason else [], "opt_out_reason"),
                (r.department, md.department, "department")):
            if not path:
                continue
            parent, _, child = path.rpartition("/")
            own.setdefault(parent, []).append((child, value, source))
        for parent, children in own.items():
            if not parent:
                for name, value, source in children:
                    self._primitive(r.block, name, source, value)
                continue
            t = self._top(r.block, parent, children[0][2])
            if t is None:
                continue
            value = {}
            for name, values, source in children:
                ct = self.types.child(t, name)
                if ct is None:
                    self.skipped.append(f"{r.block}/{parent}/{name} ({source})")
                    continue
                if not values:
                    continue
                if ct.get("isControlledVocabulary"):
                    values = [_canonical(ct, v, source) for v in values]
                value[name] = _value(ct, values if ct["multiple"] else ", ".join(values))
            if value:
                self._put(r.block, t, [value] if t["multiple"] else value)

    def note(self) -> str:
        if not self.skipped:
            return ""
        return "; not on this server, so not sent: " + ", ".join(self.skipped)

    # -- the license ---------------------------------------------------------------------
    def license(self) -> dict:
        """``license`` or ``termsOfUse`` of the version JSON, named as the server names it."""
        md = self.md
        if md.license == "custom":
            return {"termsOfUse": md.terms_of_use}
        uri = LICENSE_URI[md.license].rstrip("/").split("://", 1)[1]
        for lic in self.licenses:
            if (str(lic.get("uri", "")).rstrip("/").split("://", 1)[-1] == uri
                    or lic.get("name") == DATAVERSE_LICENSE[md.license]):
                return {"license": {"name": lic["name"], "uri": lic.get("uri")}}
        offered = ", ".join(lic.get("name", "?") for lic in self.licenses) or "none"
        raise MetadataError(f"{METADATA}: 'license' {md.license} is not offered by "
                            f"{self.server} (it offers: {offered}); choose one of those or "
                            f"'license: custom' with terms_of_use", field="license")

    def version_json(self) -> dict:
        blocks = {name: {"fields": list(fields.values())}
                  for name, fields in self.fields.items()}
        return {**self.license(), "metadataBlocks": blocks}

    def managed(self) -> dict[str, set[str]]:
        """The fields the metadata file owns, per block: replaced (or removed) on update."""
        out = {"citation": {"title", "author", "datasetContact", "dsDescription", "subject",
                            "keyword", "grantNumber", "publication", "relatedMaterial"}}
        for path in (self.rdr.technical_format, self.rdr.access, self.rdr.opt_out,
                     self.rdr.department):
            if path:
                out.setdefault(self.rdr.block, set()).add(path.split("/")[0])
        return out

    # -- checking against the server's required fields ----------------------------------
    def check_required(self) -> None:
        """A MetadataError naming the first field the server requires that is not filled."""
        sent = {(b, n) for b, fields in self.fields.items() for n in fields}
        owners = {(self.rdr.block, p.split("/")[0]): src for p, src in (
            (self.rdr.technical_format, "technical format"), (self.rdr.access, "access"),
            (self.rdr.opt_out, "opt_out_reason"), (self.rdr.department, "department")) if p}
        for block in {"citation", self.rdr.block}:
            for name, t in (self.types.blocks.get(block) or {}).get("fields", {}).items():
                children = (t.get("childFields") or {}).values()
                # a required child of an optional compound is required only once a sibling
                # is filled (DatasetFieldValidator; fidelity row 46)
                if not t.get("isRequired") and (block, name) not in sent:
                    continue
                if (block, name) in sent:
                    for c in children:
                        if c.get("isRequired"):
                            self._check_child(block, t, c)
                    continue
                source = owners.get((block, name)) or SOURCE.get(name)
                label = f"{t.get('displayName') or name} ({block}/{name})"
                if source == "technical format":
                    raise MetadataError(
                        f"{self.server} requires {label}, which is derived from the file "
                        f"extensions, but no exported file has one", field="technical format")
                if source:
                    raise MetadataError(
                        f"{METADATA}: '{source}' is missing; {self.server} requires {label}"
                        f" ({TEMPLATE_HINT})", field=source)
                raise MetadataError(
                    f"{self.server} requires {label}, which the metadata file does not fill; "
                    f"if it is RDR's technical format, access or opt-out field under another "
                    f"name, set its name with git config {CONFIG_KEYS['technical_format']} "
                    f"(or -access-field, -opt-out-field, -department-field; docs/metadata.rst)",
                    field=name)

    def _check_child(self, block: str, t: dict, c: dict) -> None:
        value = self.fields[block][t["name"]]["value"]
        for entry in value if isinstance(value, list) else [value]:
            if not (entry.get(c["name"]) or {}).get("value"):
                source = SOURCE.get(t["name"], t["name"])
                raise MetadataError(
                    f"{METADATA}: '{source}' lacks what {self.server} requires: "
                    f"{t.get('displayName')} {c.get('displayName')} ({block}/{t['name']}/"
                    f"{c['name']})", field=source)


# -- comparing with what the server has ------------------------------------------------------

def _plain(value):
    """A field value without the typeName/typeClass/multiple wrapping, for comparison."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        if "value" in value and "typeName" in value:
            return _plain(value["value"])
        return {k: _plain(v) for k, v in sorted(value.items())}
    return value


def server_fields(version: dict) -> dict[str, dict[str, dict]]:
    """{block: {typeName: field JSON}} of a version as the server shows it."""
    out = {}
    for name, block in (version.get("metadataBlocks") or {}).items():
        out[name] = {f["typeName"]: f for f in block.get("fields", [])}
    return out


def changes(mapping: Mapping, version: dict) -> list[str]:
    """The managed fields (and 'license') whose value on the server differs from the file."""
    have = server_fields(version)
    changed = []
    for block, names in mapping.managed().items():
        for name in sorted(names):
            ours = mapping.fields.get(block, {}).get(name)
            theirs = have.get(block, {}).get(name)
            if _plain(ours["value"] if ours else None) != _plain(
                    theirs["value"] if theirs else None):
                changed.append(name)
    wanted = mapping.license()
    if "license" in wanted:
        if (version.get("license") or {}).get("name") != wanted["license"]["name"]:
            changed.append("license")
    elif (version.get("termsOfUse") or None) != wanted["termsOfUse"] or version.get("license"):
        changed.append("license")
    return changed


def merged_version(mapping: Mapping, version: dict) -> dict:
    """The server's version with the managed fields replaced by the file's: what to PUT.
    Fields the file does not manage (filled in the web UI) are kept."""
    have = server_fields(version)
    managed = mapping.managed()
    blocks = {}
    for block in set(have) | set(mapping.fields):
        kept = [f for n, f in have.get(block, {}).items() if n not in managed.get(block, ())]
        fields = kept + list(mapping.fields.get(block, {}).values())
        if fields:
            blocks[block] = {"fields": fields}
    return {**mapping.license(), "metadataBlocks": blocks}


# -- the commented template -------------------------------------------------------------------

TEMPLATE = """\
# Publication metadata of this dataset for RDR (KU Leuven's Dataverse), read by
# 'datalad rdr-export'. Keep it under version control: 'datalad save' after editing.
# Fields left empty that RDR requires stop the export before anything is uploaded, with a
# message naming the field. docs/metadata.rst explains every field and where it goes.

# Title of the dataset (English).
title: {title}

# Authors, in citation order: name as "Family, Given"; affiliation and ORCID iD optional
# but recommended (the ORCID is checked: 0000-0002-1825-0097 form).
authors:
{authors}

# Who answers questions about the dataset (RDR requires an email address; it is not shown).
contact:
  name: {contact_name}
  email: {contact_email}
  affiliation: {contact_affiliation}

# Summary of the dataset. Leave it out to use the README's opening paragraphs.
# description: |
#   What, why, how.

# One or more subjects from the server's list, e.g. on RDR "Psychology and cognitive
# sciences", "Basic sciences", "Biological sciences"; on a stock Dataverse "Medicine, Health
# and Life Sciences". A value the server does not have is named, with the allowed ones.
subject: []

# Free keywords (RDR requires at least one).
keywords: []

# RDR: Department / Faculty, one or more from RDR's list, e.g. "Department of Neurosciences".
department: []

# DOI of the paper that uses these data (10.xxxx/... or https://doi.org/...).
related_publication:

# The code: repository URL and its Zenodo concept DOI (all versions), e.g. from
# 'datalad zenodo-sync'. Both go into the record's related fields.
code_repository:
code_doi:

# Funding: agency and grant number.
funding: []
#  - agency: FWO
#    grant: G0A1234N

# CC-BY-4.0 (RDR's default), CC0-1.0, or custom with terms_of_use.
license: {license}
# terms_of_use: |
#   The custom terms.

# restricted: data bundles are restricted (README and documentation stay public); RDR asks
# for the legitimate reason to opt out of open access: one of "privacy", "intellectual
# property rights", "ethical aspects", "aspects of dual use", "other".
# open: every file is public.
access: restricted
opt_out_reason:

# Files sent public and separately besides the README (e.g. an HTML data descriptor),
# as paths in the dataset.
documentation: []

# Only for 'datalad rdr-export --openminds' (EBRAINS): openMINDS term names, e.g.
# ebrains:
#   techniques: [magnetic resonance imaging]
#   experimental_approaches: [neuroimaging]
#   ethics_assessment: EU compliant
#   data_types: [raw data]   # default: from the layout (sub-*: raw, derivatives/: derived)
"""


def _yaml_text(value: str | None) -> str:
    return json.dumps(value, ensure_ascii=False) if value else ""


def template(dataset: Path) -> str:
    """The commented template, with what the dataset already says filled in
    (dataset_description.json's Name, Authors and License; git's user.name and user.email)."""
    dataset = Path(dataset)
    try:
        desc = json.loads((dataset / "dataset_description.json").read_text())
        if not isinstance(desc, dict):
            desc = {}
    except (OSError, ValueError):
        desc = {}

    def git_config(name):
        return subprocess.run(["git", "-C", str(dataset), "config", name],
                              capture_output=True, text=True).stdout.strip() or None

    user, email = git_config("user.name"), git_config("user.email")
    names = [a for a in desc.get("Authors") or [] if isinstance(a, str) and a.strip()]
    names = names or ([user] if user else [])
    authors = "\n".join(f"  - name: {_yaml_text(n)}\n    affiliation:\n    orcid:"
                        for n in names) or "  - name:\n    affiliation:\n    orcid:"
    license = LICENSES.get(str(desc.get("License", "")).lower(), "CC-BY-4.0")
    if license == "custom":
        license = "CC-BY-4.0"
    return TEMPLATE.format(title=_yaml_text(desc.get("Name")), authors=authors,
                           contact_name=_yaml_text(names[0] if names else user),
                           contact_email=_yaml_text(email), contact_affiliation="",
                           license=license)


def write_template(dataset: Path) -> Path:
    """Write the template to METADATA; an existing file is never overwritten."""
    path = Path(dataset) / METADATA
    if path.exists():
        raise MetadataError(f"{METADATA} exists already; edit it (or remove it to start "
                            f"from the template again)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template(dataset), encoding="utf-8")
    return path


# -- the export's use: check, create, update ---------------------------------------------------

def missing_message() -> str:
    return (f"the dataset has no {METADATA} (title, authors, contact, subject, license, "
            f"access, ... that RDR requires); run 'datalad rdr-export --metadata-template', "
            f"fill it in, 'datalad save', and export again; nothing was uploaded")


def server_mapping(dataset: Path, client, md: DatasetMetadata, plan, server: str) -> Mapping:
    """The metadata mapped to the server's blocks and checked against its required fields,
    vocabularies and licenses (MetadataError names what is wrong)."""
    from datalad.distribution.dataset import Dataset

    from .dataverse import DataverseError

    rdr = rdr_fields(Dataset(str(dataset)).config.get)
    blocks = {}
    for name in dict.fromkeys(["citation", rdr.block]):
        try:
            blocks[name] = client.metadata_block(name)
        except DataverseError as exc:
            if exc.status != 404:
                raise
            raise MetadataError(
                f"{server} has no metadata block '{name}'"
                + (f" (set by {CONFIG_KEYS['block']})" if name == rdr.block else "")
                + "; set the block that holds RDR's own fields with git config "
                  f"{CONFIG_KEYS['block']} <name>", field="block") from exc
    paths = [f.path for b in plan.bundles for f in b.files]
    mapping = Mapping(md, technical_formats(paths), rdr, blocks, client.licenses(), server)
    mapping.check_required()
    mapping.license()
    return mapping


def sync_draft(client, pid: str, mapping: Mapping, base: dict,
               lock_timeout: float = 300) -> dict:
    """Bring the record's metadata and license in line with the file; a result record."""
    version = client.dataset(pid)["latestVersion"]
    changed = changes(mapping, version)
    if not changed:
        return {**base, "status": "notneeded",
                "message": f"metadata of {pid} unchanged{mapping.note()}"}
    client.wait_unlocked(pid, timeout=lock_timeout)  # a locked dataset cannot be edited
    client.update_draft(pid, merged_version(mapping, version))
    return {**base, "status": "ok", "changed": changed,
            "message": f"metadata of {pid} updated from {METADATA}: {', '.join(changed)}"
                       f"{mapping.note()}"}


def run_template(dataset: Path):
    """``rdr-export --metadata-template``: result records."""
    base = {"action": "rdr-metadata", "type": "file", "path": str(Path(dataset) / METADATA)}
    try:
        path = write_template(dataset)
    except MetadataError as exc:
        yield {**base, "status": "impossible", "message": str(exc)}
        return
    yield {**base, "path": str(path), "status": "ok",
           "message": f"wrote the template {METADATA}: fill in the empty fields, "
                      f"'datalad save', then 'datalad rdr-export'"}

"""The metadata file mapped onto the server's metadata blocks, checked against its required
fields, vocabularies and licenses."""

from __future__ import annotations

from pathlib import Path

from ..dataverse_records import FieldType, FieldValue, License, MetadataBlock, VersionMetadata
from .fields import CONFIG_KEYS, RdrFields, rdr_fields, technical_formats
from .file import DATAVERSE_LICENSE, LICENSE_URI, TEMPLATE_HINT, DatasetMetadata
from .problems import MetadataError, Problem, Problems

# Which entry of the metadata file fills which Dataverse field (for messages).
SOURCE = {"title": "title", "author": "authors", "datasetContact": "contact",
          "dsDescription": "description", "subject": "subject", "keyword": "keywords",
          "publication": "related_publication", "grantNumber": "funding",
          "relatedMaterial": "code_repository"}


class _Blocks:
    """The server's field types, per block."""

    def __init__(self, blocks: dict[str, MetadataBlock]):
        self.blocks = blocks

    def fields(self, block: str) -> dict[str, FieldType]:
        found = self.blocks.get(block)
        return (found.fields if found else None) or {}

    def type(self, block: str, name: str) -> FieldType | None:
        return self.fields(block).get(name)

    @staticmethod
    def child(parent: FieldType | None, name: str) -> FieldType | None:
        return parent.children.get(name) if parent else None


def _norm(name) -> str:
    """A license name without case and punctuation: "CC BY 4.0" and "CC-BY-4.0" agree."""
    return "".join(ch for ch in str(name or "").lower() if ch.isalnum())


def _bare_uri(uri) -> str:
    """A license URI without scheme and trailing slash: RDR's https://.../4.0/ is stock
    Dataverse's http://.../4.0."""
    return str(uri or "").strip().rstrip("/").split("://", 1)[-1].lower()


def _choices(t: FieldType, most: int = 12) -> str:
    allowed = t.vocabulary
    shown = "; ".join(allowed[:most])
    return shown + (f"; ... ({len(allowed)} in all)" if len(allowed) > most else "")


class Mapping:
    """The metadata file as the server's blocks want it: the version metadata to create a
    draft with or to replace the draft's metadata with, and the fields it manages."""

    def __init__(self, md: DatasetMetadata, formats: list[str], rdr: RdrFields,
                 blocks: dict[str, MetadataBlock], licenses: list[License], server: str = "the server"):
        self.md, self.formats, self.rdr, self.server = md, formats, rdr, server
        self.types = _Blocks(blocks)
        self.licenses = licenses
        self.fields: dict[str, dict[str, FieldValue]] = {}  # block -> name -> value
        self.skipped: list[str] = []  # fields this server does not have
        self.notes: list[str] = []  # said with the result (e.g. which requirements applied)
        self.problems = Problems(md.lines)
        self.rejected: set[str] = set()  # entries with a value outside a vocabulary
        self._build()

    # -- building ---------------------------------------------------------------------
    def _top(self, block: str, name: str, source: str) -> FieldType | None:
        t = self.types.type(block, name)
        if t is None:
            self.skipped.append(f"{block}/{name} ({source})")
        return t

    def _put(self, block: str, t: FieldType, value) -> None:
        self.fields.setdefault(block, {})[t.name] = t.value(value)

    def _canonical(self, t: FieldType, value: str, source: str) -> str | None:
        """The value as the type's controlled vocabulary spells it (matched without regard to
        case); None, noted as a problem, when the vocabulary lacks it."""
        allowed = t.vocabulary
        if not t.controlled or not allowed:
            return value
        for a in allowed:
            if a.lower() == value.lower():
                return a
        self.rejected.add(source)
        self.problems.add(source, f"'{source}' {value!r} is not one of the server's values "
                                  f"for {t.display_name} ({t.name}); use one of: "
                                  f"{_choices(t)}")
        return None

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
                if ct.controlled:
                    v = self._canonical(ct, v, source)
                if v is not None:
                    value[child_name] = ct.value(v)
            if value:
                values.append(value)
        if values:
            self._put(block, t, values if t.multiple else values[0])

    def _primitive(self, block: str, name: str, source: str, values: list[str]) -> None:
        t = self._top(block, name, source)
        if t is None or not values:
            return
        if t.controlled:
            values = [v for v in dict.fromkeys(self._canonical(t, v, source) for v in values)
                      if v is not None]
            if not values:
                return
        if t.multiple:
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
        if related is not None and related.children:
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
                (r.opt_out, [md.opt_out_reason] if _restricted(md)
                 and md.opt_out_reason else [], "opt_out_reason"),
                (r.department, md.department, "department"),
                *_embargo_fields(md, r)):
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
                if ct.controlled:
                    values = [v for v in (self._canonical(ct, v, source) for v in values)
                              if v is not None]
                    if not values:
                        continue
                value[name] = ct.value(values if ct.multiple else ", ".join(values))
            if value:
                self._put(r.block, t, [value] if t.multiple else value)

    def note(self) -> str:
        notes = list(self.notes)
        if self.skipped:
            notes.append("not on this server, so not sent: " + ", ".join(self.skipped))
        return "".join(f"; {n}" for n in notes)

    # -- the license ---------------------------------------------------------------------
    def license(self) -> License | None:
        """The license, named as the server names it: matched by URI first (RDR names CC BY
        4.0 "CC-BY-4.0"), then by name; None for 'custom' (the terms of use apply)."""
        md = self.md
        if md.license == "custom":
            return None
        offered = [lic for lic in self.licenses if lic.active]
        uri = _bare_uri(LICENSE_URI[md.license])
        names = {_norm(md.license), _norm(DATAVERSE_LICENSE[md.license])}
        match = (next((lic for lic in offered if _bare_uri(lic.uri) == uri), None)
                 or next((lic for lic in offered if _norm(lic.name) in names), None))
        if match is not None:
            return License(match.name, match.uri)
        listed = ", ".join(lic.name for lic in offered) or "none"
        raise MetadataError.of([Problem(
            f"'license' {md.license} is not offered by {self.server} (it offers: {listed}); "
            f"choose one of those or 'license: custom' with terms_of_use", "license",
            self.problems.line("license"))])

    def terms_of_use(self) -> str | None:
        return self.md.terms_of_use if self.md.license == "custom" else None

    def draft(self) -> VersionMetadata:
        """What a new draft is created with."""
        return VersionMetadata({name: tuple(fields.values())
                                for name, fields in self.fields.items()},
                               self.license(), self.terms_of_use())

    def managed(self) -> dict[str, set[str]]:
        """The fields the metadata file owns, per block: replaced (or removed) on update."""
        out = {"citation": {"title", "author", "datasetContact", "dsDescription", "subject",
                            "keyword", "grantNumber", "publication", "relatedMaterial"}}
        if not self.md.subject:  # optional where the server does not require it: a subject
            out["citation"].discard("subject")  # given in the web UI is then kept
        for path in (self.rdr.technical_format, self.rdr.access, self.rdr.opt_out,
                     self.rdr.department):
            if path:
                out.setdefault(self.rdr.block, set()).add(path.split("/")[0])
        return out

    # -- checking against the server's required fields ----------------------------------
    def check(self) -> None:
        """One MetadataError listing every problem: values outside the server's vocabularies
        (found while mapping), fields it requires that are not filled, the license."""
        self._check_required()
        self._check_opt_out()
        try:
            self.license()
        except MetadataError as exc:
            self.problems.found.extend(exc.problems)
        self.problems.raise_any()

    def _check_required(self) -> None:
        sent = {(b, n) for b, fields in self.fields.items() for n in fields}
        owners = {(self.rdr.block, p.split("/")[0]): src for p, src in (
            (self.rdr.technical_format, "technical format"), (self.rdr.access, "access"),
            (self.rdr.opt_out, "opt_out_reason"), (self.rdr.department, "department")) if p}
        for block in dict.fromkeys(["citation", self.rdr.block]):
            for name, t in self.types.fields(block).items():
                if (block, name) in sent:
                    # a required child is required in every entry sent, also of an optional
                    # compound: the entry has a sibling filled (DatasetFieldValidator)
                    for c in t.children.values():
                        if c.required:
                            self._check_child(block, t, c)
                    continue
                if not t.required:
                    continue  # an optional compound left empty needs none of its children
                self._missing(block, name, t, owners.get((block, name)) or SOURCE.get(name))

    def _missing(self, block: str, name: str, t: FieldType, source: str | None) -> None:
        if source in self.rejected:
            return  # told already: its value is not in the vocabulary
        label = f"{t.display_name or name} ({block}/{name})"
        if source == "technical format":
            self.problems.add("technical format", f"{self.server} requires {label}, which is "
                              f"derived from the file extensions, but no exported file has "
                              f"one", in_file=False)
        elif source:
            choices = f"; one of: {_choices(t)}" if t.vocabulary else ""
            self.problems.add(source, f"'{source}' is missing; {self.server} requires {label}"
                                      f"{choices} ({TEMPLATE_HINT})")
        else:
            self.problems.add(name, f"{self.server} requires {label}, which the metadata file "
                              f"does not fill; if it is RDR's technical format, access or "
                              f"opt-out field under another name, set its name with git "
                              f"config {CONFIG_KEYS['technical_format']} (or -access-field, "
                              f"-opt-out-field, -department-field; docs/metadata.rst)",
                              in_file=False)

    def _check_opt_out(self) -> None:
        """Restricted access needs the legitimate reason where the server has a field for
        it; the hint gives the server's own choices (new-user-trial 1.5)."""
        if not _restricted(self.md) or self.md.opt_out_reason or not self.rdr.opt_out:
            return
        parent, _, child = self.rdr.opt_out.rpartition("/")
        t = self.types.type(self.rdr.block, parent or child)
        if parent:
            t = self.types.child(t, child)
        if t is None:
            return  # not on this server: nothing to give
        choices = (f" to opt out of open access, one of {self.server}'s: {_choices(t)}"
                   if t.vocabulary else " to opt out of open access")
        now = ("restricted" if self.md.access == "restricted"
               else "restricted after the embargo")
        self.problems.add("opt_out_reason", f"'opt_out_reason' is missing; access is "
                                            f"{now}: add 'opt_out_reason: ...' with the "
                                            f"legitimate reason{choices}; or set "
                                            f"'access: open'")

    def _check_child(self, block: str, t: FieldType, c: FieldType) -> None:
        for entry in self.fields[block][t.name].entries():
            if not getattr(entry.get(c.name), "value", None):
                source = SOURCE.get(t.name, t.name)
                self.problems.add(source, f"'{source}' lacks what {self.server} requires: "
                                          f"{t.display_name} {c.display_name} "
                                          f"({block}/{t.name}/{c.name})")
                return


# -- embargo (issue 15) ---------------------------------------------------------------------

def _restricted(md: DatasetMetadata) -> bool:
    """Restricted access now, or from the embargo's end: the legitimate opt-out applies."""
    return md.access == "restricted" or (md.access == "embargoed"
                                         and md.after_embargo == "restricted")


def _embargo_fields(md: DatasetMetadata, r: RdrFields) -> list[tuple]:
    """RDR's "Date available (end of embargo)", the sibling of the access rights
    (``access/dateAvailable`` in KU Leuven's citation block, libis/rdm-build
    01-citation.tsv); only sent for an embargo, so other servers see no new field."""
    if md.access != "embargoed" or not r.access or md.embargo_until is None:
        return []
    parent, _, _ = r.access.rpartition("/")
    path = f"{parent}/dateAvailable" if parent else "dateAvailable"
    return [(path, [md.embargo_until.isoformat()], "embargo_until")]


def server_mapping(dataset: Path, client, md: DatasetMetadata, plan, server: str,
                   collection: str | None = None, pid: str | None = None) -> Mapping:
    """The metadata mapped to the server's blocks and checked against its required fields,
    vocabularies and licenses (one MetadataError lists everything that is wrong).

    Requiredness is the collection's (a collection can require more through input levels):
    of the dataset's own collection when `pid` is given, else of `collection`.
    """
    from datalad.distribution.dataset import Dataset

    rdr = rdr_fields(Dataset(str(dataset)).config.get)
    blocks, note = server_blocks(client, ["citation", rdr.block], server, collection, pid)
    paths = [f.path for b in plan.bundles for f in b.files]
    mapping = Mapping(md, technical_formats(paths), rdr, blocks, client.licenses(), server)
    if note:
        mapping.notes.append(note)
    mapping.check()
    return mapping


def server_blocks(client, names: list[str], server: str, collection: str | None = None,
                  pid: str | None = None) -> tuple[dict[str, MetadataBlock], str]:
    """{block name: block with its field types} and a note when the installation's
    requirements stand in for the collection's."""
    from ..dataverse import NotFound

    note = ""
    alias = collection
    if pid:
        alias = client.dataset_collection(pid)
        if alias is None:
            note = (f"{server} does not say which collection holds {pid}: its installation's "
                    f"required fields were checked, not the collection's")
    listing = {}
    if alias:
        try:
            listing = {b.name: b for b in client.collection_blocks(alias)}
        except NotFound as exc:
            raise MetadataError(f"{server} has no collection '{alias}'; give an existing "
                                f"one with --collection", field="collection") from exc
    elif not note:
        note = (f"no collection given: {server}'s installation-wide required fields were "
                f"checked")
    blocks = {}
    for name in dict.fromkeys(names):
        if name in listing and listing[name].fields is not None:
            blocks[name] = listing[name]
            continue
        try:
            blocks[name] = client.metadata_block(name)
        except NotFound as exc:
            own = name != "citation"
            raise MetadataError(
                f"{server} has no metadata block '{name}'"
                + (f" (set by {CONFIG_KEYS['block']})" if own else "")
                + "; set the block that holds RDR's own fields with git config "
                  f"{CONFIG_KEYS['block']} <name>", field="block") from exc
    return blocks, note

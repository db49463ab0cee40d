"""openMINDS JSON-LD of the dataset, from the same metadata file as the RDR record.

EBRAINS curation takes datasets described in openMINDS; its Knowledge Graph runs openMINDS
**v3**, so that is the version written here, with the PyPI package ``openminds`` (optional:
``pip install 'datalad-rdr[openminds]'``). The package also checks the result: required
properties, types and multiplicity; a graph that fails is not written.

What comes from where (docs/metadata.rst, "openMINDS"):

- Dataset and DatasetVersion: title, description, authors (Person with ORCID and
  affiliation), the contact as custodian (with email), license, funding, related
  publication; the DOI, version and release date from the manifest of the published
  export (``--publish``); accessibility from ``access``.
- openMINDS terms RDR does not know -- techniques, experimental approaches, ethics
  assessment, data types -- from the ``ebrains:`` section of the metadata file, checked
  against the openMINDS term lists; data types default to what the layout shows
  (``sub-*``: raw data, ``derivatives/``: derived data).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from . import manifest as mf
from .metadata import METADATA, DatasetMetadata, MetadataError, Person

VERSION = "v3"  # the openMINDS version the EBRAINS Knowledge Graph takes
TERMS = {  # ebrains key -> openMINDS controlled-term class name
    "data_types": "SemanticDataType",
    "techniques": "Technique",
    "experimental_approaches": "ExperimentalApproach",
    "ethics_assessment": "EthicsAssessment",
}
ACCESSIBILITY = {"open": "free access", "restricted": "controlled access"}


def _modules():
    try:
        from openminds import Collection
        from openminds.v3 import controlled_terms, core
    except ImportError as exc:
        raise MetadataError("writing openMINDS needs the 'openminds' package: "
                            "pip install 'datalad-rdr[openminds]'") from exc
    return Collection, core, controlled_terms


def layout_data_types(paths: list[str]) -> list[str]:
    types = []
    if any(p.split("/")[0].startswith("sub-") for p in paths):
        types.append("raw data")
    if any(p.startswith("derivatives/") for p in paths):
        types.append("derived data")
    return types


def split_name(name: str) -> tuple[str, str | None]:
    """(given, family) from "Family, Given" or "Given Family"."""
    if "," in name:
        family, given = (x.strip() for x in name.split(",", 1))
        return (given or family), (family if given else None)
    parts = name.split()
    if len(parts) == 1:
        return parts[0], None
    return " ".join(parts[:-1]), parts[-1]


class _Builder:
    def __init__(self, md: DatasetMetadata, paths: list[str], doi: str | None,
                 version: str | None, released: dt.date):
        self.Collection, self.core, self.ct = _modules()
        self.md, self.paths, self.doi = md, paths, doi
        self.version, self.released = version or "1.0", released
        self.orgs: dict[str, object] = {}
        self.people: dict[str, object] = {}

    def term(self, key: str, name: str):
        cls = getattr(self.ct, TERMS[key])
        found = cls.by_name(name)
        if found is None:
            known = sorted(i.name for i in cls.instances())
            hint = "; ".join(known) if len(known) <= 40 else \
                f"{len(known)} terms, see https://openminds.om-i.org/ ({TERMS[key]})"
            raise MetadataError(f"{METADATA}: 'ebrains.{key}' {name!r} is not an openMINDS "
                                f"{TERMS[key]}; use one of: {hint}", field=f"ebrains.{key}")
        return found

    def terms(self, key: str, default: list[str] | None = None) -> list:
        names = self.md.ebrains.get(key) or default or []
        if not names:
            raise MetadataError(f"{METADATA}: 'ebrains.{key}' is missing; openMINDS (EBRAINS "
                                f"curation) requires it: add it under 'ebrains:' (the "
                                f"template shows how)", field=f"ebrains.{key}")
        return [self.term(key, n) for n in names]

    def organization(self, name: str):
        if name not in self.orgs:
            self.orgs[name] = self.core.Organization(full_name=name)
        return self.orgs[name]

    def person(self, p: Person):
        if p.name in self.people:
            person = self.people[p.name]
        else:
            given, family = split_name(p.name)
            person = self.core.Person(given_name=given, family_name=family)
            self.people[p.name] = person
        if p.orcid and not person.digital_identifiers:
            person.digital_identifiers = [
                self.core.ORCID(identifier=f"https://orcid.org/{p.orcid}")]
        if p.affiliation and not person.affiliations:
            person.affiliations = [self.core.Affiliation(
                member_of=self.organization(p.affiliation))]
        if p.email and not person.contact_information:
            person.contact_information = self.core.ContactInformation(email=p.email)
        return person

    def license(self):
        md = self.md
        if md.license == "custom":
            # custom terms have no IRI of their own: the record's landing page shows them
            return self.core.WebResource(iri=f"https://doi.org/{self.doi}") if self.doi \
                else None
        return self.core.License.by_name(md.license)

    def build(self):
        md, core = self.md, self.core
        authors = [self.person(a) for a in md.authors]
        custodian = self.person(md.contact)
        doi = core.DOI(identifier=f"https://doi.org/{self.doi}") if self.doi else None
        related = [core.DOI(identifier=f"https://doi.org/{md.related_publication}")] \
            if md.related_publication else None
        documentation = related[0] if related else (
            core.WebResource(iri=f"https://doi.org/{self.doi}") if self.doi else None)
        funding = [core.Funding(funder=self.organization(g.agency), award_number=g.number)
                   for g in md.grants] or None
        first = self.version in ("1", "1.0")
        version = core.DatasetVersion(
            short_name=md.title[:30] if len(md.title) > 30 else md.title,
            full_name=md.title, description=md.description, authors=authors,
            custodians=[custodian], digital_identifier=doi,
            accessibility=self.ct.ProductAccessibility.by_name(ACCESSIBILITY[md.access]),
            license=self.license(), release_date=self.released,
            version_identifier=self.version,
            version_innovation="This is the first version of this research product."
            if first else f"Version {self.version}; the dataset's CHANGES file lists what "
                          f"changed.",
            data_types=self.terms("data_types", layout_data_types(self.paths)),
            techniques=self.terms("techniques"),
            experimental_approaches=self.terms("experimental_approaches"),
            ethics_assessment=self.terms("ethics_assessment")[0],
            full_documentation=documentation, related_publications=related, funding=funding)
        # Dataverse gives a dataset one DOI for all its versions: it names both
        dataset = core.Dataset(
            short_name=version.short_name, full_name=md.title, description=md.description,
            authors=authors, custodians=[custodian], has_versions=[version],
            digital_identifier=doi)
        collection = self.Collection()
        collection.add(dataset)
        return collection


def build(md: DatasetMetadata, paths: list[str], doi: str | None = None,
          version: str | None = None, released: dt.date | None = None):
    """The openMINDS collection (Dataset, DatasetVersion, persons, ...), validated;
    MetadataError names the first property the package finds missing or wrong."""
    collection = _Builder(md, paths, doi, version, released or dt.date.today()).build()
    problems = validation_problems(collection)
    if problems:
        missing_doi = any("digital_identifier" in p for p in problems) and not doi
        raise MetadataError(
            "openMINDS validation failed: " + "; ".join(problems)
            + ("; the DOI is known after 'datalad rdr-export --publish', run this again then"
               if missing_doi else ""), field="openminds")
    return collection


def validation_problems(collection) -> list[str]:
    """The openminds package's findings, as "Type: message"."""
    kinds = {node.id: type(node).__name__ for node in collection}
    return [f"{kinds.get(node, node)}: {msg}" for node, found in
            collection.validate().items() for msgs in found.values() for msg in msgs]


def write(dataset: Path, out: Path, md: DatasetMetadata, paths: list[str]) -> dict:
    """Write the JSON-LD of the dataset to `out`; the DOI, version and release date come from
    the manifest of the last published export. Returns a summary."""
    manifest = mf.load(dataset)
    doi = manifest.doi if manifest else None
    released = None
    if manifest and manifest.published:
        try:
            released = dt.date.fromisoformat(str(manifest.published)[:10])
        except ValueError:
            released = None
    collection = build(md, paths, doi, manifest.version if manifest else None, released)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    collection.save(str(out))
    nodes = json.loads(out.read_text())
    graph = nodes.get("@graph", [nodes]) if isinstance(nodes, dict) else nodes
    kinds = sorted({n.get("@type", "?").rsplit("/", 1)[-1] for n in graph})
    return {"path": str(out), "doi": doi, "nodes": len(graph), "types": kinds}


def run_openminds(dataset: Path, out: Path, commit: str = "HEAD", recursive: bool = False):
    """``rdr-export --openminds PATH``: result records."""
    import subprocess

    from .metadata import load, missing_message
    from .plan import PlanError, make_plan

    base = {"action": "rdr-openminds", "type": "file", "path": str(out)}
    try:
        plan = make_plan(dataset, commit, recursive=recursive)
        md = load(dataset, plan.commit)
        if md is None:
            raise MetadataError(missing_message().replace("; nothing was uploaded", ""))
        summary = write(dataset, out, md, [f.path for b in plan.bundles for f in b.files])
    except (MetadataError, PlanError, subprocess.CalledProcessError) as exc:
        yield {**base, "status": "error", "message": str(exc).strip()}
        return
    yield {**base, "status": "ok", **summary,
           "message": f"openMINDS {VERSION} JSON-LD written to {out}: {summary['nodes']} "
                      f"nodes ({', '.join(summary['types'])}), DOI {summary['doi']}; "
                      f"validated by the openminds package"}

"""The metadata blocks the sandbox's Dataverse knows, and how it checks a version against them.

Two citation blocks:

- ``dataverse``: the stock citation block of Dataverse 6.7.1
  (``IQSS/dataverse: scripts/api/data/metadatablocks/citation.tsv``; ``publicationRelationType``
  came with 6.4).
- ``rdr``: KU Leuven's own citation block, which the RDM image build installs over the stock one
  (``libis/rdm-build: test/config/dataverse/overwrite/metadatablocks/01-citation.tsv``). It
  requires ``keyword``, ``departmentFaculty``, ``technicalFormat`` and ``access/accessRights``,
  has its own subject list, and turns ``relatedMaterial`` into a compound with a type. That file
  is the build's *test* configuration: that production RDR has exactly these fields is
  UNCERTAIN (docs/sandbox.rst). Its ``technicalFormat`` names a parent ``format`` that the
  file does not define; here it is a top-level field.

Blocks added by the ``required_blocks`` setting are plain text fields, all required.

Checking follows Dataverse's ``JsonParser`` (unknown type names and values outside a controlled
vocabulary are parse errors, 400 ``Error parsing Json: ...``) and its required-field validation
(400 ``Validation Failed: <title> is required.``, or the conditional text for a required child
of an optional compound).
"""

from __future__ import annotations

STOCK_SUBJECTS = [
    "Agricultural Sciences", "Arts and Humanities", "Astronomy and Astrophysics",
    "Business and Management", "Chemistry", "Computer and Information Science",
    "Earth and Environmental Sciences", "Engineering", "Law", "Mathematical Sciences",
    "Medicine, Health and Life Sciences", "Physics", "Social Sciences", "Other"]

RDR_SUBJECTS = [
    "Natural sciences", "Mathematical sciences", "Information and computing sciences",
    "Physical sciences", "Chemical sciences", "Earth sciences", "Biological sciences",
    "Environmental sciences", "Other natural sciences", "Engineering and technology",
    "Civil and building engineering", "Electrical and electronic engineering",
    "Mechanical and manufacturing engineering", "(Bio)chemical engineering",
    "Materials engineering", "(Bio)medical engineering",
    "Biotechnology, bio-engineering and biosystems engineering",
    "Computer engineering, information technology and mathematical engineering",
    "Other engineering and technology", "Medical and health sciences", "Basic sciences",
    "Clinical sciences", "Health sciences", "Paramedical sciences", "Pharmaceutical sciences",
    "Translational sciences", "Other medical and health sciences",
    "Agricultural, veterinary and food sciences",
    "Agriculture, forestry, fisheries and allied sciences", "Veterinary sciences",
    "Other agricultural, veterinary and food sciences", "Social sciences",
    "Psychology and cognitive sciences", "Economics and business",
    "Pedagogical and educational sciences", "Sociology and anthropology",
    "Law and legal studies", "Political sciences", "Social and economic geography",
    "Media and communications", "Other social sciences", "Humanities and the arts",
    "History and archaeology", "Languages and literary studies",
    "Philosophy, ethics and religious studies", "Arts", "Other humanities and the arts"]

RDR_DEPARTMENTS = [
    "Department of Cardiovascular Sciences", "Department of Cellular and Molecular Medicine",
    "Department of Chronic Diseases and Metabolism", "Department of Development and Regeneration",
    "Department of Human Genetics", "Department of Imaging and Pathology",
    "Department of Microbiology, Immunology and Transplantation",
    "Department of Movement Sciences", "Department of Neurosciences", "Department of Oncology",
    "Department of Oral Health Sciences",
    "Department of Pharmaceutical and Pharmacological Sciences",
    "Department of Public Health and Primary Care", "Department of Rehabilitation Sciences",
    "Department of Architecture", "Department of Biology", "Department of Biosystems (BIOSYST)",
    "Department of Chemical Engineering (CIT)", "Department of Chemistry",
    "Department of Civil Engineering", "Department of Computer Science",
    "Department of Earth and Environmental Sciences",
    "Department of Electrical Engineering (ESAT)", "Department of Materials Engineering",
    "Department of Mathematics", "Department of Mechanical Engineering"]

ID_TYPES = ["ark", "arXiv", "bibcode", "doi", "ean13", "eissn", "handle", "isbn", "issn",
            "istc", "lissn", "lsid", "pmid", "pmcid", "purl", "upc", "url", "urn"]
RELATION_TYPES = ["IsCitedBy", "Cites", "IsSupplementTo", "IsSupplementedBy",
                  "IsReferencedBy", "References"]
CONTRIBUTOR_TYPES = ["Data Collector", "Data Curator", "Data Manager", "Editor", "Funder",
                     "Hosting Institution", "Project Leader", "Project Manager",
                     "Project Member", "Related Person", "Researcher", "Research Group",
                     "Rights Holder", "Sponsor", "Supervisor", "Work Package Leader", "Other"]
ANY = None  # a controlled vocabulary the sandbox does not spell out (language): any value


def f(name, title, type="TEXT", multiple=False, required=False, vocab=False, children=()):
    """One field type: vocab False (free text), a list, or ANY (a vocabulary not checked)."""
    return {"name": name, "title": title, "type": "NONE" if children else type,
            "multiple": multiple, "required": required, "vocab": vocab,
            "children": {c["name"]: c for c in children}}


def _common_tail(contributor_required=False):
    return [
        f("language", "Language", multiple=True, vocab=ANY),
        f("productionDate", "Production Date", "DATE"),
        f("productionPlace", "Production Location", multiple=True),
        f("contributor", "Contributor", multiple=True, children=[
            f("contributorType", "Type", vocab=CONTRIBUTOR_TYPES,
              required=contributor_required),
            f("contributorName", "Name", required=contributor_required)]),
        f("grantNumber", "Funding Information", multiple=True, children=[
            f("grantNumberAgency", "Agency"), f("grantNumberValue", "Identifier")]),
        f("timePeriodCovered", "Time Period", multiple=True, children=[
            f("timePeriodCoveredStart", "Start Date", "DATE"),
            f("timePeriodCoveredEnd", "End Date", "DATE")]),
        f("dateOfCollection", "Date of Collection", multiple=True, children=[
            f("dateOfCollectionStart", "Start Date", "DATE"),
            f("dateOfCollectionEnd", "End Date", "DATE")]),
        f("notesText", "Notes", "TEXTBOX"),
        f("software", "Software", multiple=True, children=[
            f("softwareName", "Name"), f("softwareVersion", "Version")]),
    ]


def _author():
    return f("author", "Author", multiple=True, required=True, children=[
        f("authorName", "Name", required=True), f("authorAffiliation", "Affiliation"),
        f("authorIdentifierScheme", "Identifier Type",
          vocab=["ORCID", "ISNI", "LCNA", "VIAF", "GND", "DAI", "ResearcherID", "ScopusID"]),
        f("authorIdentifier", "Identifier")])


def _contact(title):
    return f("datasetContact", title, multiple=True, required=True, children=[
        f("datasetContactName", "Name"), f("datasetContactAffiliation", "Affiliation"),
        f("datasetContactEmail", "E-mail", "EMAIL", required=True)])


def _description():
    return f("dsDescription", "Description", multiple=True, required=True, children=[
        f("dsDescriptionValue", "Text", "TEXTBOX", required=True),
        f("dsDescriptionDate", "Date", "DATE")])


STOCK_CITATION = [
    f("title", "Title", required=True),
    f("subtitle", "Subtitle"),
    f("alternativeTitle", "Alternative Title", multiple=True),
    f("alternativeURL", "Alternative URL", "URL"),
    f("otherId", "Other Identifier", multiple=True, children=[
        f("otherIdAgency", "Agency"), f("otherIdValue", "Identifier")]),
    _author(),
    _contact("Point of Contact"),
    _description(),
    f("subject", "Subject", multiple=True, required=True, vocab=STOCK_SUBJECTS),
    f("keyword", "Keyword", multiple=True, children=[
        f("keywordValue", "Term"), f("keywordTermURI", "Term URI", "URL"),
        f("keywordVocabulary", "Controlled Vocabulary Name"),
        f("keywordVocabularyURI", "Controlled Vocabulary URL", "URL")]),
    f("topicClassification", "Topic Classification", multiple=True, children=[
        f("topicClassValue", "Term"), f("topicClassVocab", "Controlled Vocabulary Name"),
        f("topicClassVocabURI", "Controlled Vocabulary URL", "URL")]),
    f("publication", "Related Publication", multiple=True, children=[
        f("publicationRelationType", "Relation Type", vocab=RELATION_TYPES),
        f("publicationCitation", "Citation", "TEXTBOX"),
        f("publicationIDType", "Identifier Type", vocab=ID_TYPES),
        f("publicationIDNumber", "Identifier"), f("publicationURL", "URL", "URL")]),
    f("producer", "Producer", multiple=True, children=[
        f("producerName", "Name", required=True), f("producerAffiliation", "Affiliation"),
        f("producerAbbreviation", "Abbreviated Name"), f("producerURL", "URL", "URL"),
        f("producerLogoURL", "Logo URL", "URL")]),
    f("distributor", "Distributor", multiple=True, children=[
        f("distributorName", "Name"), f("distributorAffiliation", "Affiliation"),
        f("distributorAbbreviation", "Abbreviated Name"), f("distributorURL", "URL", "URL"),
        f("distributorLogoURL", "Logo URL", "URL")]),
    f("distributionDate", "Distribution Date", "DATE"),
    f("depositor", "Depositor"),
    f("dateOfDeposit", "Deposit Date", "DATE"),
    f("kindOfData", "Data Type", multiple=True),
    f("series", "Series", multiple=True, children=[
        f("seriesName", "Name"), f("seriesInformation", "Information", "TEXTBOX")]),
    f("relatedMaterial", "Related Material", "TEXTBOX", multiple=True),
    f("relatedDatasets", "Related Dataset", "TEXTBOX", multiple=True),
    f("otherReferences", "Other Reference", multiple=True),
    f("dataSources", "Data Source", "TEXTBOX", multiple=True),
    f("originOfSources", "Origin of Historical Sources", "TEXTBOX"),
    f("characteristicOfSources", "Characteristic of Sources", "TEXTBOX"),
    f("accessToSources", "Documentation and Access to Sources", "TEXTBOX"),
    *_common_tail(),
]

RDR_CITATION = [
    f("title", "Title (English)", required=True),
    f("alternativeTitle", "Alternative title", multiple=True),
    f("alternativeURL", "Alternative URL", "URL", multiple=True),
    f("otherId", "Other ID", multiple=True, children=[
        f("otherIdAgency", "Identifier type"), f("otherIdValue", "Identifier")]),
    _author(),
    f("departmentFaculty", "Department / Faculty", multiple=True, required=True,
      vocab=RDR_DEPARTMENTS),
    _contact("Contact"),
    _description(),
    # Not required: the published RDR dataset (fidelity row 43) has no subject at all.
    f("subject", "Subject", multiple=True, vocab=RDR_SUBJECTS),
    f("keyword", "Keyword", multiple=True, required=True, children=[
        f("keywordValue", "Term", required=True),
        f("keywordVocabulary", "Vocabulary"), f("keywordVocabularyURI", "Vocabulary URL", "URL")]),
    f("publication", "Related publication", multiple=True, children=[
        f("publicationCitation", "Citation", "TEXTBOX"),
        f("publicationIDType", "ID Type", vocab=ID_TYPES),
        f("publicationIDNumber", "ID Number"), f("publicationURL", "URL", "URL")]),
    f("technicalFormat", "Technical format", required=True),
    f("virtualCollection", "Virtual collection", multiple=True,
      vocab=[f"Collection{i}" for i in range(1, 7)]),
    f("access", "Access", required=True, children=[
        f("accessRights", "Access rights", required=True,
          vocab=["open", "restricted", "embargoed", "closed"]),
        f("dateAvailable", "Date available (end of embargo)", "DATE"),
        f("legitimateOptout", "Legitimate opt-out",
          vocab=["privacy", "intellectual property rights", "ethical aspects",
                 "aspects of dual use", "other"])]),
    f("kindOfData", "Kind of data", multiple=True, vocab=ANY),
    f("technicalInformation", "Technical information", "TEXTBOX"),
    f("relatedMaterial", "Related material", multiple=True, children=[
        f("relatedMaterialType", "Relation type",
          vocab=["Related dataset", "Related serie", "Related material", "Data source",
                 "Other reference"]),
        f("relatedMaterialCitation", "Citation", "TEXTBOX"),
        f("relatedMaterialIDType", "ID Type", vocab=ID_TYPES),
        f("relatedMaterialIDNumber", "ID Number"),
        f("relatedMaterialURL", "URL", "URL")]),
    # RDR's TSV makes both contributor children required: conditionally, as contributor
    # itself is optional.
    *_common_tail(contributor_required=True),
]

CITATION = {"dataverse": STOCK_CITATION, "rdr": RDR_CITATION}


GEOSPATIAL = [
    f("geographicCoverage", "Geographic Coverage", multiple=True, children=[
        f("country", "Country / Nation", vocab=ANY), f("state", "State / Province"),
        f("city", "City"), f("otherGeographicCoverage", "Other")]),
    f("geographicUnit", "Geographic Unit", multiple=True),
    f("geographicBoundingBox", "Geographic Bounding Box", multiple=True, children=[
        f("westLongitude", "Westernmost (Left) Longitude"),
        f("eastLongitude", "Easternmost (Right) Longitude"),
        f("northLatitude", "Northernmost (Top) Latitude"),
        f("southLatitude", "Southernmost (Bottom) Latitude")]),
]

STOCK_BLOCKS = {"geospatial": GEOSPATIAL}


def blocks_for(citation: str, required_blocks: dict, extra_blocks=(),
               required_here=()) -> dict[str, dict]:
    """{block name: {field name: field type}} as the installation (and, with
    ``required_here``, a collection's input levels) has them."""
    blocks = {"citation": {t["name"]: t for t in CITATION[citation]}}
    for name in extra_blocks:
        blocks[name] = {t["name"]: t for t in STOCK_BLOCKS[name]}
    for name, fields in required_blocks.items():
        block = blocks.setdefault(name, {})
        for field_name in fields:
            block.setdefault(field_name, f(field_name, field_name, required=True))
    if required_here:
        blocks = {name: {n: _required_in(t, required_here) for n, t in types.items()}
                  for name, types in blocks.items()}
    return blocks


def _required_in(t: dict, names) -> dict:
    return {**t, "required": t["required"] or t["name"] in names,
            "children": {n: _required_in(c, names) for n, c in t["children"].items()}}


def _type_class(t: dict) -> str:
    if t["children"]:
        return "compound"
    return "primitive" if t["vocab"] is False else "controlledVocabulary"


def field_json(t: dict, order: int = 0) -> dict:
    """One field type as ``JsonPrinter.json(DatasetFieldType)`` prints it."""
    data = {"name": t["name"], "displayName": t["title"], "displayOnCreate": True,
            "title": t["title"], "type": t["type"], "typeClass": _type_class(t),
            "watermark": "", "description": t["title"], "multiple": t["multiple"],
            "isControlledVocabulary": t["vocab"] is not False, "displayFormat": "#VALUE",
            "displayOrder": order, "isRequired": t["required"]}
    if t["vocab"] is not False:
        data["controlledVocabularyValues"] = list(t["vocab"] or [])
    if t["children"]:
        data["childFields"] = {name: field_json(c, order + i + 1)
                               for i, (name, c) in enumerate(t["children"].items())}
    return data


def block_json(block_id: int, name: str, types: dict) -> dict:
    display = "Citation Metadata" if name == "citation" else name
    return {"id": block_id, "displayName": display, "displayOnCreate": True, "name": name,
            "fields": {n: field_json(t, i) for i, (n, t) in enumerate(types.items())}}


class ParseError(Exception):
    """The body names a type or value the installation does not have."""


def find_type(blocks: dict, name: str) -> tuple[str, dict] | None:
    for block_name, types in blocks.items():
        if name in types:
            return block_name, types[name]
    return None


def check_values(blocks: dict, field: dict) -> None:
    """Parse-time checks of one submitted field (JsonParser.parseField)."""
    name = field.get("typeName", "")
    found = find_type(blocks, name)
    if found is None:
        raise ParseError(f"Can't find type '{name}'")
    _check_value(found[1], field.get("value"))


def _check_value(t: dict, value) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if t["children"]:
            if not isinstance(v, dict):
                raise ParseError(f"Compound field '{t['name']}' needs an object value")
            for child_name, child in v.items():
                ct = t["children"].get(child_name)
                if ct is None:
                    raise ParseError(f"Can't find type '{child_name}'")
                _check_value(ct, child.get("value") if isinstance(child, dict) else child)
        elif t["vocab"]:
            if v not in t["vocab"]:
                raise ParseError(f"Value '{v}' does not exist in type '{t['name']}'")


def missing_required(blocks: dict, by_block: dict[str, dict]) -> list[str]:
    """Violations of requiredness, as DatasetFieldValueValidator words them.

    A required child of a required compound is always required; a required child of an
    optional compound only once one of its siblings has a value (the conditional text).
    """
    submitted = {}
    for fields in by_block.values():
        submitted.update(fields)
    problems = []
    for types in blocks.values():
        for name, t in types.items():
            needed_children = [c for c in t["children"].values() if c["required"]]
            if not t["required"] and not needed_children:
                continue
            value = (submitted.get(name) or {}).get("value")
            values = [v for v in (value if isinstance(value, list) else [value]) if v]
            if not values and t["required"]:
                problems.append(f"{t['title']} is required.")
                continue
            for v in values:
                if not isinstance(v, dict):
                    continue
                filled = [c for c in v if (v.get(c) or {}).get("value")]
                for c in needed_children:
                    if (v.get(c["name"]) or {}).get("value"):
                        continue
                    label = f"{t['title']} {c['title']}"
                    if t["required"]:
                        problem = f"{label} is required."
                    elif filled:
                        problem = (f"{label} is required if you choose to enter a value in "
                                   f"any of the optional {t['title']} fields.")
                    else:
                        continue
                    if problem not in problems:
                        problems.append(problem)
    return problems

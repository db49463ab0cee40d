"""The commented template of the metadata file for a new user."""

from __future__ import annotations

import json
from pathlib import Path

from ..gitannex import config
from .file import LICENSES, METADATA, MetadataError

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
# Needed only where the server requires a subject (a stock Dataverse does).
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
# for the legitimate reason to opt out of open access, one of its list (the export names
# the server's own choices when this is empty or not one of them; in RDR's test
# configuration: "privacy", "intellectual property rights", "ethical aspects", "aspects of
# dual use", "other").
# open: every file is public.
access: restricted
opt_out_reason:
# embargoed: closed until a date, then open or restricted:
# access: embargoed
# embargo_until: 2027-06-30
# embargo_reason: the paper is under review
# after_embargo: open

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

    user, email = config(dataset, "user.name"), config(dataset, "user.email")
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

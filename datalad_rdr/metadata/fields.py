"""Where RDR's own fields go (configurable) and the technical format they get from the files."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    # a name's format depends only on what follows its first dot: each such ending once
    # (a few dozen among 100,000 files; 1 s less than a file_format of every path)
    endings = set()
    for p in paths:
        name = p.rpartition("/")[2]
        dot = name.find(".")
        if dot > 0:
            endings.add(name[dot:].lower())
    return sorted({fmt for e in endings if (fmt := file_format("x" + e))})


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

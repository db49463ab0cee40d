"""Checks of the identifiers a metadata file names: ORCID, ISNI, DOI, ROR, e-mail, URL.

One place for both metadata files the project reads (``.datalad/rdr/metadata.yaml`` and
StepUp's ``zenodo.yaml``), so that an ORCID is judged the same way in both.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

_ORCID = re.compile(r"^(?:https?://orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])$")
_DOI = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)?(10\.\d{4,9}/\S+)$", re.I)
_ROR = re.compile(r"^0[0-9a-hjkmnp-tv-z]{6}[0-9]{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def iso7064_ok(digits: str) -> bool:
    """The check character of ORCID and ISNI (ISO 7064 11,2)."""
    total = 0
    for ch in digits[:-1]:
        total = (total + int(ch)) * 2
    result = (12 - total % 11) % 11
    return digits[-1] == ("X" if result == 10 else str(result))


def orcid(value: str) -> str | None:
    """The bare ORCID iD (``0000-0002-1825-0097``) of a bare or ``https://orcid.org/`` form
    with a valid check character; None otherwise."""
    m = _ORCID.match(value.strip()) if isinstance(value, str) else None
    if not m or not iso7064_ok(m.group(1).replace("-", "")):
        return None
    return m.group(1)


def isni_ok(value: str) -> bool:
    compact = value.replace(" ", "").replace("-", "")
    return bool(re.fullmatch(r"\d{15}[\dX]", compact)) and iso7064_ok(compact)


def doi(value: str) -> str | None:
    """The bare DOI (``10.1234/abc``) of a bare, ``doi:`` or ``https://doi.org/`` form."""
    m = _DOI.match(value.strip()) if isinstance(value, str) else None
    return m.group(1) if m else None


def ror_ok(value: str) -> bool:
    return isinstance(value, str) and bool(_ROR.match(value))


def email_ok(value: str) -> bool:
    return isinstance(value, str) and bool(_EMAIL.match(value))


def url_ok(value: str, schemes=("http", "https")) -> bool:
    try:
        parsed = urlparse(value)
        return parsed.scheme in schemes and bool(parsed.hostname)
    except (ValueError, AttributeError):
        return False

"""What a draft may hold (partial validation when saved) and what publishing needs (strict)."""

from __future__ import annotations

import copy
import datetime as dt
import re

from .model import Snapshot


REQUIRED_METADATA = ("title", "publication_date", "resource_type", "creators")


STRING_FIELDS = ("version", "publisher", "description", "copyright", "title")


LIST_FIELDS = (
    "creators", "contributors", "rights", "subjects", "related_identifiers", "funding",
    "languages", "dates", "identifiers", "references", "additional_descriptions",
    "additional_titles", "sizes", "formats",
)


_EDTF_DAY = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def _is_edtf_level0(value) -> bool:
    if not isinstance(value, str):
        return False
    parts = value.split("/")
    if len(parts) > 2 or not all(_EDTF_DAY.match(p) for p in parts):
        return False
    for p in parts:
        nums = [int(x) for x in p.split("-")] + [1, 1]
        try:
            dt.date(*nums[:3])
        except ValueError:
            return False
    return True


def _creator_problems(i: int, creator) -> list:
    where = f"metadata.creators.{i}"
    if not isinstance(creator, dict):
        return [(where, "Invalid input type.")]
    person = creator.get("person_or_org")
    if not isinstance(person, dict):
        return [(f"{where}.person_or_org", "Missing data for required field.")]
    kind = person.get("type")
    if kind not in ("personal", "organizational"):
        return [(f"{where}.person_or_org.type",
                 "Invalid value. Choose one of ['organizational', 'personal'].")]
    if kind == "personal" and not person.get("family_name"):
        return [(f"{where}.person_or_org.family_name", "Family name must be filled.")]
    if kind == "organizational" and not person.get("name"):
        return [(f"{where}.person_or_org.name", "Name cannot be blank.")]
    for j, aff in enumerate(creator.get("affiliations") or []):
        if not (isinstance(aff, dict) and (aff.get("id") or aff.get("name"))):
            return [(f"{where}.affiliations.{j}",
                     "An existing id or a free text name must be present.")]
    return []


def _metadata_problems(name: str, value) -> list:
    """(field, message) pairs for one metadata field; empty when the field is valid."""
    where = f"metadata.{name}"
    if name in STRING_FIELDS and not isinstance(value, str):
        return [(where, "Not a valid string.")]
    if name in LIST_FIELDS and not isinstance(value, list):
        return [(where, "Not a valid list.")]
    if name == "title" and len(value.strip()) < 3:
        return [(where, "Shorter than minimum length 3.")]
    if name == "publication_date" and not _is_edtf_level0(value):
        return [(where, "Please provide a valid date or interval.")]
    if name == "resource_type":
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            return [(f"{where}.id", "Missing data for required field.")]
    if name == "creators":
        if not value:
            return [(where, "Missing data for required field.")]
        return [p for i, c in enumerate(value) for p in _creator_problems(i, c)]
    return []


def as_errors(problems: list) -> list:
    merged: dict = {}
    for where, message in problems:
        merged.setdefault(where, []).append(message)
    return [{"field": f, "messages": m} for f, m in merged.items()]


def load_record_input(body: dict) -> tuple[dict, list]:
    """Split a create/update body into what a draft keeps and the problems found.

    Like InvenioRDM saving a draft: invalid fields are dropped and reported, the rest is
    kept (missing required fields are reported too, but do not prevent saving).
    """
    problems = []
    metadata_in = body.get("metadata") or {}
    if not isinstance(metadata_in, dict):
        problems.append(("metadata", "Invalid input type."))
        metadata_in = {}
    metadata = {}
    for name, value in metadata_in.items():
        found = _metadata_problems(name, value)
        problems.extend(found)
        if not found:
            metadata[name] = copy.deepcopy(value)
    for name in REQUIRED_METADATA:
        if name not in metadata_in:
            problems.append((f"metadata.{name}", "Missing data for required field."))

    access_in = body.get("access") or {}
    access = {"record": "public", "files": "public"}
    if isinstance(access_in, dict):
        for level in ("record", "files"):
            value = access_in.get(level, "public")
            if value not in ("public", "restricted"):
                problems.append((f"access.{level}", "Must be one of: public, restricted."))
            else:
                access[level] = value
        if access["record"] == "restricted":
            # Zenodo: RDM_ALLOW_RESTRICTED_RECORDS = False
            problems.append(("access.record",
                             "You don't have permissions to manage record access."))
            access["record"] = "public"
        if isinstance(access_in.get("embargo"), dict):
            embargo = copy.deepcopy(access_in["embargo"])
            found = _embargo_problems(embargo)
            problems.extend(found)
            if not found:
                access["embargo"] = embargo
    files = body.get("files") if isinstance(body.get("files"), dict) else {}
    custom = body.get("custom_fields") if isinstance(body.get("custom_fields"), dict) else {}
    data = {"metadata": metadata, "access": access, "files": files,
            "custom_fields": copy.deepcopy(custom)}
    return data, as_errors(problems)


def _embargo_problems(embargo: dict) -> list:
    """invenio-rdm-records' EmbargoSchema: an active embargo ends in the future, an inactive
    one has no end ahead."""
    try:
        until = dt.date.fromisoformat(embargo["until"]) if embargo.get("until") else None
    except (TypeError, ValueError):
        return [("access.embargo.until", "Not a valid date.")]
    today = dt.datetime.now(dt.UTC).date()
    if embargo.get("active") and (until is None or until <= today):
        return [("access.embargo.until", "Embargo end date must be set to a future date.")]
    if embargo.get("active") is False and until is not None and until > today:
        return [("access.embargo.until", "Embargo end date must be unset or in the past.")]
    return []


def publish_problems(snap: Snapshot) -> list:
    """Errors of the strict validation run when a draft is published."""
    problems = []
    for name in REQUIRED_METADATA:
        if name not in snap.metadata:
            problems.append((f"metadata.{name}", "Missing data for required field."))
    for name, value in snap.metadata.items():
        problems.extend(_metadata_problems(name, value))
    return as_errors(problems)

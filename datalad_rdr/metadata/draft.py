"""The draft's metadata compared with the file's, and brought in line with it."""

from __future__ import annotations

from ..dataverse_records import DatasetVersion
from .file import METADATA
from .server import Mapping

def _plain(value):
    """A field value without the typeName/typeClass/multiple wrapping, for comparison."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        if "value" in value and "typeName" in value:
            return _plain(value["value"])
        return {k: _plain(v) for k, v in sorted(value.items())}
    return value


def server_fields(version: DatasetVersion) -> dict[str, dict[str, dict]]:
    """{block: {typeName: field JSON}} of a version as the server shows it."""
    return version.fields


def changes(mapping: Mapping, version: DatasetVersion) -> list[str]:
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
        if (version.license and version.license.name) != wanted["license"]["name"]:
            changed.append("license")
    elif version.terms_of_use != wanted["termsOfUse"] or version.license:
        changed.append("license")
    return changed


def merged_version(mapping: Mapping, version: DatasetVersion) -> dict:
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



def sync_draft(client, pid: str, mapping: Mapping, base: dict,
               lock_timeout: float = 300) -> dict:
    """Bring the record's metadata and license in line with the file; a result record."""
    version = client.latest_version(pid)
    changed = changes(mapping, version)
    if not changed:
        return {**base, "status": "notneeded",
                "message": f"metadata of {pid} unchanged{mapping.note()}"}
    client.wait_unlocked(pid, timeout=lock_timeout)  # a locked dataset cannot be edited
    client.update_draft(pid, merged_version(mapping, version))
    return {**base, "status": "ok", "changed": changed,
            "message": f"metadata of {pid} updated from {METADATA}: {', '.join(changed)}"
                       f"{mapping.note()}"}

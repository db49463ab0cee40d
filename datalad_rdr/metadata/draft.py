"""The draft's metadata compared with the file's, and brought in line with it."""

from __future__ import annotations

from ..dataverse_records import DatasetVersion, FieldValue, VersionMetadata
from .file import METADATA
from .server import Mapping


def server_fields(version: DatasetVersion) -> dict[str, dict[str, FieldValue]]:
    """{block: {field name: value}} of a version as the server shows it."""
    return version.fields


def _plain(value: FieldValue | None):
    return value.plain() if value is not None else None


def changes(mapping: Mapping, version: DatasetVersion) -> list[str]:
    """The managed fields (and 'license') whose value on the server differs from the file."""
    have = server_fields(version)
    changed = []
    for block, names in mapping.managed().items():
        for name in sorted(names):
            if _plain(mapping.fields.get(block, {}).get(name)) != _plain(
                    have.get(block, {}).get(name)):
                changed.append(name)
    wanted = mapping.license()
    if wanted is not None:
        if (version.license and version.license.name) != wanted.name:
            changed.append("license")
    elif version.terms_of_use != mapping.terms_of_use() or version.license:
        changed.append("license")
    return changed


def merged_version(mapping: Mapping, version: DatasetVersion) -> VersionMetadata:
    """The server's version with the managed fields replaced by the file's: what to PUT.
    Fields the file does not manage (filled in the web UI) are kept."""
    have = server_fields(version)
    managed = mapping.managed()
    blocks = {}
    for block in set(have) | set(mapping.fields):
        kept = [f for n, f in have.get(block, {}).items() if n not in managed.get(block, ())]
        fields = kept + list(mapping.fields.get(block, {}).values())
        if fields:
            blocks[block] = tuple(fields)
    return VersionMetadata(blocks, mapping.license(), mapping.terms_of_use())


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

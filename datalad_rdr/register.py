"""Register stage: make an uploaded bundle a file of the Dataverse draft.

One ``/addFiles`` (or ``/replaceFiles`` when the draft already has a file of that name) per
bundle, after the dataset's locks are gone, reading the per-file result inside the 200 reply
(Dataverse answers 200 even when a file failed). A file of the same name and MD5 already in
the draft is adopted instead of added twice, so a rerun after a crash leaves no duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dataverse import Dataverse, DataverseError
from .upload import Uploaded

ZIP_MIME = "application/zip"


class RegisterError(Exception):
    pass


@dataclass
class Registered:
    file_id: int
    label: str
    md5: str
    size: int
    storage_identifier: str
    restricted: bool
    adopted: bool = False  # the draft already held these bytes under this name


def find_in_draft(draft_files: list[dict], label: str, directory: str | None = None):
    for entry in draft_files:
        if entry["label"] == label and entry.get("directoryLabel") == directory:
            return entry
    return None


def _registered(entry: dict, adopted: bool = False) -> Registered:
    df = entry["dataFile"]
    return Registered(df["id"], entry["label"], df.get("md5") or df["checksum"]["value"],
                      df["filesize"], df["storageIdentifier"], entry.get("restricted", False),
                      adopted)


def register_bundle(client: Dataverse, pid: str, label: str, uploaded: Uploaded,
                    restrict: bool, description: str, directory: str | None = None,
                    lock_timeout: float = 300, mime_type: str = ZIP_MIME) -> Registered:
    client.wait_unlocked(pid, timeout=lock_timeout)
    existing = find_in_draft(draft_files(client, pid), label, directory)
    if existing is not None and _registered(existing).md5 == uploaded.md5:
        # The same bytes are there already (an earlier run got this far): adopt them, and
        # let the server drop the upload that nothing references.
        client.clean_storage(pid)
        registered = _registered(existing, adopted=True)
    else:
        spec = {"storageIdentifier": uploaded.storage_identifier, "fileName": label,
                "mimeType": mime_type, "description": description,
                "checksum": {"@type": "MD5", "@value": uploaded.md5},
                "restrict": restrict, "tabIngest": False}
        if directory:
            spec["directoryLabel"] = directory
        if existing is not None:
            spec["fileToReplaceId"] = existing["dataFile"]["id"]
            spec["forceReplace"] = True
            results = client.replace_files(pid, [spec])
        else:
            results = client.add_files(pid, [spec])
        (result,) = results
        if "errorMessage" in result or "fileDetails" not in result \
                or "dataFile" not in result.get("fileDetails", {}):
            raise RegisterError(f"Dataverse did not register {label}: "
                                f"{result.get('errorMessage') or result.get('message')}")
        registered = _registered(result["fileDetails"])
    if registered.size != uploaded.size:
        raise RegisterError(f"{label}: the server holds {registered.size} bytes, "
                            f"{uploaded.size} were sent")
    if registered.restricted != restrict:
        client.restrict(registered.file_id, restrict)
        registered.restricted = restrict
    return registered


def draft_files(client: Dataverse, pid: str) -> list[dict]:
    """The draft's files; none when there is no draft (everything published)."""
    try:
        return client.files(pid, ":draft")
    except DataverseError as exc:
        if exc.status == 404:
            return []
        raise

"""The key index of a bundle the remote stored: which member holds which key."""

from __future__ import annotations

import json
import zipfile

from .boundary import RemoteError
from .reader import BundleReader, RangeFile
from .store import INDEX, INDEX_FORMAT


def read_index(reader: BundleReader, file_id: int, size: int, remote: str) -> dict | None:
    """A bundle's key index (member -> key), or None if it has none (an exported one) or
    another remote made it."""
    try:
        with zipfile.ZipFile(RangeFile(reader, file_id, size)) as zf:
            if INDEX not in zf.namelist():
                return None
            data = zf.read(INDEX)
    except (zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise RemoteError(f"cannot read the key index of file {file_id}: {exc}") from exc
    index = json.loads(data)
    if index.get("format") != INDEX_FORMAT or index.get("remote") != remote:
        return None
    return index["keys"]

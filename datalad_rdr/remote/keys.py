"""What a git-annex key says about its content, as far as the remote needs it.

A key is ``BACKEND-sSIZE-mMTIME-SCHUNKSIZE-CCHUNK--NAME`` with optional fields. The remote
sees the keys of chunks (``-S…-C…``, when the remote has ``chunk=``) and of encrypted content
(``GPGHMAC…`` backends, ``encryption=shared|hybrid|pubkey``): their content is not what the
hash in the name covers, so only the ZIP's CRC-32 checks them.
"""

from __future__ import annotations

from ..gitannex import key_checksum
from ..zipmembers import Checksum


def fields(key: str) -> tuple[str, list[str], str]:
    """(backend, fields, name) of a key."""
    head, _, name = key.partition("--")
    backend, *rest = head.split("-")
    return backend, rest, name


def is_chunk(key: str) -> bool:
    return any(f[:1] in ("S", "C") for f in fields(key)[1])


def checksum(key: str) -> Checksum | None:
    """The hash the key's content must have, if the key names one for this content."""
    if is_chunk(key):
        return None
    return key_checksum(key)


def parent(key: str) -> str | None:
    """The key of the annexed content this key carries: itself, the chunked key for a chunk,
    None for encrypted content (only git-annex's cipher knows)."""
    backend, rest, name = fields(key)
    if backend.startswith("GPGHMAC"):
        return None
    kept = [f for f in rest if f[:1] not in ("S", "C")]
    return "-".join([backend, *kept]) + "--" + name

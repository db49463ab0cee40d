"""Why a member could not be read, and what the reader can do about it.

Apart from :mod:`.reader` (and ``requests``), so that the remote answers git-annex's other
requests without loading an HTTP client.
"""

from __future__ import annotations


class ReadError(Exception):
    """A member could not be read; the message says why and what to do."""


class Gone(ReadError):
    """The bundle is not on the server (any more)."""


class Denied(ReadError):
    """The server has the bundle and refuses this user (restricted, or a draft)."""


class Embargoed(Denied):
    """The bundle is published under an embargo that has not ended yet."""


class Corrupt(ReadError):
    """The bytes served are not the member the record describes."""


def request_access(server: str, pid: str) -> str:
    """How a reader without access asks for it: on the dataset's landing page."""
    return (f"to be granted access, use 'Request Access' on "
            f"{server}/dataset.xhtml?persistentId={pid}")

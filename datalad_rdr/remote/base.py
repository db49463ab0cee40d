"""What a special remote of ours has besides annexremote's: what datalad-next's base gave.

One-line messages (a newline would end the protocol line), INFO falling back to DEBUG for a
git-annex without it, the progress DataLad's progress bars report, and the git remote's name.
"""

from __future__ import annotations

import annexremote
from annexremote import ProtocolError


class SpecialRemote(annexremote.SpecialRemote):
    def __init__(self, annex):
        super().__init__(annex)
        self._remotename: str | None = None

    @property
    def remotename(self) -> str:
        """The name of the git remote git-annex runs this special remote as."""
        if self._remotename is None:
            self._remotename = self.annex.getgitremotename()
        return self._remotename

    def message(self, msg: str, type: str = "debug") -> None:
        """A line for git-annex to show (``info``, ``error``) or to log (``debug``)."""
        send = {"info": self.annex.info, "error": self.annex.error}.get(type, self.annex.debug)
        msg = msg.replace("\n", "\\n")
        try:
            send(msg)
        except ProtocolError:  # INFO needs git-annex's extension: a debug line at least
            self.annex.debug(msg)

    def send_progress(self, progress: int) -> None:
        """Bytes transferred so far (DataLad's progress bars under git-annex call it)."""
        self.annex.progress(progress)

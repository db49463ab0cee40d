"""git-annex plumbing for the remote, for the moments when the protocol is not there to ask.

After git-annex has closed the remote's stdin (the end of a session), during crash repair
and in ``rdr-export``, the remote's records are written with git-annex's own plumbing
commands, run in the repository. git-annex takes its own locks; running these while the
parent git-annex waits for the remote to exit is what git-annex does for concurrent commands.
The plumbing itself lives in :mod:`datalad_rdr.gitannex`.
"""

from ..gitannex import Annex, AnnexError

__all__ = ["Annex", "AnnexError"]

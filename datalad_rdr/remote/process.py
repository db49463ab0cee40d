"""What the remote's process sets up: its log on stderr, and DataLad once a token is needed.

git-annex starts the remote for every ``initremote`` (four processes at once), ``get`` and
``copy``; answering git-annex and reading a public member need neither DataLad nor
datalad-next, whose import costs more time and memory than the rest of the process. DataLad
is imported only for the credential manager, by :func:`datalad_config`.
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = ("critical", "error", "warning", "info", "debug")

_asked: int | None = None  # the level -l or DATALAD_LOG_LEVEL gave


def level_of(name: str) -> int:
    """The logging level of ``debug``, ``INFO``, ``5``; ValueError otherwise."""
    if name.strip().isdigit():
        return int(name)
    if name.strip().lower() not in LEVELS:
        raise ValueError(f"not a log level: {name!r} (one of {', '.join(LEVELS)}, or a "
                         f"number)")
    return getattr(logging, name.strip().upper())


def log_to_stderr(level: str | None) -> None:
    """Lines of the ``datalad.rdr`` loggers on stderr (git-annex shows them) from ``level``
    on: ``-l`` or ``DATALAD_LOG_LEVEL``, as DataLad's own log would have it; warnings if
    neither says. stdout is the protocol: nothing is logged there."""
    global _asked
    given = level or os.environ.get("DATALAD_LOG_LEVEL")
    try:
        _asked = level_of(given) if given else None
    except ValueError:
        _asked = None  # a bad DATALAD_LOG_LEVEL is DataLad's to complain about
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    ours = logging.getLogger("datalad.rdr")
    ours.addHandler(handler)
    ours.setLevel(logging.WARNING if _asked is None else _asked)
    # once DataLad is imported its "datalad" logger has a handler too: one line, not two
    ours.propagate = False


def datalad_config(remote, gitdir: str):
    """DataLad's configuration of the repository at ``gitdir`` (for the credential
    manager), importing DataLad now.

    DataLad's UI writes to stdout unless told it runs under git-annex (what DataLad's own
    entry point of special remotes does before anything else); its log takes our level.
    """
    from datalad.ui import ui

    ui.set_backend("annex")
    ui.set_specialremote(remote)
    if _asked is not None:
        logging.getLogger("datalad").setLevel(_asked)
    from datalad_next.datasets import LeanAnnexRepo

    return LeanAnnexRepo(gitdir).config

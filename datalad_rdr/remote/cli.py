"""``git-annex-remote-rdr``: the program git-annex starts (and its ``repack``).

It runs annexremote's protocol loop itself, as DataLad's entry point of special remotes
does, without importing DataLad (see :mod:`.process`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="git-annex-remote-rdr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The git-annex special remote 'rdr' of datalad-rdr: reads annexed "
                    "files out of ZIP bundles on RDR (Dataverse) by HTTP Range, and stores "
                    "keys into such bundles. git-annex starts it (type=external "
                    "externaltype=rdr) and talks to it on stdin/stdout; docs/remote.rst "
                    "is the guide.",
        epilog="subcommand:\n"
               "  git-annex-remote-rdr repack [--remote NAME] [--dry-run]\n"
               "      rewrite the remote's draft bundles without the members removed\n"
               "      from it (git annex drop --from), delete bundles with nothing left;\n"
               "      run it in the repository ('git-annex-remote-rdr repack --help')")
    parser.add_argument("--version", action="version",
                        version=f"git-annex-remote-rdr (datalad-rdr) {__version__}")
    parser.add_argument("-l", "--log-level", metavar="LEVEL", type=_level,
                        help="log from this level on (debug, info, warning, error, "
                             "critical, or a number; default: DATALAD_LOG_LEVEL, else "
                             "warning); log lines go to stderr, which git-annex shows")
    return parser


def _level(text: str) -> str:
    from .process import level_of

    try:
        level_of(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def main():
    """Entry point of ``git-annex-remote-rdr`` (``repack`` as first argument: repack)."""
    if len(sys.argv) > 1 and sys.argv[1] == "repack":
        from .repack import main as repack_main

        sys.exit(repack_main(sys.argv[2:]))
    args = _parser().parse_args()
    from .process import log_to_stderr

    log_to_stderr(args.log_level)
    try:
        serve()
    except Exception as exc:
        # Listen() answers a request's failure with ERROR itself; this is a failure outside
        # it (the start, the end of the session): git-annex is told on the protocol too.
        logging.getLogger("datalad.rdr.remote").debug("the remote failed", exc_info=True)
        print(f"ERROR {exc} ({type(exc).__name__})".replace("\n", "\\n"), flush=True)
        sys.exit(1)


def serve() -> None:
    """Answer git-annex on stdin/stdout until it closes stdin; then the remote's
    ``close()``, also when the session ends by an error or Ctrl-C."""
    from annexremote import Master

    from .special import RdrRemote

    master = Master()
    with contextlib.closing(RdrRemote(master)) as remote:
        master.LinkRemote(remote)
        master.Listen()

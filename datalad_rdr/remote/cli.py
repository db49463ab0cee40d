"""``git-annex-remote-rdr``: the program git-annex starts (and its ``repack``)."""

from __future__ import annotations

import argparse
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
    parser.add_argument("-l", "--log-level", metavar="LEVEL",
                        help="log level of DataLad's logger (e.g. debug); log lines go to "
                             "stderr, which git-annex shows")
    return parser


def main():
    """Entry point of ``git-annex-remote-rdr`` (``repack`` as first argument: repack)."""
    if len(sys.argv) > 1 and sys.argv[1] == "repack":
        from .repack import main as repack_main

        sys.exit(repack_main(sys.argv[2:]))
    args = _parser().parse_args()
    from datalad_next.annexremotes import super_main

    from .special import RdrRemote

    super_main(args=["-l", args.log_level] if args.log_level else [], cls=RdrRemote,
               remote_name="rdr", description="read annexed files from ZIP bundles on RDR")

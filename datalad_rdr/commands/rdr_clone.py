"""``datalad rdr-clone``: a DataLad dataset from a record on RDR."""

from __future__ import annotations

from pathlib import Path

from datalad.support.param import Parameter
from datalad.interface.base import eval_results
from datalad_next.commands import (
    EnsureCommandParameterization,
    ValidatedInterface,
    build_doc,
    get_status_dict,
)
from datalad_next.constraints import EnsureBool, EnsureStr

from ..clone import CloneError, resolve, run_clone
from ..credentials import CredentialError, obtain
from .rdr_export import EnsureServerURL


@build_doc
class RdrClone(ValidatedInterface):
    """Make a DataLad dataset from a record on RDR (Dataverse), files fetched on demand

    SOURCE is the record's DOI (``doi:10.48804/ABCDEF`` or ``https://doi.org/...``), its
    landing page (``https://SERVER/dataset.xhtml?persistentId=doi:...``), or its PID with
    ``--url SERVER``. A DOI without ``--url`` finds its server through doi.org.
    ``--record-version 1.0`` picks a published version (default: the latest published).

    For a record exported with ``datalad rdr-export``, the dataset is cloned from the
    history the export deposited in it (``dataset-history.git.bundle``): the exporter's
    commits, the git-annex special remote ``rdr`` enabled (no token needed for that), and
    ``datalad get`` reading each annexed file out of its bundle by one Range request --
    public documents without a token, files of restricted bundles with a token of a user
    who has access. A history restricted by the metadata file needs that token too.

    For a record uploaded by hand (the web upload, dvuploader), the dataset is built from
    the record itself: every plain file becomes an annexed file with its access URL;
    every ZIP, every set of split volumes (``name.zip.001``, ``.002``, ... read as one
    ZIP) and every ``.7z`` is opened by Range requests on its central directory (or 7z
    header) only -- nothing is downloaded -- and each member becomes an annexed file at
    its path under a folder named after the archive (``--merge``: at the top level).
    ``datalad get`` then reads one member with one Range request (two across a volume
    boundary) through the git-annex special remote ``rdr`` and checks its CRC-32; a
    member of a solid 7z archive says it needs the whole archive. Keys are URL keys with
    the member's size (git-annex takes them without the content); ``--hash`` reads every
    member once and gives checksum (MD5E) keys instead. Plain files get the checksum key
    the server lists.

    A rerun into the same PATH after a new version of the record updates the dataset: in
    a new commit, or for an exported record by moving the branch to that version's
    commit. Nothing is ever written to the server: the remote is read-only.

    Public files need no token. For restricted files and drafts the API token comes from
    DataLad's credential system: the credential named with ``--credential``, the last one
    used for the server, or the credential ``rdr`` (``DATALAD_CREDENTIAL_RDR_SECRET``); a
    restricted file read without access says how to request it. docs/clone.rst is the
    guide.
    """

    _validator_ = EnsureCommandParameterization(dict(
        source=EnsureStr(min_len=1),
        path=EnsureStr(min_len=1),
        url=EnsureServerURL(),
        version=EnsureStr(match=r"^(\d+(\.\d+)?|draft|latest)$"),
        merge=EnsureBool(),
        hash=EnsureBool(),
        credential=EnsureStr(min_len=1),
    ))

    _params_ = dict(
        source=Parameter(args=("source",), metavar="SOURCE",
                         doc="""the record: its DOI, landing-page URL, or PID (with
                         --url)"""),
        path=Parameter(args=("path",), metavar="PATH", nargs="?",
                       doc="""where the dataset goes (default: a directory named after
                       the DOI's last part); an earlier rdr-clone there is updated"""),
        url=Parameter(args=("--url",), metavar="SERVER",
                      doc="""base URL of the Dataverse installation, e.g.
                      https://rdr.kuleuven.be (needed for a PID; a DOI is resolved
                      through doi.org without it)"""),
        version=Parameter(args=("--record-version",), dest="version", metavar="VERSION",
                          doc="""the published version, e.g. 1.0 (default: the latest
                          published, or the one a landing-page URL names); 'draft' for
                          the draft, with a token that may edit it. (DataLad gives every
                          command its own --version, hence the longer name)"""),
        merge=Parameter(args=("--merge",), action="store_true",
                        doc="""put archive members at the top level (next to the
                        archive), not in a folder named after it"""),
        hash=Parameter(args=("--hash",), action="store_true",
                       doc="""read every member once and give it a checksum (MD5E)
                       key, instead of a URL key with its size"""),
        credential=Parameter(args=("--credential",), metavar="NAME",
                             doc="name of the DataLad credential holding the API token"),
    )

    _examples_ = [
        {"text": "Clone a published record by its DOI",
         "code_cmd": "datalad rdr-clone doi:10.48804/ABCDEF mystudy"},
        {"text": "Clone version 1.0 from the landing page",
         "code_cmd": "datalad rdr-clone 'https://rdr.kuleuven.be/dataset.xhtml?"
                     "persistentId=doi:10.48804/ABCDEF' --record-version 1.0"},
        {"text": "Clone a record of a server by its PID, with checksum keys",
         "code_cmd": "datalad rdr-clone doi:10.48804/ABCDEF --url https://rdr.kuleuven.be "
                     "--hash"},
    ]

    @staticmethod
    @eval_results
    def __call__(source, path=None, *, url=None, version=None, merge=False, hash=False,
                 credential=None):
        from datalad import cfg

        cfg.reload(force=True)  # no dataset yet: the environment as it is now
        where = str(Path(path or ".").absolute())
        try:
            src = resolve(source, url, version)
            target = Path(path or src.pid.rsplit("/", 1)[-1]).absolute()
            where = str(target)
            cred = None
            try:
                cred = obtain(cfg, src.server, credential)
            except CredentialError as exc:
                if credential:
                    raise CloneError(str(exc)) from None
            results = run_clone(src, target, cred.secret if cred else None, credential,
                                merge, hash)
            ok = False
            for res in results:
                ok = ok or res["status"] == "ok" and res.get("type") == "dataset"
                yield get_status_dict(**res)
            if ok and cred:
                cred.mark_used()
        except CloneError as exc:
            yield get_status_dict(action="rdr-clone", path=where, status="error",
                                  message=str(exc))

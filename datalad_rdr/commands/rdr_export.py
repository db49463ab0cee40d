"""``datalad rdr-export``: publish a dataset's files on RDR as ZIP bundles."""

from __future__ import annotations

from pathlib import Path

from datalad.interface.base import eval_results
from datalad.support.param import Parameter
from datalad_next.commands import (
    EnsureCommandParameterization,
    ValidatedInterface,
    get_status_dict,
)
from datalad_next.constraints import EnsureBool, EnsureDataset, EnsureInt, EnsureRange, EnsureStr
from datalad_next.datasets import datasetmethod

from ..credentials import CredentialError, obtain_token
from ..export import ExportOptions, run_export
from ..manifest import load as load_manifest
from ..plan import GB


class RdrExport(ValidatedInterface):
    """Publish a dataset on RDR (Dataverse) as size-capped ZIP bundles, with provenance

    The files of a commit (default HEAD) are planned into bundles, the way KU Leuven's RDR
    guide asks: for a BIDS dataset ``core`` (top-level files, sidecars, stimuli, ...),
    ``raw`` (``sub-*/``), one bundle per large derivative pipeline, and ``derivatives``;
    for other datasets one bundle per top-level folder. Rules in ``.datalad/rdr/bundles``
    (``glob bundle`` lines, versioned in the dataset) override the defaults. No ZIP is
    larger than the cap: a bundle over it is split into numbered parts at subject boundaries.

    Each bundle is streamed as a deterministic ZIP (sorted members, timestamps from the
    commit; already-compressed files stored, text deflated) straight into the server's S3
    store through presigned URLs (Dataverse direct upload) -- no temporary ZIP on disk, and
    never through the ordinary upload path, which would unpack it. Annexed content that is
    not present is fetched per bundle and checked against its key while it is read.
    Bundles are registered in the draft, restricted unless ``--no-restrict``.

    The manifest ``.datalad/rdr/manifest.json`` -- which commit, file and annex key went into
    which bundle, at which byte offset -- is saved in the dataset. A rerun sends only
    bundles whose content changed; after a crash or kill it continues where it stopped.

    The API token comes from DataLad's credential system: the credential named with
    ``--credential``, the last one used for the server, or the credential ``rdr``
    (environment variable ``DATALAD_CREDENTIAL_RDR_SECRET``).
    """

    _validator_ = EnsureCommandParameterization(dict(
        dataset=EnsureDataset(installed=True),
        url=EnsureStr(min_len=1),
        collection=EnsureStr(min_len=1),
        pid=EnsureStr(min_len=1),
        commit=EnsureStr(min_len=1),
        max_bundle_size=EnsureInt() & EnsureRange(min=1024),
        recursive=EnsureBool(),
        dry_run=EnsureBool(),
        drop_after=EnsureBool(),
        no_restrict=EnsureBool(),
        credential=EnsureStr(min_len=1),
    ))

    _params_ = dict(
        dataset=Parameter(args=("-d", "--dataset"),
                          doc="the dataset to export (default: the current one)"),
        url=Parameter(args=("--url",), metavar="URL",
                      doc="""base URL of the Dataverse installation, e.g.
                      https://rdr.kuleuven.be (default: the server of the last export)"""),
        collection=Parameter(args=("--collection",), metavar="ALIAS",
                             doc="""collection in which to create the dataset's draft when
                             no PID is known"""),
        pid=Parameter(args=("--pid",), metavar="PID",
                      doc="""persistent id of an existing dataset, e.g.
                      doi:10.48804/ABCDEF (default: the one of the last export)"""),
        commit=Parameter(args=("--commit",), metavar="COMMIT",
                         doc="the commit to export (default: HEAD)"),
        max_bundle_size=Parameter(args=("--max-bundle-size",), metavar="BYTES",
                                  doc="cap on the size of every ZIP (default: 20 GB)"),
        recursive=Parameter(args=("-r", "--recursive"), action="store_true",
                            doc="include the content of subdatasets at their paths"),
        dry_run=Parameter(args=("--dry-run",), action="store_true",
                          doc="""print the plan (bundles, files, bytes) and touch no
                          server"""),
        drop_after=Parameter(args=("--drop-after",), action="store_true",
                             doc="""drop annexed content that was fetched for a bundle once
                             that bundle is confirmed (for datasets larger than the disk)"""),
        no_restrict=Parameter(args=("--no-restrict",), action="store_true",
                              doc="register bundles as public files (an open dataset)"),
        credential=Parameter(args=("--credential",), metavar="NAME",
                             doc="name of the DataLad credential holding the API token"),
    )

    _examples_ = [
        {"text": "Show how a dataset would be bundled",
         "code_cmd": "datalad rdr-export --dry-run"},
        {"text": "Export to a new draft in a collection",
         "code_cmd": "datalad rdr-export --url https://rdr.kuleuven.be "
                     "--collection mylab"},
        {"text": "Send what changed since the last export (same server and dataset)",
         "code_cmd": "datalad rdr-export"},
    ]

    @staticmethod
    @datasetmethod(name="rdr_export")
    @eval_results
    def __call__(dataset=None, *, url=None, collection=None, pid=None, commit="HEAD",
                 max_bundle_size=20 * GB, recursive=False, dry_run=False,
                 drop_after=False, no_restrict=False, credential=None):
        ds = dataset.ds if dataset else EnsureDataset(installed=True)(".").ds
        path = Path(ds.path)

        def error(message):
            return get_status_dict(action="rdr-export", path=str(path), status="error",
                                   message=message)

        previous = load_manifest(path)
        url = url or (previous.server if previous else None)
        if not url and not dry_run:
            yield error("no server given: use --url (no earlier export to continue)")
            return
        if not dry_run and not pid and not collection and not previous:
            yield error("no dataset given: use --collection to create a draft, or --pid")
            return
        if commit == "HEAD" and not dry_run and _unsaved(ds):
            yield error("the dataset has unsaved changes; 'datalad save' them first (the "
                        "export publishes a commit)")
            return
        token = None
        if not dry_run:
            try:
                _, token = obtain_token(ds.config, url, credential)
            except CredentialError as exc:
                yield error(str(exc))
                return
        opts = ExportOptions(url=url, token=token, collection=collection, pid=pid,
                             commit=commit, cap=max_bundle_size, recursive=recursive,
                             dry_run=dry_run, drop_after=drop_after,
                             restrict=not no_restrict)
        for res in run_export(path, opts):
            yield get_status_dict(**res)


def _unsaved(ds) -> bool:
    return any(r.get("state") != "clean" for r in ds.status(
        result_renderer="disabled", return_type="generator", on_failure="ignore",
        eval_subdataset_state="commit"))

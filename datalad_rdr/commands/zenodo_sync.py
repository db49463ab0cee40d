"""``datalad zenodo-sync``: the command; the work is in :mod:`datalad_rdr.zenodo`."""

from __future__ import annotations

__docformat__ = "restructuredtext"

from pathlib import PurePath

from datalad_next.commands import (
    EnsureCommandParameterization,
    Parameter,
    ValidatedInterface,
    build_doc,
    datasetmethod,
    eval_results,
)
from datalad_next.constraints import (
    EnsureBool,
    EnsureDataset,
    EnsureListOf,
    EnsurePath,
    EnsureStr,
)

from ..zenodo.sync import sync


class EnsurePaths(EnsureListOf):
    """A path or a list of paths, resolved as DataLad resolves paths for a dataset."""

    def __init__(self, item=None):
        super().__init__(item or EnsurePath())

    def __call__(self, value):
        return super().__call__([value] if isinstance(value, (str, PurePath)) else value)

    def for_dataset(self, dataset):  # EnsureListOf does not tailor its items
        return EnsurePaths(self._item_constraint.for_dataset(dataset))


@build_doc
class ZenodoSync(ValidatedInterface):
    """Bring a Zenodo record up to date with a dataset, from StepUp's zenodo.yaml

    The configuration is StepUp RepRep's ``zenodo.yaml`` (``srr-sync-zenodo``), taken
    unchanged in both of its forms: StepUp 3.1's (``path_token``, ``paths``,
    ``path_readme``, top-level ``code_repository``) and StepUp 4's (``custom_fields``; the
    files and ``--description`` on the command line). Zenodo's record is read and only what
    differs is changed:

    - no record yet (no ``path_record_id`` file): a draft is created, the files are uploaded
      (each commit's size and MD5 checked against the local file) and the record id is
      written;
    - a draft: only new or changed files (by MD5) are sent, files no longer listed are
      deleted, the metadata is sent only when it differs;
    - a published record of the same version: nothing is sent when nothing changed; changed
      metadata is edited and republished only with ``--publish``; changed files are refused
      (a published version's files are locked);
    - a higher ``metadata.version`` (semantic versions compared; any other different
      version counts as new): a new version is made, the previous version's unchanged
      files are imported on Zenodo's side, and only changed files are sent.

    ``--publish`` publishes the draft at the end (StepUp leaves that to Zenodo's web page).
    After a publish, every annexed file sent as itself has its Zenodo download URL
    registered with git-annex (``git annex registerurl``, web remote), so a clone of the
    dataset can ``datalad get`` it from Zenodo.

    DataLad additions to zenodo.yaml's ``paths``: folders and globs (``data/**/*.csv``);
    ``{zip: <folder or glob>, name: <name>.zip}`` sends a folder as one deterministic ZIP
    (Zenodo has no folders and takes at most 100 files per record). Two files with the same
    name are refused, naming both. Annexed content is fetched (``datalad get``) only when it
    has to be read; the MD5 of an unchanged file comes from its annex key, or from the last
    run's record.

    Limits are checked before anything is sent: at most 100 files and 50 GB per record
    (configurable as ``datalad.rdr.zenodo.max-files`` and ``datalad.rdr.zenodo.max-bytes``).
    Requests answered 429 (Retry-After honoured), 5xx or with the gateway's HTML 504 page
    are retried with backoff; an upload interrupted by a crash is completed on the next run.

    The token comes from DataLad's credential manager, found as ``rdr-export`` finds
    RDR's: ``--credential NAME``, else ``DATALAD_CREDENTIAL_ZENODO_SECRET`` when it is set
    (and its realm, if any, is the endpoint's), else the last used credential whose
    ``realm`` is the endpoint's server (``https://zenodo.org``; ``https://zenodo.org/api``
    counts too), else a stored credential named ``zenodo``; then StepUp's
    token file (``path_token`` or ``REPREP_PATH_ZENODO_TOKEN``), then
    ``REPREP_ZENODO_TOKEN``. It is sent as a header only and never logged, and a stored
    credential is marked "last used" only once Zenodo accepted it. A refused token is
    reported with where it came from and how to replace it. Without a token the
    configuration and the files are validated and nothing is sent: fine for ``--dry-run``;
    otherwise the result is "impossible" and says how to store a token.

    DataLad addition to ``access`` (StepUp refuses it): an embargo, ``embargo: {until:
    YYYY-MM-DD, reason: ...}`` with ``files: restricted``; the date must lie ahead and a
    reason be given.

    What was done is remembered in the dataset and saved with ``datalad save``: StepUp's
    ``path_record_id`` file (the latest version's record id) and ``.datalad/rdr/zenodo.json``
    (endpoint, concept and version ids, DOIs, and each file's MD5, size and annex key).
    When ``.datalad/rdr/manifest.json`` (written by ``datalad rdr-export``) holds the DOI of
    the dataset's data, it is added as a related identifier with the relation
    ``issupplementedby`` (``datalad.rdr.zenodo.data-relation``; ``none`` turns it off).
    """

    _validator_ = EnsureCommandParameterization(dict(
        config=EnsurePath(),
        path=EnsurePaths(),
        dataset=EnsureDataset(installed=True, purpose="sync with Zenodo"),
        description=EnsurePath(lexists=True),
        credential=EnsureStr(min_len=1),
        dry_run=EnsureBool(),
        publish=EnsureBool(),
    ), validate_defaults=("dataset",),
        # relative paths: to the dataset given as an instance, else to the working directory
        tailor_for_dataset=dict(config="dataset", path="dataset", description="dataset"))

    _params_ = dict(
        config=Parameter(
            args=("config",),
            nargs="?",
            metavar="ZENODO_YAML",
            doc="""StepUp's configuration file (YAML, JSON or TOML). Default:
            zenodo.yaml or sync_zenodo.yaml at the top of the dataset."""),
        path=Parameter(
            args=("path",),
            nargs="*",
            metavar="PATH",
            doc="""files, folders or globs to send in addition to the config's
            ``paths`` (StepUp 4 takes its files from the command line)."""),
        dataset=Parameter(
            args=("-d", "--dataset"),
            doc="""the dataset whose files are sent and in which the record is
            remembered. Default: the dataset of the current directory."""),
        description=Parameter(
            args=("--description",),
            metavar="FILE",
            doc="""a Markdown (.md, rendered to HTML) or HTML file for the record's
            description, as StepUp 4's option of that name."""),
        credential=Parameter(
            args=("--credential",),
            metavar="NAME",
            doc="""name of the DataLad credential holding the Zenodo token."""),
        dry_run=Parameter(
            args=("--dry-run",),
            action="store_true",
            doc="""read Zenodo and report what would change, change nothing (without a
            token: validate and show the metadata that would be sent)."""),
        publish=Parameter(
            args=("--publish",),
            action="store_true",
            doc="""publish the draft (or republish changed metadata of a published
            version) once it is up to date."""),
    )

    _examples_ = [
        {"text": "Validate zenodo.yaml and the files, without a token",
         "code_cmd": "datalad zenodo-sync --dry-run",
         "code_py": "zenodo_sync(dry_run=True)"},
        {"text": "Sync a StepUp 4 configuration with its files and README",
         "code_cmd": "datalad zenodo-sync sync_zenodo.yaml data.csv src/ "
                     "--description zenodo.md",
         "code_py": "zenodo_sync('sync_zenodo.yaml', ['data.csv', 'src/'], "
                    "description='zenodo.md')"},
        {"text": "Publish, after checking what would change",
         "code_cmd": "datalad zenodo-sync --dry-run --publish && "
                     "datalad zenodo-sync --publish",
         "code_py": "zenodo_sync(publish=True)"},
    ]

    @staticmethod
    @datasetmethod(name="zenodo_sync")
    @eval_results
    def __call__(config=None, path=None, *, dataset=None, description=None,
                 credential=None, dry_run=False, publish=False):
        ds = dataset.ds
        yield from sync(ds, config, path or (), description=description, dry_run=dry_run,
                        publish=publish, credential=credential)
